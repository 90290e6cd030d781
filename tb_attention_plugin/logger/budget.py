"""The per-capture byte budget of `AttentionLogger`: how each logged layer is stored.

A capture is every logged layer at one step. Its size is bounded BEFORE anything is computed,
from the layer shapes alone (`capture_bytes`): a head's payload is at most
`encoding.payload_bound` bytes (about one byte per value, see docs/format.md), zlib never
grows a PNG by more than `compress_bound`, and headers, tokens and images are counted from what
they will hold. The bound does not depend on the weights, so every step gets the same plan
(the same layers, heads, layouts, blocks and windows) and steps stay comparable. Both
TensorBoard readers keep every retained step in memory (100 per tag by default), so the budget
bounds their memory too.

Every position of every logged layer and head is kept. Each layer is stored (`LayerPlan`):

- FULL: every weight, when the layer fits its share of the budget;
- POOLED (format v2 "pooled" layout, docs/format.md): an overview of `bq x bk` blocks holding
  each block's mean and max (mass and spikes both survive), plus exact windows at full
  resolution: by default, causal self-attention keeps the last queries' rows over all keys
  (`last_queries`) and the first query block (`first_queries`); other attention the first and
  the last queries over all keys; both every query's weight on key 0 (`first_key`). The
  `AttentionLogger(windows=...)` argument names more. A pooled layer is computed in blocks
  (`blocked.py`): its full score tensor never exists.

Layers are planned smallest first, each taking FULL when it fits an equal share of what is
left, else POOLED at the finest block (a power of two) whose overview takes at most half of
its share. Only when even pooled layers do not fit, in this order (`choose_view`):

1. examples: keep one probe example (tried first, before any layer is pooled);
2. heads: keep the first `k` heads with the largest `k` that fits (their labels stay the
   model's head indices);
3. layers: keep `m` evenly spaced layers, always the first and the last, with the largest `m`.

GPT-2 small (12 layers x 12 heads) at 1024 tokens keeps 1 example, every layer and head,
pooled in 16x16 blocks with 64 exact last rows, in about 3.3 MiB of the default 4 MiB; one
32-head layer at 8192 tokens is pooled in 64x64 blocks. What is pooled or dropped is said in
words (`reduction_note`): in one warning, and in each summary's header for the Attention tab.

Example:

```python
sizer = Budget(Limits(max_bytes_per_step=4 * 2**20), probe_size=2)
plan = sizer.plan_for(calls)   # calls: summaries.LayerCall (or shapes) of one capture
plan.layers["decoder/layer_0"].mode    # "full", "pooled" or "skip"
```
"""

import dataclasses
import fnmatch
import json
import math

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin import stats

DEFAULT_BYTES_PER_STEP = 4 * 2**20
# Below this even one small layer with its tokens may not fit.
MIN_BYTES_PER_STEP = 64 * 1024
# Per tag: event and record framing, summary metadata, the header's fixed fields.
_TAG_OVERHEAD = 2048
# Per blob: its length prefix in the tensor proto (6), and in the header its scale (a float's
# repr, 23), CRC-32 (11) and inflated length (10), with their commas.
_BLOB_OVERHEAD = 56
_IMAGE_OVERHEAD = 64  # per image: its PNG chunks and length prefix
_SCALAR_BYTES = 160  # one statistics scalar event, its tag included
_NOTE_ALLOWANCE = 1024  # bytes of the reduction note counted per layer while planning


@dataclasses.dataclass(frozen=True)
class Limits:
    """The user's limits on a capture (the `AttentionLogger` arguments of the same names)."""

    max_examples: int = 2
    max_heads: int = None
    max_bytes_per_step: int = DEFAULT_BYTES_PER_STEP
    windows: tuple = ()  # ((layer pattern, ((name, query range, key range), ...)), ...)


@dataclasses.dataclass(frozen=True)
class View:
    """What to keep of a capture.

    `examples`: first examples kept; `heads`: first heads kept (None: all); `layers`: indices
    of the layers kept, in capture order (None: all); `pooling`: whether layers that do not fit
    in full may be pooled (False only for the first, all-full try).
    """

    examples: int
    heads: int = None
    layers: tuple = None
    pooling: bool = True


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """How one layer call is captured and stored.

    `mode`: `"full"`, `"pooled"` (computed in blocks, stored as overview + windows) or
    `"skip"` (not logged); `shape`: its full `(B, H, Tq, Tk)`; `examples`, `heads`: what is
    kept of it; `causal`; `block` `(bq, bk)` and `windows` `((name, (q0, q1), (k0, k1)), ...)`
    of a pooled layer. The health pass adds `"stream"`: computed in blocks like a pooled
    layer, its query chunks handed to `chunks` (a `chunk_feed.ChunkSink`) as they pass.
    """

    mode: str
    shape: tuple
    examples: int
    heads: int
    causal: bool = False
    block: tuple = None
    windows: tuple = ()
    chunks: object = None


