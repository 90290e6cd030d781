"""The per-capture byte budget of `AttentionLogger`: which part of a capture to keep.

A capture is every logged layer at one step. Its size is bounded BEFORE encoding from the
shapes alone (`capture_bytes`): a head's payload is at most `encoding.payload_bound` bytes (about
one byte per value, see docs/format.md), zlib never grows a PNG by more than `compress_bound`,
and headers, tokens and images are counted from what they will hold. The bound does not depend on the weights, so the same view (the same
layers, heads and positions) is chosen at every step and steps stay comparable; measuring after
encoding would keep more on peaky steps and less on diffuse ones, and encode work only to throw
it away. Both TensorBoard readers keep every retained step in memory (100 per tag by default),
so the budget bounds their memory too.

Reduction order (`choose_view`), each stage only when the previous ones cannot meet the budget:

1. examples: keep one probe example;
2. token window: keep positions `[0, t)` with the largest `t` that fits, down to
   `TOKEN_FLOOR` positions;
3. heads: keep the first `k` heads with the largest `k` that fits (heads of one layer are
   interchangeable, so the first ones are as good as any, and their labels stay the model's
   head indices);
4. layers: keep `m` evenly spaced layers, always the first and the last (depth is where
   attention patterns change), with the largest `m` that fits;
5. then the token window again below `TOKEN_FLOOR`, then a single layer.

A 12-layer, 12-head model at 512 tokens keeps 1 example of 128x128 positions (about 2.4 MB)
under the default limits. Whatever is dropped is said in words (`reduction_note`): in one
warning, and in each summary's header for the Attention tab.

Example:

```python
view = choose_view(View(examples=2, tokens=128, heads=None, layers=None),
                   shapes=[(2, 12, 512, 512)] * 12, fits=lambda view: size(view) <= budget)
sizer = Budget(Limits(max_bytes_per_step=4 * 2**20), probe_size=2)
view, note = sizer.view_for(calls)   # calls: summaries.LayerCall of one capture
```
"""

import dataclasses
import json

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin import stats

TOKEN_FLOOR = 64
DEFAULT_BYTES_PER_STEP = 4 * 2**20
# Below this even one small layer with its tokens may not fit.
MIN_BYTES_PER_STEP = 64 * 1024
# Per tag: event and record framing, summary metadata, the header's fixed fields.
_TAG_OVERHEAD = 2048
_BLOB_OVERHEAD = 32  # per blob: its length prefix in the tensor proto, a scale in the header
_IMAGE_OVERHEAD = 64  # per image: its PNG chunks and length prefix
_SCALAR_BYTES = 160  # one statistics scalar event, its tag included


@dataclasses.dataclass(frozen=True)
class Limits:
    """The user's limits on a capture (the `AttentionLogger` arguments of the same names)."""

    max_examples: int = 2
    max_heads: int = None
    max_tokens: int = 128
    max_bytes_per_step: int = DEFAULT_BYTES_PER_STEP


@dataclasses.dataclass(frozen=True)
class View:
    """What to keep of a capture.

    `examples`: first examples kept; `tokens`: the position window `[0, tokens)` (None: all);
    `heads`: first heads kept (None: all); `layers`: indices of the layers kept, in capture
    order (None: all).
    """

    examples: int
    tokens: int = None
    heads: int = None
    layers: tuple = None


