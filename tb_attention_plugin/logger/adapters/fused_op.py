"""The fused `keras.ops.dot_product_attention`: its probabilities from its own arguments.

The fused op (flash attention where the backend has it; on JAX, keras-hub's Llama-style layers
take it on every device) never materialises probabilities. During the probe pass this adapter
wraps the op: the layer still gets the op's own output, and the probabilities are computed
beside it from the same query, key, bias, mask, scale, causal flag and logit soft-cap, in
float32, in the order Keras' reference implementation uses (scale, soft-cap, bias, masks,
softmax). Grouped-query keys (`key` with fewer heads than `query`) serve `H / K` query heads each.

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
    import keras

    ops = keras.ops
    query, key = ops.cast(query, "float32"), ops.cast(key, "float32")
    heads, key_heads, depth = int(query.shape[2]), int(key.shape[2]), int(query.shape[3])
    if heads != key_heads:
        key = ops.repeat(key, heads // key_heads, axis=2)
    scale = 1.0 / math.sqrt(depth) if scale is None else scale
    logits = ops.einsum("bqhd,bkhd->bhqk", query, key) * ops.cast(scale, "float32")
    if soft_cap is not None:
        logits = ops.tanh(logits / soft_cap) * soft_cap
    if bias is not None:
        logits = logits + ops.cast(bias, "float32")
    full_mask = _combined_mask(mask, is_causal, tuple(int(n) for n in logits.shape))
    if full_mask is not None:
        logits = ops.where(full_mask, logits, ops.cast(np.finfo(np.float32).min, "float32"))
    return ops.softmax(logits, axis=-1), logits, full_mask


def _combined_mask(mask, is_causal, shape):
    import keras

    ops = keras.ops
    if mask is not None:
        mask = ops.cast(mask, "bool")
        while len(mask.shape) < 4:
            mask = ops.expand_dims(mask, 0 if len(mask.shape) < 2 else 1)
        mask = ops.broadcast_to(mask, shape)
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

        def compute():
            probs, logits, mask = fused_probabilities(
                query, key, bias=arguments.get("bias"), mask=arguments.get("mask"),
                scale=arguments.get("scale"), is_causal=causal,
                soft_cap=arguments.get("attn_logits_soft_cap"))
            return probs, mask, logits

        patcher.offer_probabilities(site, shape, compute, mask=arguments.get("mask"),
                                    causal=causal, source="fused", kv_heads=int(key.shape[2]))
        return output

    return dot_product_attention
