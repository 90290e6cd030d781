"""What one capture writes: a `SummaryItem` per kept layer call, and per-head statistics.

A `LayerCall` is one captured layer call with everything its summary needs besides the view:
scores, mask, the tokens of both axes (one full-length list per example, or None) and the
image patch layout. `summary_item` cuts it to its `budget.LayerPlan` (encoding a pooled
layer); `head_statistics` turns an item
into the scalars `<tag>/<statistic>/head_<h>`.

Example:

```python
call = LayerCall("encoder/mha", scores, mask=None, query_tokens=lists, key_tokens=lists)
plan = budget.Budget(budget.Limits(), probe_size=2).plan_for([call])
item = summary_item(call, plan.layers[call.tag], plan.note, kept_layers=1, layers=1,
                    probe_size=2)
tb_attention_plugin.attention(item.tag, item.weights, step=step, **item.summary_options())
```
"""

import dataclasses
import math
import warnings

import numpy as np

from tb_attention_plugin import stats



@dataclasses.dataclass(frozen=True, eq=False)
class LayerCall:
    """One captured layer call (or, for planning, its shape), ready to be sized and written.

    `scores` `[B, H, Tq, Tk]` (None for a pooled layer or a shape only), `mask` of the same
    shape or None; `query_tokens`/`key_tokens` one list of `Tq`/`Tk` strings per example, or
    None; `layout` `(grid, prefix_tokens)` when the keys are the probe images' patches, else
    None; `shape` the full `(B, H, Tq, Tk)` (from `scores` when not given); `causal`;
    `pooled` the reductions of a pooled layer (`capture.AttentionRecord.pooled`); `max_logit`
    `[B, H]` or None; `kv_heads` the key/value heads of a grouped-query layer
    (`capture.AttentionRecord.kv_heads`) or None; `query_special`/`key_special` one list of
    `Tq`/`Tk` booleans per example (special and padding tokens), or None.
    """

    tag: str
    scores: np.ndarray = None
    mask: np.ndarray = None
    query_tokens: list = None
    key_tokens: list = None
    layout: tuple = None
    full_shape: tuple = None
    causal: bool = False
    pooled: dict = None
    max_logit: np.ndarray = None
    kv_heads: int = None
    query_special: list = None
    key_special: list = None

    @property
    def shape(self):
        if self.full_shape is not None:
            return tuple(int(n) for n in self.full_shape)
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
    blobs: list = None  # already encoded (pooled layers): written as they are
    pooled: dict = None
    full_shape: tuple = None
    max_logit: np.ndarray = None
    kv_group_size: int = None
    query_special: list = None
    key_special: list = None

    def summary_options(self):
        """Keyword arguments of `summary.attention` and `AttentionWriter.attention`."""
        return {"query_tokens": self.query_tokens, "key_tokens": self.key_tokens,
                "mask": self.mask, "images": self.images, "image_grid": self.image_grid,
                "prefix_tokens": self.prefix_tokens, "reduced": self.reduced,
                "kv_group_size": self.kv_group_size, "query_special": self.query_special,
                "key_special": self.key_special}


def _cropped(lists, examples):
    return None if lists is None else list(lists[:examples])


