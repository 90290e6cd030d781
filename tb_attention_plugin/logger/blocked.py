"""Attention of one layer call computed in query chunks, reduced as it goes.

A 32-head layer at 8192 tokens has an 8.6 GB float32 score tensor; a capture must never hold
it. For a POOLED layer (see `budget.py`) the capture runs the layer's own attention math a few
query rows at a time over every head and key, reduces each chunk to what is stored and drops it:

- the block sums, maxes and unmasked counts of the pooled overview (means = sums / counts);
- the rows of the exact windows;
- the largest pre-softmax logit of each head (over unmasked positions);

and returns the layer output, computed per chunk, which equals the unpatched layer's output up
to float rounding. One loop (`reduce_in_chunks`) does this for every layer type; a *kernel*
holds what differs between them, always with the layer's own methods and no dropout (the probe
runs in inference mode):

- `_HeadsKernel`: `MultiHeadAttention` (and subclasses such as keras-hub's
  `CachedMultiHeadAttention`) and `GroupedQueryAttention`, inside their patched
  `_compute_attention`: the query scaling (`_inverse_sqrt_key_dim` / `_inverse_sqrt_head_dim`),
  `_dot_product_equation`, `_masked_softmax` and `_combine_equation`. `GroupedQueryAttention`
  hands `_compute_attention` keys and values already repeated from its `num_key_value_heads` to
  its `num_query_heads`, so each query head meets its group's key head;
- `_SingleKernel`: `Attention` (`score_mode` "dot" or "concat", `use_scale`) and
  `AdditiveAttention`, inside their patched `call` (`blocked_call`): the layer's
  `_calculate_scores` on a chunk of queries and its `_apply_scores` (masking bias, softmax,
  weights @ value); the causal mask is built per chunk and the query mask applied afterwards,
  as `Attention.call` does;
- the owner kernels of `adapters/` (keras-hub's layers and other layers that make their own
  probabilities): `chunked.ProbabilityRows` slices the probabilities the layer made itself,
  `fused_op.FusedRows` computes the fused op's from its arguments. They give no output (the
  layer's own is kept).

Chunks hold at most `CHUNK_BYTES` of scores (several temporaries of that size live at once:
softmax, mask, logits; for "concat" and additive scores the `[rows, Tk, dim]` sum before the
reduction over `dim` counts too). In a traced TensorFlow graph each chunk waits for the
previous one, so chunks never run side by side.

Example (what `capture.py` does for a pooled `MultiHeadAttention`):

```python
output, reduced = blocked_attention(layer, query, key, value, attention_mask,
                                    block=(16, 16), windows=[("last_queries", (960, 1024),
                                                              (0, 1024))])
means = reduced["sums"] / reduced["counts"]     # after conversion to numpy
```
"""

import numpy as np

CHUNK_BYTES = 32 * 2**20  # float32 scores of one chunk: [B, H, rows, Tk]


def _own(layer, name):
    """The layer's method `name` as its class defines it: not a capture shadow installed on
    the instance (the blocked pass replaces those shadows; it must not trigger them)."""
    return getattr(type(layer), name).__get__(layer)


def _static(*tensors):
    """True when every axis of every tensor has a known size (what the chunking needs)."""
    return all(isinstance(n, int) for t in tensors for n in tuple(t.shape))


def supports(layer, query, key, value):
    """True when `blocked_attention` reproduces this layer's `_compute_attention`.

    `MultiHeadAttention` math (and subclasses that keep its `_compute_attention`, e.g.
    keras-hub's `CachedMultiHeadAttention`) or `GroupedQueryAttention`'s: rank-4 projected tensors
    `[B, T, N, D]` with static shapes, attention over the sequence axis, and the helper
    methods and equations `_HeadsKernel` calls.
    """
    import keras

    stock = (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention)
    if not isinstance(layer, stock):
        return False
    # A subclass with its own `_compute_attention` (a position bias, another score function)
    # computes something the kernel does not: it keeps its plain attention.
    if type(layer)._compute_attention not in tuple(c._compute_attention for c in stock):
        return False
    needed = ("_dot_product_equation", "_combine_equation", "_masked_softmax")
    if not all(hasattr(layer, name) for name in needed) or _query_scale(layer) is None:
        return False
    if len(query.shape) != 4 or len(key.shape) != 4 or len(value.shape) != 4:
        return False
    if tuple(getattr(layer, "_attention_axes", (1,))) != (1,):
        return False
    return _static(query, key, value)


