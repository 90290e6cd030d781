"""AttentionLogger's per-step byte budget on a model of the size users train.

A real Keras model with 12 MultiHeadAttention layers of 12 heads at 512 tokens (tiny key_dim so
that it runs on CPU) trains through `AttentionLogger` with its default limits and budget: its
layers do not fit in full, so every layer is POOLED (every position in the overview, exact
windows). The logs are read back through TensorBoard's real data provider.
"""

import glob
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callback_helpers as helpers  # noqa: E402
from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402

LAYERS = 12
HEADS = 12
LENGTH = 512
VOCABULARY = 64
BUDGET = 4 * 2**20  # AttentionLogger's default max_bytes_per_step


def build_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((LENGTH,), dtype="int32")
    # Unit-scale embeddings and kernels give peaky heads, not near-uniform rows.
    x = keras.layers.Embedding(
        VOCABULARY, 24, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0)
    )(inputs)
    for i in range(LAYERS):
        attention = keras.layers.MultiHeadAttention(
            HEADS, 2, kernel_initializer=keras.initializers.RandomNormal(stddev=0.6),
            name="layer_%d" % i)
        x = keras.layers.LayerNormalization()(x + attention(x, x))
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("budget")
    rng = np.random.default_rng(0)
    x = rng.integers(1, VOCABULARY, size=(4, LENGTH)).astype("int32")
    y = rng.normal(size=(4, 1)).astype("float32")
    tokens = [["w%d_%d" % (example, i) for i in range(LENGTH)] for example in range(2)]
    model = build_model()
    logger = AttentionLogger(str(logdir), x[:2], tokens=tokens)  # default limits and budget
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[logger])
    references = helpers.references_by_tag(model, x[:2], lambda layer: layer.path)
    ours = [w for w in caught if issubclass(w.category, AttentionLoggerWarning)]
    return {"logdir": logdir, "warnings": ours, "references": references, "tokens": tokens}


