"""Bad input to the summary API gets a clear error naming the argument, and nothing is written."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import tb_attention_plugin as tba

GOOD = np.full((2, 3, 4), 0.25, np.float32)


def event_bytes(logdir):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(logdir, "**", "events*"), recursive=True))


BAD_INPUTS = [
    # (kwargs, exception, words the message must contain)
    (dict(weights=np.ones((4,), np.float32)), ValueError, ["weights", "[Tq, Tk]", "rank 1"]),
    (dict(weights=np.ones((1, 1, 1, 2, 2), np.float32)), ValueError, ["weights", "rank 5"]),
    (dict(weights=np.array([["a", "b"]])), TypeError, ["weights", "real numbers"]),
    (dict(weights=np.ones((2, 2), bool)), TypeError, ["weights", "bool"]),
    (dict(weights=np.array([[np.nan, 1.0]], np.float32)), ValueError, ["NaN or Inf"]),
    (dict(weights=np.array([[np.inf, 1.0]], np.float32)), ValueError, ["NaN or Inf"]),
    (dict(weights=np.array([[-0.5, 1.0]], np.float32)), ValueError, ["[0, 1]", "-0.5"]),
    (dict(weights=np.array([[3.0, 1.0]], np.float32)), ValueError, ["[0, 1]", "after softmax"]),
    (dict(weights=np.ones((0, 4), np.float32)), ValueError, ["empty axis"]),
    (dict(weights=GOOD, query_tokens=["a", "b"]), ValueError, ["query_tokens[0]", "2 tokens", "length 3"]),
    (dict(weights=GOOD, key_tokens=["a", "b", "c", "d", "e"]), ValueError, ["key_tokens[0]", "length 4"]),
    (dict(weights=GOOD, key_tokens=[1, 2, 3, 4]), TypeError, ["key_tokens", "strings"]),
    (dict(weights=GOOD, query_tokens="abc"), TypeError, ["query_tokens", "list of strings"]),
    (dict(weights=np.full((2, 1, 3, 4), 0.25, np.float32), query_tokens=[["a"] * 3] * 3), ValueError,
     ["query_tokens", "3 examples", "batch 2"]),
    (dict(weights=GOOD, mask=np.ones((5, 5), bool)), ValueError, ["mask", "broadcast"]),
    (dict(weights=np.full((1, 1, 7, 7), 0.1, np.float32), images=np.zeros((1, 8, 8, 3))), ValueError,
     ["patch grid", "image_grid"]),
    (dict(weights=np.full((4096, 4096, 5), 0.2, np.float32)), ValueError, ["more than", "fewer"]),
    (dict(weights=np.ones((2, 2), np.complex64) * 0.5), TypeError, ["weights", "complex64"]),
    (dict(weights=[[0.5, 0.5], [1.0]]), TypeError, ["weights", "numeric array"]),
    (dict(weights=GOOD, key_tokens=["a", None, "c", "d"]), TypeError, ["key_tokens", "None"]),
    (dict(weights=GOOD, mask="yes"), TypeError, ["mask", "boolean"]),
    (dict(weights=GOOD, description=5), TypeError, ["description", "string"]),
    # A grid whose product matches the keys but is not a grid: once written it could not be read.
    (dict(weights=np.full((1, 1, 4, 4), 0.25, np.float32), images=np.zeros((1, 8, 8, 3)),
          image_grid=(-2, -2)), ValueError, ["image_grid rows", ">= 1"]),
    (dict(weights=np.full((1, 1, 4, 4), 0.25, np.float32), images=np.zeros((1, 8, 8, 3)),
          image_grid=(2.5, 1.6)), TypeError, ["image_grid rows", "integer"]),
    (dict(weights=np.full((1, 1, 5, 5), 0.2, np.float32), images=np.zeros((1, 8, 8, 3)),
          image_grid=(2, 2), prefix_tokens="1"), TypeError, ["prefix_tokens", "integer"]),
    (dict(weights=np.full((1, 1, 5, 5), 0.2, np.float32), images=np.zeros((1, 8, 8, 3)),
          prefix_tokens=-1), ValueError, ["prefix_tokens", ">= 0"]),
    (dict(weights=np.full((1, 1, 4, 4), 0.25, np.float32), images=np.full((1, 8, 8, 3), np.nan),
          image_grid=(2, 2)), ValueError, ["images", "NaN"]),
]


@pytest.mark.parametrize("kwargs,error,words", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
@pytest.mark.parametrize("api", ["tf_op", "writer"])
def test_bad_input_raises_before_writing(tmp_path, api, kwargs, error, words):
    kwargs = dict(kwargs)
    weights = kwargs.pop("weights")
    if api == "tf_op":
        summary_writer = tf.summary.create_file_writer(str(tmp_path))
        with summary_writer.as_default(step=0):
            tba.attention("good", GOOD)
            summary_writer.flush()
            before = event_bytes(tmp_path)
            with pytest.raises(error) as info:
                tba.attention("bad", weights, **kwargs)
            summary_writer.flush()
        summary_writer.close()
    else:
        with tba.AttentionWriter(tmp_path) as writer:
            writer.attention("good", GOOD, 0)
            writer.flush()
            before = event_bytes(tmp_path)
            with pytest.raises(error) as info:
                writer.attention("bad", weights, 0, **kwargs)
            writer.flush()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert event_bytes(tmp_path) == before  # nothing half-written


def test_graph_mode_checks_static_rank_at_trace_time(tmp_path):
    summary_writer = tf.summary.create_file_writer(str(tmp_path))
    fn = tf.function(lambda w: tba.attention("bad", w, step=0))
    with summary_writer.as_default(), pytest.raises(ValueError, match="rank|shape"):
        fn(tf.ones([4]))


def test_graph_mode_rejects_bad_values_at_run_time(tmp_path):
    summary_writer = tf.summary.create_file_writer(str(tmp_path))
    fn = tf.function(lambda w: tba.attention("bad", w, step=0))
    with summary_writer.as_default(), pytest.raises(tf.errors.OpError, match="NaN or Inf"):
        fn(tf.constant([[np.nan, 1.0]]))


@pytest.mark.parametrize("name, step, error, words", [
    ("", 0, ValueError, ["name", "empty"]),
    (None, 0, TypeError, ["name", "string"]),
    ("t", 1.5, TypeError, ["step", "integer", "1.5"]),
    ("t", "1", TypeError, ["step", "integer"]),
    ("t", None, ValueError, ["step", "required"]),
])
def test_writer_name_and_step_are_checked_before_writing(tmp_path, name, step, error, words):
    with tba.AttentionWriter(tmp_path) as writer:
        writer.attention("good", GOOD, 0)
        writer.flush()
        before = event_bytes(tmp_path)
        with pytest.raises(error) as info:
            writer.attention(name, GOOD, step)
        writer.flush()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert event_bytes(tmp_path) == before
    with tba.AttentionWriter(tmp_path) as writer:
        assert writer.attention("t", GOOD, np.int64(3))  # numpy integers are steps too
