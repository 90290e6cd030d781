"""Key/value groups of grouped-query layers and special-token positions, from the writers to the
plugin's `/step` answer.

Every log is written by the real writers (`AttentionWriter`, the TensorFlow summary op,
`AttentionLogger` during `fit`) and read back through TensorBoard's data provider by the plugin
as TensorBoard builds it.
"""

import json
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tb_attention_plugin as tba  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin.logger import capture  # noqa: E402
from plugin_client import get, get_json, production_plugin, wsgi_client  # noqa: E402
import callback_helpers as helpers  # noqa: E402
from synthetic import softmax_weights  # noqa: E402

TOKENS = ["<s>", "the", "fox", "</s>", "<pad>"]
SPECIAL = [True, False, False, True, True]


def step_answer(logdir, tag, step):
    """The plugin's `/step` answer for one step of `tag` of run "run"."""
    client = wsgi_client(production_plugin(logdir))
    return get_json(client, "/step", run="run", tag=tag, step=step)


def test_writer_records_groups_and_special_positions(tmp_path):
    weights = softmax_weights((2, 8, 5, 5), seed=1)
    key_special = np.array([SPECIAL, [True, False, False, False, False]])
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("gqa", weights, 3, kv_heads=2, query_tokens=TOKENS, key_tokens=TOKENS,
                         query_special=SPECIAL, key_special=key_special)
        writer.attention("first_heads", weights[:, :3], 3, kv_group_size=4)
    answer = step_answer(tmp_path, "gqa", 3)
    assert answer["shape"] == [2, 8, 5, 5]
    assert answer["kv_group_size"] == 4  # 8 query heads over 2 key/value heads
    assert answer["query_special"] == [[0, 3, 4], [0, 3, 4]]
    assert answer["key_special"] == [[0, 3, 4], [0]]
    assert answer["query_tokens"] == [TOKENS, TOKENS]
    first = step_answer(tmp_path, "first_heads", 3)
    assert first["kv_group_size"] == 4 and first["shape"][1] == 3
    assert first["query_special"] is None and first["key_special"] is None


def test_summary_op_in_a_tf_function_records_them(tmp_path):
    weights = softmax_weights((1, 4, 5, 5), seed=2)
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))

    @tf.function
    def log(weights, special):
        with writer.as_default(step=7):
            return tba.attention("gqa", weights, kv_heads=1, query_tokens=TOKENS,
                                 key_tokens=TOKENS, query_special=special, key_special=special)

    assert log(tf.constant(weights), tf.constant(SPECIAL))
    writer.close()
    answer = step_answer(tmp_path, "gqa", 7)
    assert answer["kv_group_size"] == 4
    assert answer["query_special"] == answer["key_special"] == [[0, 3, 4]]


def test_a_pooled_step_keeps_them(tmp_path):
    length = 256
    weights = np.tril(np.ones((1, 2, length, length), np.float32))
    weights /= weights.sum(-1, keepdims=True)
    special = np.zeros(length, bool)
    special[[0, 255]] = True
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("long", weights, 0, max_bytes=30_000, kv_heads=1,
                         query_special=special, key_special=special)
    answer = step_answer(tmp_path, "long", 0)
    assert answer["layout"] == "pooled"
    assert answer["kv_group_size"] == 2
    assert answer["query_special"] == answer["key_special"] == [[0, 255]]


def test_steps_without_them_still_load(tmp_path):
    weights = softmax_weights((1, 2, 5, 5), seed=3)
    with tba.AttentionWriter(tmp_path / "run") as writer:
        # As every writer before these fields wrote it: version 2, and version 1 codes.
        writer.write_blobs("plain", encoding.encode_step(weights, query_tokens=TOKENS), 0)
        writer.write_blobs("plain", encoding.encode_step(weights, version=1), 1)
    blobs = encoding.encode_step(weights)
    assert not {"kv_group_size", "query_special", "key_special"} & set(json.loads(blobs[0]))
    client = wsgi_client(production_plugin(tmp_path))
    for step in (0, 1):
        answer = get_json(client, "/step", run="run", tag="plain", step=step)
        assert answer["kv_group_size"] is None
        assert answer["query_special"] is None and answer["key_special"] is None
        response = get(client, "/matrix", run="run", tag="plain", step=step, example=0, head=1)
        assert response.status_code == 200


