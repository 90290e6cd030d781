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


def heads_mask(mask, shape):
    """A mask for probabilities of `shape` (rank >= 4) as a bool `[B or 1, H or 1, Tq or 1, Tk]`
    tensor broadcastable to `heads_shape(shape)`, or None. Head axes are broadcast only where
    the mask varies along them: a `[B, 1, 1, Tq, Tk]` mask stays one `[Tq, Tk]` per example.

    A mask of lower rank gets its missing axes as Keras broadcasts it: `[Tq, Tk]` before the
    batch, `[B, Tq, Tk]` before the heads."""
    import keras

    if mask is None:
        return None
    ops = keras.ops
    mask = ops.cast(mask, "bool")
    while len(mask.shape) < 3:
        mask = ops.expand_dims(mask, 0)
    while len(mask.shape) < len(shape):
        mask = ops.expand_dims(mask, 1)
    batch, tq, tk = (int(n) for n in (mask.shape[0], mask.shape[-2], mask.shape[-1]))
    if all(int(n) == 1 for n in mask.shape[1:-2]):
        return ops.reshape(mask, (batch, 1, tq, tk))
    full = (batch,) + tuple(int(n) for n in shape[1:-2]) + (tq, tk)
    return ops.reshape(ops.broadcast_to(mask, full), (batch, heads_of(shape), tq, tk))


def heads_shape(shape):
    """`(B, H, Tq, Tk)` that a probability tensor of `shape` takes once its head axes merge."""
    return int(shape[0]), heads_of(shape), int(shape[-2]), int(shape[-1])


def is_attention_shape(shape, axis=-1):
    """Whether a softmax over `axis` of a tensor of `shape` can be attention probabilities:
    rank 4 or 5, over the last axis (the keys)."""
    rank = len(shape)
    return rank in (4, 5) and axis in (-1, rank - 1)
