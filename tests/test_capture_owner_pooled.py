"""POOLED keras-hub owner layers are reduced a chunk of query rows at a time, and store what their
full capture pooled afterwards would (tests/owner_pooled_checks.py):

- Llama 3 (grouped-query, rotary positions) and Gemma 2 (soft-cap, sliding window, `bkgts`
  layout) through their Softmax sublayer, T5 (self, causal decoder without a mask, cross
  attention) through `ops.softmax`, eagerly at two chunk sizes; Llama 3 keeping one example;
- the traced capture (the callback's default on TensorFlow) gives the same;
- a STREAMED call (the health pass) hands its chunks to the head-health measures, which equal
  those of the full probabilities;
- a registered layer's probabilities (no logits) are pooled in chunks too;
- on JAX Llama 3 takes the fused `ops.dot_product_attention`, whose chunks are computed from its
  arguments (a subprocess);
- `AttentionLogger` with a small budget stores Gemma 2 pooled; read back through TensorBoard's
  data provider it equals the full probabilities within the format's bounds, and its head
  health, measured from the same pass's chunks over every probe example, equals theirs.
"""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import callback_helpers as helpers
import keras_hub_families as families
import owner_pooled_checks as checks
import tb_attention_plugin as tba
from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning, encoding, health
from tb_attention_plugin import health_summary
from tb_attention_plugin.health_stream import ChunkedHeadHealth
from tb_attention_plugin.logger import budget, capture, chunk_feed
from test_capture_adapters import ExpAttention, exp_probabilities

pytest.importorskip("keras_hub")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,source", [("llama3", "softmax layer"),
                                         ("gemma2", "softmax layer"), ("t5", "softmax")])
def test_pooled_owner_equals_its_full_capture_pooled(name, source):
    sources = checks.check_family(name)
    assert set(sources.values()) == {source}
    if name == "t5":  # the decoder's self-attention is seen causal without a mask
        assert len(sources) == 6


def test_pooled_owner_keeps_the_planned_examples():
    checks.check_family("llama3", chunk_rows=(16,), examples=1)


def test_registered_owner_is_reduced_in_chunks():
    """A registered function's probabilities (no logits) are pooled in chunks too."""
    tba.register_attention(ExpAttention, exp_probabilities)
    try:
        keras.utils.set_random_seed(0)
        ids = keras.Input((None,), dtype="int32")
        model = keras.Model(ids, ExpAttention(name="exp_attention")(
            keras.layers.Embedding(30, 16)(ids)))
        probe = np.random.default_rng(0).integers(1, 30, (2, checks.LENGTH)).astype("int32")
        model(probe)
        sites, _ = capture.find_attention_layers(model)
        plans = checks.pooled_plans(model, probe, sites)
        full = checks.full_records(model, probe, sites)
        records, _ = checks.patched_pass(model, probe, sites, plans)
    finally:
        tba.unregister_attention(ExpAttention)
    assert list(records) == ["exp_attention"]
    checks.assert_pooled_like_full(records["exp_attention"], full["exp_attention"],
                                   plans[("exp_attention", 0)], "registered")


@pytest.mark.parametrize("name", ["llama3", "gemma2"])
def test_traced_pooled_owner_equals_its_full_capture_pooled(name):
    model, probe, sites = checks.built(name)
    plans = checks.pooled_plans(model, probe, sites)
    full = checks.full_records(model, probe, sites)
    traced = capture.CompiledCapture(model, probe, sites, plans)()
    assert not traced.problems, traced.problems
    assert sorted(r.tag for r in traced.records) == sorted(full)
    for record in traced.records:
        checks.assert_pooled_like_full(record, full[record.tag],
                                       checks.plan_of(plans, record.tag), record.tag)


