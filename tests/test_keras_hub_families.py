"""Every keras-hub LLM family is captured and proved against its own math, on TensorFlow and JAX.

For each family (tiny configs of the real keras-hub classes, tests/keras_hub_families.py) a model
is trained twice from one seed, with and without `AttentionLogger`, and the logs are read back
through TensorBoard's data provider:

- one tag per attention layer call (self and cross attention of T5), holding every query head;
- stored rows sum to 1 over the visible keys (within the storage codes' error), nothing above the
  diagonal of causal layers, nothing outside the window of sliding-window layers (Gemma 2/3,
  Mistral);
- the captured probabilities times the layer's own values equal the layer's own attention
  output (read on its value and output projections), to float32 rounding;
- the weights after `fit` are identical with and without the callback, and the probe ran as a
  traced graph (TensorFlow's fast path).

On JAX, keras-hub's Llama-style layers take the fused `ops.dot_product_attention` in every pass,
so there the probabilities come from the fused-op adapter: tests/test_keras_hub_jax_*.py run
the same checks there.
"""

import pytest

import keras_hub_families as families

# Storage codes: 8-bit, relative error below 2.8% per weight (docs/format.md); a row's sum
# stays within this of 1.
ROW_TOLERANCE = 0.03
PROOF_TOLERANCE = 1e-5


def assert_summary(summary, backend="tensorflow"):
    name = summary["family"]
    family = families.FAMILIES[name]
    if backend == "tensorflow" or summary["weights_equal"] is not None:
        assert summary["weights_equal"], "%s: training changed with the callback" % name
    assert summary["warnings"] == [], summary["warnings"]
    assert summary["unreadable"] == []
    tags = summary["tags"]
    assert len(tags) == family.layers, sorted(tags)
    for tag, check in tags.items():
        assert check["heads"] == family.heads, (tag, check)
        assert check["row_error"] < ROW_TOLERANCE, (tag, check)
        assert check["above_diagonal"] == 0.0, (tag, check)
        assert check["outside_window"] == 0.0, (tag, check)
        if family.causal and not check["cross"]:
            # Decoder self-attention is causal; encoder self-attention of T5 is not.
            assert check["causal"] or "encoder" in tag, (tag, check)
    if family.seq2seq:
        assert sum(check["cross"] for check in tags.values()) == 2
    assert summary["record_heads"] == [family.heads]
    assert summary["proof_error"] < PROOF_TOLERANCE, summary["proof_error"]
    if backend == "tensorflow":
        assert summary["traced"]


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_family_on_tensorflow(name, tmp_path):
    summary = families.check_family(name, str(tmp_path))
    assert_summary(summary)
    # On TensorFlow no keras-hub layer takes the fused op: T5 normalises with ops.softmax,
    # the others with their Softmax sublayer.
    assert summary["sources"] == (["softmax"] if name == "t5" else ["softmax layer"])


def test_sliding_windows_are_seen():
    """The window checks above are not vacuous: the windowed layers do have windows."""
    windows = {}
    for name in ("gemma2", "mistral"):
        model = families.trainable_model(families.FAMILIES[name])
        from tb_attention_plugin.logger import capture

        sites, _ = capture.find_attention_layers(model)
        windows[name] = [families.window_of(site.layer) for site in sites]
    assert windows == {"gemma2": [4, None], "mistral": [4, 4]}


def assert_families_on_jax(names, tmp_path, compared, source_of):
    """The checks above for `names` with Keras on JAX (one subprocess); training with and
    without the callback is compared for `compared` only (each fit compiles anew on JAX);
    `source_of(name)` is the adapter expected to read each family."""
    summaries = families.check_on_backend("jax", names, tmp_path, plain_fits=[compared])
    assert [s["family"] for s in summaries] == names
    assert summaries[names.index(compared)]["weights_equal"] is True
    for summary in summaries:
        assert summary["sources"] == [source_of(summary["family"])], summary["sources"]
        assert_summary(summary, backend="jax")
