"""Attention of one `MultiHeadAttention` call computed in query blocks, reduced as it goes.

A 32-head layer at 8192 tokens has an 8.6 GB float32 score tensor; a capture must never hold
it. `blocked_attention` runs inside the patched `_compute_attention` of a POOLED layer (see
`budget.py`): it computes the layer's own attention (its `_inverse_sqrt_key_dim` query
scaling, `_dot_product_equation`, `_masked_softmax` and `_combine_equation`; no dropout, the
probe runs in inference mode) for a few query rows at a time over every head and key, reduces
each chunk to what is stored and drops it:

- the block sums, maxes and unmasked counts of the pooled overview (means = sums / counts);
- the rows of the exact windows;
- the largest pre-softmax logit of each head (over unmasked positions);

and returns the layer output (`softmax(scores) @ V`, combined per chunk), which equals the
unpatched layer's output up to float rounding. Chunks hold at most `CHUNK_BYTES` of scores
(several temporaries of that size live at once: softmax, mask, logits). In a traced
TensorFlow graph each chunk waits for the previous one, so chunks never run side by side.

Example (what `capture.py` does for a pooled layer):

```python
output, reduced = blocked_attention(layer, query, key, value, attention_mask,
                                    block=(16, 16), windows=[("last_queries", (960, 1024),
                                                              (0, 1024))])
means = reduced["sums"] / reduced["counts"]     # after conversion to numpy
```
"""

import numpy as np

CHUNK_BYTES = 32 * 2**20  # float32 scores of one chunk: [B, H, rows, Tk]


def supports(layer, query, key, value):
    """True when `blocked_attention` reproduces this layer's `_compute_attention`.

    Plain `MultiHeadAttention` math (and subclasses that keep it, e.g. keras-hub's
    `CachedMultiHeadAttention`): rank-4 projected tensors `[B, T, N, D]` with attention over
    the sequence axis, and the helper methods and equations this module calls.
    """
    import keras

    if not isinstance(layer, keras.layers.MultiHeadAttention):
        return False
    needed = ("_dot_product_equation", "_combine_equation", "_masked_softmax",
              "_inverse_sqrt_key_dim")
    if not all(hasattr(layer, name) for name in needed):
        return False
    if len(query.shape) != 4 or len(key.shape) != 4 or len(value.shape) != 4:
        return False
    if tuple(getattr(layer, "_attention_axes", (1,))) != (1,):
        return False
    return all(isinstance(n, int) for n in tuple(query.shape) + tuple(key.shape))


