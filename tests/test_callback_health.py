"""AttentionLogger head health (issue 13): records and Scalars written at each capture over a
probe set, equal to `health.head_health` on the layers' own `return_attention_scores`; max
logits equal to the logits recomputed from the layer's weights; failures that cost one layer;
the TensorFlow-free writer on JAX; an entropy-collapse alarm where training collapses attention.

Real Keras models are trained; the logs are read back through TensorBoard's data provider.
"""

import os
import subprocess
import sys
import textwrap
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callback_helpers as helpers  # noqa: E402
import tb_attention_plugin as tba  # noqa: E402
from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin import health  # noqa: E402
from tb_attention_plugin import health_summary  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABULARY_SIZE = 24


def fit(model, x, y, callbacks, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, verbose=0, callbacks=callbacks, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, AttentionLoggerWarning)]


def final_step(model):
    return int(np.asarray(model.optimizer.iterations.value))


def recorded_calls(model):
    """`{layer path: [(arguments, query mask)]}` of every attention call in one pass."""
    layers = helpers.attention_layers(model)
    return layers, helpers.InputRecorder(layers)


def references(model, inputs, tag_of_layer=lambda layer: layer.path):
    """`{tag: (scores, logits, causal)}` from each layer's own `return_attention_scores=True`
    and its query/key projections, on `inputs`."""
    layers, recorder = recorded_calls(model)
    with recorder:
        model(inputs, training=False)
    found = {}
    for layer in layers:
        for recorded in recorder.calls[id(layer)]:
            arguments = recorded[0]
            scores = helpers.reference_scores(layer, recorded)
            query = keras.ops.convert_to_numpy(layer._query_dense(arguments["query"]))
            key_input = arguments.get("key")
            key_input = arguments["value"] if key_input is None else key_input
            key = keras.ops.convert_to_numpy(layer._key_dense(key_input))
            logits = np.einsum("bthd,bshd->bhts", query, key) / np.sqrt(layer._key_dim)
            found[tag_of_layer(layer)] = (scores, logits.astype(np.float32),
                                          bool(arguments.get("use_causal_mask")))
    return found


def assert_record_equals(record, expected, tag):
    """A stored record holds `expected` (a HeadHealth.result()) within float32 rounding."""
    stored = health_summary.from_record(record)
    for key in ("entropy", "entropy_nats", "previous_token", "diagonal", "first_token",
                "induction", "monotonic"):
        np.testing.assert_allclose(stored[key], expected[key], rtol=1e-4, atol=1e-5,
                                   err_msg="%s: %s" % (tag, key))
    assert stored["roles"] == expected["roles"], tag
    assert [[k for k, _ in head] for head in stored["sinks"]] == [
        [k for k, _ in head] for head in expected["sinks"]], tag
    assert record["examples"] == expected["examples"], tag
    groups = health_summary.groups_of(health.cluster_heads(expected["divergence"]))
    assert record["similarity_groups"] == groups, tag


# ------------------------------------------------------------------------ small causal model


