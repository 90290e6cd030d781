"""keras-hub families that normalise with a Softmax sublayer or `ops.softmax` (Gemma 2 with its
soft-cap and window, Falcon and Bloom with ALiBi, DeBERTa-v3, T5 with its relative bias), with
Keras on JAX: the same checks as on TensorFlow (tests/test_keras_hub_families.py).
"""

from test_keras_hub_families import assert_families_on_jax


def test_softmax_families_on_jax(tmp_path):
    assert_families_on_jax(
        ["gemma2", "falcon", "bloom", "deberta_v3", "t5"], tmp_path, compared="gemma2",
        source_of=lambda name: "softmax" if name == "t5" else "softmax layer")