def supports_single(layer, inputs):
    """True when `blocked_call` reproduces this layer's `call`.

    Keras' own `Attention` and `AdditiveAttention` (not subclasses that change how scores,
    masks or outputs are computed), called on `[query, value]` or `[query, value, key]` of
    rank 3 `[B, T, dim]` with static shapes.
    """
    import keras

    attention, additive = keras.layers.Attention, keras.layers.AdditiveAttention
    cls = type(layer)
    if not isinstance(layer, attention):
        return False
    own = (cls.call is attention.call and cls._apply_scores is attention._apply_scores
           and cls._calculate_score_mask is attention._calculate_score_mask
           and cls._calculate_scores in (attention._calculate_scores,
                                         additive._calculate_scores))
    if not own or not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
        return False
    return all(len(t.shape) == 3 for t in inputs) and _static(*inputs)


def chunk_rows(batch, heads, key_length, block_rows, depth=1):
    """Query rows per chunk: a power of two that divides `block_rows` or that it divides,
    with at most `CHUNK_BYTES` of float32 scores (at least one row). `depth`: values per
    score while it is computed (the `dim` of "concat" and additive scores, else 1)."""
    per_row = max(1, batch * heads * key_length * 4 * depth)
    rows = max(1, CHUNK_BYTES // per_row)
    rows = 1 << (rows.bit_length() - 1)  # a power of two
    if block_rows & (block_rows - 1) == 0:  # power-of-two blocks: rows | bq or bq | rows
        return rows
    return block_rows if rows >= block_rows else 1


def _query_scale(layer):
    """The factor the layer multiplies its queries with (1 / sqrt of the key or head size)."""
    for name in ("_inverse_sqrt_key_dim", "_inverse_sqrt_head_dim"):
        if hasattr(layer, name):
            return getattr(layer, name)
    return None


class _HeadsKernel:
    """`MultiHeadAttention` / `GroupedQueryAttention` attention on chunks of query rows.

    `query`, `key`, `value`: the projected `[B, T, N, D]` tensors `_compute_attention`
    receives (for `GroupedQueryAttention`, keys and values already repeated to the query
    heads by its `call`).
    """

    depth = 1
    masked_weights_are_zero = True  # Keras' masked Softmax zeroes them, whole rows included

    def __init__(self, layer, query, key, value):
        import keras
        from keras import ops

        self.layer = layer
        self.key, self.value = key, value
        self.query = ops.multiply(query, ops.cast(_query_scale(layer), query.dtype))
        self.shape = (query.shape[0], query.shape[2], query.shape[1], key.shape[1])
        # MultiHeadAttention's equation takes (key, query), GroupedQueryAttention's (query, key).
        self._query_first = isinstance(layer, keras.layers.GroupQueryAttention)

    def query_rows(self, start, stop, wait):
        return wait(self.query[:, start:stop])

    def logits(self, query_rows):
        """`[B, N, r, Tk]` scaled dot products of `query_rows` with every key."""
        from keras import ops

        operands = ((query_rows, self.key) if self._query_first else (self.key, query_rows))
        return ops.einsum(self.layer._dot_product_equation, *operands)

    def attend(self, query_rows, logits, mask):
        """`(weights [B, N, r, Tk], output rows [B, r, N, Dv])` under the layer's `mask` rows."""
        from keras import ops

        weights = _own(self.layer, "_masked_softmax")(logits, mask)
        return weights, ops.einsum(self.layer._combine_equation, weights, self.value)


class _SingleKernel:
    """`Attention` / `AdditiveAttention` (one head) on chunks of query rows.

    `query` `[B, Tq, dim]`, `key` `[B, Tk, dim]`, `value` `[B, Tk, dv]` as `call` receives
    them; `training` as the call got it (`_apply_scores` drops out only when training).
    """

    # `_apply_scores` masks with a large negative bias: a row with every key masked gets
    # uniform weights there.
    masked_weights_are_zero = False

    def __init__(self, layer, query, key, value, training):
        import keras

        self.layer = layer
        self.query, self.key, self.value = query, key, value
        self.training = bool(training)
        self.shape = (query.shape[0], 1, query.shape[1], key.shape[1])
        dot = not isinstance(layer, keras.layers.AdditiveAttention) and \
            getattr(layer, "score_mode", "dot") == "dot"
        self.depth = 1 if dot else int(query.shape[-1])  # [B, r, Tk, dim] before the sum

    def query_rows(self, start, stop, wait):
        return wait(self.query[:, start:stop])

    def logits(self, query_rows):
        """`[B, 1, r, Tk]`: the layer's `_calculate_scores` of `query_rows` with every key."""
        from keras import ops

        return ops.expand_dims(_own(self.layer, "_calculate_scores")(query_rows, self.key), 1)

    def attend(self, query_rows, logits, mask):
        """`(weights [B, 1, r, Tk], output rows [B, r, dv])`: the layer's `_apply_scores`."""
        from keras import ops

        output, weights = _own(self.layer, "_apply_scores")(
            ops.squeeze(logits, 1), self.value, scores_mask=mask, training=self.training)
        return ops.expand_dims(weights, 1), output


def _slice_mask(mask, start, stop):
    """Rows `[start, stop)` of a `[B, Tq, Tk]` or `[B, N, Tq, Tk]` mask (axis -2)."""
    if mask is None:
        return None
    if mask.shape[-2] == 1:
        return mask
    return mask[..., start:stop, :]


def serialise(tensors, previous):
    """In a traced TF graph: `tensors` (a tensor or a tuple of tensors and Nones) computed
    only after `previous` (bounded memory)."""
    import keras

    if previous is None or keras.backend.backend() != "tensorflow":
        return tensors
    import tensorflow as tf

    if tf.executing_eagerly():
        return tensors
    with tf.control_dependencies(list(previous) if isinstance(previous, tuple) else [previous]):
        if isinstance(tensors, tuple):
            return tuple(None if t is None else tf.identity(t) for t in tensors)
        return tf.identity(tensors)


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
    query rows (for FULL `MultiHeadAttention` / `GroupedQueryAttention` layers, whose scores
    come from the layer itself)."""
    return chunked_max_logit(_HeadsKernel(layer, query, key, key), mask)


def chunked_max_logit(kernel, mask, causal=False):
    """`[B, N]` largest logit of each head of `kernel` (see `reduce_in_chunks`) where `mask`
    (and, with `causal`, the causal mask) holds, a chunk of query rows at a time, each chunk
    after the previous one in a traced graph.

    Example (an owner's logits measured before its softmax runs, `adapters/recording.py`):

    ```python
    largest = chunked_max_logit(chunked.ProbabilityRows(None, logits, mask, 1), mask)
    ```
    """
    from keras import ops

    batch, heads, tq, tk = kernel.shape
    mask = None if mask is None else ops.cast(mask, "bool")
    rows = chunk_rows(batch, heads, tk, 1)
    result = None
    for start in range(0, tq, rows):
        stop = min(start + rows, tq)
        query_rows = kernel.query_rows(start, stop, lambda t, p=result: serialise(t, p))
        chunk_mask = _chunk_mask(mask, start, stop, tk, causal)
        expanded = None if chunk_mask is None else _as_rank4(chunk_mask)
        result = _running_max(result, _masked_max(kernel.logits(query_rows), expanded))
    return result


def _as_rank4(mask):
    """A `[B, Tq, Tk]`-like mask with a head axis added (Keras' own expansion)."""
    from keras import ops

    while len(mask.shape) < 4:
        mask = ops.expand_dims(mask, 1)
    return mask


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
    """A `MultiHeadAttention` / `GroupedQueryAttention` layer's attention output and its
    reductions, without the full score tensor (what its patched `_compute_attention` returns).

    Args:
      layer: the layer (see `supports`).
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
      `(output, reduced)`: the `[B, Tq, N, Dv]` output and the reductions (`reduce_in_chunks`).
    """
    kernel = _HeadsKernel(layer, query, key, value)
    return reduce_in_chunks(kernel, attention_mask, block, windows, causal, on_chunk)


def blocked_call(layer, inputs, mask, training, use_causal_mask, block, windows, on_chunk=None):
    """An `Attention` / `AdditiveAttention` layer's `call` and its reductions, without the full
    score tensor (what its patched `call` returns; see `supports_single`).

    Args:
      layer: the layer.
      inputs, mask, training, use_causal_mask: the arguments of its `call` (`inputs`
        `[query, value]` or `[query, value, key]`, `mask` None or `[query_mask, value_mask]`).
      block, windows, on_chunk: as for `blocked_attention`.

    Returns:
      `(output, reduced)`: the `[B, Tq, dv]` output (zero at masked queries, as `call` gives
      it) and the reductions with one head axis (`reduce_in_chunks`).
    """
    from keras import ops

    layer._validate_inputs(inputs=inputs, mask=mask)
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) > 2 else value
    query_mask = mask[0] if mask else None
    value_mask = mask[1] if mask else None
    # `_calculate_score_mask`'s value part, `[B, 1, Tk]`; its causal part is built per chunk.
    scores_mask = None if value_mask is None else ops.expand_dims(
        ops.cast(value_mask, "bool"), -2)
    kernel = _SingleKernel(layer, query, key, value, training)
    output, reduced = reduce_in_chunks(kernel, scores_mask, block, windows, use_causal_mask,
                                        on_chunk)
    if query_mask is not None:
        output = ops.where(ops.expand_dims(query_mask, -1), output, 0)
    return output, reduced


def reduce_in_chunks(kernel, attention_mask, block, windows, causal, on_chunk=None):
    """The attention output of `kernel` and its reductions, a chunk of query rows at a time.

    `kernel`: what differs between layers (`_HeadsKernel`, `_SingleKernel`, the owner kernels
    of `adapters/chunked.py`): `shape` `(B, N, Tq, Tk)`, `depth`, `masked_weights_are_zero`,
    `query_rows(start, stop, wait)` (`wait(tensors)`: the same tensors, computed after the
    previous chunk in a traced graph; a kernel slices what it has waited for, so that no
    slice exists before its turn), `logits(query_rows)` (None: no logits to measure) and
    `attend(query_rows, logits, mask)` -> `(weights, output rows or None)`;
    `attention_mask`: bool, the layer's own form (`[B, Tq, Tk]` or broadcastable rows), or
    None; `causal`: also hide future keys (built per chunk); `on_chunk`: see
    `blocked_attention`.

    Returns `(output, reduced)`: the output rows concatenated along axis 1 (None when the
    kernel gives none), and a dict of tensors: `sums`, `maxes` `[B, N, nq, nk]`, `counts`
    `[B or 1, N or 1, nq, nk]` (absent without a mask), `max_logit` `[B, N]` (absent without
    logits), per window `window_<i>` `[B, N, q1-q0, k1-k0]` with its mask `window_mask_<i>`
    (absent without a mask), and `above_diagonal` (only where the kernel asks for it:
    the largest weight above the diagonal).

    Example (an owner layer's probabilities, `adapters/chunked.py`):

    ```python
    kernel = chunked.ProbabilityRows(probs, logits, mask, examples=1)
    _, reduced = reduce_in_chunks(kernel, kernel.mask, (16, 16), windows, kernel.causal)
    ```
    """
    from keras import ops

    batch, heads, tq, tk = kernel.shape
    mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
    rows = chunk_rows(batch, heads, tk, block[0], kernel.depth)
    reductions = _Reductions(block, windows, tk, rows,
                             getattr(kernel, "report_above_diagonal", False))
    outputs, max_logit, previous = [], None, None
    for start in range(0, tq, rows):
        stop = min(start + rows, tq)
        query_rows = kernel.query_rows(start, stop, lambda t, p=previous: serialise(t, p))
        scores = kernel.logits(query_rows)
        chunk_mask = _chunk_mask(mask, start, stop, tk, causal)
        expanded = None if chunk_mask is None else _as_rank4(chunk_mask)
        max_logit = _running_max(max_logit, _masked_max(scores, expanded))
        weights, output_rows = kernel.attend(query_rows, scores, chunk_mask)
        outputs.append(output_rows)
        weights32 = ops.cast(weights, "float32")
        if expanded is not None and not kernel.masked_weights_are_zero:
            # Masked positions must add nothing to a block's sum or max.
            weights32 = ops.where(expanded, weights32, 0.0)
        fed = None if on_chunk is None else on_chunk(start, stop, weights32, chunk_mask)
        sums = reductions.add(start, stop, weights32, chunk_mask)
        previous = sums if fed is None else (sums, fed)
    return _joined(outputs), reductions.result(max_logit)


def _chunk_mask(mask, start, stop, tk, causal):
    """Rows `[start, stop)` of the bool `mask` (None: none), with the causal rows when `causal`."""
    from keras import ops

    chunk_mask = _slice_mask(mask, start, stop)
    if not causal:
        return chunk_mask
    rows_mask = _causal_rows(start, stop, tk)
    return rows_mask if chunk_mask is None else ops.logical_and(chunk_mask, rows_mask)


def _masked_max(scores, expanded):
    """`[B, N]` largest of `scores` `[B, N, r, Tk]` where `expanded` (None: all) holds."""
    from keras import ops

    if scores is None:
        return None
    if expanded is not None:
        scores = ops.where(expanded, scores, ops.cast(float("-inf"), scores.dtype))
    return ops.max(ops.cast(scores, "float32"), axis=(2, 3))


def _running_max(running, value):
    from keras import ops

    if running is None or value is None:
        return value if running is None else running
    return ops.maximum(running, value)


def _joined(outputs):
    """The output rows of every chunk along axis 1, or None for kernels that give none."""
    from keras import ops

    if outputs[0] is None:
        return None
    return outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=1)


class _Reductions:
    """What a chunked pass keeps of its chunks: block sums, maxes and counts of the overview,
    the rows of the exact windows and (optionally) the largest weight above the diagonal."""

    def __init__(self, block, windows, tk, rows, above_diagonal=False):
        self.bq, self.bk = block
        self.windows, self.tk, self.rows = windows, tk, rows
        self.nk = -(-tk // self.bk)
        self.blocks = {}  # block row -> (sums, maxes, counts or None)
        self.window_parts = [[] for _ in windows]
        self.window_mask_parts = [[] for _ in windows]
        self.above = None if not above_diagonal else []

    def add(self, start, stop, weights, mask):
        """Adds the float32 weights `[B, N, r, Tk]` of rows `[start, stop)` and their mask;
        returns the chunk's block sums (what the next chunk waits for in a traced graph)."""
        for i, window in enumerate(self.windows):
            self._add_window(i, window, start, stop, weights, mask)
        if self.above is not None:
            self.above.append(_above_diagonal(weights, start, stop))
        return self._add_blocks(start, stop, weights, mask)

    def _add_window(self, i, window, start, stop, weights, mask):
        from keras import ops

        _, (q0, q1), (k0, k1) = window
        a, b = max(q0, start), min(q1, stop)
        if a >= b:
            return
        self.window_parts[i].append(weights[:, :, a - start:b - start, k0:k1])
        if mask is not None:
            part = _as_rank4(mask if mask.shape[-2] == 1 else mask[..., a - start:b - start, :])
            part = ops.broadcast_to(part, (part.shape[0], part.shape[1], b - a, self.tk))
            self.window_mask_parts[i].append(part[..., k0:k1])

    def _add_blocks(self, start, stop, weights, mask):
        """Overview blocks: a chunk holds whole blocks (rows >= bq: the last chunk's rows are
        padded with zero weights, masked) or part of one block (rows < bq)."""
        from keras import ops

        bq, r = self.bq, stop - start
        pad_rows = (-(-r // bq) * bq - r) if self.rows >= bq else 0
        if pad_rows:
            weights = ops.pad(weights, [[0, 0], [0, 0], [0, pad_rows], [0, 0]])
            if mask is not None:  # without a mask the counts are static: padding adds nothing
                if mask.shape[-2] == 1:
                    mask = ops.broadcast_to(mask, tuple(mask.shape[:-2]) + (r, self.tk))
                mask = ops.pad(ops.cast(mask, "float32"),
                               [[0, 0]] * (len(mask.shape) - 2) + [[0, pad_rows], [0, 0]])
        sums, maxes, counts = _block_reduce(weights, mask, bq, self.bk, self.nk, self.tk)
        first = start // bq
        for j in range(sums.shape[2]):
            part = (sums[:, :, j], maxes[:, :, j], None if counts is None else counts[:, :, j])
            if first + j in self.blocks:
                s, x, c = self.blocks[first + j]
                part = (s + part[0], ops.maximum(x, part[1]),
                        None if c is None else c + part[2])
            self.blocks[first + j] = part
        return sums

    def result(self, max_logit):
        """The dict `reduce_in_chunks` returns."""
        from keras import ops

        order = sorted(self.blocks)
        reduced = {"sums": ops.stack([self.blocks[j][0] for j in order], axis=2),
                   "maxes": ops.stack([self.blocks[j][1] for j in order], axis=2)}
        if max_logit is not None:
            reduced["max_logit"] = max_logit
        if any(self.blocks[j][2] is not None for j in order):
            reduced["counts"] = ops.stack([self.blocks[j][2] for j in order], axis=2)
        for i in range(len(self.windows)):
            reduced["window_%d" % i] = ops.concatenate(self.window_parts[i], axis=2)
            if self.window_mask_parts[i]:
                reduced["window_mask_%d" % i] = ops.concatenate(self.window_mask_parts[i],
                                                                axis=2)
        if self.above is not None:
            reduced["above_diagonal"] = ops.max(ops.stack(self.above))
        return reduced


def _above_diagonal(weights, start, stop):
    """The largest of `weights` `[B, N, stop-start, Tk]` (rows `start...`) above the diagonal."""
    from keras import ops

    rows = ops.expand_dims(ops.arange(start, stop, dtype="int32"), 1)
    cols = ops.expand_dims(ops.arange(0, weights.shape[-1], dtype="int32"), 0)
    return ops.max(ops.where(ops.greater(cols, rows), weights, 0.0))


def finish(reduced, shape, block, windows, examples):
    """Numpy means, maxes, windows (NaN where masked) and max logits of `examples` examples.

    `reduced` holds the numpy values of `reduce_in_chunks`' dict; `shape` is `[B, N, Tq, Tk]`.
    Returns `(means, maxes, [(name, q, k, weights)], max_logit)` (`max_logit` None where the
    kernel had no logits).
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
    max_logit = reduced.get("max_logit")
    if max_logit is not None:
        max_logit = np.asarray(max_logit, np.float32)[:examples]
    return means, maxes, kept, max_logit
