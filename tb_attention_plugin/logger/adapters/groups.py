"""The key/value heads of a grouped-query attention layer, as the capture records them.

A grouped-query layer (Keras' `GroupQueryAttention`; keras-hub's Llama, Mistral, Qwen3, Gemma
with `num_key_value_heads < num_query_heads`) is captured per QUERY head; query head `h` reads
key/value head `h // (H / K)`. `K` comes from what the adapter saw (the `bkgts` layout of
Gemma's probabilities, the key of the fused op) or, where the layer repeats its keys before the
softmax (Llama, Mistral, Qwen3), from the layer's own attribute.

Example:

```python
kv_heads(gqa_layer, seen=None, heads=8)   # 2 for GroupQueryAttention(num_key_value_heads=2)
kv_heads(mha_layer, seen=None, heads=8)   # None: every query head has its own keys
```
"""

# Where Keras and keras-hub layers keep their number of key/value heads.
_ATTRIBUTES = ("num_key_value_heads", "_num_key_value_heads")


def kv_heads(layer, seen, heads):
    """The layer's number of key/value heads when fewer than its `heads` query heads, else None.

    `seen`: the number an adapter read from the probabilities' layout or the op's key (None
    when it read none); it wins over the layer's attribute."""
    count = seen
    if count is None:
        count = next((getattr(layer, name) for name in _ATTRIBUTES
                      if isinstance(getattr(layer, name, None), int)), None)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 < count < heads:
        return None
    return count if heads % count == 0 else None
