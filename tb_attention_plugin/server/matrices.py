"""Decoded matrices of one example at one step, as the routes hand them out.

A full step gives one float32 `[Tq, Tk]` matrix per head (`full_matrix`); a pooled step gives
what it stores instead (`pooled_arrays`): its overview (block means and maxes), the token range
of each block, and each exact window. `head="mean"` averages the heads with `mean_over_heads`,
as `/matrix` does. Every blob is read through `reader.AttentionReader`.

Example:

```python
header = reader.header(ctx, eid, run, tag, datum)
if encoding.is_pooled(header):
    arrays = pooled_arrays(reader, ctx, eid, run, tag, datum, header, example=0, head="mean")
    arrays["means"].shape, arrays["window_names"]   # (nq, nk), ['last_queries', ...]
else:
    matrix = full_matrix(reader, ctx, eid, run, tag, datum, example=0, head=2)
```
"""

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin.server.errors import NotFound


def mean_over_heads(weights):
    """Mean of `[heads, Tq, Tk]` weights over the heads that attend each position.

    `weights` is an array or any sequence of float32 `[Tq, Tk]` heads (NaN = masked); they are
    summed one head at a time in float64, without stacking them. A position masked in some heads
    averages the others; it is NaN (masked) only where every head masks it. Heads of one layer
    share the padding and causal masks in practice, so this equals the plain mean wherever
    anything is attended.

    >>> nan = float("nan")
    >>> mean_over_heads(np.array([[[0.25, nan]], [[0.75, nan]]], np.float32)).tolist()
    [[0.5, nan]]
    """
    total = count = None
    for head in weights:
        attended = ~np.isnan(head)
        if total is None:
            total = np.zeros(head.shape, np.float64)
            count = np.zeros(head.shape, np.int64)
        total += np.where(attended, head, np.float32(0))
        count += attended
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.where(count > 0, mean, np.nan).astype(np.float32)


def full_matrix(reader, ctx, eid, run, tag, datum, example, head):
    """float32 `[Tq, Tk]` of one head (or `head="mean"`) of a full step, NaN where masked.

    A pooled step has no full matrix: `NotFound` says so (read it with `pooled_arrays`).
    """
    header = reader.header(ctx, eid, run, tag, datum)
    if encoding.is_pooled(header):
        raise NotFound("run %r tag %r step %d is stored as an overview: no full matrix"
                       % (run, tag, datum.step))
    check_example(header, example)
    if head == "mean":
        return mean_over_heads(reader.example_weights(ctx, eid, run, tag, datum, header, example))
    _, codes, scale, _ = reader.header_and_head(ctx, eid, run, tag, datum, example, head)
    return encoding.codes_to_weights(codes, scale)


def pooled_arrays(reader, ctx, eid, run, tag, datum, header, example, head):
    """What a pooled step stores of one head (or `head="mean"`), as named numpy arrays.

    Returns a dict (docs/http_api.md, `/export`): `means` and `maxes` float32 `[nq, nk]`;
    `block` int64 `[bq, bk]`; `query_blocks` int64 `[nq, 2]` and `key_blocks` `[nk, 2]`, the
    half-open token range of each block row and column; `window_names` (unicode `[W]`),
    `window_ranges` int64 `[W, 4]` (`q0, q1, k0, k1`, half-open) and `window<i>` float32
    `[q1-q0, k1-k0]`, the exact weights of window i. NaN = masked everywhere.
    """
    check_example(header, example)
    heads = None if head == "mean" else [head]
    overview = reader.example_parts(ctx, eid, run, tag, datum, header, example, None, heads)
    (tq, tk), (bq, bk) = header["shape"][2:], header["pooled"]["block"]
    windows = header.get("windows") or []
    arrays = {
        "means": mean_over_heads(means for means, _ in overview),
        "maxes": mean_over_heads(maxes for _, maxes in overview),
        "block": np.array([bq, bk], np.int64),
        "query_blocks": block_ranges(tq, bq),
        "key_blocks": block_ranges(tk, bk),
        "window_names": np.array([str(w["name"]) for w in windows], dtype=np.str_),
        "window_ranges": np.array([w["query"] + w["key"] for w in windows],
                                  np.int64).reshape(-1, 4),
    }
    for index, entry in enumerate(windows):
        parts = reader.example_parts(ctx, eid, run, tag, datum, header, example, entry["name"],
                                     heads)
        arrays["window%d" % index] = mean_over_heads(parts)
    return arrays


def block_ranges(tokens, block):
    """int64 `[ceil(tokens / block), 2]`: each block's half-open token range (the last may be
    short).

    >>> block_ranges(5, 2).tolist()
    [[0, 2], [2, 4], [4, 5]]
    """
    starts = np.arange(0, tokens, block, dtype=np.int64)
    return np.stack([starts, np.minimum(starts + block, tokens)], axis=1)


def check_example(header, example):
    """`NotFound` when the step `header` describes has no example number `example`."""
    batch = header["shape"][0]
    if example >= batch:
        raise NotFound("example %d out of range (batch %d)" % (example, batch))
