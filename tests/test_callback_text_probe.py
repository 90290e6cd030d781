"""AttentionLogger on keras-hub task models trained on raw text: `probe=` takes what the task's
`fit` takes, the task's preprocessor turns it into inputs, and the stored axes are the
tokenizer's own tokens, with padding masked and special tokens spelt as the tokenizer spells
them.

Every task is built offline from a tiny tokenizer made here and a tiny backbone, trained with
`fit` on strings, and its logs are read back through TensorBoard's data provider.
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning  # noqa: E402
from tb_attention_plugin.logger import task_probe  # noqa: E402
import callback_helpers as helpers  # noqa: E402

keras_hub = pytest.importorskip("keras_hub")

# A byte-level BPE vocabulary: "Ġ" is the space byte, "Ã©" the UTF-8 bytes of "é".
GPT2_VOCABULARY = {
    "<|endoftext|>": 0, "Ġ": 1, "a": 2, "c": 3, "f": 4, "k": 5, "o": 6, "q": 7, "u": 8,
    "x": 9, "é": 10, "Ã": 11, "©": 12, "Ġq": 13, "Ġqu": 14, "Ġqui": 15, "Ġquic": 16,
    "Ġquick": 17, "Ġf": 18, "Ġfo": 19, "Ġfox": 20, "i": 21, "Ġa": 22, "Ã©": 23, "<": 24,
    ">": 25, "/": 26, "b": 27,
}
GPT2_MERGES = ["Ġ q", "Ġq u", "Ġqu i", "Ġqui c", "Ġquic k", "Ġ f", "Ġf o", "Ġfo x", "Ġ a",
               "Ã ©"]
BERT_VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "quick", "fox", "##es",
                   "the", "<", ">", "b", "/"]
BART_VOCABULARY = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "Ġ": 6,
                   "Ġa": 7, "Ġf": 8, "Ġfo": 9, "Ġfox": 10, "f": 11, "o": 12, "x": 13}
BART_MERGES = ["Ġ a", "Ġ f", "Ġf o", "Ġfo x"]
TEXTS = ["a quick fox", "a fox", "a quick quick fox", "quick"]


def fit_with_logger(task, x, y, logdir, **logger_kwargs):
    """Trains `task` one epoch on `x` (raw task inputs) with an AttentionLogger; returns the
    run's logs `{tag: {step: {"header", "weights"}}}` and the warnings it gave."""
    logger = AttentionLogger(str(logdir), update_freq="epoch", **logger_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AttentionLoggerWarning)
        task.fit(x, y, epochs=1, batch_size=2, verbose=0, callbacks=[logger])
    problems = [str(w.message) for w in caught if issubclass(w.category, AttentionLoggerWarning)]
    attention, _ = helpers.read_logs(str(logdir))
    return attention["train"], problems


def final_steps(logs):
    """`{tag: its last step}` of every tag."""
    return {tag: steps[max(steps)] for tag, steps in logs.items()}


def gpt2_causal_lm(sequence_length=8):
    keras.utils.set_random_seed(1)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=GPT2_VOCABULARY, merges=GPT2_MERGES)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
        tokenizer, sequence_length=sequence_length)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(GPT2_VOCABULARY), num_layers=2, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=16)
    causal_lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor)
    causal_lm.compile("adam")
    return causal_lm


@pytest.fixture(scope="module")
def gpt2_logs(tmp_path_factory):
    """A GPT-2 causal LM trained on strings, logged with a probe of two prompts."""
    logs, problems = fit_with_logger(gpt2_causal_lm(), TEXTS, None,
                                     tmp_path_factory.mktemp("gpt2"),
                                     probe=["a quick fox", "<b/> é"])
    return final_steps(logs), problems


def test_causal_lm_probe_of_strings_shows_the_prompt_tokens(gpt2_logs):
    steps, problems = gpt2_logs
    assert problems == []
    assert len(steps) == 2, sorted(steps)
    for tag, step in steps.items():
        header, weights = step["header"], step["weights"]
        # generate_preprocess: the start token and the prompt, no end token, not shifted; cut
        # to the longer prompt (7 positions of the preprocessor's 8). Byte-level tokens are
        # their text ("Ġquick" is " quick", "Ã©" is "é"); markup stays text.
        expected = [["<|endoftext|>", "a", " quick", " fox"] + ["<|endoftext|>"] * 3,
                    ["<|endoftext|>", "<", "b", "/", ">", " ", "é"]]
        assert header["query_tokens"] == expected and header["key_tokens"] == expected, tag
        helpers.assert_causal(weights, tag)
        # The first prompt pads its last 3 positions: those keys are masked for every query.
        assert np.isnan(weights[0, :, :, 4:]).all(), tag
        assert not np.isnan(weights[0, :, :4, :4][:, np.tril(np.ones((4, 4), bool))]).any()
        assert not np.isnan(weights[1][:, np.tril(np.ones((7, 7), bool))]).any(), tag


