"""keras-hub families that normalise with a Softmax sublayer or `ops.softmax` (Gemma 2 with its
soft-cap and window, Falcon and Bloom with ALiBi, DeBERTa-v3, T5 with its relative bias), with
Keras on JAX: the same checks as on TensorFlow (tests/test_keras_hub_families.py).
"""

import keras_hub_families as families
from test_keras_hub_families import assert_summary

NAMES = ["gemma2", "falcon", "bloom", "deberta_v3", "t5"]


def test_softmax_families_on_jax(tmp_path):
    # Training with and without the callback is compared for one family here (each fit
    # compiles anew on JAX), for every family on TensorFlow.
    summaries = families.check_on_backend("jax", NAMES, tmp_path, plain_fits=["gemma2"])
    assert summaries[NAMES.index("gemma2")]["weights_equal"] is True
    assert [s["family"] for s in summaries] == NAMES
    for summary in summaries:
        expected = ["softmax"] if summary["family"] == "t5" else ["softmax layer"]
        assert summary["sources"] == expected, summary["sources"]
        assert_summary(summary, backend="jax")