def test_bad_arguments_are_refused_before_writing(tmp_path):
    weights = softmax_weights((1, 6, 5, 5), seed=4)
    with tba.AttentionWriter(tmp_path / "run") as writer:
        with pytest.raises(ValueError, match="kv_heads=4 does not divide the 6 heads"):
            writer.attention("bad", weights, 0, kv_heads=4)
        with pytest.raises(ValueError, match="not both"):
            writer.attention("bad", weights, 0, kv_heads=2, kv_group_size=3)
        with pytest.raises(TypeError, match="kv_group_size must be an integer"):
            writer.attention("bad", weights, 0, kv_group_size=1.5)
        with pytest.raises(ValueError, match=r"query_special must be 5 booleans"):
            writer.attention("bad", weights, 0, query_special=[True, False])
        with pytest.raises(TypeError, match="key_special must be boolean"):
            writer.attention("bad", weights, 0, key_special=["<s>"] * 5)
    runs = get_json(wsgi_client(production_plugin(tmp_path)), "/runs")["runs"]
    assert runs == [], runs  # nothing was written


@pytest.mark.parametrize("field, value", [
    ("kv_group_size", 0), ("kv_group_size", "2"), ("kv_group_size", True),
    ("query_special", [[5]]), ("query_special", [[2, 1]]), ("query_special", [[1, 1]]),
    ("key_special", [[0]] * 2), ("key_special", [["0"]]), ("key_special", [[-1]]),
])
def test_malformed_fields_are_format_errors(field, value):
    header = json.loads(encoding.encode_step(softmax_weights((1, 2, 5, 5), seed=5))[0])
    header[field] = value
    with pytest.raises(encoding.FormatError, match=field):
        encoding.decode_header(json.dumps(header).encode())


# ------------------------------------------------------------------ captured by the logger


def gqa_model():
    ids = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(ids)
    x = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=6, num_key_value_heads=2,
                                         name="gqa")(x, x, use_causal_mask=True)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    model = keras.Model(ids, keras.layers.Dense(20)(x))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("max_heads", [None, 4])
def test_stock_group_query_attention_through_fit(tmp_path, max_heads):
    keras.utils.set_random_seed(1)
    ids = np.random.default_rng(1).integers(1, 20, (8, 6)).astype("int32")
    logger = tba.AttentionLogger(str(tmp_path), probe=ids[:2], update_freq="epoch",
                                 max_heads=max_heads)
    gqa_model().fit(ids, ids, epochs=1, batch_size=4, verbose=0, callbacks=[logger])
    client = wsgi_client(production_plugin(tmp_path))
    steps = get_json(client, "/steps", run="train", tag="gqa")["steps"]
    gqa = get_json(client, "/step", run="train", tag="gqa", step=steps[-1]["step"])
    mha = get_json(client, "/step", run="train", tag="mha", step=steps[-1]["step"])
    # Query head h reads key/value head h // 3, also when only the first 4 heads are kept.
    assert gqa["shape"][1] == (max_heads or 6) and gqa["kv_group_size"] == 3
    assert mha["kv_group_size"] is None


def _backbone(family):
    hub = pytest.importorskip("keras_hub").models
    options = dict(vocabulary_size=16, num_layers=1, num_query_heads=4, num_key_value_heads=2,
                   hidden_dim=16, intermediate_dim=32)
    if family == "gemma":  # its probabilities are [B, K, G, Tq, Tk]: K from the layout
        return hub.GemmaBackbone(head_dim=8, **options)
    if family == "mistral":  # keeps its key/value heads in `_num_key_value_heads`
        return hub.MistralBackbone(sliding_window=4, **options)
    return hub.Llama3Backbone(**options)