def summary_item(call, plan, note, kept_layers, layers, probe_size, images=None,
                 max_bytes_per_step=None):
    """The `SummaryItem` of `call` under its `budget.LayerPlan` (`plan`).

    `note` (the budget's reduction note, None when nothing is pooled or dropped),
    `kept_layers` of `layers`, `probe_size` and `max_bytes_per_step` go into the header's
    `reduced` field; `images` are the probe images drawn under a patch layout. A pooled layer
    is encoded here (`encoding.encode_pooled_step`): the item carries its blobs.
    """
    batch, heads, tq, tk = call.shape
    examples, keep_heads = plan.examples, plan.heads
    reduced = None
    if note:
        reduced = {
            "source_shape": [probe_size, heads, tq, tk],
            "examples": examples,
            "heads": keep_heads,
            "tokens": None,
            "layers": [kept_layers, layers],
            "max_bytes_per_step": max_bytes_per_step,
            "note": note,
        }
    grid, prefix = (None, None) if call.layout is None else call.layout
    common = dict(
        tag=call.tag, query_tokens=_cropped(call.query_tokens, examples),
        key_tokens=_cropped(call.key_tokens, examples),
        images=None if call.layout is None else images[:examples], image_grid=grid,
        prefix_tokens=prefix, reduced=reduced,
        max_logit=None if call.max_logit is None else call.max_logit[:examples, :keep_heads],
        # Kept heads are the layer's first: the group size holds for them as for all.
        kv_group_size=None if call.kv_heads is None else heads // call.kv_heads,
        query_special=_cropped(call.query_special, examples),
        key_special=_cropped(call.key_special, examples))
    if plan.mode == "pooled":
        return _pooled_item(call, plan, common)
    weights = call.scores[:examples, :keep_heads]
    mask = call.mask
    if mask is not None:
        mask = mask[:examples, :keep_heads]
        if mask.all():
            mask = None
    return SummaryItem(weights=weights, mask=mask, **common)


def _pooled_item(call, plan, common):
    """The item of a pooled layer, its step encoded (`common`: the item's other fields)."""
    from tb_attention_plugin import encoding

    examples, keep_heads = plan.examples, plan.heads
    _, _, tq, tk = call.shape
    pooled = call.pooled
    if pooled is None:  # full scores at hand: pool them as the blocked capture would
        from tb_attention_plugin.logger import capture

        pooled = capture._pooled_from_full(call.scores, call.mask, plan)
    means = pooled["means"][:examples, :keep_heads]
    maxes = pooled["maxes"][:examples, :keep_heads]
    windows = [(name, q, k, w[:examples, :keep_heads]) for name, q, k, w in pooled["windows"]]
    options = {key: value for key, value in common.items() if key not in ("tag", "max_logit")}
    blobs = encoding.encode_pooled_step(
        [examples, keep_heads, tq, tk], pooled["block"], means, maxes, windows, **options)
    return SummaryItem(weights=None, blobs=blobs, full_shape=(examples, keep_heads, tq, tk),
                       pooled={"block": pooled["block"], "means": means, "maxes": maxes,
                               "windows": windows}, **common)


def head_statistics(item):
    """`{"<tag>/<statistic>/head_<h>": value}` of an item (NaN statistics left out).

    A pooled item's statistics come from its overview and exact windows
    (`stats.pooled_statistics`): rows of windows over all keys exactly, others from blocks.
    """
    grid, prefix = item.image_grid, item.prefix_tokens or 0
    if item.pooled is not None:
        pooled = item.pooled
        shape = list(item.full_shape)
        windows = pooled["windows"]
        exact = [(q[0], w) for name, q, k, w in windows if k == (0, shape[3])]
        first_key = next((w[..., 0] for name, q, k, w in windows
                          if name == "first_key" and q == (0, shape[2]) and k == (0, 1)), None)
        result = stats.pooled_statistics(pooled["means"], pooled["maxes"], pooled["block"],
                                         shape, exact_rows=exact, image_grid=grid,
                                         first_key=first_key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN heads stay NaN
            values = {name: np.nanmean(np.asarray(v, np.float64), axis=0)
                      for name, v in result.items()}
    else:
        weights = item.weights if item.mask is None else np.where(item.mask, item.weights,
                                                                   np.nan)
        if grid is not None and weights.shape[-2] != weights.shape[-1]:
            grid, prefix = None, 0
        values = stats.head_statistics(weights, image_grid=grid, prefix_tokens=prefix)
    return {
        "%s/%s/head_%d" % (item.tag, name, head): float(value)
        for name, values_ in values.items()
        for head, value in enumerate(np.ravel(values_))
        if value is not None and not math.isnan(float(value))
    }
