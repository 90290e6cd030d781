"""The demos learn what the Attention tab shows: checked on their real event files.

The main-job command (`scripts/demo.sh --small`, once per session: `conftest.demo_logs`) trains
every demo; the seed article's demo is trained again here to keep what it logged. The tests read the
attention the callback and the summary op logged through TensorBoard's data provider and
measure it: cross-attention aligns Chinese words with their English source, the ViT's class
token looks at the object, the article's attention (fixed) round-trips eagerly and from a
`tf.function`. The figures are printed (`pytest -s`).
"""

import pathlib
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard import context as tb_context

from conftest import DEMO_PROBE_EXAMPLES
from readback import provider_for, read_back
from tb_attention_plugin import encoding, metadata, png

# The demos are a package at the repository root, next to tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from demo import run_all, seed_attention, translation, translation_data, vision  # noqa: E402

PROBE_EXAMPLES = DEMO_PROBE_EXAMPLES  # examples the main job logs per demo


@pytest.fixture(scope="module")
def logdir(demo_logs):
    """One logdir with every demo trained in its reduced (CI) size by the main-job command
    (`conftest.demo_logs`), logging PROBE_EXAMPLES examples."""
    path, _ = demo_logs
    return path


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """The seed article's demo trained in this process (its result holds the weights it logged,
    which the round-trip test compares with what was stored)."""
    path = tmp_path_factory.mktemp("seed")
    return path, seed_attention.train(str(path), "seed_attention", steps=200, log_every=50,
                                      probe_examples=4)


@pytest.fixture(scope="module")
def logged(logdir):
    """`{run: {tag: [(step, header, weights)]}}` read through TensorBoard's data provider."""
    return read_back(logdir)


def last_cross_attention_tag(tags):
    cross = sorted(tag for tag in tags if tag.endswith(translation.CROSS_ATTENTION_TAG_SUFFIX))
    assert cross, "no cross-attention tag among %s" % sorted(tags)
    return cross[-1]


def small_corpus():
    settings = translation.SIZES["small"]
    return translation_data.make_corpus(settings["train_size"], settings["heldout_size"], seed=0)


def test_translation_cross_attention_aligns_heldout_words(logged):
    tags = logged["translation_lr1e-3/train"]
    tag = last_cross_attention_tag(tags)
    pairs = small_corpus().heldout[:PROBE_EXAMPLES]
    first_step, _, first_weights = tags[tag][0]
    last_step, header, weights = tags[tag][-1]

    # The tab shows the real held-out words: English keys, predicted Chinese words as queries.
    assert header["shape"][0] == PROBE_EXAMPLES
    for pair, keys, queries in zip(pairs, header["key_tokens"], header["query_tokens"]):
        assert keys[: len(pair.source)] == list(pair.source)
        assert queries[: len(pair.target) + 1] == list(pair.target) + [translation_data.END]

    accuracy, hits, total = translation.alignment_accuracy(weights, pairs)
    untrained, _, _ = translation.alignment_accuracy(first_weights, pairs)
    print(
        "\ntranslation %s: %d/%d = %.1f%% of held-out Chinese content words attend most to "
        "their English word at step %d (%.1f%% at step %d)"
        % (tag, hits, total, 100 * accuracy, last_step, 100 * untrained, first_step)
    )
    assert total >= 150
    assert untrained < 0.7, "the untrained model already aligns: the measure proves nothing"
    assert accuracy >= 0.7


def test_translation_logs_every_attention_kind_with_masks(logged):
    tags = logged["translation_lr1e-3/train"]
    pairs = small_corpus().heldout[:PROBE_EXAMPLES]
    kinds = {"encoder": None, "decoder_self": None, "cross": None}
    for tag, entries in tags.items():
        if tag.endswith(translation.CROSS_ATTENTION_TAG_SUFFIX):
            kinds["cross"] = entries[-1]
        elif "decoder" in tag:
            kinds["decoder_self"] = entries[-1]
        elif "encoder" in tag:
            kinds["encoder"] = entries[-1]
    assert all(kinds.values()), sorted(tags)
    source_length = len(pairs[0].source)  # example 0's lengths, padding excluded
    target_length = len(pairs[0].target) + 1  # + </s>

    _, header, weights = kinds["encoder"]
    assert header["query_tokens"][0] == header["key_tokens"][0]
    assert header["key_tokens"][0][:source_length] == list(pairs[0].source)
    assert np.isnan(weights[0, :, :, source_length:]).all()  # padding is greyed out, not zero

    _, header, weights = kinds["decoder_self"]
    assert header["query_tokens"][0][:target_length] == header["key_tokens"][0][:target_length]
    causal = weights[0, :, :target_length, :target_length]
    future = np.triu(np.ones((target_length, target_length), bool), k=1)
    assert np.isnan(causal[:, future]).all()
    assert not np.isnan(causal[:, ~future]).any()

    _, header, weights = kinds["cross"]
    assert header["key_tokens"][0][:source_length] == list(pairs[0].source)
    assert np.isnan(weights[0, :, :, source_length:]).all()
    rows = weights[0, :, :target_length, :source_length]
    np.testing.assert_allclose(rows.sum(-1), 1.0, atol=0.02)  # probabilities over real words