def build_causal_lm(layers=2, heads=2, dim=16, length=12):
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY_SIZE, dim)(inputs)
    for index in range(layers):
        attention = keras.layers.MultiHeadAttention(heads, dim // heads, name="mha_%d" % index)
        x = keras.layers.LayerNormalization()(x + attention(x, x, use_causal_mask=True))
    model = keras.Model(inputs, keras.layers.Dense(VOCABULARY_SIZE)(x), name="lm")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
    keras.utils.set_random_seed(3)
    ids, offset = tba.induction_probe(VOCABULARY_SIZE, 6, batch=20, seed=1)  # [20, 12]
    model = build_causal_lm()
    logdir = tmp_path_factory.mktemp("causal")
    logger = AttentionLogger(str(logdir), ids[:2], health_probe=(ids, offset), update_freq=3)
    messages = fit(model, ids, np.roll(ids, -1, axis=1), [logger], epochs=2, batch_size=5)
    return {"model": model, "ids": ids, "offset": offset, "logdir": logdir, "logger": logger,
            "warnings": messages, "final": final_step(model)}


def test_causal_model_health_at_every_capture(causal_run):
    assert not causal_run["warnings"], causal_run["warnings"]
    attention, scalars = helpers.read_logs(causal_run["logdir"])
    records = helpers.read_health(causal_run["logdir"])["train"]
    assert sorted(records) == ["mha_0", "mha_1"]
    for tag in records:
        # One record at every capture, the same steps as the attention matrices.
        assert sorted(records[tag]) == sorted(attention["train"][tag]), tag
        assert len(records[tag]) >= 4 and causal_run["final"] in records[tag]
        for step, record in records[tag].items():
            assert record["heads"] == 2 and record["examples"] == 20
            measures = record["measures"]
            assert measures["monotonicity"] is None  # self-attention
            assert measures["induction"] is not None and measures["max_logit"] is not None
            # The record stores measures rounded to 6 decimals (health_summary), the scalars
            # the float32 values: the scalar rounded alike equals the record's extreme.
            series = dict(scalars["train"]["attention_health/%s/min_entropy" % tag])
            assert round(series[step], 6) == pytest.approx(min(measures["entropy"]), rel=1e-6)
            series = dict(scalars["train"]["attention_health/%s/max_logit" % tag])
            assert round(series[step], 6) == pytest.approx(max(measures["max_logit"]), rel=1e-6)
    # The health pass ran through its own traced graph, in blocks (20 = 8 + 8 + 4 padded).
    assert causal_run["logger"]._health.compiled is not None


def test_causal_measures_equal_head_health_on_return_attention_scores(causal_run):
    model, ids, offset = causal_run["model"], causal_run["ids"], causal_run["offset"]
    records = helpers.read_health(causal_run["logdir"])["train"]
    for tag, (scores, logits, causal) in references(model, ids).items():
        assert causal
        expected = health.head_health(scores, causal=True, repeat_offset=offset)
        record = records[tag][causal_run["final"]]
        assert_record_equals(record, expected, tag)
        # The max logit is the largest logit of the layer's own projections, over the keys
        # each query can see, over all 20 probe sequences.
        visible = np.tril(np.ones(logits.shape[-2:], bool))
        largest = np.where(visible, logits, -np.inf).max(axis=(0, 2, 3))
        np.testing.assert_allclose(record["measures"]["max_logit"], largest, rtol=1e-4,
                                   atol=1e-5, err_msg=tag)


# -------------------------------------------------------------- encoder-decoder translation


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    from test_callback_models import (TARGET_VOCABULARY, VOCABULARY, build_translator,
                                      padded_ids)

    rng = np.random.default_rng(2)
    source = padded_ids(rng, 24, 7, len(VOCABULARY), 4)
    target = padded_ids(rng, 24, 6, len(TARGET_VOCABULARY), 6)
    labels = rng.integers(0, len(TARGET_VOCABULARY), size=(24, 6))
    keras.utils.set_random_seed(1)
    model = build_translator()
    logdir = tmp_path_factory.mktemp("translation")
    # Default health_probe: the whole probe (12 examples) while 2 are displayed.
    logger = AttentionLogger(str(logdir), (source[:12], target[:12]), update_freq=3)
    messages = fit(model, (source, target), labels, [logger], epochs=1, batch_size=4)
    return {"model": model, "probe": (source[:12], target[:12]), "logdir": logdir,
            "warnings": messages, "final": final_step(model)}


def test_translation_health_per_layer_kind(translation_run):
    # Only the note that 2 of the 12 probe examples are displayed.
    assert [m for m in translation_run["warnings"] if "examples 2 of 12" not in m] == []
    model = translation_run["model"]
    source, target = translation_run["probe"]
    records = helpers.read_health(translation_run["logdir"])["train"]
    assert sorted(records) == ["translator/cross_attention",
                               "translator/decoder_self_attention",
                               "translator/encoder_self_attention"]
    assert translation_run["final"] == 6
    assert sorted(records["translator/cross_attention"]) == [0, 3, 6]
    source_mask = source != 0
    masks = {
        "translator/encoder_self_attention": source_mask[:, None, :] & source_mask[:, :, None],
        "translator/decoder_self_attention": None,
        "translator/cross_attention": np.broadcast_to(source_mask[:, None, :],
                                                      (len(source), 6, 7)),
    }
    options = {"translator/encoder_self_attention": {},
               "translator/decoder_self_attention": {"causal": True},
               "translator/cross_attention": {"cross": True}}
    found = references(model, (source, target), tag_of_layer=lambda layer: layer.path)
    for tag, (scores, logits, _) in found.items():
        expected = health.head_health(scores, mask=masks[tag], **options[tag])
        record = records[tag][translation_run["final"]]
        assert record["examples"] == 12
        assert_record_equals(record, expected, tag)
        seen = np.ones(logits.shape, bool) if masks[tag] is None else masks[tag][:, None]
        if "decoder" in tag:
            seen = seen & np.tril(np.ones(logits.shape[-2:], bool))
        largest = np.where(seen, logits, -np.inf).max(axis=(0, 2, 3))
        np.testing.assert_allclose(record["measures"]["max_logit"], largest, rtol=1e-4,
                                   atol=1e-5, err_msg=tag)
    cross = records["translator/cross_attention"][translation_run["final"]]["measures"]
    assert cross["monotonicity"] is not None and cross["previous_token"] is None
    encoder = records["translator/encoder_self_attention"][0]["measures"]
    assert encoder["monotonicity"] is None and encoder["diagonal"] is not None


# ------------------------------------------------------------------------------- failures


class NegativeScores(keras.layers.MultiHeadAttention):
    """Returns scores that are not probabilities: health (and the summary) refuse them."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        output, scores = super()._compute_attention(query, key, value, attention_mask, training,
                                                    return_attention_scores, **kwargs)
        return output, None if scores is None else scores - 1.0


class ScoresRefused(keras.layers.MultiHeadAttention):
    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        if return_attention_scores:
            raise RuntimeError("this layer cannot return scores")
        return super()._compute_attention(query, key, value, attention_mask, training, False,
                                          **kwargs)


def small_model(layers):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(inputs)
    for layer in layers:
        x = x + layer(x, x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    return model


@pytest.mark.parametrize("broken_class", [NegativeScores, ScoresRefused])
def test_a_broken_layer_warns_once_and_the_others_get_health(tmp_path, broken_class):
    model = small_model([keras.layers.MultiHeadAttention(2, 4, name="good"),
                         broken_class(2, 4, name="bad")])
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 20, size=(16, 8)), rng.normal(size=(16, 1)).astype("float32")
    logger = AttentionLogger(str(tmp_path), x[:2], health_probe=x, update_freq=2)
    messages = fit(model, x, y, [logger], epochs=2, batch_size=4)
    about_bad = [m for m in messages if "bad" in m]
    health_messages = [m for m in messages if "head-health" in m]
    if broken_class is ScoresRefused:
        # The capture's one warning covers the health pass too.
        assert len(messages) == 1 and "cannot return scores" in messages[0], messages
    else:
        # One warning for the health measures (others may concern the heatmap summary).
        assert len(health_messages) == 1 and "bad" in health_messages[0], messages
        assert "negative" in health_messages[0]
    assert about_bad and len(about_bad) == len(messages)
    records = helpers.read_health(tmp_path)["train"]
    assert sorted(records) == ["good"]
    assert sorted(records["good"]) == [0, 2, 4, 6, 8]
    helpers.assert_unpatched(model)


def test_health_probe_false_writes_no_health_and_bad_values_are_clear_errors(tmp_path):
    model = small_model([keras.layers.MultiHeadAttention(2, 4, name="mha")])
    x = np.random.default_rng(0).integers(1, 20, size=(8, 8))
    logger = AttentionLogger(str(tmp_path), x[:2], health_probe=False, update_freq="epoch")
    assert not fit(model, x, np.zeros((8, 1), "float32"), [logger], epochs=1, batch_size=4)
    assert helpers.read_health(tmp_path) == {}
    _, scalars = helpers.read_logs(tmp_path)
    assert not [t for t in scalars.get("train", {}) if t.startswith("attention_health/")]
    with pytest.raises(ValueError, match="repeat_offset >= 3"):
        AttentionLogger(str(tmp_path), x[:2], health_probe=(x, 2))
    with pytest.raises(ValueError, match="health_probe must be"):
        AttentionLogger(str(tmp_path), x[:2], health_probe="all")
    with pytest.raises(ValueError, match="no query in the second copy"):
        AttentionLogger(str(tmp_path), x[:2], health_probe=(x, 8))


# ------------------------------------------------------------------------------ other backend

JAX_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, keras
    import tb_attention_plugin as tba
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(inputs)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x, use_causal_mask=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    ids, offset = tba.induction_probe(20, 4, batch=10)
    logger = tba.AttentionLogger(sys.argv[1], ids[:2], update_freq=1, health_probe=(ids, offset))
    model.fit(ids, np.zeros((10, 1), "float32"), batch_size=5, epochs=2, verbose=0,
              callbacks=[logger])
    # The TensorFlow-free writer wrote the records (no tf.summary on JAX).
    assert type(logger._writer._writer).__name__ == "AttentionWriter", logger._writer._writer
""")


