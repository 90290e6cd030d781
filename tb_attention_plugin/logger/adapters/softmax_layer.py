"""A `keras.layers.Softmax` sublayer of an attention layer: its output is the probabilities.

Most keras-hub families (Gemma, Llama, Mistral, Qwen, Phi-3, GPT-NeoX, Falcon, Bloom, DeBERTa)
normalise their scores with a `Softmax` sublayer, passing the attention mask. During the probe
pass the sublayer's `call` is shadowed on the instance: its input (the logits, after any
soft-cap, ALiBi or relative-position terms the layer adds), its mask and its output are
recorded for the layer that holds it, brought to `[B, H, Tq, Tk]` by `layout.to_heads`; a
POOLED layer's are reduced a slice of query rows at a time (`chunked.ProbabilityRows`).

Example (what gets read, Gemma):

```python
attention_softmax = self.softmax(attention_logits, mask=attention_mask)   # [B, K, G, T, S]
```
"""

import inspect

from tb_attention_plugin.logger.adapters import chunked
from tb_attention_plugin.logger.adapters import layout
from tb_attention_plugin.logger.adapters import owners


def install(patcher, site):
    """Shadows the `call` of each `Softmax` sublayer of `site.layer` for the pass."""
    for softmax in owners.softmax_sublayers(site.layer):
        patcher.set_attribute(softmax, "call", _shadow(patcher, site, softmax, softmax.call))


def _shadow(patcher, site, softmax, original):
    signature = inspect.signature(original)

    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        inputs, mask = bound.arguments.get("inputs"), bound.arguments.get("mask")
        shape = tuple(getattr(inputs, "shape", ()))
        if not layout.is_attention_shape(shape, getattr(softmax, "axis", -1)):
            return original(*args, **kwargs)
        waited = patcher.logits_first(site, inputs, mask)
        if waited is not None:
            bound.arguments["inputs"] = waited
        output = original(*bound.args, **bound.kwargs)
        logits = inputs if waited is None else None  # measured already: the offer goes without

        def compute():
            probs, heads_mask = layout.to_heads(output, mask)
            return probs, heads_mask, None if logits is None else layout.to_heads(logits)[0]

        patcher.offer_probabilities(
            site, layout.heads_shape(shape), compute, mask=mask, source="softmax layer",
            kv_heads=layout.kv_heads(shape),
            rows=lambda examples: chunked.ProbabilityRows(output, logits, mask, examples))
        return output

    return call