def test_translation_runs_compare_and_keep_their_loss(logdir, logged):
    path = logdir
    slow = logged["translation_lr3e-4/train"]
    fast = logged["translation_lr1e-3/train"]
    tag = last_cross_attention_tag(fast)
    assert tag in slow
    pairs = small_corpus().heldout[:PROBE_EXAMPLES]
    assert [s for s, _, _ in slow[tag]] == [s for s, _, _ in fast[tag]]
    print("\n%s alignment per step (lr 1e-3 | lr 3e-4):" % tag)
    aligned_from = {}
    for (step, _, fast_weights), (_, _, slow_weights) in zip(fast[tag], slow[tag]):
        fast_accuracy, _, _ = translation.alignment_accuracy(fast_weights, pairs)
        slow_accuracy, _, _ = translation.alignment_accuracy(slow_weights, pairs)
        print("  step %4d: %5.1f%% | %5.1f%%" % (step, 100 * fast_accuracy, 100 * slow_accuracy))
        for run, accuracy in (("fast", fast_accuracy), ("slow", slow_accuracy)):
            if accuracy >= 0.7:
                aligned_from.setdefault(run, step)
    # What comparing the two runs in the tab shows: the lower learning rate aligns later.
    assert aligned_from["fast"] < aligned_from.get("slow", float("inf"))

    # keras.callbacks.TensorBoard's loss curves sit next to the attention in the same runs.
    provider = provider_for(path)
    scalars = provider.list_scalars(
        tb_context.RequestContext(), experiment_id="", plugin_name="scalars"
    )
    for run in ("translation_lr1e-3/train", "translation_lr3e-4/validation", "vision/train"):
        assert "epoch_loss" in scalars.get(run, {}), (run, sorted(scalars))


def test_translation_saved_model_translates_heldout_sentences(logdir):
    path = logdir
    model = keras.saving.load_model(path / "translation_lr1e-3" / "model.keras")
    corpus = small_corpus()
    pairs = corpus.heldout[-20:]
    translations = translation.translate(model, corpus, pairs)
    exact = sum(list(p.target) == words for p, words in zip(pairs, translations))
    print("\nsaved translator: %d/20 held-out sentences exactly right" % exact)
    assert exact >= 16


def read_probe_images(path, run, tag, step):
    """The PNG images stored with one step, decoded, through TensorBoard's data provider."""
    provider = provider_for(path)
    ctx = tb_context.RequestContext()
    sequences = provider.read_blob_sequences(
        ctx, experiment_id="", plugin_name=metadata.PLUGIN_NAME, downsample=100000
    )
    (datum,) = [d for d in sequences[run][tag] if d.step == step]
    header = encoding.decode_header(provider.read_blob(ctx, blob_key=datum.values[0].blob_key))
    return [
        png.decode_png(
            provider.read_blob(ctx, blob_key=datum.values[encoding.image_index(header, b)].blob_key)
        )
        for b in range(header["shape"][0])
    ]


def test_vision_class_token_attends_to_the_object(logdir, logged):
    path = logdir
    tags = logged["vision/train"]
    tag = sorted(tags)[-1]  # the last ViT block
    settings = vision.SIZES["small"]
    probe_images, _, masks = vision.make_images(settings["test_size"], seed=1)
    probe_images, masks = probe_images[:PROBE_EXAMPLES], masks[:PROBE_EXAMPLES]
    first_step, _, first_weights = tags[tag][0]
    last_step, header, weights = tags[tag][-1]

    assert header["image"] == {"grid": [8, 8], "prefix_tokens": 1, "width": 32, "height": 32}
    stored = read_probe_images(path, "vision/train", tag, last_step)
    assert len(stored) == PROBE_EXAMPLES
    expected = np.rint(probe_images * 255).astype(np.uint8)
    assert np.abs(stored[0].astype(int)[..., :3] - expected[0]).max() <= 1

    ratio, share, area = vision.class_token_focus(weights, masks)
    untrained_ratio, _, _ = vision.class_token_focus(first_weights, masks)
    print(
        "\nvision %s: the class token puts %.1f%% of its patch attention on the object, which "
        "covers %.1f%% of the patches: %.1fx its area share at step %d (%.1fx at step %d)"
        % (tag, 100 * share, 100 * area, ratio, last_step, untrained_ratio, first_step)
    )
    assert untrained_ratio < 1.5
    assert ratio >= 3.0