@dataclasses.dataclass(frozen=True)
class CapturePlan:
    """The budget's decision for one capture: the `view`, a `LayerPlan` per tag (`layers`),
    the reduction `note` (None when nothing is pooled or dropped) and `met` (whether it fits).
    """

    view: View
    layers: dict
    note: str = None
    met: bool = True


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
      start: The `View` the user's limits ask for (`max_examples`, `max_heads`).
      shapes: `(batch, heads, query_length, key_length)` of each layer, in capture order.
      fits: `fits(view) -> bool`, monotone: a smaller view fits whenever a larger one does.

    Returns `(view, met)`; when even one example, one head and one layer do not fit, the
    smallest view with `met=False`.
    """
    whole = dataclasses.replace(start, pooling=False)
    if fits(whole):
        return whole, True
    one = dataclasses.replace(whole, examples=1)
    if fits(one):
        return one, True
    view = dataclasses.replace(one, pooling=True)
    if fits(view):
        return view, True

    most_heads = max(heads for _, heads, _, _ in shapes)
    head_limit = most_heads if view.heads is None else min(view.heads, most_heads)
    heads = _largest(1, head_limit, lambda k: fits(dataclasses.replace(view, heads=k)))
    if heads is not None:
        return dataclasses.replace(view, heads=heads), True
    view = dataclasses.replace(view, heads=1)

    count = len(shapes)
    layers = _largest(
        1, count, lambda m: fits(dataclasses.replace(view, layers=spread(count, m)))
    )
    if layers is not None:
        return dataclasses.replace(view, layers=spread(count, layers)), True
    view = dataclasses.replace(view, layers=spread(count, 1))
    return view, fits(view)


def kept_shape(shape, view):
    """`(examples, heads, query_length, key_length)` a view keeps of a layer of `shape`."""
    batch, heads, tq, tk = (int(n) for n in shape)
    return (min(batch, view.examples), heads if view.heads is None else min(heads, view.heads),
            tq, tk)


def _kept_calls(calls, view):
    return calls if view.layers is None else [calls[i] for i in view.layers]


def _tokens_bytes(lists, examples):
    if lists is None:
        return 0
    return len(json.dumps(list(lists[:examples]), ensure_ascii=False).encode("utf-8"))


def _fixed_bytes(call, examples, heads, note, images_shape, statistics):
    """Bytes of a layer's summary besides its payloads: tag, note, tokens, images, scalars."""
    total = _TAG_OVERHEAD + 2 * len(call.tag) + len((note or "").encode("utf-8"))
    total += _tokens_bytes(call.query_tokens, examples)
    total += _tokens_bytes(call.key_tokens, examples)
    if call.layout is not None and images_shape is not None:
        _, height, width, channels = images_shape
        total += examples * (compress_bound(height * (width * channels + 1)) + _IMAGE_OVERHEAD)
    if statistics:
        total += len(stats.STATISTICS) * heads * (_SCALAR_BYTES + len(call.tag))
    return total


def full_bytes(shape):
    """The most payload bytes a FULL layer of kept `shape` `(b, h, tq, tk)` takes."""
    examples, heads, tq, tk = shape
    return examples * heads * (encoding.payload_bound(tq * tk) + _BLOB_OVERHEAD)


def pooled_bytes(shape, block, windows):
    """The most payload bytes a POOLED layer of kept `shape` takes (header scales included)."""
    examples, heads = shape[:2]
    blobs = examples * heads * (1 + len(windows))
    return encoding.pooled_bytes_bound(shape, block, windows) + blobs * _BLOB_OVERHEAD


def _resolve(span, length):
    """A window range with Python slice conventions (negative: from the end; None: the end)."""
    start, stop = span
    start = 0 if start is None else int(start)
    stop = length if stop is None else int(stop)
    start = start + length if start < 0 else start
    stop = stop + length if stop < 0 else stop
    return max(0, min(start, length)), max(0, min(stop, length))


def named_windows(limits, call, shape):
    """The user's windows (`Limits.windows`) that apply to `call`, resolved against `shape`:
    `((name, (q0, q1), (k0, k1)), ...)`; windows empty at this length are left out."""
    tq, tk = shape[2], shape[3]
    result = []
    for pattern, windows in limits.windows:
        path = call.tag.split("/call_")[0]
        if not (fnmatch.fnmatchcase(call.tag, pattern) or fnmatch.fnmatchcase(path, pattern)):
            continue
        for name, query, key in windows:
            q, k = _resolve(query, tq), _resolve(key, tk)
            if q[0] < q[1] and k[0] < k[1] and name not in [w[0] for w in result]:
                result.append((name, q, k))
    return tuple(result)


