"""Reading tensors during the probe pass: to numpy (gathered over processes), and whether two
inputs are the same sequence (self-attention) eagerly or while tracing.

Example:

```python
same = same_values(query, key)            # eager: True when they hold the same values
array = to_numpy(scores)                  # float32 numpy, gathered from every process
```
"""

import numpy as np


def to_numpy(value):
    """A backend tensor as numpy; a symbolic (traced) tensor is a `TypeError`."""
    import keras

    if keras.backend.is_keras_tensor(value):
        raise TypeError("symbolic tensor (the model was traced, not run eagerly)")
    from tb_attention_plugin.logger import distribution

    return distribution.to_numpy(value)  # gathers arrays sharded over several processes


def same_values(a, b):
    """True when two eager tensors are the same object or hold the same values."""
    if a is b:
        return True
    try:
        a, b = to_numpy(a), to_numpy(b)
    except Exception:
        return False
    return a.shape == b.shape and np.array_equal(a, b)


def same_sequence(a, b, symbolic):
    """Whether a layer's query input `a` is its key input `b` (self-attention): `same_values`
    eagerly, `same_values_symbolic` while tracing."""
    return same_values_symbolic(a, b) if symbolic else same_values(a, b)


def same_values_symbolic(a, b):
    """While tracing a `tf.function`: True, False, or a boolean tensor computed at run time."""
    import tensorflow as tf

    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype or not a.shape.is_fully_defined():
        return False
    return tf.reduce_all(tf.equal(a, b))
