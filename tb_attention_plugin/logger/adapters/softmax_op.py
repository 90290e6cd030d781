"""`keras.ops.softmax` / `keras.ops.nn.softmax` called in an attention layer's own code (T5's
relative-position attention, hand-written layers): its output is the probabilities.

During the probe pass both names are wrapped; a call over the last axis of a rank 4 or 5
tensor, made while an owner layer (`owners.py`) runs, is recorded for the innermost such layer.
Other softmaxes (a router's, a classifier's) pass through untouched. A POOLED layer's
probabilities are reduced a slice of query rows at a time (`chunked.ProbabilityRows`).

Example (what gets read):

```python
weights = keras.ops.nn.softmax(scores + position_bias, axis=-1)   # [B, H, Tq, Tk]
```
"""

from tb_attention_plugin.logger.adapters import chunked
from tb_attention_plugin.logger.adapters import layout


def install(patcher):
    """Wraps `keras.ops.softmax` and `keras.ops.nn.softmax` for the pass."""
    import keras

    for module in (keras.ops, keras.ops.nn):
        original = getattr(module, "softmax", None)
        if original is not None:
            patcher.set_attribute(module, "softmax", _wrapped(patcher, original))


def _wrapped(patcher, original):
    def softmax(x, axis=-1, *args, **kwargs):
        site = patcher.current_owner()
        shape = tuple(getattr(x, "shape", ()))
        if site is None or not layout.is_attention_shape(shape, axis):
            return original(x, axis, *args, **kwargs)
        waited = patcher.logits_first(site, x)
        output = original(x if waited is None else waited, axis, *args, **kwargs)
        logits = x if waited is None else None  # measured already: the offer goes without

        def compute():
            probs, _ = layout.to_heads(output)
            return probs, None, None if logits is None else layout.to_heads(logits)[0]

        patcher.offer_probabilities(
            site, layout.heads_shape(shape), compute, source="softmax",
            kv_heads=layout.kv_heads(shape),
            rows=lambda examples: chunked.ProbabilityRows(output, logits, None, examples))
        return output

    return softmax
