"""Brings the probability layouts of attention layers to `[B, H, Tq, Tk]`.

Layers keep their probabilities in a few layouts: `[B, H, Tq, Tk]` (Llama, Falcon, T5, ...) or
grouped-query `[B, K, G, Tq, Tk]` (Gemma's `bkgts`: K key/value heads, G query heads per group,
query head `k * G + g`). Merging the axes between the batch and the two sequence axes gives
one axis of query heads in the layer's own head order.

Example:

```python
probs, mask = to_heads(gemma_probs, gemma_mask)   # [B, K, G, T, S] -> [B, K * G, T, S]
```
"""

import math


def heads_of(shape):
    """The number of query heads of a probability tensor of `shape` (rank 4 or more)."""
    return int(math.prod(int(n) for n in shape[1:-2]))


def to_heads(probs, mask=None):
    """`(probs [B, H, Tq, Tk], mask broadcastable to it or None)` from a rank >= 4 tensor.

    Works on backend tensors, symbolic ones included (shapes must be static). A mask of the
    same rank as `probs` is broadcast to `probs`' shape before the head axes are merged."""
    import keras

    ops = keras.ops
    shape = tuple(probs.shape)
    if len(shape) == 4:
        return probs, mask
    batch, tq, tk = int(shape[0]), int(shape[-2]), int(shape[-1])
    heads = heads_of(shape)
    probs = ops.reshape(probs, (batch, heads, tq, tk))
    if mask is not None:
        mask = ops.cast(mask, "bool")
        while len(mask.shape) < len(shape):
            mask = ops.expand_dims(mask, 1)
        mask = ops.reshape(ops.broadcast_to(mask, shape), (batch, heads, tq, tk))
    return probs, mask


def kv_heads(shape):
    """The key/value heads `K` of a grouped-query layout `[B, K, G, Tq, Tk]`; None for a
    layout of one head axis (whose heads say nothing of their keys)."""
    return int(shape[1]) if len(shape) == 5 else None


def heads_shape(shape):
    """`(B, H, Tq, Tk)` that a probability tensor of `shape` takes once its head axes merge."""
    return int(shape[0]), heads_of(shape), int(shape[-2]), int(shape[-1])


def is_attention_shape(shape, axis=-1):
    """Whether a softmax over `axis` of a tensor of `shape` can be attention probabilities:
    rank 4 or 5, over the last axis (the keys)."""
    rank = len(shape)
    return rank in (4, 5) and axis in (-1, rank - 1)
