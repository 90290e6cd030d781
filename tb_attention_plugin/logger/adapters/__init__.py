"""Capture sites other than Keras' stock attention layers: where a layer makes its probabilities.

Keras' `MultiHeadAttention` family is read through its own score methods (`capture.py`). Every
other attention layer ends in one of a few places, and each place has an adapter of its own:

- `softmax_layer.py`: a `keras.layers.Softmax` sublayer of the layer (Gemma, Llama, Mistral,
  Qwen, Phi-3, GPT-NeoX, Falcon, Bloom, DeBERTa on the non-fused path);
- `softmax_op.py`: a `keras.ops.softmax` / `keras.ops.nn.softmax` call in the layer's own code
  (T5 and hand-written layers);
- `fused_op.py`: the fused `keras.ops.dot_product_attention` (Llama-style layers on JAX, flash
  attention), whose probabilities are computed from the op's own arguments;
- `registered.py`: a function the user registers for a layer class
  (`tb_attention_plugin.register_attention`).

`owners.py` finds the layers these adapters read (the *owners*: layers whose own code makes
attention probabilities), `layout.py` brings every layout (`bhqk`, grouped `bkgqk`) to
`[B, H, Tq, Tk]`, `chunked.py` reads the probabilities of a POOLED layer a chunk of query
rows at a time (the fused op's are computed so, `fused_op.FusedRows`). All adapters are
installed for one probe pass only and removed afterwards, so training runs the layers' own
(fused) fast path untouched.
"""
