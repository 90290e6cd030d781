"""The per-capture byte budget of `AttentionLogger`: which part of a capture to keep.

A capture is every logged layer at one step. Its size is bounded BEFORE encoding from the
shapes alone: a stored value is one byte (u8 codes, see docs/format.md), zlib never grows a
payload by more than `compress_bound`, and headers and images are counted from what they will
hold. The bound does not depend on the weights, so the same view (the same layers, heads and
positions) is chosen at every step and steps stay comparable; measuring after encoding would
keep more on peaky steps and less on diffuse ones, and encode work only to throw it away.

Reduction order, each stage only when the previous ones cannot meet the budget:

1. examples: keep one probe example;
2. token window: keep positions `[0, t)` with the largest `t` that fits, down to
   `TOKEN_FLOOR` positions;
3. heads: keep the first `k` heads with the largest `k` that fits (heads of one layer are
   interchangeable, so the first ones are as good as any, and their labels stay the model's
   head indices);
4. layers: keep `m` evenly spaced layers, always the first and the last (depth is where
   attention patterns change), with the largest `m` that fits;
5. then the token window again below `TOKEN_FLOOR`, then a single layer.

Example:

```python
view = choose_view(View(examples=2, tokens=128, heads=None, layers=None),
                   shapes=[(2, 12, 512, 512)] * 12, fits=lambda view: size(view) <= budget)
```
"""

import dataclasses

import numpy as np

TOKEN_FLOOR = 64


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
