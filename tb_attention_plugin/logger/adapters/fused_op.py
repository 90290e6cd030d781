"""The fused `keras.ops.dot_product_attention`: its probabilities from its own arguments.

The fused op (flash attention where the backend has it; on JAX, keras-hub's Llama-style layers
take it on every device) never materialises probabilities. During the probe pass this adapter
wraps the op: the layer still gets the op's own output, and the probabilities are computed
beside it from the same query, key, bias, mask, scale, causal flag and logit soft-cap, in
float32, in the order Keras' reference implementation uses (scale, soft-cap, bias, masks,
softmax). Grouped-query keys (`key` with fewer heads than `query`) serve `H / K` query heads each.
A POOLED layer's probabilities are computed the same way a chunk of query rows at a time
(`FusedRows`, reduced by `blocked.reduce_in_chunks`): its `[B, H, Tq, Tk]` never exist.

Example:

```python
probs, logits, mask = fused_probabilities(q, k, mask=padding, is_causal=True)  # [B, H, T, S]
```
"""

import inspect
import math

import numpy as np


# Where layers find the op: `from keras import ops` then `ops.dot_product_attention` or
# `ops.nn.dot_product_attention`.
_NAMES = ("dot_product_attention",)


def fused_probabilities(query, key, bias=None, mask=None, scale=None, is_causal=False,
                        soft_cap=None):
    """`(probabilities, logits, mask)` `[B, H, Tq, Tk]` of the fused op's arguments.

    `query` `[B, Tq, H, D]`, `key` `[B, Tk, K, D]` (`H` a multiple of `K`); `mask` boolean,
    broadcastable to `[B, H, Tq, Tk]` (True = attended); the returned mask combines it with the
    causal mask (None when neither is given)."""
    kernel = FusedRows(query, key, bias=bias, scale=scale, soft_cap=soft_cap)
    logits = kernel.logits(kernel.query_rows(0, kernel.shape[2], lambda tensors: tensors))
    full_mask = _combined_mask(mask, is_causal, tuple(int(n) for n in logits.shape))
    logits = _masked(logits, full_mask)
    probs, _ = kernel.attend(None, logits, None)
    return probs, logits, full_mask


