"""Finds the layers whose own code makes attention probabilities (the adapters' *owners*).

A layer is an owner when it is not one of Keras' stock attention layers (`capture.py` reads
those) and any of these holds:

- it is registered (`registered.register_attention`);
- it holds a `keras.layers.Softmax` sublayer of its own;
- the source of its class (or of a base class outside Keras) calls `softmax(` or
  `dot_product_attention(`.

The class name plays no part: keras-hub's `LlamaAttention`, `T5MultiHeadAttention` and a
user's `MyBlock` are found alike. Owners that never produce a probability tensor in the probe
pass (a mixture-of-experts router's softmax is rank 2) are dropped silently, unless their name
says attention: those get one warning with the way to register them.

Example:

```python
reason = owner_reason(layer)   # "a Softmax sublayer", "softmax in its code", ... or None
```
"""

import functools
import inspect
import re

_CALLS = re.compile(r"\b(softmax|dot_product_attention)\s*\(")
# Modules whose classes are Keras' or TensorFlow's own: their code is not the layer's.
_FRAMEWORK_PREFIXES = ("keras.", "keras_core", "tensorflow", "tf_keras", "torch", "jax",
                       "builtins")


def softmax_sublayers(layer):
    """The `keras.layers.Softmax` instances directly inside `layer`."""
    import keras

    return [child for child in layer._flatten_layers(include_self=False, recursive=False)
            if isinstance(child, keras.layers.Softmax)]


@functools.lru_cache(maxsize=None)
def _class_code_calls(cls):
    """Whether the source of `cls` (not of Keras' base classes) calls a softmax or the fused
    attention op."""
    for klass in cls.__mro__:
        if klass.__module__.startswith(_FRAMEWORK_PREFIXES):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if _CALLS.search(source):
            return True
    return False


def owner_reason(layer):
    """Why `layer` is read by an adapter, or None when it is not an owner."""
    import keras

    from tb_attention_plugin.logger.adapters import registered

    if registered.function_for(layer) is not None:
        return "registered"
    if isinstance(layer, (keras.Model, keras.layers.Softmax)):
        return None  # a model's own call is the user's program, not one attention layer
    if softmax_sublayers(layer):
        return "a Softmax sublayer"
    if _class_code_calls(type(layer)):
        return "softmax or dot_product_attention in its code"
    return None


def looks_like_attention(layer):
    """Whether the layer's class name says attention (for the warning of unread owners)."""
    return "attention" in type(layer).__name__.lower()