def compress_bound(size):
    """The most bytes `zlib.compress` returns for `size` input bytes (zlib's compressBound)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13 + 6


def spread(count, keep):
    """`keep` evenly spaced indices of `range(count)`, always the first and the last."""
    if keep >= count:
        return tuple(range(count))
    if keep == 1:
        return (0,)
    return tuple(int(i) for i in np.round(np.linspace(0, count - 1, keep)))


def _largest(low, high, fits):
    """The largest `x` in `[low, high]` with `fits(x)`, for a `fits` true up to some point."""
    if high < low or not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def choose_view(start, shapes, fits):
    """The first view in the reduction order (module docstring) for which `fits(view)`.

    Args:
      start: The `View` the user's limits ask for (`max_examples`, `max_tokens`, `max_heads`).
      shapes: `(batch, heads, query_length, key_length)` of each layer, in capture order.
      fits: `fits(view) -> bool`, monotone: a smaller view fits whenever a larger one does.

    Returns `(view, met)`; when even one example, one head, one position and one layer do
    not fit, the smallest view with `met=False`.
    """
    if fits(start):
        return start, True
    view = dataclasses.replace(start, examples=1)
    if fits(view):
        return view, True

    longest = max(max(tq, tk) for _, _, tq, tk in shapes)
    window = longest if view.tokens is None else min(view.tokens, longest)
    floor = min(TOKEN_FLOOR, window)
    tokens = _largest(floor, window, lambda t: fits(dataclasses.replace(view, tokens=t)))
    if tokens is not None:
        return dataclasses.replace(view, tokens=tokens), True
    view = dataclasses.replace(view, tokens=floor)

    most_heads = max(heads for _, heads, _, _ in shapes)
    head_limit = most_heads if view.heads is None else min(view.heads, most_heads)
    heads = _largest(1, head_limit, lambda k: fits(dataclasses.replace(view, heads=k)))
    if heads is not None:
        return dataclasses.replace(view, heads=heads), True
    view = dataclasses.replace(view, heads=1)

    count = len(shapes)
    fewest = min(2, count)
    layers = _largest(
        fewest, count, lambda m: fits(dataclasses.replace(view, layers=spread(count, m)))
    )
    if layers is not None:
        return dataclasses.replace(view, layers=spread(count, layers)), True
    view = dataclasses.replace(view, layers=spread(count, fewest))

    tokens = _largest(1, floor, lambda t: fits(dataclasses.replace(view, tokens=t)))
    if tokens is not None:
        return dataclasses.replace(view, tokens=tokens), True
    view = dataclasses.replace(view, tokens=1, layers=spread(count, 1))
    return view, fits(view)


def kept_shape(shape, view, patches):
    """`(examples, heads, query_length, key_length)` a view keeps of a layer of `shape`.

    `patches`: the keys are image patches, whose axis is kept whole so that attention can be
    drawn over the image.
    """
    batch, heads, tq, tk = (int(n) for n in shape)
    return (
        min(batch, view.examples),
        heads if view.heads is None else min(heads, view.heads),
        tq if view.tokens is None else min(tq, view.tokens),
        tk if (view.tokens is None or patches) else min(tk, view.tokens),
    )


def _kept_calls(calls, view):
    return calls if view.layers is None else [calls[i] for i in view.layers]


def _tokens_bytes(lists, examples, keep):
    if lists is None:
        return 0
    kept = [example[:keep] for example in lists[:examples]]
    return len(json.dumps(kept, ensure_ascii=False).encode("utf-8"))


def capture_bytes(calls, view, note=None, images_shape=None, statistics=False):
    """An upper bound of the bytes `view` of a capture writes, known before encoding.

    Args:
      calls: The capture's layer calls (`summaries.LayerCall`: `tag`, `shape`, `layout`,
        `query_tokens`, `key_tokens`).
      view: The `View` to size.
      note: The reduction note every kept summary carries, or None.
      images_shape: `(batch, height, width, channels)` of the probe images, or None.
      statistics: Whether per-head statistics scalars are written too.
    """
    note_bytes = len((note or "").encode("utf-8"))
    total = 0
    for call in _kept_calls(calls, view):
        patches = call.layout is not None
        examples, heads, kq, kk = kept_shape(call.shape, view, patches)
        total += examples * heads * (encoding.payload_bound(kq * kk) + _BLOB_OVERHEAD)
        total += _TAG_OVERHEAD + 2 * len(call.tag) + note_bytes
        total += _tokens_bytes(call.query_tokens, examples, kq)
        total += _tokens_bytes(call.key_tokens, examples, kk)
        if patches:
            _, height, width, channels = images_shape
            total += examples * (compress_bound(height * (width * channels + 1)) + _IMAGE_OVERHEAD)
        if statistics:
            total += len(stats.STATISTICS) * heads * (_SCALAR_BYTES + len(call.tag))
    return total


def reduction_note(calls, start, view, met, limits, probe_size):
    """What `view` drops of the capture and how to keep more, in words (None: nothing dropped).

    `start` is the view the limits ask for, `met` whether `view` fits the budget, `probe_size`
    the number of examples in the user's probe.
    """
    parts, named = [], []
    if probe_size > view.examples:
        parts.append("examples %d of %d" % (view.examples, probe_size))
        if probe_size > limits.max_examples:
            named.append("max_examples=%d" % limits.max_examples)
    kept = _kept_calls(calls, view)
    heads_text, positions_text = [], []
    for call in kept:
        batch, heads, tq, tk = call.shape
        _, keep_heads, kq, kk = kept_shape(call.shape, view, call.layout is not None)
        if keep_heads < heads:
            heads_text.append("heads %d of %d" % (keep_heads, heads))
        if kq < tq or kk < tk:
            positions_text.append("positions %dx%d of %dx%d" % (kq, kk, tq, tk))
    for texts in (heads_text, positions_text):
        parts.extend(sorted(set(texts), key=texts.index))
    if heads_text and limits.max_heads is not None and any(
        limits.max_heads < c.shape[1] for c in kept
    ):
        named.append("max_heads=%d" % limits.max_heads)
    if positions_text and limits.max_tokens is not None and any(
        limits.max_tokens < max(c.shape[2:]) for c in kept
    ):
        named.append("max_tokens=%d" % limits.max_tokens)
    if len(kept) < len(calls):
        parts.append("layers %d of %d (kept: %s)"
                     % (len(kept), len(calls), ", ".join(c.tag for c in kept)))
    if not parts:
        return None
    arguments = [limit.split("=")[0] + "=" for limit in named]
    text = ", ".join(parts)
    if view != start:
        text += ("; %s by the budget max_bytes_per_step=%d (%.1f MiB), which the view asked "
                 "for would exceed" % ("set in part" if named else "set",
                                       limits.max_bytes_per_step,
                                       limits.max_bytes_per_step / 2**20))
        if not met:
            text += " (even this smallest view does not fit; it is logged anyway)"
        arguments.insert(0, "max_bytes_per_step=")
    if named:
        text += "; limits: " + ", ".join(named)
    listed = arguments[0] if len(arguments) == 1 else "%s or %s" % (
        ", ".join(arguments[:-1]), arguments[-1])
    text += "; raise %s to log more (None keeps all%s)" % (
        listed,
        ", or no budget" if "max_bytes_per_step=" in arguments else "")
    return text


class Budget:
    """Chooses the `View` of each capture under `Limits`, once per set of layer shapes.

    Args:
      limits: The user's `Limits`.
      probe_size: Examples in the user's probe (for the note).
      images_shape: Shape of the probe images, or None.
      statistics: Whether statistics scalars are written.
    """

    _CACHED = 16  # shapes that keep changing must not grow the cache without bound

    def __init__(self, limits, probe_size, images_shape=None, statistics=False):
        self.limits = limits
        self.probe_size = probe_size
        self.images_shape = images_shape
        self.statistics = statistics
        self._views = {}  # ((tag, shape) of every call of a capture) -> (View, note)

    def view_for(self, calls):
        """`(View, note)` for a capture's layer calls (note None when nothing is dropped)."""
        key = tuple((call.tag, tuple(call.shape)) for call in calls)
        if key not in self._views:
            if len(self._views) > self._CACHED:
                self._views.clear()
            self._views[key] = self._choose(calls)
        return self._views[key]

    def _choose(self, calls):
        limits = self.limits
        start = View(examples=min(call.shape[0] for call in calls),
                     tokens=limits.max_tokens, heads=limits.max_heads)
        if limits.max_bytes_per_step is None:
            view, met = start, True
        else:
            view, met = choose_view(
                start, [call.shape for call in calls],
                lambda candidate: self._bytes(calls, start, candidate)
                <= limits.max_bytes_per_step,
            )
        return view, reduction_note(calls, start, view, met, limits, self.probe_size)

    def _bytes(self, calls, start, view):
        note = reduction_note(calls, start, view, True, self.limits, self.probe_size)
        return capture_bytes(calls, view, note, self.images_shape, self.statistics)
