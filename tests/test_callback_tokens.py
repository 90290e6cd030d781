"""Token strings for AttentionLogger: vocabularies, finding ids in probes, fitting to axes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tb_attention_plugin.logger import tokens  # noqa: E402


def test_vocabulary_list_maps_ids_and_marks_unknown_ids():
    to_strings = tokens.vocabulary_lookup(["<pad>", "i", "like", b"t\xc3\xa9"])
    assert to_strings(np.array([[1, 2, 3, 0], [3, 9, -1, 0]])) == [
        ["i", "like", "té", "<pad>"], ["té", "<id 9>", "<id -1>", "<pad>"]]
    assert to_strings([1, 2]) == [["i", "like"]]


def test_vocabulary_from_string_lookup_and_text_vectorization():
    lookup = keras.layers.StringLookup(vocabulary=["我", "有", "书"])
    ids = lookup(np.array([["我", "有", "书", "猫"]]))
    assert tokens.vocabulary_lookup(lookup)(ids) == [["我", "有", "书", "[UNK]"]]
    vectorizer = keras.layers.TextVectorization(output_sequence_length=5)
    vectorizer.adapt(["i have three books", "i have a cat"])
    ids = vectorizer(np.array(["i have three cats"]))
    assert tokens.vocabulary_lookup(vectorizer)(ids) == [["i", "have", "three", "[UNK]", ""]]


def test_bad_vocabularies_are_clear_errors():
    with pytest.raises(TypeError, match="vocabulary must be a list of strings"):
        tokens.vocabulary_lookup({"a": 1})
    with pytest.raises(ValueError, match="vocabulary is empty"):
        tokens.vocabulary_lookup([])


def test_find_token_ids_in_probes():
    ids = np.arange(8).reshape(2, 4)
    other = ids + 10
    assert set(tokens.find_token_ids(ids)) == {"tokens"}
    assert tokens.find_token_ids(np.zeros((2, 4), "float32")) == {}
    found = tokens.find_token_ids((ids, other))
    np.testing.assert_array_equal(found["source"], ids)
    np.testing.assert_array_equal(found["target"], other)
    bert = {"token_ids": ids, "segment_ids": ids * 0, "padding_mask": ids > 0}
    np.testing.assert_array_equal(tokens.find_token_ids(bert)["tokens"], ids)
    seq2seq = {"decoder_token_ids": other, "encoder_token_ids": ids}
    found = tokens.find_token_ids(seq2seq)
    np.testing.assert_array_equal(found["source"], ids)
    np.testing.assert_array_equal(found["target"], other)


def test_resolve_tokens_prefers_explicit_lists():
    ids = np.array([[1, 2], [2, 1]])
    result = tokens.resolve_tokens((ids, ids), tokens={"source": ["x", "y"]},
                                   vocabulary={"source": ["a", "b", "c"],
                                               "target": ["A", "B", "C"]})
    assert result == {"source": [["x", "y"]], "target": [["B", "C"], ["C", "B"]]}


def test_tokens_for_fits_the_axis():
    lists = {"tokens": [["a", "b", "c"]]}
    assert tokens.tokens_for(lists, "tokens", 2, 3, keep=2) == [["a", "b"], ["a", "b"]]
    assert tokens.tokens_for(lists, "source", 2, 3) is None
    with pytest.raises(ValueError, match="tokens has 3 entries but the attention axis has 4"):
        tokens.tokens_for(lists, "tokens", 1, 4)
    with pytest.raises(ValueError, match="tokens holds 2 token lists for 3 probe examples"):
        tokens.tokens_for({"tokens": [["a"], ["b"]]}, "tokens", 3, 1)
