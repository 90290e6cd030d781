"""AttentionLogger on real models: every attention layer is found and logged; the stored scores
equal the layer's own `return_attention_scores=True`; training is untouched.

Each fixture trains a small model twice from the same seed, with and without the callback, and
reads the logs back through TensorBoard's data provider.
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning  # noqa: E402
import callback_helpers as helpers  # noqa: E402

VOCABULARY = ["<pad>"] + ["w%d" % i for i in range(1, 40)]
TARGET_VOCABULARY = ["<pad>"] + ["目%d" % i for i in range(1, 40)]


@keras.saving.register_keras_serializable("tests")
class TransformerBlock(keras.layers.Layer):
    """Self-attention + feed-forward block that honours the Keras padding mask."""

    def __init__(self, dim, heads, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.causal = dim, heads, causal
        self.attention = keras.layers.MultiHeadAttention(heads, dim // heads, name="attention")
        self.norm1 = keras.layers.LayerNormalization()
        self.norm2 = keras.layers.LayerNormalization()
        self.ffn = keras.layers.Dense(dim, activation="relu")
        self.supports_masking = True

    def call(self, x, mask=None):
        attention_mask = None
        if mask is not None:
            attention_mask = keras.ops.logical_and(mask[:, None, :], mask[:, :, None])
        x = self.norm1(
            x + self.attention(x, x, attention_mask=attention_mask, use_causal_mask=self.causal)
        )
        return self.norm2(x + self.ffn(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads,
                "causal": self.causal}


def padded_ids(rng, count, length, vocabulary_size, min_length):
    ids = rng.integers(1, vocabulary_size, size=(count, length))
    for row in ids:
        row[rng.integers(min_length, length + 1):] = 0
    return ids


def fit_twice(build, x, y, tmp_path, fit_kwargs=None, **logger_kwargs):
    """Trains two models built from the same seed, one with the logger. Returns a dict."""
    fit_kwargs = dict(epochs=2, batch_size=8, verbose=0, **(fit_kwargs or {}))
    keras.utils.set_random_seed(1)
    plain = build()
    plain.fit(x, y, **fit_kwargs)
    keras.utils.set_random_seed(1)
    model = build()
    flash_before = {id(layer): layer.__dict__.get("_flash_attention")
                    for layer in helpers.attention_layers(model)}
    logger = AttentionLogger(str(tmp_path), update_freq=2, **logger_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, callbacks=[logger], **fit_kwargs)
    # The probe ran as a traced graph (the fast path), not the eager fallback.
    assert logger._probe_capture.compiled is not None and not logger._probe_capture.compiled_failed
    attention, scalars = helpers.read_logs(tmp_path)
    return {
        "model": model,
        "plain": plain,
        "x": x,
        "logger": logger,
        "flash_before": flash_before,
        "runs": attention,
        "logs": attention["train"],
        "scalars": scalars.get("train", {}),
        "warnings": [w for w in caught if issubclass(w.category, AttentionLoggerWarning)],
        "final_step": int(np.asarray(model.optimizer.iterations.value)),
    }


def check_common(result, probe, expected_tags, tag_of_layer=lambda layer: layer.path):
    """Assertions every model must pass."""
    model, logs = result["model"], result["logs"]
    assert sorted(logs) == sorted(expected_tags)
    final = result["final_step"]
    for tag, steps in logs.items():
        assert 0 in steps and final in steps, (tag, sorted(steps))
    references = helpers.references_by_tag(
        model, keras.tree.map_structure(lambda a: a[:2], probe), tag_of_layer
    )
    for tag in expected_tags:
        helpers.check_against_reference(logs[tag][final]["weights"], references[tag], tag)
    helpers.assert_unpatched(model, result["flash_before"])
    np.testing.assert_array_equal(
        model.predict(result["x"], verbose=0), result["plain"].predict(result["x"], verbose=0)
    )


# --------------------------------------------------------------------- functional classifier


def build_classifier():
    inputs = keras.Input((12,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(len(VOCABULARY), 16, mask_zero=True)(inputs)
    x = TransformerBlock(16, 2, name="block_0")(x)
    x = TransformerBlock(16, 2, name="block_1")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x), name="classifier")
    model.compile("adam", "mse")
    return model


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = padded_ids(rng, 32, 12, len(VOCABULARY), 5)
    x[0, 7:] = 0
    y = rng.normal(size=(32, 1)).astype("float32")
    return fit_twice(build_classifier, x, y, tmp_path_factory.mktemp("classifier"),
                     probe=x[:4], vocabulary=VOCABULARY, statistics=True)


def test_functional_classifier_logs_every_block(classifier):
    check_common(classifier, classifier["x"][:4],
                 ["block_0/attention", "block_1/attention"])


def test_padding_is_masked_and_tokens_come_from_the_vocabulary(classifier):
    final = classifier["final_step"]
    step = classifier["logs"]["block_0/attention"][final]
    header, weights = step["header"], step["weights"]
    assert header["shape"] == [2, 2, 12, 12]
    expected = [[VOCABULARY[i] for i in row] for row in classifier["x"][:2]]
    assert header["query_tokens"] == expected and header["key_tokens"] == expected
    # Example 0 has 7 real tokens: padded keys and padded query rows are masked.
    assert np.isnan(weights[0, :, :, 7:]).all() and np.isnan(weights[0, :, 7:, :]).all()
    assert not np.isnan(weights[0, :, :7, :7]).any()
    # The probe has 4 examples; 2 are logged and the header says so.
    assert header["reduced"]["source_shape"][0] == 4 and header["reduced"]["examples"] == 2


def test_statistics_are_written_per_head(classifier):
    from tb_attention_plugin import stats

    final = classifier["final_step"]
    weights = classifier["logs"]["block_1/attention"][final]["weights"]
    expected = stats.head_statistics(weights)
    scalars = classifier["scalars"]
    for name in stats.STATISTICS:
        for head in range(2):
            series = dict(scalars["block_1/attention/%s/head_%d" % (name, head)])
            assert sorted(series) == sorted(classifier["logs"]["block_1/attention"])
            # Computed from unquantised scores: within the quantisation error.
            assert abs(series[final] - expected[name][head]) <= 0.01


def test_reduced_view_is_announced_once(classifier):
    messages = [str(w.message) for w in classifier["warnings"]]
    assert len(messages) == 1 and "examples 2 of 4" in messages[0], messages
    assert "max_examples=" in messages[0]


# ------------------------------------------------------------------- Sequential-wrapped block


def build_sequential():
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            keras.layers.Embedding(len(VOCABULARY), 16, mask_zero=True),
            TransformerBlock(16, 4, causal=True, name="causal_block"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ],
        name="sequential",
    )
    model.compile("adam", "mse")
    return model


def test_sequential_causal_block(tmp_path):
    rng = np.random.default_rng(1)
    x = padded_ids(rng, 16, 10, len(VOCABULARY), 6)
    y = rng.normal(size=(16, 1)).astype("float32")
    result = fit_twice(build_sequential, x, y, tmp_path, probe=x[:2],
                       tokens=[[VOCABULARY[i] for i in row] for row in x[:2]])
    check_common(result, x[:2], ["sequential/causal_block/attention"])
    stored = result["logs"]["sequential/causal_block/attention"][result["final_step"]]["weights"]
    helpers.assert_causal(stored, "causal_block/attention")
    assert not result["warnings"], [str(w.message) for w in result["warnings"]]


# ------------------------------------------------- subclassed encoder-decoder translator


@keras.saving.register_keras_serializable("tests")
class Translator(keras.Model):
    """Encoder self-attention (padding), decoder causal self-attention, cross-attention."""

    def __init__(self, dim=16, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.source_embedding = keras.layers.Embedding(len(VOCABULARY), dim)
        self.target_embedding = keras.layers.Embedding(len(TARGET_VOCABULARY), dim)
        self.encoder_attention = keras.layers.MultiHeadAttention(heads, dim // heads,
                                                                 name="encoder_self_attention")
        self.decoder_attention = keras.layers.MultiHeadAttention(heads, dim // heads,
                                                                 name="decoder_self_attention")
        self.cross_attention = keras.layers.MultiHeadAttention(heads, dim // heads,
                                                               name="cross_attention")
        self.output_layer = keras.layers.Dense(len(TARGET_VOCABULARY))

    def call(self, inputs):
        source, target = inputs
        source_mask = keras.ops.not_equal(source, 0)
        s = self.source_embedding(source)
        s = s + self.encoder_attention(
            s, s, attention_mask=keras.ops.logical_and(source_mask[:, None, :],
                                                       source_mask[:, :, None]))
        t = self.target_embedding(target)
        t = t + self.decoder_attention(t, t, use_causal_mask=True)  # Keras' causal fast path
        cross_mask = keras.ops.broadcast_to(
            source_mask[:, None, :], (keras.ops.shape(t)[0], keras.ops.shape(t)[1],
                                      keras.ops.shape(s)[1]))
        t = t + self.cross_attention(t, s, attention_mask=cross_mask)
        return self.output_layer(t)


def build_translator():
    model = Translator(name="translator")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    rng = np.random.default_rng(2)
    source = padded_ids(rng, 24, 7, len(VOCABULARY), 4)
    target = padded_ids(rng, 24, 6, len(TARGET_VOCABULARY), 6)
    labels = rng.integers(0, len(TARGET_VOCABULARY), size=(24, 6))
    return fit_twice(build_translator, (source, target), labels,
                     tmp_path_factory.mktemp("translator"), probe=(source[:2], target[:2]),
                     vocabulary={"source": VOCABULARY, "target": TARGET_VOCABULARY})


def test_translator_scores_match_and_training_is_untouched(translator):
    check_common(translator, translator["x"],
                 ["translator/encoder_self_attention", "translator/decoder_self_attention",
                  "translator/cross_attention"])
    assert not translator["warnings"], [str(w.message) for w in translator["warnings"]]


def test_translator_token_roles(translator):
    logs, final = translator["logs"], translator["final_step"]
    source, target = translator["x"]
    source_tokens = [[VOCABULARY[i] for i in row] for row in source[:2]]
    target_tokens = [[TARGET_VOCABULARY[i] for i in row] for row in target[:2]]
    encoder = logs["translator/encoder_self_attention"][final]["header"]
    decoder = logs["translator/decoder_self_attention"][final]
    cross = logs["translator/cross_attention"][final]["header"]
    assert (encoder["query_tokens"], encoder["key_tokens"]) == (source_tokens, source_tokens)
    assert (decoder["header"]["query_tokens"], decoder["header"]["key_tokens"]) == (
        target_tokens, target_tokens)
    assert (cross["query_tokens"], cross["key_tokens"]) == (target_tokens, source_tokens)
    assert cross["shape"] == [2, 2, 6, 7]
    helpers.assert_causal(decoder["weights"], "decoder_self_attention")


# ------------------------------------------- shared layers, GQA, Attention, AdditiveAttention


def build_assorted():
    a = keras.Input((6,), dtype="int32", name="a")
    b = keras.Input((6,), dtype="int32", name="b")
    embedding = keras.layers.Embedding(len(VOCABULARY), 8)
    ea, eb = embedding(a), embedding(b)
    shared = keras.layers.MultiHeadAttention(2, 4, name="shared")
    gqa = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2,
                                           name="gqa")
    dot = keras.layers.Attention(use_scale=True, name="dot")
    additive = keras.layers.AdditiveAttention(name="additive")
    cross = keras.layers.MultiHeadAttention(2, 4, name="cross")
    outputs = [
        shared(ea, ea), shared(eb, eb), gqa(ea, ea, use_causal_mask=True),
        dot([eb, eb], use_causal_mask=True), additive([ea, eb]), cross(ea, eb),
    ]
    pooled = [keras.layers.GlobalAveragePooling1D()(o) for o in outputs]
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()(pooled)))
    model.compile("adam", "mse")
    return model


def test_shared_layers_and_every_attention_class(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(1, len(VOCABULARY), size=(16, 6))
    b = rng.integers(1, len(VOCABULARY), size=(16, 6))
    y = rng.normal(size=(16, 1)).astype("float32")
    result = fit_twice(build_assorted, (a, b), y, tmp_path, probe=(a[:2], b[:2]),
                       vocabulary=VOCABULARY)
    tags = ["shared/call_0", "shared/call_1", "gqa", "dot", "additive", "cross"]
    check_common(result, (a, b), tags)
    final = result["final_step"]
    logs = result["logs"]
    helpers.assert_causal(logs["gqa"][final]["weights"], "gqa")
    helpers.assert_causal(logs["dot"][final]["weights"], "dot")
    assert logs["gqa"][final]["header"]["shape"] == [2, 4, 6, 6]
    assert logs["additive"][final]["header"]["shape"] == [2, 1, 6, 6]
    # Equal lengths: cross-attention is told apart by its inputs, not by its shape.
    a_tokens = [[VOCABULARY[i] for i in row] for row in a[:2]]
    b_tokens = [[VOCABULARY[i] for i in row] for row in b[:2]]
    header = logs["cross"][final]["header"]
    assert (header["query_tokens"], header["key_tokens"]) == (b_tokens, a_tokens)
    header = logs["shared/call_0"][final]["header"]
    assert (header["query_tokens"], header["key_tokens"]) == (a_tokens, a_tokens)


# ------------------------------------------------------------------------- Vision Transformer


@keras.saving.register_keras_serializable("tests")
class ClassToken(keras.layers.Layer):
    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, x):
        token = keras.ops.broadcast_to(self.token, (keras.ops.shape(x)[0], 1, x.shape[-1]))
        return keras.ops.concatenate([keras.ops.cast(token, x.dtype), x], axis=1)


def build_vit():
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 4, strides=4)(images)
    x = keras.layers.Reshape((16, 16))(x)
    x = ClassToken()(x)
    x = TransformerBlock(16, 2, name="vit_block_0")(x)
    x = TransformerBlock(16, 2, name="vit_block_1")(x)
    model = keras.Model(images, keras.layers.Dense(3)(x[:, 0]), name="vit")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_vision_transformer_stores_probe_images(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=(16,))
    result = fit_twice(build_vit, x, y, tmp_path, probe=x[:2])
    check_common(result, x[:2], ["vit_block_0/attention", "vit_block_1/attention"])
    step = result["logs"]["vit_block_1/attention"][result["final_step"]]
    assert step["header"]["image"] == {"grid": [4, 4], "prefix_tokens": 1, "width": 16,
                                       "height": 16}
    np.testing.assert_array_equal(step["images"][0],
                                  np.round(x[0] * 255).astype(np.uint8))
    assert step["header"]["query_tokens"] is None


# ------------------------------------------------------------------------ keras-hub backbones


def test_keras_hub_bert(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    rng = np.random.default_rng(5)
    ids = padded_ids(rng, 16, 10, len(VOCABULARY), 5)
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": ids != 0}
    y = rng.normal(size=(16, 1)).astype("float32")

    def build():
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=len(VOCABULARY), num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=10, name="bert")
        pooled = backbone(backbone.input)["pooled_output"]
        model = keras.Model(backbone.input, keras.layers.Dense(1)(pooled))
        model.compile("adam", "mse")
        return model

    probe = {k: v[:2] for k, v in x.items()}
    result = fit_twice(build, x, y, tmp_path, probe=probe, vocabulary=VOCABULARY)
    tags = sorted(result["logs"])
    assert tags == ["transformer_layer_0/self_attention_layer",
                    "transformer_layer_1/self_attention_layer"], tags
    check_common(result, probe, tags)
    header = result["logs"][tags[0]][result["final_step"]]["header"]
    assert header["key_tokens"] == [[VOCABULARY[i] for i in row] for row in ids[:2]]


def test_keras_hub_gpt2_is_causal(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    rng = np.random.default_rng(6)
    ids = padded_ids(rng, 16, 8, len(VOCABULARY), 8)
    x = {"token_ids": ids, "padding_mask": ids != 0}

    def build():
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=len(VOCABULARY), num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=8, name="gpt2")
        logits = keras.layers.Dense(len(VOCABULARY))(backbone(backbone.input))
        model = keras.Model(backbone.input, logits)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    probe = {k: v[:2] for k, v in x.items()}
    result = fit_twice(build, x, ids, tmp_path, probe=probe, vocabulary=VOCABULARY)
    tags = sorted(result["logs"])
    assert len(tags) == 2, tags
    check_common(result, probe, tags)
    for tag in tags:
        helpers.assert_causal(result["logs"][tag][result["final_step"]]["weights"], tag)


def test_keras_hub_vit(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(16, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, size=(16,))

    def build():
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
            mlp_dim=32, name="vit_backbone")
        features = backbone(backbone.input)
        model = keras.Model(backbone.input, keras.layers.Dense(3)(features[:, 0]))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    result = fit_twice(build, x, y, tmp_path, probe=x[:2])
    tags = sorted(result["logs"])
    assert len(tags) == 2, tags
    check_common(result, x[:2], tags)
    header = result["logs"][tags[0]][result["final_step"]]["header"]
    assert header["image"]["grid"] == [4, 4] and header["image"]["prefix_tokens"] == 1


# ------------------------------------------------------------- traced capture == eager capture


def test_first_traced_capture_of_a_small_model_needs_no_shape_pass(tmp_path, monkeypatch):
    # A small model under the default budget keeps every layer FULL: its first capture is
    # planned from the traced run itself (no eager shape pass) and equals the eager capture;
    # the graph it traced serves the later captures.
    from tb_attention_plugin.logger import capture

    keras.utils.set_random_seed(0)
    model = build_translator()
    rng = np.random.default_rng(8)
    inputs = (padded_ids(rng, 2, 7, len(VOCABULARY), 4),
              padded_ids(rng, 2, 6, len(TARGET_VOCABULARY), 3))
    model(inputs)
    sites, _ = capture.find_attention_layers(model)
    eager = capture.capture_attention(model, inputs, sites).records
    shape_passes = []
    original = capture.layer_shapes
    monkeypatch.setattr(capture, "layer_shapes",
                        lambda *args: shape_passes.append(args) or original(*args))
    logger = AttentionLogger(str(tmp_path), inputs)
    first = logger._probe_capture(model)
    assert shape_passes == [] and logger._probe_capture.compiled is not None
    assert {plan.mode for plan in logger._probe_capture.plans.values()} == {"full"}
    traced = logger._probe_capture.compiled
    for records in (first, logger._probe_capture(model)):
        assert [r.tag for r in records] == [r.tag for r in eager]
        for a, b in zip(records, eager):
            assert (a.cross, a.causal, a.shape) == (b.cross, b.causal, b.shape), a.tag
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert logger._probe_capture.compiled is traced and shape_passes == []
    helpers.assert_unpatched(model)


@pytest.mark.parametrize("build, probe", [
    (build_translator, lambda rng: (padded_ids(rng, 2, 7, len(VOCABULARY), 4),
                                    padded_ids(rng, 2, 6, len(TARGET_VOCABULARY), 3))),
    (build_assorted, lambda rng: (rng.integers(1, len(VOCABULARY), size=(2, 6)),
                                  rng.integers(1, len(VOCABULARY), size=(2, 6)))),
])
def test_traced_capture_equals_eager_capture(build, probe):
    from tb_attention_plugin.logger import capture

    keras.utils.set_random_seed(0)
    model = build()
    inputs = probe(np.random.default_rng(8))
    model(inputs)  # build
    sites, _ = capture.find_attention_layers(model)
    eager = capture.capture_attention(model, inputs, sites)
    traced = capture.CompiledCapture(model, inputs, sites)
    helpers.assert_unpatched(model)
    for result in (traced(), traced()):
        assert [r.tag for r in result.records] == [r.tag for r in eager.records]
        assert not result.problems and not eager.problems
        for a, b in zip(result.records, eager.records):
            assert (a.cross, a.causal) == (b.cross, b.causal), a.tag
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
            assert (a.mask is None) == (b.mask is None), a.tag
            if a.mask is not None:
                np.testing.assert_array_equal(a.mask, b.mask)
    # The graph reads the current weights: change them, and the scores follow.
    for layer in helpers.attention_layers(model):
        if hasattr(layer, "_query_dense"):
            kernel = layer._query_dense.kernel
            kernel.assign(kernel.value * 3.0)
    changed = capture.capture_attention(model, inputs, sites)
    for a, b in zip(traced().records, changed.records):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert any(not np.allclose(a.scores, b.scores, atol=1e-3)
               for a, b in zip(changed.records, eager.records))