def test_jax_writes_health_records_without_tensorflow(tmp_path):
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        pytest.skip("the jax package is not installed in this environment")
    environment = dict(os.environ, KERAS_BACKEND="jax")
    subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], check=True, cwd=REPO,
                   env=environment, timeout=300)
    records = helpers.read_health(tmp_path)["train"]["mha"]
    assert sorted(records) == [0, 1, 2, 3, 4]
    final = records[4]
    assert final["examples"] == 10 and final["measures"]["induction"] is not None
    assert final["measures"]["max_logit"] is not None
    _, scalars = helpers.read_logs(tmp_path)
    assert [s for s, _ in scalars["train"]["attention_health/mha/min_entropy"]] == [0, 1, 2, 3, 4]


# ------------------------------------------------------------ entropy collapse over training


def train_for_alarms(tmp_path, learning_rate):
    """A one-layer causal model trained for 24 steps with Adam at `learning_rate`; returns
    the steps and the entropy alarms of every head from the written records, judged with the
    heads' roles and max logits as the `/health` answer judges them (`health.changes`)."""
    keras.utils.set_random_seed(5)
    length = 12
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY_SIZE, 16)(inputs)
    x = x + keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x, use_causal_mask=True)
    model = keras.Model(inputs, keras.layers.Dense(VOCABULARY_SIZE)(x))
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCABULARY_SIZE, size=(96, length))
    logger = AttentionLogger(str(tmp_path), x[:2], health_probe=x[:16], update_freq=1)
    fit(model, x, np.roll(x, 1, axis=1), [logger], epochs=1, batch_size=4)
    records = helpers.read_health(tmp_path)["train"]["mha"]
    steps = sorted(records)
    heads = {
        ("mha", head): {key: [np.nan if records[s]["measures"][name] is None
                              else records[s]["measures"][name][head] for s in steps]
                        for name, key in health_summary.MEASURES.items()
                        if records[steps[0]]["measures"].get(name) is not None}
        for head in range(2)
    }
    found = health.changes(steps, heads)
    return steps, [c for c in found if c.kind in ("entropy-floor", "entropy-drop")]