def blob_bytes_per_step(logdir):
    """`{step: bytes of every attention blob of every tag at that step}`, as TensorBoard reads."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"attention": 0})
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    ctx = context.RequestContext()
    sequences = provider.read_blob_sequences(
        ctx, experiment_id="", plugin_name="attention", downsample=1000)
    sizes = {}
    for datums in sequences["train"].values():
        for datum in datums:
            size = sum(len(provider.read_blob(ctx, blob_key=ref.blob_key))
                       for ref in datum.values)
            sizes[datum.step] = sizes.get(datum.step, 0) + size
    return sizes


def test_every_step_stays_under_the_default_budget(trained):
    sizes = blob_bytes_per_step(trained["logdir"])
    assert sorted(sizes) == [0, 2]  # training start and epoch end
    for step, size in sizes.items():
        assert 0 < size <= BUDGET, (step, size)
    # The event files (framing, metadata and all) stay within the budget per step too.
    files = glob.glob(str(trained["logdir"] / "train" / "events.out.tfevents.*"))
    assert sum(os.path.getsize(f) for f in files) <= len(sizes) * BUDGET


def test_the_user_is_told_once_what_was_reduced_and_how_to_log_more(trained):
    messages = [str(w.message) for w in trained["warnings"]]
    assert len(messages) == 1, messages
    message = messages[0]
    assert message.count("pooled in") == 1, message  # layers of one shape: one block size
    for text in ("examples 1 of 2", "512x512 positions pooled in", "exact: first_queries",
                 "max_bytes_per_step=4194304", "raise max_bytes_per_step=", "windows="):
        assert text in message, message


def test_headers_carry_the_same_note_and_every_position(trained):
    attention, _ = helpers.read_logs(trained["logdir"])
    assert sorted(attention["train"]) == sorted("layer_%d" % i for i in range(LAYERS))
    message = str(trained["warnings"][0].message)
    for tag, steps in attention["train"].items():
        for step in steps.values():
            header = step["header"]
            assert header["shape"] == [1, HEADS, LENGTH, LENGTH]
            assert header["layout"] == "pooled"
            (bq, bk), (nq, nk) = header["pooled"]["block"], header["pooled"]["grid"]
            assert nq * bq >= LENGTH and nk * bk >= LENGTH
            reduced = header["reduced"]
            assert message.endswith(reduced["note"]), (tag, reduced["note"])
            assert {k: v for k, v in reduced.items() if k != "note"} == {
                "source_shape": [2, HEADS, LENGTH, LENGTH], "examples": 1, "heads": HEADS,
                "tokens": None, "layers": [LAYERS, LAYERS], "max_bytes_per_step": BUDGET,
            }
            assert header["query_tokens"] == [trained["tokens"][0]]
            assert header["key_tokens"] == [trained["tokens"][0]]


def test_served_values_keep_the_format_precision(trained):
    attention, _ = helpers.read_logs(trained["logdir"])
    final = max(attention["train"]["layer_0"])
    peaks = []
    for tag, reference in trained["references"].items():
        step = attention["train"][tag][final]
        header = step["header"]
        means, maxes, windows = helpers.pooled_parts(header, step["blobs"])
        expected_means, expected_maxes = encoding.pool(reference[:1], header["pooled"]["block"])
        assert not np.isnan(means).any()
        assert np.abs(means - expected_means).max() <= encoding.MAX_ERROR + 1e-6, tag
        assert np.abs(maxes - expected_maxes).max() <= encoding.MAX_ERROR + 1e-6, tag
        for entry in header["windows"]:
            (q0, q1), (k0, k1) = entry["query"], entry["key"]
            error = np.abs(windows[entry["name"]] - reference[:1, :, q0:q1, k0:k1]).max()
            assert error <= encoding.MAX_ERROR + 1e-6, (tag, entry["name"], error)
        peaks.append(expected_maxes.max())
    # Peaky heads: the check would be weak if every weight were about 1/512.
    assert sum(peak > 0.1 for peak in peaks) >= LAYERS // 2, peaks


def test_a_small_budget_still_fits_and_keeps_first_and_last_layers(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((128,), dtype="int32")
    x = keras.layers.Embedding(VOCABULARY, 8)(inputs)
    for i in range(LAYERS):
        x = keras.layers.LayerNormalization()(
            x + keras.layers.MultiHeadAttention(4, 2, name="layer_%d" % i)(x, x))
    model = keras.Model(inputs, x)
    model.compile("adam", "mse")
    probe = np.random.default_rng(0).integers(1, VOCABULARY, size=(2, 128)).astype("int32")
    budget = 64 * 1024  # the smallest allowed
    logger = AttentionLogger(str(tmp_path), probe, max_bytes_per_step=budget)
    logger.set_model(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.on_train_begin()
        logger.on_train_end()
    messages = [str(w.message) for w in caught if issubclass(w.category, AttentionLoggerWarning)]
    assert len(messages) == 1, messages

    attention, _ = helpers.read_logs(tmp_path)
    kept = sorted(int(tag.split("_")[1]) for tag in attention["train"])
    assert kept[0] == 0 and kept[-1] == LAYERS - 1, kept
    gaps = np.diff(kept)
    assert gaps.max() - gaps.min() <= 1, kept
    for step in attention["train"].values():
        header = step[0]["header"]
        assert header["shape"][0] == 1 and header["shape"][2:] == [128, 128]  # every position
        assert header["reduced"]["layers"] == [len(kept), LAYERS]
        assert messages[0].endswith(header["reduced"]["note"])
    for text in ("examples 1 of 2", "max_bytes_per_step=65536"):
        assert text in messages[0], messages[0]
    assert 0 < blob_bytes_per_step(tmp_path)[0] <= budget


def test_the_bound_holds_for_the_event_file_with_tokens_images_and_statistics(tmp_path):
    # budget.capture_bytes is known before encoding; what the writer then puts on disk for the
    # same capture (tokens, a patch-layout image, statistics scalars included) must not exceed it.
    from tb_attention_plugin.logger import budget, summaries, writing
    from tb_attention_plugin.logger.problems import Problems

    rng = np.random.default_rng(0)

    def softmax(shape):
        logits = rng.normal(size=shape) * 4
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        return (weights / weights.sum(-1, keepdims=True)).astype("float32")

    words = [["wörd_%d" % i for i in range(300)]] * 2
    images = rng.integers(0, 256, size=(2, 8, 8, 3)).astype("uint8")
    calls = [
        summaries.LayerCall("text/mha", softmax((2, 3, 300, 300)), None, words, words, None),
        summaries.LayerCall("vit/mha", softmax((2, 3, 17, 17)), None, None, None, ([4, 4], 1)),
    ]
    for limit in (None, 64 * 1024):  # everything in full; then the text layer pooled
        sizer = budget.Budget(budget.Limits(max_bytes_per_step=limit), probe_size=2,
                              images_shape=images.shape, statistics=True)
        plan = sizer.plan_for(calls)
        if limit is None:
            assert (plan.view.examples, plan.note) == (2, None)
        items = [summaries.summary_item(call, plan.layers[call.tag], plan.note, 2, 2, 2,
                                        images=images) for call in calls]
        scalars = {}
        for item in items:
            scalars.update(summaries.head_statistics(item))
        directory = tmp_path / str(limit)
        writer = writing.RunWriter(str(directory), Problems())
        assert writer.write_plain(items, scalars, step=1) == ["text/mha", "vit/mha"]
        writer.flush()
        written = sum(os.path.getsize(path) for path in glob.glob(str(directory / "*")))
        bound = budget.capture_bytes(calls, plan.view, plan.layers, plan.note, images.shape,
                                     statistics=True)
        assert 0 < written <= bound, (limit, written, bound)
        if limit is not None:
            assert bound <= limit
