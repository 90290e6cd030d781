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
        output = original(*args, **kwargs)
        arguments = signature.bind(*args, **kwargs).arguments
        inputs, mask = arguments.get("inputs"), arguments.get("mask")
        shape = tuple(getattr(inputs, "shape", ()))
        if not layout.is_attention_shape(shape, getattr(softmax, "axis", -1)):
            return output
        def compute():
            probs, heads_mask = layout.to_heads(output, mask)
            logits, _ = layout.to_heads(inputs)
            return probs, heads_mask, logits

        patcher.offer_probabilities(
            site, layout.heads_shape(shape), compute, mask=mask, source="softmax layer",
            rows=lambda examples: chunked.ProbabilityRows(output, inputs, mask, examples))
        return output

    return call