def pooling_for(shape, share, causal, named=()):
    """`(block, windows)` of a POOLED layer of kept `shape` within `share` bytes, or None.

    The default windows (`encoding.default_windows`) with the most rows (a power of two, at
    most 64) that fit, plus `named` windows, at the finest power-of-two block whose overview
    takes at most half of `share`.
    """
    tq = shape[2]
    rows = 1 << int(math.log2(min(encoding.MAX_DEFAULT_WINDOW_ROWS, tq)))
    while rows >= 1:
        windows = [w for w in encoding.default_windows(shape, rows, causal)
                   if w[0] not in [n[0] for n in named]] + list(named)
        block = 2
        while True:
            nq, nk = encoding.pool_grid(shape[2], block), encoding.pool_grid(shape[3], block)
            overview = shape[0] * shape[1] * encoding.payload_bound(2 * nq * nk)
            if overview <= share / 2 and pooled_bytes(shape, (block, block), windows) <= share:
                return (block, block), tuple(windows)
            if nq == 1 and nk == 1:
                break
            block *= 2
        rows //= 2
    return None


def plan_layers(calls, view, limits, note=None, images_shape=None, statistics=False):
    """`{tag: LayerPlan}` of a view, or None when even pooled layers do not fit the budget."""
    kept = _kept_calls(calls, view)
    kept_ids = {id(call) for call in kept}
    plans = {call.tag: LayerPlan("skip", tuple(call.shape), 0, 0)
             for call in calls if id(call) not in kept_ids}
    budget = limits.max_bytes_per_step
    remaining = None if budget is None else budget - sum(
        _fixed_bytes(call, *kept_shape(call.shape, view)[:2], note, images_shape, statistics)
        for call in kept)
    shapes = {id(call): kept_shape(call.shape, view) for call in kept}
    order = sorted(kept, key=lambda call: full_bytes(shapes[id(call)]))
    equal_share = None  # the share of every pooled layer, set at the first one
    for index, call in enumerate(order):
        shape = shapes[id(call)]
        causal = bool(getattr(call, "causal", False))
        named = named_windows(limits, call, shape)
        too_many = shape[0] * shape[1] * shape[2] * shape[3] > encoding.MAX_VALUES_PER_STEP
        share = None if remaining is None else remaining / (len(order) - index)
        if not named and not too_many and (share is None or full_bytes(shape) <= share):
            plans[call.tag] = LayerPlan("full", tuple(call.shape), shape[0], shape[1], causal)
            remaining = None if remaining is None else remaining - full_bytes(shape)
            continue
        if not view.pooling and not named:
            return None
        pooled_left = len(order) - index  # every later layer is pooled too: equal shares,
        # so that layers of one shape get one block size
        if remaining is not None and index and plans.get(order[index - 1].tag) is not None \
                and plans[order[index - 1].tag].mode == "pooled":
            share = equal_share
        else:
            equal_share = share = None if remaining is None else remaining / pooled_left
        chosen = pooling_for(shape, share if share is not None else budget_free(shape), causal,
                             named)
        if chosen is None:
            return None
        block, windows = chosen
        plans[call.tag] = LayerPlan("pooled", tuple(call.shape), shape[0], shape[1], causal,
                                    block, windows)
        if remaining is not None:
            remaining -= pooled_bytes(shape, block, windows)
    return plans


def budget_free(shape):
    """Bytes a pooled layer may take without a budget (named windows, or too large for one
    step in full): a quarter of what one step may hold."""
    return encoding.MAX_VALUES_PER_STEP // 4


def capture_bytes(calls, view, plans, note=None, images_shape=None, statistics=False):
    """An upper bound of the bytes a capture writes under `view` and `plans`, known before
    anything is computed.

    Args:
      calls: The capture's layer calls (`tag`, `shape`, `layout`, `query_tokens`,
        `key_tokens`, e.g. `summaries.LayerCall`).
      view: The `View`; plans: `{tag: LayerPlan}` (`plan_layers`).
      note: The reduction note every kept summary carries, or None.
      images_shape: `(batch, height, width, channels)` of the probe images, or None.
      statistics: Whether per-head statistics scalars are written too.
    """
    total = 0
    for call in _kept_calls(calls, view):
        plan = plans[call.tag]
        shape = kept_shape(call.shape, view)
        total += _fixed_bytes(call, shape[0], shape[1], note, images_shape, statistics)
        if plan.mode == "pooled":
            total += pooled_bytes(shape, plan.block, plan.windows)
        else:
            total += full_bytes(shape)
    return total