def chunk_rows(batch, heads, key_length, block_rows):
    """Query rows per chunk: a power of two that divides `block_rows` or that it divides,
    with at most `CHUNK_BYTES` of float32 scores (at least one row)."""
    per_row = max(1, batch * heads * key_length * 4)
    rows = max(1, CHUNK_BYTES // per_row)
    rows = 1 << (rows.bit_length() - 1)  # a power of two
    if block_rows & (block_rows - 1) == 0:  # power-of-two blocks: rows | bq or bq | rows
        return rows
    return block_rows if rows >= block_rows else 1


def _slice_mask(mask, start, stop):
    """Rows `[start, stop)` of a `[B, Tq, Tk]` or `[B, N, Tq, Tk]` mask (axis -2)."""
    if mask is None:
        return None
    if mask.shape[-2] == 1:
        return mask
    return mask[..., start:stop, :]


def _serialise(tensor, previous):
    """In a traced TF graph: `tensor` computed only after `previous` (bounded memory)."""
    import keras

    if previous is None or keras.backend.backend() != "tensorflow":
        return tensor
    import tensorflow as tf

    if tf.executing_eagerly():
        return tensor
    with tf.control_dependencies(list(previous) if isinstance(previous, tuple) else [previous]):
        return tf.identity(tensor)


def _block_reduce(weights, mask, bq, bk, nk, tk):
    """Sums and maxes over `[bq, bk]` blocks of `weights [B, H, r, Tk]` (r a multiple of bq, or
    smaller than bq: one partial block), and unmasked counts from `mask` (None: all)."""
    from keras import ops

    b, h, r, _ = weights.shape
    rows_per = min(bq, r)
    nb = r // rows_per
    pad = nk * bk - tk
    if pad:
        weights = ops.pad(weights, [[0, 0], [0, 0], [0, 0], [0, pad]])
    grid = ops.reshape(weights, (b, h, nb, rows_per, nk, bk))
    sums = ops.sum(grid, axis=(3, 5))
    maxes = ops.max(grid, axis=(3, 5))
    counts = None
    if mask is not None:
        m = ops.cast(mask, "float32")
        while len(m.shape) < 4:
            m = ops.expand_dims(m, 1)
        m = ops.broadcast_to(m, (m.shape[0], m.shape[1], r, tk))
        if pad:
            m = ops.pad(m, [[0, 0], [0, 0], [0, 0], [0, pad]])
        counts = ops.sum(ops.reshape(m, (m.shape[0], m.shape[1], nb, rows_per, nk, bk)),
                         axis=(3, 5))
    return sums, maxes, counts


def max_logit(layer, query, key, mask):
    """`[B, N]` largest pre-softmax logit of each head over unmasked positions, in chunks of
    query rows (for FULL layers, whose scores come from the layer itself)."""
    from keras import ops

    batch, tq, heads, _ = query.shape
    tk = key.shape[1]
    mask = None if mask is None else ops.cast(mask, "bool")
    scaled = ops.multiply(query, ops.cast(layer._inverse_sqrt_key_dim, query.dtype))
    rows = chunk_rows(batch, heads, tk, 1)
    result = None
    for start in range(0, tq, rows):
        stop = min(start + rows, tq)
        scores = ops.einsum(layer._dot_product_equation, key, scaled[:, start:stop])
        chunk_mask = _slice_mask(mask, start, stop)
        if chunk_mask is not None:
            while len(chunk_mask.shape) < 4:
                chunk_mask = ops.expand_dims(chunk_mask, 1)
            scores = ops.where(chunk_mask, scores, ops.cast(float("-inf"), scores.dtype))
        chunk = ops.max(ops.cast(scores, "float32"), axis=(2, 3))
        result = chunk if result is None else ops.maximum(result, chunk)
    return result


def static_counts(tq, tk, bq, bk):
    """Positions per block `[nq, nk]` without a mask (edge blocks are shorter)."""
    rows = np.minimum(bq, tq - np.arange(0, tq, bq))
    cols = np.minimum(bk, tk - np.arange(0, tk, bk))
    return np.outer(rows, cols).astype(np.float32)


def _causal_rows(start, stop, tk):
    """`[1, stop-start, tk]` bool: query row i sees keys j <= i (Keras' causal mask, per chunk)."""
    from keras import ops

    rows = ops.expand_dims(ops.arange(start, stop, dtype="int32"), 1)
    cols = ops.expand_dims(ops.arange(0, tk, dtype="int32"), 0)
    return ops.expand_dims(ops.greater_equal(rows, cols), 0)


def blocked_attention(layer, query, key, value, attention_mask, block, windows, causal=False,
                      on_chunk=None):
    """The layer's attention output and its reductions, without the full score tensor.

    Args:
      layer: the `MultiHeadAttention` (see `supports`).
      query, key, value: the projected `[B, T, N, D]` tensors `_compute_attention` receives.
      attention_mask: bool `[B, Tq, Tk]` (or broadcastable rows; `1` query rows allowed) or
        None, causal mask already combined in.
      block: `(bq, bk)` positions per overview block.
      windows: `[(name, (q0, q1), (k0, k1))]` exact windows.
      causal: also hide future keys (`use_causal_mask=True`), built per chunk: the full
        `[Tq, Tk]` causal mask (and Keras' int32 temporaries of that size) never exists.
      on_chunk: None, or `on_chunk(start, stop, weights, mask)`, called in query order with
        each chunk's float32 weights `[B, N, stop-start, Tk]` and its bool mask (broadcastable,
        causal part included; None without one): the health pass measures pooled layers from
        it (`chunk_feed.py`). What it returns (a tensor, or None) the next chunk waits for.

    Returns:
      `(output, reduced)`: the `[B, Tq, N, Dv]` output and a dict of tensors: `sums`,
      `maxes` `[B, N, nq, nk]`, `counts` `[B or 1, N or 1, nq, nk]` (absent without a mask),
      `max_logit` `[B, N]`, and per window `window_<i>` `[B, N, q1-q0, k1-k0]` with its mask
      `window_mask_<i>` (absent without a mask).
    """
    from keras import ops

    bq, bk = block
    batch, tq, heads, _ = query.shape
    tk = key.shape[1]
    nk = -(-tk // bk)
    mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
    scaled = ops.multiply(query, ops.cast(layer._inverse_sqrt_key_dim, query.dtype))
    rows = chunk_rows(batch, heads, tk, bq)
    outputs, block_parts = [], {}
    window_parts = [[] for _ in windows]
    window_mask_parts = [[] for _ in windows]
    max_logit, previous = None, None
    for start in range(0, tq, rows):
        stop = min(start + rows, tq)
        q = _serialise(scaled[:, start:stop], previous)
        scores = ops.einsum(layer._dot_product_equation, key, q)  # [B, N, r, Tk]
        chunk_mask = _slice_mask(mask, start, stop)
        if causal:
            rows_mask = _causal_rows(start, stop, tk)
            chunk_mask = rows_mask if chunk_mask is None else ops.logical_and(chunk_mask,
                                                                               rows_mask)
        if chunk_mask is not None:
            expanded = chunk_mask
            while len(expanded.shape) < 4:
                expanded = ops.expand_dims(expanded, 1)
            logits = ops.where(expanded, scores, ops.cast(float("-inf"), scores.dtype))
        else:
            logits = scores
        chunk_max = ops.max(ops.cast(logits, "float32"), axis=(2, 3))
        max_logit = chunk_max if max_logit is None else ops.maximum(max_logit, chunk_max)
        weights = layer._masked_softmax(scores, chunk_mask)
        outputs.append(ops.einsum(layer._combine_equation, weights, value))
        weights32 = ops.cast(weights, "float32")
        fed = None if on_chunk is None else on_chunk(start, stop, weights32, chunk_mask)
        for i, (_, (q0, q1), (k0, k1)) in enumerate(windows):
            a, b = max(q0, start), min(q1, stop)
            if a < b:
                window_parts[i].append(weights32[:, :, a - start:b - start, k0:k1])
                if chunk_mask is not None:
                    part = chunk_mask if chunk_mask.shape[-2] == 1 else \
                        chunk_mask[..., a - start:b - start, :]
                    while len(part.shape) < 4:
                        part = ops.expand_dims(part, 1)
                    part = ops.broadcast_to(part, (part.shape[0], part.shape[1], b - a, tk))
                    window_mask_parts[i].append(part[..., k0:k1])
        # Overview blocks: a chunk holds whole blocks (rows >= bq: the last chunk's rows are
        # padded with zero weights, masked) or part of one block (rows < bq).
        r = stop - start
        pad_rows = (-(-r // bq) * bq - r) if rows >= bq else 0
        w, m = weights32, chunk_mask
        if pad_rows:
            w = ops.pad(w, [[0, 0], [0, 0], [0, pad_rows], [0, 0]])
            if m is not None:  # without a mask the counts are static: padding adds nothing
                if m.shape[-2] == 1:
                    m = ops.broadcast_to(m, tuple(m.shape[:-2]) + (r, tk))
                m = ops.pad(ops.cast(m, "float32"),
                            [[0, 0]] * (len(m.shape) - 2) + [[0, pad_rows], [0, 0]])
        sums, maxes, counts = _block_reduce(w, m, bq, bk, nk, tk)
        first = start // bq
        for j in range(sums.shape[2]):
            part = (sums[:, :, j], maxes[:, :, j], None if counts is None else counts[:, :, j])
            if first + j in block_parts:
                s, x, c = block_parts[first + j]
                part = (s + part[0], ops.maximum(x, part[1]),
                        None if c is None else c + part[2])
            block_parts[first + j] = part
        previous = sums if fed is None else (sums, fed)
    reduced = {
        "sums": ops.stack([block_parts[j][0] for j in sorted(block_parts)], axis=2),
        "maxes": ops.stack([block_parts[j][1] for j in sorted(block_parts)], axis=2),
        "max_logit": max_logit,
    }
    if any(block_parts[j][2] is not None for j in block_parts):
        reduced["counts"] = ops.stack([block_parts[j][2] for j in sorted(block_parts)], axis=2)
    for i in range(len(windows)):
        reduced["window_%d" % i] = ops.concatenate(window_parts[i], axis=2)
        if window_mask_parts[i]:
            reduced["window_mask_%d" % i] = ops.concatenate(window_mask_parts[i], axis=2)
    output = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=1)
    return output, reduced


def finish(reduced, shape, block, windows, examples):
    """Numpy means, maxes, windows (NaN where masked) and max logits of `examples` examples.

    `reduced` holds the numpy values of `blocked_attention`'s dict; `shape` is `[B, N, Tq, Tk]`.
    Returns `(means, maxes, [(name, q, k, weights)], max_logit)`.
    """
    batch, heads, tq, tk = shape
    bq, bk = block
    sums = np.asarray(reduced["sums"], np.float32)[:examples]
    maxes = np.asarray(reduced["maxes"], np.float32)[:examples]
    if "counts" in reduced:
        counts = np.broadcast_to(np.asarray(reduced["counts"], np.float32)[:examples],
                                 sums.shape)
    else:
        counts = np.broadcast_to(static_counts(tq, tk, bq, bk), sums.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
    maxes = np.where(counts > 0, maxes, np.nan).astype(np.float32)
    kept = []
    for i, (name, q, k) in enumerate(windows):
        weights = np.array(reduced["window_%d" % i], np.float32)[:examples]
        window_mask = reduced.get("window_mask_%d" % i)
        if window_mask is not None:
            window_mask = np.broadcast_to(np.asarray(window_mask, bool)[:examples],
                                          weights.shape)
            weights = np.where(window_mask, weights, np.nan).astype(np.float32)
        kept.append((name, tuple(q), tuple(k), weights))
    max_logit = np.asarray(reduced["max_logit"], np.float32)[:examples]
    return means, maxes, kept, max_logit