def test_entropy_collapse_alarm_at_a_collapsing_learning_rate_only(tmp_path):
    steps, sane = train_for_alarms(tmp_path / "sane", 1e-3)
    assert steps == list(range(25))
    assert sane == []
    _, collapsing = train_for_alarms(tmp_path / "collapsing", 1.0)
    assert collapsing, "no entropy alarm at learning rate 1.0"
    print("\n".join(c.sentence for c in collapsing))


# ------------------------------------------------------------- pooled layers (issue 11)


POOLED_LAYERS = ("causal", "long", "cross")


@pytest.fixture
def full_requests(monkeypatch):
    """`[(layer name, graph)]` of each call that asked a pooled layer of `build_long_model` for
    its full scores: `graph` is None for an eager call, else the graph being traced (a pooled
    capture must never run a pass that asks: see `asked_in_a_run`). Counted in
    `MultiHeadAttention` itself: a subclass with its own `_compute_attention` is not computed
    in chunks (blocked.supports)."""
    import functools
    import inspect

    import tensorflow as tf

    original = keras.layers.MultiHeadAttention._compute_attention
    signature = inspect.signature(original)
    asked = []

    @functools.wraps(original)
    def counted(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        if arguments.get("return_attention_scores") and self.name in POOLED_LAYERS:
            graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
            asked.append((self.name, graph))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.MultiHeadAttention, "_compute_attention", counted)
    return asked