@pytest.mark.parametrize("family", ["gemma", "mistral", "llama3"])
def test_keras_hub_layers_record_their_key_value_heads(family):
    keras.utils.set_random_seed(2)
    backbone = _backbone(family)
    inputs = {"token_ids": np.ones((1, 5), "int32"), "padding_mask": np.ones((1, 5), "int32")}
    backbone(inputs)
    sites, _ = capture.find_attention_layers(backbone)
    (record,) = capture.capture_attention(backbone, inputs, sites).records
    assert record.scores.shape == (1, 4, 5, 5) and record.kv_heads == 2
    (shape,) = capture.layer_shapes(backbone, inputs, sites)
    assert shape.kv_heads == 2


def llama_causal_lm():
    """A tiny Llama causal LM (4 query heads over 2 key/value heads) with its own
    SentencePiece tokenizer: `<s>` and `</s>` are special, id 0 pads."""
    hub = pytest.importorskip("keras_hub").models
    tokenizer = hub.LlamaTokenizer(proto=helpers.sentencepiece_proto())
    preprocessor = hub.LlamaCausalLMPreprocessor(tokenizer, sequence_length=8)
    backbone = hub.LlamaBackbone(vocabulary_size=9, num_layers=2, num_query_heads=4,
                                 num_key_value_heads=2, hidden_dim=16, intermediate_dim=32)
    causal_lm = hub.LlamaCausalLM(backbone, preprocessor)
    causal_lm.compile("adam")
    return causal_lm


def test_llama_causal_lm_string_probe_marks_groups_and_special_tokens(tmp_path):
    keras.utils.set_random_seed(3)
    logger = tba.AttentionLogger(str(tmp_path), probe=["the quick fox", "a fox"],
                                 update_freq="epoch")
    with warnings.catch_warnings():
        warnings.simplefilter("error", tba.AttentionLoggerWarning)
        llama_causal_lm().fit(["the quick brown fox", "a quick fox", "the fox", "a fox"],
                              epochs=1, batch_size=2, verbose=0, callbacks=[logger])
    client = wsgi_client(production_plugin(tmp_path))
    tags = [t["tag"] for t in get_json(client, "/runs")["runs"][0]["tags"]]
    assert len(tags) == 2
    tokens = [["<s>", " the", " quick", " fox"], ["<s>", " a", " fox", "<pad>"]]
    for tag in tags:
        step = get_json(client, "/steps", run="train", tag=tag)["steps"][-1]["step"]
        answer = get_json(client, "/step", run="train", tag=tag, step=step)
        assert answer["shape"] == [2, 4, 4, 4] and answer["kv_group_size"] == 2, tag
        assert answer["query_tokens"] == answer["key_tokens"] == tokens, tag
        # <s> is one of the tokenizer's special tokens; the second prompt pads position 3.
        assert answer["query_special"] == answer["key_special"] == [[0], [0, 3]], tag


def test_explicit_tokens_carry_no_tokenizer_flags(tmp_path):
    mine = [["s", "a", "b", "c"], ["s", "d", "e", "f"]]
    logger = tba.AttentionLogger(str(tmp_path), probe=["the quick fox", "a fox"], tokens=mine)
    logger.set_model(llama_causal_lm())  # as fit does; one capture before training
    logger.on_train_begin()
    logger.on_train_end()
    client = wsgi_client(production_plugin(tmp_path))
    tag = get_json(client, "/runs")["runs"][0]["tags"][0]["tag"]
    answer = get_json(client, "/step", run="train", tag=tag, step=0)
    assert answer["query_tokens"] == mine and answer["query_special"] is None
    assert answer["kv_group_size"] == 2
