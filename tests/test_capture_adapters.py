"""The capture adapters for attention layers that are not Keras' own: the fused op's
probabilities against the op's own output, registered layers, and the one warning for a layer
that cannot be read.

Each model is trained with `AttentionLogger` and its logs are read back through TensorBoard's
data provider.
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tb_attention_plugin as tba  # noqa: E402
from tb_attention_plugin.logger import capture  # noqa: E402
from tb_attention_plugin.logger.adapters import fused_op  # noqa: E402
import callback_helpers as helpers  # noqa: E402

ops = keras.ops


class FusedAttention(keras.layers.Layer):
    """Grouped-query self-attention through the fused op, with a bias and a padding mask."""

    def __init__(self, heads=4, key_heads=2, depth=8, causal=True, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.key_heads, self.depth, self.causal = heads, key_heads, depth, causal
        self.q = keras.layers.EinsumDense("btm,mhd->bthd", (None, heads, depth), name="q")
        self.k = keras.layers.EinsumDense("btm,mhd->bthd", (None, key_heads, depth), name="k")
        self.v = keras.layers.EinsumDense("btm,mhd->bthd", (None, key_heads, depth), name="v")
        self.out = keras.layers.EinsumDense("bthd,hdm->btm", (None, heads * depth), name="o")

    def call(self, x, padding=None):
        q, k, v = self.q(x), self.k(x), self.v(x)
        length = ops.shape(x)[1]
        bias = ops.reshape(ops.cast(ops.arange(length), "float32") * 0.1, (1, 1, 1, -1))
        mask = None if padding is None else ops.cast(padding, "bool")[:, None, None, :]
        self.last_value = v
        attended = ops.dot_product_attention(q, k, v, bias=bias, mask=mask,
                                             is_causal=self.causal)
        return self.out(attended)


def fused_model(length=10, dim=32):
    ids = keras.Input((length,), dtype="int32", name="ids")
    padding = keras.Input((length,), dtype="int32", name="padding")
    x = keras.layers.Embedding(40, dim, name="embedding")(ids)
    x = FusedAttention(name="fused")(x, padding)
    model = keras.Model({"ids": ids, "padding": padding}, keras.layers.Dense(40)(x))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def ids_and_padding(count=2, length=10):
    rng = np.random.default_rng(0)
    padding = np.ones((count, length), "int32")
    padding[1, 7:] = 0
    return {"ids": rng.integers(1, 40, (count, length)).astype("int32"), "padding": padding}


def test_fused_probabilities_reproduce_the_op():
    """Probabilities times values equal the fused op's output: grouped keys, bias, padding
    mask and causal flag, as the op applies them."""
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 6, 4, 8)).astype("float32")
    k = rng.normal(size=(2, 6, 2, 8)).astype("float32")
    v = rng.normal(size=(2, 6, 2, 8)).astype("float32")
    bias = rng.normal(size=(1, 4, 6, 6)).astype("float32")
    mask = np.ones((2, 1, 1, 6), bool)
    mask[1, ..., 4:] = False
    output = ops.convert_to_numpy(ops.dot_product_attention(q, k, v, bias=bias, mask=mask,
                                                             is_causal=True))
    probs, _, full_mask = (ops.convert_to_numpy(t) for t in fused_op.fused_probabilities(
        q, k, bias=bias, mask=mask, is_causal=True))
    expected = np.einsum("bhqk,bkhd->bqhd", probs, np.repeat(v, 2, axis=2))
    np.testing.assert_allclose(expected, output, atol=1e-5)
    assert not full_mask[0, 0][np.triu_indices(6, 1)].any()
    assert not full_mask[1, :, :, 4:].any()
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-6)


def test_fused_soft_cap_is_applied_to_scaled_logits():
    """Gemma's logit soft-cap: cap * tanh(logits / cap) on the scaled logits, before the mask."""
    rng = np.random.default_rng(2)
    q = rng.normal(size=(1, 5, 2, 4)).astype("float32") * 6
    k = rng.normal(size=(1, 5, 2, 4)).astype("float32") * 6
    probs, logits, _ = fused_op.fused_probabilities(q, k, soft_cap=3.0)
    raw = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    capped = 3.0 * np.tanh(raw / 3.0)
    np.testing.assert_allclose(ops.convert_to_numpy(logits), capped, rtol=1e-5, atol=1e-5)
    reference = np.exp(capped - capped.max(-1, keepdims=True))
    reference /= reference.sum(-1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(probs), reference, atol=1e-6)