def test_streamed_owner_feeds_head_health_of_its_full_probabilities():
    model, probe, sites = checks.built("gemma2")
    full = checks.full_records(model, probe, sites)
    plans, sinks = {}, {}
    for shape in capture.layer_shapes(model, probe, sites):
        sink = chunk_feed.ChunkSink()
        sink.reset(ChunkedHeadHealth(queries=shape.shape[2], causal=shape.causal))
        plans[(shape.path, shape.index)] = budget.LayerPlan(
            "stream", shape.shape, shape.shape[0], shape.shape[1], shape.causal,
            block=(8, shape.shape[3]), chunks=sink)
        sinks[shape.tag] = sink
    checks.patched_pass(model, probe, sites, plans)
    assert sorted(sinks) == sorted(full)
    for tag, sink in sinks.items():
        assert sink.error is None, (tag, sink.error)
        sink.target.end_batch(2)
        streamed = sink.target.result()
        reference = health.HeadHealth(causal=full[tag].causal)
        reference.update(full[tag].scores, mask=full[tag].mask)
        expected = reference.result()
        for measure in ("entropy", "first_token", "previous_token", "diagonal"):
            np.testing.assert_allclose(streamed[measure], expected[measure], rtol=1e-4,
                                       atol=1e-6, err_msg="%s %s" % (tag, measure))


def test_fused_owner_on_jax_is_computed_in_chunks():
    environment = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-W", "ignore", os.path.join(REPO, "tests", "owner_pooled_checks.py"),
         "llama3"], cwd=REPO, env=environment, timeout=900, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ok jax llama3 ['fused']" in result.stdout, result.stdout


def test_logged_pooled_owner_reads_back_within_the_format_bounds(tmp_path):
    family = families.FAMILIES["gemma2"]
    keras.utils.set_random_seed(0)
    model = families.trainable_model(family)  # compiled: the logger reads its step
    probe = checks.probe_for(family, length=96)
    model(probe, training=False)
    sites, _ = capture.find_attention_layers(model)
    logger = AttentionLogger(str(tmp_path), probe, update_freq="epoch",
                             max_bytes_per_step=64 * 1024)
    logger.set_model(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.on_train_begin()
        logger.on_train_end()
    messages = [str(w.message) for w in caught if issubclass(w.category, AttentionLoggerWarning)
                and "pooled" not in str(w.message)]
    assert not messages, messages  # only the note that says what is pooled
    attention, _ = helpers.read_logs(str(tmp_path))
    full = checks.full_records(model, probe, sites)
    assert sorted(attention["train"]) == sorted(full)
    for tag, steps in attention["train"].items():
        step = steps[max(steps)]
        header = step["header"]
        assert header["layout"] == "pooled", tag
        examples = header["shape"][0]
        weights = full[tag].scores[:examples]
        shown = np.where(full[tag].mask[:examples], weights, np.nan)
        means, maxes, windows = helpers.pooled_parts(header, step["blobs"])
        expected = encoding.pool(shown, header["pooled"]["block"])
        for stored, reference in zip((means, maxes), expected):
            assert np.array_equal(np.isnan(stored), np.isnan(reference)), tag
            assert np.nanmax(np.abs(stored - reference)) <= encoding.MAX_ERROR + 1e-6, tag
        assert windows, tag
        for entry in header["windows"]:
            (q0, q1), (k0, k1) = entry["query"], entry["key"]
            stored, reference = windows[entry["name"]], shown[:, :, q0:q1, k0:k1]
            assert np.array_equal(np.isnan(stored), np.isnan(reference)), (tag, entry)
            assert np.nanmax(np.abs(stored - reference)) <= encoding.MAX_ERROR + 1e-6, tag
    # Head health (the default health probe: the probe itself) comes from the chunks of the
    # same pass, over both examples although one is shown: HeadHealth of the full ones.
    records = helpers.read_health(str(tmp_path))["train"]
    assert sorted(records) == sorted(full)
    for tag, steps in records.items():
        record = health_summary.from_record(steps[max(steps)])
        expected = health.head_health(full[tag].scores, mask=full[tag].mask,
                                      causal=full[tag].causal)
        assert steps[max(steps)]["examples"] == expected["examples"] == 2, tag
        for measure in ("entropy", "first_token", "previous_token", "diagonal"):
            np.testing.assert_allclose(record[measure], expected[measure], rtol=1e-4,
                                       atol=1e-5, err_msg="%s %s" % (tag, measure))
    helpers.assert_unpatched(model)