def _describe_windows(windows):
    return ", ".join("%s %d:%d x %d:%d" % (name, q[0], q[1], k[0], k[1])
                     for name, q, k in windows)


def reduction_note(calls, start, view, met, limits, probe_size, plans):
    """What a capture pools or drops, in words (None: everything is stored in full).

    `start` is the view the limits ask for, `met` whether the plan fits the budget,
    `probe_size` the number of examples in the user's probe.
    """
    parts, named = [], []
    if probe_size > view.examples:
        parts.append("examples %d of %d" % (view.examples, probe_size))
        if probe_size > limits.max_examples:
            named.append("max_examples=%d" % limits.max_examples)
    kept = _kept_calls(calls, view)
    heads_text, pooled_text = [], []
    for call in kept:
        heads = call.shape[1]
        keep_heads = kept_shape(call.shape, view)[1]
        if keep_heads < heads:
            heads_text.append("heads %d of %d" % (keep_heads, heads))
        plan = plans.get(call.tag)
        if plan is not None and plan.mode == "pooled":
            pooled_text.append(
                "%dx%d positions pooled in %dx%d blocks (every position in the overview of "
                "block means and maxes; exact: %s)"
                % (call.shape[2], call.shape[3], plan.block[0], plan.block[1],
                   _describe_windows(plan.windows)))
    for texts in (heads_text, pooled_text):
        parts.extend(sorted(set(texts), key=texts.index))
    if heads_text and limits.max_heads is not None and any(
        limits.max_heads < c.shape[1] for c in kept
    ):
        named.append("max_heads=%d" % limits.max_heads)
    if len(kept) < len(calls):
        parts.append("layers %d of %d (kept: %s)"
                     % (len(kept), len(calls), ", ".join(c.tag for c in kept)))
    if not parts:
        return None
    arguments = [limit.split("=")[0] + "=" for limit in named]
    text = ", ".join(parts)
    if view != dataclasses.replace(start, pooling=False) or pooled_text:
        text += ("; %s by the budget max_bytes_per_step=%s (%.1f MiB), which the full capture "
                 "would exceed" % ("set in part" if named else "set",
                                   limits.max_bytes_per_step,
                                   (limits.max_bytes_per_step or 0) / 2**20))
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
    if pooled_text:
        text += "; windows= names more exact windows"
    return text


class Budget:
    """Chooses the `CapturePlan` of each capture under `Limits`, once per set of layer shapes.

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
        self._plans = {}  # (what plan_for keys on, of every call of a capture) -> CapturePlan

    def plan_for(self, calls):
        """The `CapturePlan` of a capture's layer calls (each with `tag`, `shape`, `causal`,
        `layout`, `query_tokens`, `key_tokens`)."""
        # Everything a plan is made of: the first capture plans from static shapes before
        # its masks show which layers are causal, then again from what it captured.
        key = tuple((call.tag, tuple(call.shape), bool(call.causal), call.layout is not None,
                     _tokens_bytes(call.query_tokens, None), _tokens_bytes(call.key_tokens, None))
                    for call in calls)
        if key not in self._plans:
            if len(self._plans) > self._CACHED:
                self._plans.clear()
            self._plans[key] = self._choose(calls)
        return self._plans[key]

    def view_for(self, calls):
        """`(View, note)` of `plan_for(calls)`."""
        plan = self.plan_for(calls)
        return plan.view, plan.note

    def _choose(self, calls):
        limits = self.limits
        start = View(examples=min(call.shape[0] for call in calls), heads=limits.max_heads)
        found = {}

        def fits(view):
            plans = self._plans_of(calls, start, view)
            if plans is None:
                return False
            if limits.max_bytes_per_step is None:
                found[view] = plans
                return True
            note = reduction_note(calls, start, view, True, limits, self.probe_size, plans)
            size = capture_bytes(calls, view, plans, note, self.images_shape, self.statistics)
            if size <= limits.max_bytes_per_step:
                found[view] = plans
                return True
            return False

        view, met = choose_view(start, [call.shape for call in calls], fits)
        plans = found.get(view) or self._plans_of(calls, start, view) or {
            call.tag: LayerPlan("skip", tuple(call.shape), 0, 0) for call in calls}
        note = reduction_note(calls, start, view, met, limits, self.probe_size, plans)
        return CapturePlan(view, plans, note, met)

    def _plans_of(self, calls, start, view):
        # The note's length counts against the budget; plan with the longest note it can have.
        draft = plan_layers(calls, view, self.limits, "x" * _NOTE_ALLOWANCE,
                            self.images_shape, self.statistics)
        return draft