def test_fused_layer_logged_through_fit(tmp_path):
    """A hand-written layer on the fused op is found by its code and logged from fit, its
    stored weights equal to the op's own attention and causal; training is unchanged."""
    data = ids_and_padding(8)
    targets = np.roll(data["ids"], -1, axis=1)
    keras.utils.set_random_seed(4)
    plain = fused_model()
    plain.fit(data, targets, batch_size=4, epochs=1, verbose=0, shuffle=False)
    keras.utils.set_random_seed(4)
    model = fused_model()
    probe = ids_and_padding(2)
    logger = tba.AttentionLogger(str(tmp_path), probe=probe, update_freq=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tba.AttentionLoggerWarning)
        model.fit(data, targets, batch_size=4, epochs=1, verbose=0, shuffle=False,
                  callbacks=[logger])
    for a, b in zip(plain.weights, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    attention, _ = helpers.read_logs(tmp_path)
    steps = attention["train"]["fused"]
    assert sorted(steps) == [0, 1, 2]
    stored = steps[2]["weights"]
    assert stored.shape == (2, 4, 10, 10)
    helpers.assert_causal(stored, "fused")
    assert np.isnan(stored[1, :, :, 7:]).all()  # padded keys are masked, not zero weights
    layer = model.get_layer("fused")
    record = capture.capture_attention(model, probe, capture.find_attention_layers(model)[0])
    probs = record.records[0].scores
    np.testing.assert_allclose(np.nan_to_num(stored), np.where(np.isnan(stored), 0, probs),
                               atol=0.03)
    x = model.get_layer("embedding")(probe["ids"])
    output = layer.call(x, probe["padding"])
    values = np.repeat(ops.convert_to_numpy(layer.last_value), 2, axis=2)
    attended = np.einsum("bhqk,bkhd->bqhd", probs, values)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.out(attended)),
                               ops.convert_to_numpy(output), atol=1e-5)


class ExpAttention(keras.layers.Layer):
    """Attention normalised by exp / sum, no softmax at all: no adapter can see it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(16, name="proj")

    def call(self, x):
        q = self.proj(x)
        scores = ops.exp(ops.einsum("bqd,bkd->bqk", q, q) / 4.0)
        self.weights_made = scores / ops.sum(scores, axis=-1, keepdims=True)
        return ops.einsum("bqk,bkd->bqd", self.weights_made, x)


def exp_probabilities(layer, x):
    q = layer.proj(x)
    scores = ops.exp(ops.einsum("bqd,bkd->bqk", q, q) / 4.0)
    return (scores / ops.sum(scores, axis=-1, keepdims=True))[:, None]


def exp_model():
    ids = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(30, 16, name="embedding")(ids)
    x = ExpAttention(name="exp_attention")(x)
    model = keras.Model(ids, keras.layers.Dense(30, activation="softmax")(x))
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def fit_exp(tmp_path):
    ids = np.random.default_rng(0).integers(1, 30, (8, 8)).astype("int32")
    model = exp_model()
    logger = tba.AttentionLogger(str(tmp_path), probe=ids[:2], update_freq=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ids, ids, batch_size=4, epochs=1, verbose=0, callbacks=[logger])
    return model, ids, [str(w.message) for w in caught
                        if issubclass(w.category, tba.AttentionLoggerWarning)]


def test_unreadable_layer_warns_once_with_the_way_to_register(tmp_path):
    _, _, messages = fit_exp(tmp_path)
    assert len(messages) == 2, messages  # the layer, and that nothing is logged
    unreadable = [m for m in messages if "exp_attention (ExpAttention)" in m]
    assert len(unreadable) == 1
    assert "register_attention" in unreadable[0]
    assert any("found no attention layers" in m for m in messages)


def test_registered_layer_is_logged(tmp_path):
    tba.register_attention(ExpAttention, exp_probabilities)
    try:
        model, ids, messages = fit_exp(tmp_path)
    finally:
        tba.unregister_attention(ExpAttention)
    assert messages == []
    attention, _ = helpers.read_logs(tmp_path)
    stored = attention["train"]["exp_attention"]
    weights = stored[max(stored)]["weights"]
    layer = model.get_layer("exp_attention")
    layer(model.get_layer("embedding")(ids[:2]))
    np.testing.assert_allclose(weights[:, 0], ops.convert_to_numpy(layer.weights_made),
                               atol=0.02)


def test_register_attention_checks_its_arguments():
    with pytest.raises(TypeError, match="layer_class must be a class"):
        tba.register_attention("ExpAttention", exp_probabilities)
    with pytest.raises(TypeError, match="probabilities must be callable"):
        tba.register_attention(ExpAttention, None)


class RouterBlock(keras.layers.Layer):
    """A mixture-of-experts-style router: a softmax in its code that is not attention."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate = keras.layers.Dense(3, name="gate")
        self.attention = keras.layers.MultiHeadAttention(2, 4, name="mha")

    def call(self, x):
        routes = ops.softmax(self.gate(x), axis=-1)  # [B, T, 3]
        return self.attention(x, x) * ops.sum(routes, axis=-1, keepdims=True)


def test_other_softmaxes_are_not_attention(tmp_path):
    """A router's softmax and a classifier's softmax make no tags and no warnings; the block's
    MultiHeadAttention is logged as before."""
    ids = np.random.default_rng(0).integers(1, 30, (8, 6)).astype("int32")
    inputs = keras.Input((6,), dtype="int32")
    x = RouterBlock(name="router")(keras.layers.Embedding(30, 8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(30, activation="softmax")(x))
    model.compile("sgd", "sparse_categorical_crossentropy")
    logger = tba.AttentionLogger(str(tmp_path), probe=ids[:2], update_freq=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tba.AttentionLoggerWarning)
        model.fit(ids, ids, batch_size=4, epochs=1, verbose=0, callbacks=[logger])
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]) == ["router/mha"]


def test_dinov2_wrapper_is_not_called_unreadable():
    """DINOv2's attention class wraps a MultiHeadAttention: read through it, no warning."""
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=4, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        image_shape=(16, 16, 3), position_embedding_shape=(16, 16))
    sites, unreadable = capture.find_attention_layers(backbone)
    assert unreadable == []
    assert [type(site.layer).__name__ for site in sites] == ["MultiHeadAttention"]
