"""keras-hub's Llama-style families with Keras on JAX, where every pass takes the fused
`ops.dot_product_attention` (no probability tensor exists): their probabilities come from the
fused-op adapter, and pass the same checks as on TensorFlow (tests/test_keras_hub_families.py).
"""

from test_keras_hub_families import assert_families_on_jax


def test_fused_families_on_jax(tmp_path):
    assert_families_on_jax(["llama3", "mistral", "qwen3", "phi3", "gpt_neox"], tmp_path,
                           compared="llama3", source_of=lambda name: "fused")
