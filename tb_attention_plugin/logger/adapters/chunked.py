"""Probabilities an owner layer made itself, read a chunk of query rows at a time.

A POOLED (or, in the health pass, STREAMED) owner layer is reduced by
`blocked.reduce_in_chunks`, like Keras' own layers, so the capture never holds more than one
chunk of float32 weights besides the reductions. `ProbabilityRows` is the kernel for
probabilities that exist already (a `Softmax` sublayer's output, `keras.ops.softmax`'s, a
registered function's): each chunk is sliced from the layer's own tensors in their own layout
and only that slice is brought to `[b, H, r, Tk]` and cast to float32. The fused op's kernel,
which computes its chunks, is `fused_op.FusedRows`.

Example (what `recording.py` does with a Softmax sublayer's output of layout `bkgts`):

```python
kernel = ProbabilityRows(output, inputs, mask, examples=1)
_, reduced = blocked.reduce_in_chunks(kernel, kernel.mask, (16, 16), windows, kernel.causal)
```
"""

from tb_attention_plugin.logger.adapters import layout


class ProbabilityRows:
    """Rows of given probabilities `[B, ..., Tq, Tk]` (rank >= 4, head axes in the layer's
    order) and of their logits (the softmax input), for `examples` first examples (None: all).
    Either may be None: without logits no largest logit is measured; without probabilities the
    kernel serves `blocked.chunked_max_logit` only.

    `mask`: the mask the layer applied (broadcastable to the probabilities, or None); `mask`
    and `causal` are what the reducer is called with. Without a mask a square layer reports
    its largest weight above the diagonal (`report_above_diagonal`): layers such as T5's decoder
    mask by adding a large negative number, and that is how their causality is seen."""

    depth = 1
    masked_weights_are_zero = False  # the reducer zeroes masked positions itself
    causal = False  # the layer's mask already holds its causal part

    def __init__(self, probs, logits, mask, examples):
        shape = tuple(int(n) for n in (logits if probs is None else probs).shape)
        self.examples = shape[0] if examples is None else min(int(examples), shape[0])
        self.probs, self.logits_of_layer = probs, logits
        _, heads, tq, tk = layout.heads_shape(shape)
        self.shape = (self.examples, heads, tq, tk)
        self.mask = layout.heads_mask(mask, shape)
        if self.mask is not None and int(self.mask.shape[0]) > 1:
            self.mask = self.mask[:self.examples]
        self.report_above_diagonal = self.mask is None and tq == tk

    def query_rows(self, start, stop, wait):
        """`(logits rows or None, probability rows)`, each `[b, H, stop-start, Tk]`, sliced
        after `wait` (in a traced graph a slice is a copy: one chunk's at a time)."""
        logits, probs = wait((self.logits_of_layer, self.probs))
        return self._rows(logits, start, stop), self._rows(probs, start, stop)

    def logits(self, query_rows):
        """The logit rows in float32, non-finite ones as -inf (they are no largest logit)."""
        from keras import ops

        logits = query_rows[0]
        if logits is None:
            return None
        logits = ops.cast(logits, "float32")
        return ops.where(ops.isfinite(logits), logits, ops.cast(float("-inf"), "float32"))

    def attend(self, query_rows, logits, mask):
        """The layer's own probability rows (nothing recomputed; no output rows)."""
        return query_rows[1], None

    def _rows(self, tensor, start, stop):
        if tensor is None:
            return None
        part = tensor[:self.examples, ..., start:stop, :]  # sliced before any copy
        b, heads, _, tk = self.shape
        from keras import ops

        return ops.reshape(part, (b, heads, stop - start, tk))