def test_keras_hub_lora_demo_shows_the_probe_words(logged):
    """The main job's keras-hub run: a Llama-style causal LM LoRA-fine-tuned on strings, logged
    from a probe of strings, shows the tokenizer's words on both axes, every query head of
    its grouped-query layers, and causal attention."""
    from demo import keras_hub_lora

    run = logged["keras_hub_lora/train"]
    assert sorted(run) == ["transformer_layer_0/self_attention",
                           "transformer_layer_1/self_attention"]
    for tag, entries in run.items():
        step, header, weights = entries[-1]
        words = keras_hub_lora.PROBE[0].split()
        assert header["query_tokens"][0] == ["<s>"] + [" " + w for w in words]
        assert header["key_tokens"] == header["query_tokens"]
        assert header["query_tokens"][1][:4] == ["<s>", " she", " drinks", " tea"]
        assert weights.shape[:2] == (2, 4)  # 4 query heads over 2 key/value heads
        filled = np.nan_to_num(weights)
        assert not filled[..., np.triu_indices(weights.shape[-1], 1)[0],
                          np.triu_indices(weights.shape[-1], 1)[1]].any(), tag
        assert np.isnan(weights[1, :, :, 4:]).all()  # the shorter prompt's padding is masked
        assert len(entries) >= 3  # captured during the fine-tuning, not only at its end


def test_seed_attention_round_trips_eager_and_tf_function(seed_run):
    path, result = seed_run
    entries = read_back(path)["seed_attention"][seed_attention.TAG]
    assert [s for s, _, _ in entries] == sorted(result["logged"])
    modes = {mode for mode, _ in result["logged"].values()}
    assert modes == {"eager", "tf.function"}
    length = seed_attention.SEQUENCE_LENGTH
    future = np.triu(np.ones((length, length), bool), k=1)
    for step, header, decoded in entries:
        _, expected = result["logged"][step]
        assert header["query_tokens"] == [[str(d) for d in row] for row in result["probe"]]
        assert np.isnan(decoded[..., future]).all()
        assert np.abs(decoded[..., ~future] - expected[..., ~future]).max() <= (
            encoding.MAX_ERROR + 1e-6
        )
    print("\nseed attention: running-max accuracy %.3f; steps %s"
          % (result["accuracy"], {s: m for s, (m, _) in sorted(result["logged"].items())}))
    assert result["accuracy"] >= 0.9
    # Real per-head projections: the heads of the untrained model differ (the article's are equal).
    untrained = entries[0][2]
    assert np.nanmax(np.abs(untrained[:, 0] - untrained[:, 1])) > 0.05


def test_seed_multi_head_attention_matches_keras():
    """The fixed function-style attention computes what keras.layers.MultiHeadAttention does."""
    width, heads, depth = 16, 4, 4
    params = seed_attention.MultiHeadAttentionWeights(width, heads, seed=3)
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 5, width)).astype("float32")
    value = rng.normal(size=(2, 7, width)).astype("float32")
    hidden = np.zeros((2, 5, 7), bool)
    hidden[1, :, 4:] = True  # padding of the second example
    output, weights = seed_attention.multi_head_attention(
        query, value, value, params, mask=hidden[:, None]
    )
    assert output.shape == (2, 5, width) and weights.shape == (2, heads, 5, 7)
    assert np.all(weights.numpy()[1, :, :, 4:] == 0)

    layer = keras.layers.MultiHeadAttention(heads, depth, use_bias=False)
    layer(query, value)
    layer.set_weights([
        params.wq.numpy().reshape(width, heads, depth),
        params.wk.numpy().reshape(width, heads, depth),
        params.wv.numpy().reshape(width, heads, depth),
        params.wo.numpy().reshape(heads, depth, width),
    ])
    keras_output, keras_weights = layer(
        query, value, attention_mask=~hidden, return_attention_scores=True
    )
    np.testing.assert_allclose(output.numpy(), np.asarray(keras_output), atol=1e-5)
    np.testing.assert_allclose(weights.numpy(), np.asarray(keras_weights), atol=1e-6)
    # Inside tf.function the same function gives the same result.
    compiled = tf.function(seed_attention.multi_head_attention)
    compiled_output, _ = compiled(query, value, value, params, mask=hidden[:, None])
    np.testing.assert_allclose(compiled_output.numpy(), output.numpy(), atol=1e-5)