class FusedRows:
    """The fused op's probabilities a chunk of query rows at a time: a kernel of
    `blocked.reduce_in_chunks` (the POOLED capture; `fused_probabilities` is its one chunk).

    Arguments as `fused_probabilities`'s, `examples`: the first examples computed (None: all).
    `mask` (rank 4, not broadcast) and `causal` are what the reducer is called with: the
    causal mask is built per chunk, so no `[Tq, Tk]` tensor exists."""

    depth = 1
    masked_weights_are_zero = False  # a row with every key masked gets uniform weights

    def __init__(self, query, key, bias=None, mask=None, scale=None, is_causal=False,
                 soft_cap=None, examples=None):
        import keras

        ops = keras.ops
        batch = int(query.shape[0]) if examples is None else min(int(examples),
                                                                 int(query.shape[0]))
        query = ops.cast(_first(query, batch), "float32")
        key = ops.cast(_first(key, batch), "float32")
        heads, key_heads, depth = int(query.shape[2]), int(key.shape[2]), int(query.shape[3])
        if heads != key_heads:
            key = ops.repeat(key, heads // key_heads, axis=2)
        self.query, self.key, self.soft_cap = query, key, soft_cap
        self.scale = ops.cast(1.0 / math.sqrt(depth) if scale is None else scale, "float32")
        self.bias = None if bias is None else _first(_bias_rank4(bias), batch)
        self.mask = None if mask is None else _first(_mask_rank4(mask), batch)
        self.causal = bool(is_causal)
        self.shape = (batch, heads, int(query.shape[1]), int(key.shape[1]))

    def query_rows(self, start, stop, wait):
        """`(query rows [b, r, H, D], bias rows or None)`, sliced after `wait`."""
        query, bias = wait((self.query, self.bias))
        if bias is not None and int(bias.shape[-2]) != 1:
            bias = bias[..., start:stop, :]
        return query[:, start:stop], bias

    def logits(self, query_rows):
        """Scaled dot products, soft-capped, plus the bias, in float32 (the op's order)."""
        import keras

        ops = keras.ops
        rows, bias = query_rows
        logits = ops.einsum("bqhd,bkhd->bhqk", rows, self.key) * self.scale
        if self.soft_cap is not None:
            logits = ops.tanh(logits / self.soft_cap) * self.soft_cap
        if bias is not None:
            logits = logits + bias
        return logits

    def attend(self, query_rows, logits, mask):
        """`(softmax of the masked logits, None)`: the op's output is not recomputed."""
        import keras

        return keras.ops.softmax(_masked(logits, mask), axis=-1), None


def _masked(logits, mask):
    """`logits` with the float32 minimum where `mask` (None: nowhere) is False."""
    import keras

    if mask is None:
        return logits
    ops = keras.ops
    while len(mask.shape) < 4:
        mask = ops.expand_dims(mask, 1)
    return ops.where(mask, logits, ops.cast(np.finfo(np.float32).min, "float32"))


def _first(tensor, batch):
    """The first `batch` examples of a tensor (one whose batch axis is 1 or `batch` as it is)."""
    return tensor if int(tensor.shape[0]) <= batch else tensor[:batch]


def _bias_rank4(bias):
    """The bias in float32 with leading axes added (numpy's broadcasting)."""
    import keras

    ops = keras.ops
    bias = ops.cast(bias, "float32")
    while len(bias.shape) < 4:
        bias = ops.expand_dims(bias, 0)
    return bias


def _mask_rank4(mask):
    """The op's mask as bool `[B or 1, H or 1, Tq or 1, Tk]`: `[Tk]` and `[Tq, Tk]` get leading
    axes, `[B, Tq, Tk]` a head axis."""
    import keras

    ops = keras.ops
    mask = ops.cast(mask, "bool")
    while len(mask.shape) < 4:
        mask = ops.expand_dims(mask, 0 if len(mask.shape) < 2 else 1)
    return mask


def _combined_mask(mask, is_causal, shape):
    import keras

    ops = keras.ops
    if mask is not None:
        mask = ops.broadcast_to(_mask_rank4(mask), shape)
    if is_causal:
        causal = ops.convert_to_tensor(np.tril(np.ones(shape[-2:], bool)))
        mask = ops.broadcast_to(causal, shape) if mask is None else ops.logical_and(mask, causal)
    return mask


def install(patcher):
    """Wraps `keras.ops[.nn].dot_product_attention` for the pass (restored by `patcher`)."""
    import keras

    for module in (keras.ops, keras.ops.nn):
        for name in _NAMES:
            original = getattr(module, name, None)
            if original is not None:
                patcher.set_attribute(module, name, _wrapped(patcher, original))


def _wrapped(patcher, original):
    signature = inspect.signature(original)

    def dot_product_attention(*args, **kwargs):
        output = original(*args, **kwargs)
        site = patcher.current_owner()
        if site is None:
            return output
        arguments = signature.bind(*args, **kwargs).arguments
        query, key = arguments["query"], arguments["key"]
        shape = (int(query.shape[0]), int(query.shape[2]), int(query.shape[1]),
                 int(key.shape[1]))
        causal = bool(arguments.get("is_causal", False))

        options = dict(bias=arguments.get("bias"), mask=arguments.get("mask"),
                       scale=arguments.get("scale"), is_causal=causal,
                       soft_cap=arguments.get("attn_logits_soft_cap"))

        def compute():
            probs, logits, mask = fused_probabilities(query, key, **options)
            return probs, mask, logits

        patcher.offer_probabilities(
            site, shape, compute, mask=arguments.get("mask"), causal=causal, source="fused",
            kv_heads=int(key.shape[2]),
            rows=lambda examples: FusedRows(query, key, examples=examples, **options))
        return output

    return dot_product_attention