def asked_in_a_run(requests, logger):
    """The `full_requests` made eagerly or while tracing a graph the logger runs."""
    kept = {capture.compiled._function.graph
            for capture in (logger._probe_capture, getattr(logger._health, "_blocks", None)
                            and logger._health._blocks.capture)
            if capture and capture.compiled is not None}
    return [name for name, graph in requests if graph is None or graph in kept]


LONG = 96  # the induction probe's copy length: 192 positions


def build_long_model():
    """Three layers over 192 positions that a 96 KiB budget pools: causal self-attention,
    bidirectional self-attention and cross-attention to a 2x shorter sequence; "short" (8
    positions, after average pooling) stays FULL. The `full_requests` fixture counts the
    pooled layers' full-score asks."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2 * LONG,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY_SIZE, 8)(inputs)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="causal")(x, x, use_causal_mask=True)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="long")(x, x)
    memory = keras.layers.AveragePooling1D(2)(x)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="cross")(x, memory)
    x = keras.layers.AveragePooling1D(24)(x)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="short")(x, x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    return model


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 query rows for a block of 8 examples (the blocked pass' real code, on
    matrices small enough for a test), and the shape of every chunk the health measures get."""
    from tb_attention_plugin import health_stream
    from tb_attention_plugin.logger import blocked

    monkeypatch.setattr(blocked, "CHUNK_BYTES", 8 * 2 * 2 * LONG * 4 * 16)
    shapes = []
    original = health_stream.ChunkedHeadHealth.add_chunk

    def add_chunk(self, start, weights, mask=None):
        shapes.append(np.shape(weights))
        return original(self, start, weights, mask)

    monkeypatch.setattr(health_stream.ChunkedHeadHealth, "add_chunk", add_chunk)
    return shapes


def pooled_references(model, ids, offset):
    """`{tag: (HeadHealth.result(), largest logit per head)}` of every layer of
    `build_long_model` from its own `return_attention_scores` on `ids`."""
    options = {"causal": dict(causal=True, repeat_offset=offset),
               "long": dict(repeat_offset=offset), "cross": dict(cross=True), "short": {}}
    found = {}
    for tag, (scores, logits, causal) in references(model, ids).items():
        seen = np.tril(np.ones(logits.shape[-2:], bool)) if causal else True
        largest = np.where(seen, logits, -np.inf).max(axis=(0, 2, 3))
        found[tag] = (health.head_health(scores, **options[tag]), largest)
    return found


@pytest.mark.parametrize("health_probe", ["set", "probe"])
def test_pooled_layers_are_measured_from_chunks_equal_to_their_full_matrices(
        tmp_path, health_probe, small_chunks, full_requests):
    model = build_long_model()
    ids, offset = tba.induction_probe(VOCABULARY_SIZE, LONG, batch=12, seed=2)
    y = np.random.default_rng(0).normal(size=(12, 1)).astype("float32")
    logger = AttentionLogger(str(tmp_path), ids[:2], update_freq=2, max_bytes_per_step=96 * 1024,
                             health_probe=(ids, offset) if health_probe == "set" else None)
    messages = fit(model, ids, y, [logger], epochs=1, batch_size=4)
    # One warning: the reduced view; it no longer says that pooled layers lack health.
    assert len(messages) == 1 and "logging a reduced view: " in messages[0], messages
    assert "192x192 positions pooled in" in messages[0] and "health" not in messages[0]
    # Neither the display nor the health pass asked in a pass that ran (the first capture may
    # trace a pass with every layer full, to plan from, and drops it unrun: see capture.py).
    assert asked_in_a_run(full_requests, logger) == []
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]) == ["causal", "cross", "long", "short"]
    for tag in ("causal", "cross", "long"):
        assert all(encoding.is_pooled(step["header"])
                   for step in attention["train"][tag].values()), tag
    # The health measures got query chunks of at most 16 rows of 192 keys (8 examples) or 64
    # (the 2-example probe), never a whole matrix.
    assert len(small_chunks) >= 2 * 3 * 2  # at least 2 captures x 3 layers x 2 chunks
    rows = 16 if health_probe == "set" else 64
    assert max(shape[2] * shape[3] for shape in small_chunks) <= rows * 2 * LONG
    records = helpers.read_health(tmp_path)["train"]
    assert sorted(records) == ["causal", "cross", "long", "short"]
    final = final_step(model)
    probe = ids if health_probe == "set" else ids[:2]
    for tag, (expected, largest) in pooled_references(
            model, probe, offset if health_probe == "set" else None).items():
        assert sorted(records[tag]) == sorted(attention["train"][tag]), tag
        assert final in records[tag] and len(records[tag]) >= 2, tag
        record = records[tag][final]
        assert_record_equals(record, expected, tag)
        np.testing.assert_allclose(record["measures"]["max_logit"], largest, rtol=1e-4,
                                   atol=1e-5, err_msg=tag)
    # The references asked, eagerly: counted.
    assert sorted({name for name, graph in full_requests if graph is None}) == sorted(POOLED_LAYERS)
    measures = records["cross"][final]["measures"]
    assert measures["monotonicity"] is not None and measures["previous_token"] is None
    assert (records["causal"][final]["measures"]["induction"] is None) == (health_probe != "set")
    if health_probe == "set":  # the chunks left a traced graph through tf.numpy_function
        assert logger._health.compiled is not None
    helpers.assert_unpatched(model)