def test_tokenizer_strings_are_the_tokenizers_own(gpt2_logs):
    steps, _ = gpt2_logs
    header = next(iter(steps.values()))["header"]
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=GPT2_VOCABULARY, merges=GPT2_MERGES)
    for example, text in enumerate(["a quick fox", "<b/> é"]):
        ids = np.asarray(tokenizer(text)).tolist()
        own = [tokenizer.id_to_token(i).replace("Ġ", " ").replace("Ã©", "é") for i in ids]
        assert header["key_tokens"][example][1:1 + len(own)] == own


def test_explicit_tokens_still_win(tmp_path):
    mine = [["s", "a", "b", "c"], ["s", "d", "e", "f"]]
    logger = AttentionLogger(str(tmp_path), probe=["a quick fox", "a fox"], tokens=mine)
    logger.set_model(gpt2_causal_lm())  # as fit does; one capture before training
    logger.on_train_begin()
    logger.on_train_end()
    attention, _ = helpers.read_logs(str(tmp_path))
    steps = final_steps(attention["train"])
    assert len(steps) == 2
    for step in steps.values():
        assert step["header"]["query_tokens"] == mine and step["header"]["key_tokens"] == mine


def test_strings_for_a_model_without_preprocessor_are_a_clear_error(tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(30, 8)(inputs)
    hidden = keras.layers.MultiHeadAttention(2, 4)(hidden, hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden[:, 0]))
    model.compile("adam", "mse")
    logger = AttentionLogger(str(tmp_path), probe=["a sentence"])
    ids = np.ones((4, 5), "int32")
    with pytest.raises(ValueError, match="probe holds text .* has no preprocessor"):
        model.fit(ids, np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[logger])


def test_text_classifier_marks_special_tokens_and_masks_padding(tmp_path):
    keras.utils.set_random_seed(2)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=BERT_VOCABULARY)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=10)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(BERT_VOCABULARY), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=10)
    classifier = keras_hub.models.BertTextClassifier(backbone, num_classes=2,
                                                     preprocessor=preprocessor)
    classifier.compile("adam")
    # health_probe of text too: the head health is measured over all 4 texts.
    logs, problems = fit_with_logger(classifier, TEXTS, np.array([0, 1, 0, 1]), tmp_path,
                                     probe=["the quick foxes", "a <b/>"], health_probe=TEXTS)
    assert problems == []
    records = helpers.read_health(str(tmp_path))["train"]
    assert [record[max(record)]["examples"] for record in records.values()] == [4]
    (tag, step), = final_steps(logs).items()
    header, weights = step["header"], step["weights"]
    expected = [["[CLS]", "the", "quick", "fox", "##es", "[SEP]", "[PAD]"],
                ["[CLS]", "a", "<", "b", "/", ">", "[SEP]"]]
    assert header["query_tokens"] == expected and header["key_tokens"] == expected
    assert np.isnan(weights[0, :, :, 6]).all()  # the [PAD] key
    assert not np.isnan(weights[0, :, :6, :6]).any() and not np.isnan(weights[1]).any()


def test_seq2seq_lm_probe_of_encoder_and_decoder_text(tmp_path):
    keras.utils.set_random_seed(3)
    tokenizer = keras_hub.models.BartTokenizer(vocabulary=BART_VOCABULARY, merges=BART_MERGES)
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(
        tokenizer, encoder_sequence_length=8, decoder_sequence_length=8)
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=len(BART_VOCABULARY), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8)
    seq2seq = keras_hub.models.BartSeq2SeqLM(backbone, preprocessor)
    seq2seq.compile("adam")
    texts = {"encoder_text": ["a fox", "a a fox", "fox", "a"],
             "decoder_text": ["fox a", "a", "a fox", "fox"]}
    probe = {"encoder_text": ["a fox", "a a fox"], "decoder_text": ["a fox", "a"]}
    logs, problems = fit_with_logger(seq2seq, texts, None, tmp_path, probe=probe)
    assert problems == []
    steps = final_steps(logs)
    source = [["<s>", "a", " fox", "</s>", "<pad>"], ["<s>", "a", " a", " fox", "</s>"]]
    # The decoder prompt as generation starts it: "</s> <s>" then the text, no end token.
    target = [["</s>", "<s>", "a", " fox"], ["</s>", "<s>", "a", "<pad>"]]
    roles = {"self_attention": (source, source), "cross_attention": (target, source)}
    seen = set()
    for tag, step in steps.items():
        header, weights = step["header"], step["weights"]
        if "decoder" in tag and "self_attention" in tag:
            query, key = target, target
            helpers.assert_causal(weights, tag)
        else:
            query, key = roles["cross_attention" if "cross" in tag else "self_attention"]
        seen.add((len(query[0]), len(key[0])))
        assert header["query_tokens"] == query and header["key_tokens"] == key, tag
        example, padded_key = (0, 4) if key is source else (1, 3)
        assert np.isnan(weights[example, :, :, padded_key]).all(), tag
    assert seen == {(5, 5), (4, 4), (4, 5)}, sorted(steps)


