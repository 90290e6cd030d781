"""Long sequences (issue 11): every position of every layer and head, within the budget.

A real keras-hub `GPT2Backbone`, built narrow but long (2 layers, 4 heads, hidden 32, 2048
tokens, random weights), trains through `model.fit` with `AttentionLogger` at its defaults.
Its layers do not fit the 4 MiB budget in full, so they are POOLED: computed in blocks inside
the patched attention (their full score tensor never exists) and stored as an overview of block
means and maxes plus exact windows. The logs are read back through TensorBoard's real data
provider and compared with each layer's own `return_attention_scores=True`.
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
from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin.logger import blocked, budget  # noqa: E402

keras_hub = pytest.importorskip("keras_hub")

LENGTH = 2048
LAYERS = 2
HEADS = 4
VOCABULARY = 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpt2_model(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY, num_layers=LAYERS, num_heads=HEADS, hidden_dim=32,
        intermediate_dim=64, dropout=0.0, max_sequence_length=LENGTH)
    token_ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((LENGTH,), dtype="int32", name="padding_mask")
    x = backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, outputs)
    model.compile("adam", "mse")
    return model


def gpt2_data():
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(1, VOCABULARY, size=(2, LENGTH)).astype("int32"),
         "padding_mask": np.ones((2, LENGTH), "int32")}
    y = rng.normal(size=(2, 1)).astype("float32")
    return x, y


def assert_faithful(stored, reference, what):
    """The format's bounds: relative 3% for weights >= 1e-6 of the head's largest, absolute
    1/508 everywhere (NaN = masked, where the reference holds no weight)."""
    attended = ~np.isnan(stored)
    assert attended.any(), what
    assert np.all(reference[~attended] <= 1e-6), "%s: weight at masked positions" % what
    error = np.abs(stored[attended] - reference[attended])
    assert error.max() <= 1 / 508 + 1e-7, (what, error.max())
    scale = np.nanmax(np.where(attended, reference, np.nan), axis=(-2, -1), keepdims=True)
    large = attended & (reference >= 1e-6 * scale)
    relative = np.abs(stored[large] - reference[large]) / reference[large]
    assert relative.max() <= 0.03, (what, relative.max())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("long")
    x, y = gpt2_data()
    model = gpt2_model()
    plain = gpt2_model()  # the same model, trained without the callback
    logger = AttentionLogger(str(logdir), x, update_freq="epoch")  # defaults otherwise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[logger])
    plain.fit(x, y, batch_size=2, epochs=1, verbose=0)
    sites, _ = __import__("tb_attention_plugin.logger.capture", fromlist=["x"]) \
        .find_attention_layers(model)
    path_of = {id(site.layer): site.path for site in sites}
    references = helpers.references_by_tag(model, x, lambda layer: path_of[id(layer)])
    return {"logdir": logdir, "model": model, "plain": plain, "x": x, "logger": logger,
            "references": references,
            "warnings": [w for w in caught if issubclass(w.category, AttentionLoggerWarning)]}


def test_every_layer_and_head_is_logged_pooled_and_covers_every_position(trained):
    attention, _ = helpers.read_logs(trained["logdir"])
    steps = attention["train"]
    assert sorted(steps) == sorted(trained["references"]) and len(steps) == LAYERS
    for tag, by_step in steps.items():
        assert sorted(by_step) == [0, 1]  # training start and epoch end
        for step in by_step.values():
            header = step["header"]
            assert header["layout"] == "pooled", tag
            assert header["shape"] == [1, HEADS, LENGTH, LENGTH]  # every head and position
            (bq, bk), (nq, nk) = header["pooled"]["block"], header["pooled"]["grid"]
            assert nq * bq >= LENGTH and nk * bk >= LENGTH and (nq - 1) * bq < LENGTH
            means, maxes, windows = helpers.pooled_parts(header, step["blobs"])
            # Causal: a block holds weight exactly when it has a position on or below the
            # diagonal, so every attended position is in some unmasked block.
            rows = np.arange(nq)[:, None] * bq
            cols = np.arange(nk)[None, :] * bk
            visible = cols <= np.minimum(rows + bq - 1, LENGTH - 1)
            assert np.array_equal(~np.isnan(means[0, 0]), visible), tag
            assert np.array_equal(np.isnan(means), np.isnan(maxes))
            names = [w["name"] for w in header["windows"]]
            assert names[:2] == ["last_queries", "first_queries"], names
    # The budget holds at every step.
    from test_size_budget import blob_bytes_per_step

    for step, size in blob_bytes_per_step(trained["logdir"]).items():
        assert 0 < size <= budget.DEFAULT_BYTES_PER_STEP, (step, size)


def test_overview_and_windows_equal_the_layers_own_scores(trained):
    attention, _ = helpers.read_logs(trained["logdir"])
    for tag, reference in trained["references"].items():
        reference = reference[:1]
        step = attention["train"][tag][1]
        header = step["header"]
        means, maxes, windows = helpers.pooled_parts(header, step["blobs"])
        causal = np.tril(np.ones((LENGTH, LENGTH), bool))
        ref_means, ref_maxes = encoding.pool(reference, header["pooled"]["block"], causal)
        assert_faithful(means, np.nan_to_num(ref_means), tag + " means")
        assert_faithful(maxes, np.nan_to_num(ref_maxes), tag + " maxes")
        for entry in header["windows"]:
            (q0, q1), (k0, k1) = entry["query"], entry["key"]
            stored = windows[entry["name"]]
            expected = reference[:, :, q0:q1, k0:k1]
            assert_faithful(stored, expected, "%s %s" % (tag, entry["name"]))
            # Masked exactly where the causal mask hides keys.
            assert np.array_equal(np.isnan(stored[0, 0]), ~causal[q0:q1, k0:k1])
        last = windows["last_queries"]
        assert last.shape[-1] == LENGTH and entry is not None  # the last rows see every key


def test_pooled_layers_health_at_defaults_equals_their_own_scores(trained):
    # At the defaults the health probe is the 2-example probe: every pooled layer is measured
    # from the query chunks of its blocked pass, as on its full matrices.
    from tb_attention_plugin import health
    from tb_attention_plugin import health_summary

    records = helpers.read_health(trained["logdir"])["train"]
    assert sorted(records) == sorted(trained["references"])
    for tag, scores in trained["references"].items():
        assert sorted(records[tag]) == [0, 1], tag
        record = records[tag][1]
        assert record["heads"] == HEADS and record["examples"] == 2
        expected = health.head_health(scores, causal=True)
        stored = health_summary.from_record(record)
        for key in ("entropy", "previous_token", "diagonal", "first_token"):
            np.testing.assert_allclose(stored[key], expected[key], rtol=1e-4, atol=1e-5,
                                       err_msg="%s %s" % (tag, key))
        assert stored["roles"] == expected["roles"], tag


def test_predictions_are_identical_with_and_without_the_callback(trained):
    model, x = trained["model"], trained["x"]
    before = model.predict(x, verbose=0)
    # A capture (blocked attention in every layer) leaves the model's outputs bit for bit.
    records = trained["logger"]._probe_capture(model)
    assert len(records) == LAYERS and all(r.pooled is not None for r in records)
    helpers.assert_unpatched(model)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    # Training with the callback gives the model training without it gives (up to the float
    # rounding TensorFlow's multi-threaded CPU reductions differ by between two runs).
    np.testing.assert_allclose(before, trained["plain"].predict(x, verbose=0), rtol=1e-5)
    for ours, theirs in zip(model.get_weights(), trained["plain"].get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_one_warning_says_what_is_pooled(trained):
    messages = [str(w.message) for w in trained["warnings"]]
    assert len(messages) == 1, messages
    assert "pooled in" in messages[0] and "last_queries" in messages[0], messages[0]


# ------------------------------------------- the budget arithmetic at the sizes


def shape_call(tag, shape, causal=True):
    from tb_attention_plugin.logger import summaries

    return summaries.LayerCall(tag, full_shape=shape, causal=causal)


def test_gpt2_small_at_1024_and_a_32_head_layer_at_8192_fit_the_default_budget():
    sizer = budget.Budget(budget.Limits(), probe_size=1)
    gpt2 = [shape_call("layer_%d" % i, (1, 12, 1024, 1024)) for i in range(12)]
    plan = sizer.plan_for(gpt2)
    assert plan.met and plan.view.layers is None and plan.view.heads is None
    assert all(p.mode == "pooled" and p.heads == 12 for p in plan.layers.values())
    assert budget.capture_bytes(gpt2, plan.view, plan.layers, plan.note) \
        <= budget.DEFAULT_BYTES_PER_STEP

    long = [shape_call("long", (1, 32, 8192, 8192))]
    plan = sizer.plan_for(long)
    layer = plan.layers["long"]
    assert plan.met and layer.mode == "pooled" and layer.heads == 32
    assert budget.capture_bytes(long, plan.view, plan.layers, plan.note) \
        <= budget.DEFAULT_BYTES_PER_STEP


def causal_sink_weights(heads, length, rng):
    """Causal softmax of N(0, 1) logits with a first-token sink (+4 on key 0)."""
    logits = rng.normal(size=(1, heads, length, length)).astype("float32")
    logits[..., 0] += 4
    logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def test_real_encoded_sizes_stay_within_the_bound():
    from tb_attention_plugin.logger import summaries

    rng = np.random.default_rng(0)
    for shape, count in [((1, 12, 1024, 1024), 12), ((1, 32, 8192, 8192), 1)]:
        calls = [shape_call("layer_%d" % i, shape) for i in range(count)]  # GPT-2 small: 12
        plan = budget.Budget(budget.Limits(), probe_size=1).plan_for(calls)
        layer = plan.layers["layer_0"]
        (bq, bk), heads, length = layer.block, shape[1], shape[2]
        if length == 1024:  # real weights, pooled as the capture pools them
            weights = causal_sink_weights(heads, length, rng)
            mask = np.tril(np.ones((length, length), bool))
            means, maxes = encoding.pool(weights, layer.block, mask)
            windows = [(name, q, k, np.where(mask[q[0]:q[1], k[0]:k[1]],
                                             weights[..., q[0]:q[1], k[0]:k[1]], np.nan))
                       for name, q, k in layer.windows]
        else:  # too large to materialise here: blocks of weights about 1/T, lognormal
            nq, nk = encoding.pool_grid(length, bq), encoding.pool_grid(length, bk)
            maxes = np.minimum(1, np.exp(rng.normal(np.log(8 / length), 1.5,
                                                    size=(1, heads, nq, nk)))).astype("float32")
            maxes[..., 0] = rng.uniform(0.3, 1, size=(1, heads, nq))
            means = (maxes * rng.uniform(0.05, 1, size=maxes.shape)).astype("float32")
            above = np.triu(np.ones((nq, nk), bool), 1)
            means[..., above], maxes[..., above] = np.nan, np.nan
            windows = []
            for name, q, k in layer.windows:
                rows = np.minimum(1, np.exp(rng.normal(np.log(1 / length), 1.5, size=(
                    1, heads, q[1] - q[0], k[1] - k[0])))).astype("float32")
                visible = np.arange(k[0], k[1])[None, :] <= np.arange(q[0], q[1])[:, None]
                windows.append((name, q, k, np.where(visible, rows, np.nan)))
        pooled = {"block": layer.block, "means": means, "maxes": maxes, "windows": windows}
        full = summaries.LayerCall("layer_0", full_shape=shape, causal=True, pooled=pooled)
        item = summaries.summary_item(full, layer, plan.note, count, count, 1,
                                      max_bytes_per_step=budget.DEFAULT_BYTES_PER_STEP)
        written = sum(len(b) for b in item.blobs)
        bound = budget.capture_bytes(calls, plan.view, plan.layers, plan.note)
        assert count * written <= bound <= budget.DEFAULT_BYTES_PER_STEP, (written, bound)


# ---------------------------------- blocked attention equals the unpatched layer (TF, JAX)

BLOCKED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, keras
    from keras import ops
    from tb_attention_plugin import encoding
    from tb_attention_plugin.logger import blocked
    blocked.CHUNK_BYTES = 8 * 4 * 100 * 24  # chunks of 16 rows: several per block of 32
    keras.utils.set_random_seed(0)
    layer = keras.layers.MultiHeadAttention(4, 8)
    T = 100
    x = np.random.default_rng(0).normal(size=(2, T, 16)).astype("float32") * 3
    layer(x, x)
    q, k, v = layer._query_dense(x), layer._key_dense(x), layer._value_dense(x)
    mask = np.tril(np.ones((T, T), bool))[None].repeat(2, 0)
    mask[1, :, 90:] = False
    windows = [("last_queries", (84, 100), (0, 100)), ("first_key", (0, 100), (0, 1))]
    for m in (None, mask):
        tm = None if m is None else ops.convert_to_tensor(m)
        ref_out, ref_w = layer._compute_attention(q, k, v, attention_mask=tm,
                                                  return_attention_scores=True)
        for block in ((32, 16), (8, 8)):
            out, red = blocked.blocked_attention(layer, q, k, v, tm, block, windows)
            red = {a: ops.convert_to_numpy(b) for a, b in red.items()}
            means, maxes, ws, ml = blocked.finish(red, (2, 4, T, T), block, windows, 2)
            np.testing.assert_allclose(ops.convert_to_numpy(out),
                                       ops.convert_to_numpy(ref_out), rtol=1e-4, atol=1e-5)
            rw = ops.convert_to_numpy(ref_w)
            rm, rx = encoding.pool(rw, block, None if m is None else m[:, None])
            np.testing.assert_allclose(means, rm, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(maxes, rx, rtol=1e-5, atol=1e-7)
            for name, qq, kk, w in ws:
                ref = rw[:, :, qq[0]:qq[1], kk[0]:kk[1]]
                if m is not None:
                    ref = np.where(m[:, None, qq[0]:qq[1], kk[0]:kk[1]], ref, np.nan)
                np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-7)
            logits = np.einsum("bqhd,bkhd->bhqk", ops.convert_to_numpy(q) / np.sqrt(8),
                               ops.convert_to_numpy(k))
            if m is not None:
                logits = np.where(m[:, None], logits, -np.inf)
            np.testing.assert_allclose(ml, logits.max((2, 3)), rtol=1e-5, atol=1e-5)
    print("ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_blocked_attention_equals_the_unpatched_layer(backend):
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        pytest.skip("the %s package is not installed in this environment" % backend)
    environment = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", BLOCKED_SCRIPT], cwd=REPO, env=environment,
                            timeout=900, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok %s" % backend in result.stdout


def test_a_traced_capture_computes_pooled_layers_in_blocks_too():
    # The callback's default on TensorFlow is the traced graph (CompiledCapture): it must give
    # what the eager blocked pass gives.
    from tb_attention_plugin.logger import capture

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96,), dtype="int32")
    x = keras.layers.Embedding(20, 16)(inputs)
    x = keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x, use_causal_mask=True)
    model = keras.Model(inputs, x)
    probe = np.random.default_rng(0).integers(1, 20, (1, 96)).astype("int32")
    sites, _ = capture.find_attention_layers(model)
    shapes = capture.layer_shapes(model, probe, sites)
    assert [(s.tag, s.shape, s.causal) for s in shapes] == [("mha", (1, 2, 96, 96), True)]
    windows = tuple(encoding.default_windows((1, 2, 96, 96), 8, True))
    plan = budget.LayerPlan("pooled", (1, 2, 96, 96), 1, 2, True, (8, 8), windows)
    plans = {("mha", 0): plan}
    eager = capture.capture_attention(model, probe, sites, plans).records[0]
    traced = capture.CompiledCapture(model, probe, sites, plans)().records[0]
    full = capture.capture_attention(model, probe, sites).records[0]
    helpers.assert_unpatched(model)
    for record in (eager, traced):
        assert record.scores is None and record.shape == (1, 2, 96, 96)
        means, maxes = encoding.pool(full.scores, (8, 8), full.mask)
        np.testing.assert_allclose(record.pooled["means"], means, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(record.pooled["maxes"], maxes, rtol=1e-5, atol=1e-7)
        for name, (q0, q1), (k0, k1), weights in record.pooled["windows"]:
            expected = np.where(full.mask, full.scores, np.nan)[:, :, q0:q1, k0:k1]
            np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(record.max_logit, full.max_logit, rtol=1e-5)
    assert blocked.supports(sites[0].layer, *[keras.ops.zeros((1, 96, 2, 8))] * 3)


class BiasedScoreAttention(keras.layers.MultiHeadAttention):
    """A user's MultiHeadAttention with its own `_compute_attention` (here its logits doubled
    through the query): the chunked kernel does not know it, so it is not computed in chunks."""

    def _compute_attention(self, query, key, value, *args, **kwargs):
        return super()._compute_attention(2.0 * query, key, value, *args, **kwargs)


def test_a_subclass_with_its_own_attention_math_keeps_it_when_pooled():
    # Pooled, such a layer runs its own `_compute_attention` (so its output is its own): the
    # overview and the max logit come from its scores, not from MultiHeadAttention's math.
    from tb_attention_plugin.logger import capture

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96,), dtype="int32")
    x = keras.layers.Embedding(20, 16)(inputs)
    layer = BiasedScoreAttention(2, 8, name="biased")
    x = layer(x, x, use_causal_mask=True)
    model = keras.Model(inputs, x)
    probe = np.random.default_rng(0).integers(1, 20, (1, 96)).astype("int32")
    assert not blocked.supports(layer, *[keras.ops.zeros((1, 96, 2, 8))] * 3)
    sites, _ = capture.find_attention_layers(model)
    windows = tuple(encoding.default_windows((1, 2, 96, 96), 8, True))
    plan = budget.LayerPlan("pooled", (1, 2, 96, 96), 1, 2, True, (8, 8), windows)
    result = capture.capture_attention(model, probe, sites, {("biased", 0): plan})
    helpers.assert_unpatched(model)
    embedded = model.layers[1](probe)
    _, own = layer(embedded, embedded, use_causal_mask=True, return_attention_scores=True)
    own = np.asarray(own)
    assert result.problems == {}
    record = result.records[0]
    # Captured by the layer's own method, then pooled: the overview holds its doubled logits.
    assert record.scores is None and record.shape == (1, 2, 96, 96)
    causal = np.tril(np.ones((96, 96), bool))
    means, maxes = encoding.pool(own, (8, 8), causal)
    np.testing.assert_allclose(record.pooled["means"], means, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(record.pooled["maxes"], maxes, rtol=1e-5, atol=1e-7)
    query = np.asarray(layer._query_dense(embedded)) / np.sqrt(8)
    key = np.asarray(layer._key_dense(embedded))
    logits = np.where(causal, 2.0 * np.einsum("bqhd,bkhd->bhqk", query, key), -np.inf)
    np.testing.assert_allclose(record.max_logit, logits.max((2, 3)), rtol=1e-5)