class DoubledScoreAttention(keras.layers.Attention):
    """A user's variant of Keras' dot-product attention (its scores doubled): blocked.py
    reproduces only Keras' own score functions, so this layer is not computed in chunks."""

    def _calculate_scores(self, query, key):
        return 2.0 * super()._calculate_scores(query, key)


def test_a_pooled_layer_not_computed_in_chunks_warns_once_and_the_others_get_health(tmp_path):
    # Pooled, GroupedQueryAttention is measured from its query chunks; the user's Attention
    # subclass cannot be chunked: it gets no record and one warning, and nothing else is lost.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((192,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(inputs)
    x = x + keras.layers.GroupQueryAttention(4, 2, 1, name="gqa")(x, x)
    x = x + DoubledScoreAttention(name="custom")([x, x])
    x = keras.layers.AveragePooling1D(24)(x)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="short")(x, x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    ids = np.random.default_rng(0).integers(1, 20, size=(8, 192))
    logger = AttentionLogger(str(tmp_path), ids[:2], update_freq=2, max_bytes_per_step=64 * 1024,
                             health_probe=ids)
    messages = fit(model, ids, np.zeros((8, 1), "float32"), [logger], epochs=1, batch_size=4)
    health_messages = [m for m in messages if "head-health" in m]
    assert len(health_messages) == 1, messages
    assert "no head-health record for custom" in health_messages[0]
    assert "DoubledScoreAttention attention is not computed in query chunks" in health_messages[0]
    records = helpers.read_health(tmp_path)["train"]
    assert sorted(records) == ["gqa", "short"] and len(records["gqa"]) >= 2
    attention, _ = helpers.read_logs(tmp_path)
    assert all(encoding.is_pooled(s["header"]) for s in attention["train"]["gqa"].values())
    # The chunked measures of the pooled GQA layer equal health.py's on its own full scores.
    embedded = model.layers[1](ids)
    _, scores = model.get_layer("gqa")(embedded, embedded, return_attention_scores=True)
    assert_record_equals(records["gqa"][final_step(model)],
                         health.head_health(np.asarray(scores)), "gqa")
    helpers.assert_unpatched(model)


POOLED_JAX_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, "tests")
    import numpy as np, keras
    import tb_attention_plugin as tba
    from tb_attention_plugin.logger import blocked
    import callback_helpers as helpers
    blocked.CHUNK_BYTES = 8 * 2 * 192 * 4 * 16  # 16 query rows of 192 keys for 8 examples
    keras.utils.set_random_seed(0)
    inputs = keras.Input((192,), dtype="int32")
    x = keras.layers.Embedding(24, 8)(inputs)
    x = x + keras.layers.MultiHeadAttention(2, 4, name="causal")(x, x, use_causal_mask=True)
    memory = keras.layers.Dense(8)(x)  # another sequence of 192 positions: cross-attention
    x = x + keras.layers.MultiHeadAttention(2, 4, name="cross")(x, memory)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    ids, offset = tba.induction_probe(24, 96, batch=10, seed=4)
    logger = tba.AttentionLogger(sys.argv[1], ids[:2], update_freq=2,
                                 max_bytes_per_step=96 * 1024, health_probe=(ids, offset))
    model.fit(ids, np.zeros((10, 1), "float32"), batch_size=5, epochs=1, verbose=0,
              callbacks=[logger])
    layers = helpers.attention_layers(model)
    with helpers.InputRecorder(layers) as recorder:
        model(ids, training=False)
    np.savez(sys.argv[2], step=int(np.asarray(model.optimizer.iterations.value)),
             **{layer.name: helpers.reference_scores(layer, recorder.calls[id(layer)][0])
                for layer in layers})