def test_image_classifier_probe_of_raw_images_runs_the_preprocessor(tmp_path):
    keras.utils.set_random_seed(4)
    converter = keras_hub.layers.ViTImageConverter(image_size=(16, 16), scale=1 / 255.0)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=1, num_heads=2, hidden_dim=8,
        mlp_dim=16)
    classifier = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=3,
                                                     preprocessor=preprocessor)
    classifier.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # 24 x 24 pixels: only the preprocessor's resize makes them the backbone's 16 x 16.
    images = np.random.default_rng(4).integers(0, 256, size=(4, 24, 24, 3)).astype("uint8")
    logs, problems = fit_with_logger(classifier, images, np.array([0, 1, 2, 0]), tmp_path,
                                     probe=images[:2])
    assert problems == []
    (tag, step), = final_steps(logs).items()
    header = step["header"]
    assert header["shape"][2:] == [17, 17]
    assert header["image"] == {"grid": [4, 4], "prefix_tokens": 1, "width": 16, "height": 16}
    assert header["query_tokens"] is None


def test_labels_of_partial_characters_line_breaks_and_unknown_ids():
    vocabulary = dict(GPT2_VOCABULARY, **{"Ċ": 28, "ĉ": 29})
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=GPT2_MERGES)
    # "Ã" alone is the first byte of "é": shown as its byte; "Ċ" is a line break, "ĉ" a tab.
    ids = np.array([[11, 23, 28, 29, 0], [2, 1, 22, 99, 0]])
    assert task_probe.token_strings(tokenizer, ids) == [
        ["\\xc3", "é", "\\n", "\\t", "<|endoftext|>"],
        ["a", " ", " a", "<id 99>", "<|endoftext|>"]]
    bert = keras_hub.models.BertTokenizer(vocabulary=BERT_VOCABULARY)
    assert task_probe.token_strings(bert, np.array([[2, 7, 8, 3, 0]])) == [
        ["[CLS]", "fox", "##es", "[SEP]", "[PAD]"]]


def test_what_counts_as_a_text_probe_and_padding_every_example_shares():
    assert task_probe.holds_text(["a", "b"]) and task_probe.holds_text(np.array(["a", "b"]))
    assert task_probe.holds_text({"encoder_text": ["a"], "decoder_text": ["b"]})
    assert not task_probe.holds_text({"token_ids": np.ones((2, 3), "int32")})
    assert not task_probe.holds_text(np.ones((2, 3))) and not task_probe.holds_text([])
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    inputs = {"encoder_token_ids": np.arange(8).reshape(2, 4), "encoder_padding_mask": mask,
              "decoder_token_ids": np.ones((2, 3)), "decoder_padding_mask": np.ones((2, 3), bool)}
    trimmed = task_probe.trim_padding(inputs)
    assert trimmed["encoder_token_ids"].tolist() == [[0, 1], [4, 5]]
    assert trimmed["encoder_padding_mask"].shape == (2, 2)
    assert trimmed["decoder_token_ids"].shape == (2, 3)


def test_sentencepiece_word_boundaries_are_spaces():
    tokenizer = keras_hub.models.LlamaTokenizer(proto=helpers.sentencepiece_proto())
    ids = np.asarray(tokenizer(["the quick fox"]))
    assert [tokenizer.id_to_token(int(i)) for i in ids[0]] == ["▁the", "▁quick", "▁fox"]
    ids = np.concatenate([[[tokenizer.start_token_id]], ids, [[0]]], axis=1)
    assert task_probe.token_strings(tokenizer, ids) == [["<s>", " the", " quick", " fox", "<pad>"]]
