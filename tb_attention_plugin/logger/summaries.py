"""What one capture writes: a `SummaryItem` per kept layer call, and per-head statistics.

A `LayerCall` is one captured layer call with everything its summary needs besides the view:
scores, mask, the tokens of both axes (one full-length list per example, or None) and the
image patch layout. `summary_item` cuts it to a `budget.View`; `head_statistics` turns an item
into the scalars `<tag>/<statistic>/head_<h>`.

Example:

```python
call = LayerCall("encoder/mha", scores, mask=None, query_tokens=lists, key_tokens=lists)
item = summary_item(call, view, note=None, kept_layers=1, layers=1, probe_size=2)
tb_attention_plugin.attention(item.tag, item.weights, step=step, **item.summary_options())
```
"""

import dataclasses
import math

import numpy as np

from tb_attention_plugin import stats

from tb_attention_plugin.logger import budget


@dataclasses.dataclass(frozen=True, eq=False)
class LayerCall:
    """One captured layer call, ready to be sized and written.

    `scores` `[B, H, Tq, Tk]`, `mask` of the same shape or None; `query_tokens`/`key_tokens`
    one list of `Tq`/`Tk` strings per example, or None; `layout` `(grid, prefix_tokens)` when
    the keys are the probe images' patches, else None.
    """

    tag: str
    scores: np.ndarray
    mask: np.ndarray = None
    query_tokens: list = None
    key_tokens: list = None
    layout: tuple = None

    @property
    def shape(self):
        return tuple(int(n) for n in self.scores.shape)


@dataclasses.dataclass(frozen=True, eq=False)
class SummaryItem:
    """One attention summary: `tag`, `weights` and the summary op's keyword arguments."""

    tag: str
    weights: np.ndarray
    mask: np.ndarray = None
    query_tokens: list = None
    key_tokens: list = None
    images: np.ndarray = None
    image_grid: list = None
    prefix_tokens: int = None
    reduced: dict = None

    def summary_options(self):
        """Keyword arguments of `summary.attention` and `AttentionWriter.attention`."""
        return {"query_tokens": self.query_tokens, "key_tokens": self.key_tokens,
                "mask": self.mask, "images": self.images, "image_grid": self.image_grid,
                "prefix_tokens": self.prefix_tokens, "reduced": self.reduced}


def _cropped(lists, examples, keep):
    return None if lists is None else [example[:keep] for example in lists[:examples]]


def summary_item(call, view, note, kept_layers, layers, probe_size, images=None,
                 max_bytes_per_step=None):
    """The `SummaryItem` of `call` under `view`.

    `note` (the budget's reduction note, None when nothing is dropped), `kept_layers` of
    `layers`, `probe_size` and `max_bytes_per_step` go into the header's `reduced` field;
    `images` are the probe images drawn under a patch layout.
    """
    batch, heads, tq, tk = call.shape
    examples, keep_heads, keep_tq, keep_tk = budget.kept_shape(call.shape, view,
                                                               call.layout is not None)
    weights = call.scores[:examples, :keep_heads, :keep_tq, :keep_tk]
    mask = call.mask
    if mask is not None:
        mask = mask[:examples, :keep_heads, :keep_tq, :keep_tk]
        if mask.all():
            mask = None
    reduced = None
    if note:
        reduced = {
            "source_shape": [probe_size, heads, tq, tk],
            "examples": examples,
            "heads": keep_heads,
            "tokens": [0, view.tokens] if (keep_tq < tq or keep_tk < tk) else None,
            "layers": [kept_layers, layers],
            "max_bytes_per_step": max_bytes_per_step,
            "note": note,
        }
    grid, prefix = (None, None) if call.layout is None else call.layout
    return SummaryItem(
        tag=call.tag,
        weights=weights,
        mask=mask,
        query_tokens=_cropped(call.query_tokens, examples, keep_tq),
        key_tokens=_cropped(call.key_tokens, examples, keep_tk),
        images=None if call.layout is None else images[:examples],
        image_grid=grid,
        prefix_tokens=prefix,
        reduced=reduced,
    )


def head_statistics(item):
    """`{"<tag>/<statistic>/head_<h>": value}` of an item (NaN statistics left out)."""
    weights = item.weights if item.mask is None else np.where(item.mask, item.weights, np.nan)
    grid, prefix = item.image_grid, item.prefix_tokens or 0
    if grid is not None and weights.shape[-2] != weights.shape[-1]:
        grid, prefix = None, 0
    result = stats.head_statistics(weights, image_grid=grid, prefix_tokens=prefix)
    return {
        "%s/%s/head_%d" % (item.tag, name, head): float(value)
        for name, values in result.items()
        for head, value in enumerate(values)
        if not math.isnan(float(value))
    }
