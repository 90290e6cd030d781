"""Layers read by a function their user registers: the way in for any other attention layer.

Example:

```python
import tb_attention_plugin as tba

def my_probabilities(layer, inputs, mask=None, **kwargs):
    q, k = layer.q(inputs), layer.k(inputs)            # the layer's own math, [B, T, H, D]
    logits = keras.ops.einsum("bqhd,bkhd->bhqk", q, k) / layer.scale
    return keras.ops.softmax(logits)                   # [B, H, Tq, Tk]

tba.register_attention(MyAttention, my_probabilities)
```

The function is called with the layer and the arguments of its `call`, during the probe pass
only, after the layer's own call; it returns the probabilities `[B, H, Tq, Tk]`, or a pair
`(probabilities, mask)` with a boolean mask broadcastable to them (True = attended).
"""

_REGISTRY = []  # (layer class, function), newest first


def register_attention(layer_class, probabilities):
    """Registers `probabilities(layer, *call_args, **call_kwargs)` for instances of
    `layer_class` (subclasses included). Registering a class again replaces its function.

    Args:
      layer_class: a `keras.layers.Layer` subclass.
      probabilities: a callable returning `[B, H, Tq, Tk]` probabilities (backend tensors or
        numpy), or `(probabilities, mask)`.
    """
    if not isinstance(layer_class, type):
        raise TypeError("layer_class must be a class, got %r" % (layer_class,))
    if not callable(probabilities):
        raise TypeError("probabilities must be callable, got %r" % (probabilities,))
    unregister_attention(layer_class)
    _REGISTRY.insert(0, (layer_class, probabilities))


def unregister_attention(layer_class):
    """Removes the function registered for `layer_class`, if any."""
    _REGISTRY[:] = [(cls, fn) for cls, fn in _REGISTRY if cls is not layer_class]


def function_for(layer):
    """The function registered for `layer`'s class (or a base class), or None."""
    for cls, function in _REGISTRY:
        if isinstance(layer, cls):
            return function
    return None


def split_result(result):
    """`(probabilities, mask)` from what a registered function returned."""
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result[0], result[1]
    return result, None
