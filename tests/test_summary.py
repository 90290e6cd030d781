"""The summary op and the TensorFlow-free writer, read back through TensorBoard's data provider."""

import numpy as np
import pytest
import tensorflow as tf

import tb_attention_plugin as tba
from tb_attention_plugin import encoding
from readback import read_back
from synthetic import as_rank4, softmax_weights

CJK_QUERY = ["<s>", "我", "看见", "三", "辆", "红色", "的", "汽车"]
CJK_KEY = ["i", "see", "three", "red", "cars", "。", "<pad>"]


@pytest.mark.parametrize(
    "shape", [(8, 7), (3, 8, 7), (2, 3, 8, 7)], ids=["rank2", "rank3", "rank4"]
)
@pytest.mark.parametrize("mode", ["eager", "tf_function", "tf_free_writer"])
def test_round_trip_within_tolerance(tmp_path, shape, mode):
    weights = softmax_weights(shape)
    steps = [0, 5, 10]
    if mode == "tf_free_writer":
        with tba.AttentionWriter(tmp_path) as writer:
            for step in steps:
                writer.attention("dec/cross", weights * 1, step, query_tokens=CJK_QUERY,
                                 key_tokens=CJK_KEY)
    else:
        summary_writer = tf.summary.create_file_writer(str(tmp_path))

        def log(w, step):
            return tba.attention("dec/cross", w, step=step, query_tokens=CJK_QUERY,
                                 key_tokens=CJK_KEY)

        if mode == "tf_function":
            log = tf.function(log)
        with summary_writer.as_default():
            for step in steps:
                assert bool(log(tf.constant(weights), tf.constant(step, tf.int64)))
        summary_writer.close()

    stored = read_back(tmp_path)["."]["dec/cross"]
    assert [s for s, _, _ in stored] == steps
    for _, header, values in stored:
        assert header["shape"] == list(as_rank4(weights).shape)
        assert header["source_rank"] == len(shape)
        batch = header["shape"][0]
        assert header["query_tokens"] == [CJK_QUERY] * batch
        assert header["key_tokens"] == [CJK_KEY] * batch
        error = np.abs(values - as_rank4(weights)).max()
        assert error <= encoding.MAX_ERROR, error


def test_name_scope_prefixes_tag_and_op_returns_false_without_writer(tmp_path):
    weights = softmax_weights((2, 3))
    assert not bool(tba.attention("no_writer", weights, step=0))
    summary_writer = tf.summary.create_file_writer(str(tmp_path))
    with summary_writer.as_default(step=3), tf.name_scope("encoder"):
        assert bool(tba.attention("layer_0", weights))  # step from the default writer
    summary_writer.close()
    stored = read_back(tmp_path)["."]
    assert list(stored) == ["encoder/layer_0"]
    assert stored["encoder/layer_0"][0][0] == 3


def test_mask_is_stored_as_masked_not_zero(tmp_path):
    weights = np.tril(np.ones((4, 4), np.float32))
    weights /= weights.sum(-1, keepdims=True)
    causal = np.tril(np.ones((4, 4), bool))
    with tba.AttentionWriter(tmp_path) as writer:
        writer.attention("causal", weights, 1, mask=causal)
    (_, _, values), = read_back(tmp_path)["."]["causal"]
    assert np.isnan(values[0, 0][~causal]).all()
    assert np.allclose(values[0, 0][causal], weights[causal], atol=encoding.MAX_ERROR)


def test_images_are_stored_with_their_patch_grid(tmp_path):
    weights = softmax_weights((1, 2, 17, 17))  # class token + 4x4 patches
    image = (np.random.default_rng(1).random((1, 16, 16, 3)) * 255).astype(np.uint8)
    with tba.AttentionWriter(tmp_path) as writer:
        writer.attention("vit/block_0", weights, 0, images=image)
    (_, header, _), = read_back(tmp_path)["."]["vit/block_0"]
    assert header["image"] == {"grid": [4, 4], "prefix_tokens": 1, "height": 16, "width": 16}


def test_float16_and_bfloat16_scores_are_accepted(tmp_path):
    weights = softmax_weights((2, 5, 5))
    summary_writer = tf.summary.create_file_writer(str(tmp_path))
    with summary_writer.as_default(step=0):
        assert bool(tba.attention("fp16", tf.constant(weights, tf.float16)))
        assert bool(tf.function(lambda w: tba.attention("bf16", w))(tf.constant(weights, tf.bfloat16)))
    summary_writer.close()
    stored = read_back(tmp_path)["."]
    for tag, tolerance in (("fp16", 1e-3), ("bf16", 8e-3)):  # input rounding + 8-bit storage
        values = stored[tag][0][2][0]
        assert np.abs(values - weights).max() <= tolerance + encoding.MAX_ERROR, tag


def test_metadata_is_written_once_per_tag(tmp_path):
    from tensorboard.backend.event_processing import event_file_loader
    import glob

    with tba.AttentionWriter(tmp_path) as writer:
        for step in range(3):
            writer.attention("layer", softmax_weights((3, 3)), step, description="first")
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    values = [
        v for e in event_file_loader.EventFileLoader(path).Load() for v in e.summary.value
    ]
    assert [v.HasField("metadata") for v in values] == [True, False, False]
    assert values[0].metadata.data_class == 3  # DATA_CLASS_BLOB_SEQUENCE
