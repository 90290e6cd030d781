"""keras-hub's Llama-style families with Keras on JAX, where every pass takes the fused
`ops.dot_product_attention` (no probability tensor exists): their probabilities come from the
fused-op adapter, and pass the same checks as on TensorFlow (tests/test_keras_hub_families.py).
"""

import keras_hub_families as families
from test_keras_hub_families import assert_summary

NAMES = ["llama3", "mistral", "qwen3", "phi3", "gpt_neox"]


def test_fused_families_on_jax(tmp_path):
    # Training with and without the callback is compared for one family here (each fit
    # compiles anew on JAX), for every family on TensorFlow.
    summaries = families.check_on_backend("jax", NAMES, tmp_path, plain_fits=["llama3"])
    assert summaries[NAMES.index("llama3")]["weights_equal"] is True
    assert [s["family"] for s in summaries] == NAMES
    for summary in summaries:
        assert summary["sources"] == ["fused"], summary["sources"]
        assert_summary(summary, backend="jax")