""")


def test_jax_pooled_layers_are_measured_from_chunks(tmp_path):
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        pytest.skip("the jax package is not installed in this environment")
    environment = dict(os.environ, KERAS_BACKEND="jax")
    reference = tmp_path / "reference.npz"
    subprocess.run([sys.executable, "-c", POOLED_JAX_SCRIPT, str(tmp_path / "logs"),
                    str(reference)], check=True, cwd=REPO, env=environment, timeout=600)
    saved = np.load(reference)
    attention, _ = helpers.read_logs(tmp_path / "logs")
    records = helpers.read_health(tmp_path / "logs")["train"]
    assert sorted(records) == ["causal", "cross"]
    step = int(saved["step"])
    options = {"causal": dict(causal=True, repeat_offset=96), "cross": dict(cross=True)}
    for tag in ("causal", "cross"):
        assert all(encoding.is_pooled(s["header"]) for s in attention["train"][tag].values())
        assert sorted(records[tag]) == sorted(attention["train"][tag]) and step in records[tag]
        expected = health.head_health(saved[tag], **options[tag])
        assert_record_equals(records[tag][step], expected, tag)


class CountingAttention(keras.layers.MultiHeadAttention):
    """Keras' own attention, counting the forward passes that reach it (in Python: eager)."""

    calls = 0

    def call(self, query, value, key=None, **kwargs):
        type(self).calls += 1
        return super().call(query, value, key, **kwargs)


def count_forward_passes(tmp_path, health_probe):
    """Forward passes of a pooled layer during a fit with an eager logger at two captures."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2 * LONG,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY_SIZE, 8)(inputs)
    x = x + CountingAttention(4, 2, name="long")(x, x, use_causal_mask=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    ids = np.random.default_rng(0).integers(1, VOCABULARY_SIZE, size=(4, 2 * LONG))
    logger = AttentionLogger(str(tmp_path), ids[:2], update_freq="epoch", run_eagerly=True,
                             max_bytes_per_step=64 * 1024, health_probe=health_probe)
    CountingAttention.calls = 0
    fit(model, ids, np.zeros((4, 1), "float32"), [logger], epochs=1, batch_size=4)
    return CountingAttention.calls, model


def test_health_of_a_pooled_layer_costs_no_forward_pass_of_its_own(tmp_path):
    # With the default health probe (the probe itself) the pooled layer's health comes from
    # the query chunks of the displayed capture: a fit with health makes exactly as many
    # forward passes as one without it, and the record equals health.py's on the full scores.
    without, _ = count_forward_passes(tmp_path / "off", health_probe=False)
    counted, model = count_forward_passes(tmp_path / "on", health_probe=None)
    assert counted == without
    attention, _ = helpers.read_logs(tmp_path / "on")
    steps = attention["train"]["long"]
    assert len(steps) == 2 and all(encoding.is_pooled(s["header"]) for s in steps.values())
    records = helpers.read_health(tmp_path / "on")["train"]
    assert sorted(records["long"]) == sorted(steps)
    probe = np.random.default_rng(0).integers(1, VOCABULARY_SIZE, size=(4, 2 * LONG))[:2]
    embedded = model.layers[1](probe)
    _, scores = model.get_layer("long")(embedded, embedded, use_causal_mask=True,
                                        return_attention_scores=True)
    assert_record_equals(records["long"][final_step(model)],
                         health.head_health(np.asarray(scores), causal=True), "long")
    assert helpers.read_health(tmp_path / "off") == {}
