"""English->Chinese translation with a small Keras 3 Transformer; its attention goes to TensorBoard.

The corpus is generated in code (`demo/translation_data.py`), so the demo needs no download.
`AttentionLogger` logs the encoder self-attention, the causal decoder self-attention and the
cross-attention with the real English and Chinese tokens on the axes; `keras.callbacks.TensorBoard`
logs the loss. After half a minute of training on 2 CPU cores the cross-attention of the last
decoder layer points from each Chinese word to the English word it translates (`红色` -> `red`),
reordering included (`今天` comes early in Chinese, `today` last in English).

Usage:

```
python -m demo.translation --logdir logs --run-name translation --epochs 12
tensorboard --logdir logs   # open the "Attention" tab
```

The decoder rows are labelled with the token each row PREDICTS (Chinese + `</s>`), the way the
TensorFlow translation tutorial labels its plots; the decoder reads `<s>` + Chinese.
"""

import os
import pathlib

import keras
import numpy as np
from keras import ops

from demo import training
from demo import translation_data

CROSS_ATTENTION_TAG_SUFFIX = "cross_attention"


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position embedding."""

    def __init__(self, vocabulary_size, length, width, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.length, self.width = vocabulary_size, length, width
        self.tokens = keras.layers.Embedding(vocabulary_size, width, name="tokens")
        self.positions = keras.layers.Embedding(length, width, name="positions")

    def build(self, ids_shape):
        self.tokens.build(ids_shape)
        self.positions.build((self.length,))

    def call(self, ids):
        positions = ops.arange(ops.shape(ids)[-1])
        return self.tokens(ids) + self.positions(positions)[None]

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "length": self.length, "width": self.width}


def feed_forward(width, hidden, name):
    return keras.Sequential(
        [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(width)], name=name
    )


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class EncoderBlock(keras.layers.Layer):
    """Post-norm Transformer encoder block: self-attention, then a feed-forward network."""

    def __init__(self, width, heads, hidden, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.hidden = width, heads, hidden
        self.self_attention = keras.layers.MultiHeadAttention(
            heads, width // heads, name="self_attention"
        )
        self.feed_forward = feed_forward(width, hidden, "feed_forward")
        self.norm_1 = keras.layers.LayerNormalization(name="norm_1")
        self.norm_2 = keras.layers.LayerNormalization(name="norm_2")

    def build(self, x_shape, attention_mask_shape=None):
        self.self_attention.build(x_shape, x_shape)
        self.feed_forward.build(x_shape)
        self.norm_1.build(x_shape)
        self.norm_2.build(x_shape)

    def call(self, x, attention_mask):
        x = self.norm_1(x + self.self_attention(x, x, attention_mask=attention_mask))
        return self.norm_2(x + self.feed_forward(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "hidden": self.hidden}

@keras.saving.register_keras_serializable(package="tb_attention_demo")
class DecoderBlock(keras.layers.Layer):
    """Post-norm decoder block: causal self-attention, cross-attention, feed-forward."""

    def __init__(self, width, heads, hidden, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.hidden = width, heads, hidden
        self.self_attention = keras.layers.MultiHeadAttention(
            heads, width // heads, name="self_attention"
        )
        self.cross_attention = keras.layers.MultiHeadAttention(
            heads, width // heads, name=CROSS_ATTENTION_TAG_SUFFIX
        )
        self.feed_forward = feed_forward(width, hidden, "feed_forward")
        self.norm_1 = keras.layers.LayerNormalization(name="norm_1")
        self.norm_2 = keras.layers.LayerNormalization(name="norm_2")
        self.norm_3 = keras.layers.LayerNormalization(name="norm_3")

    def build(self, x_shape, encoded_shape, self_mask_shape=None, cross_mask_shape=None):
        self.self_attention.build(x_shape, x_shape)
        self.cross_attention.build(x_shape, encoded_shape)
        self.feed_forward.build(x_shape)
        for norm in (self.norm_1, self.norm_2, self.norm_3):
            norm.build(x_shape)

    def call(self, x, encoded, self_mask, cross_mask):
        attended = self.self_attention(x, x, attention_mask=self_mask, use_causal_mask=True)
        x = self.norm_1(x + attended)
        x = self.norm_2(x + self.cross_attention(x, encoded, attention_mask=cross_mask))
        return self.norm_3(x + self.feed_forward(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads,
                "hidden": self.hidden}



def build_model(corpus, width=64, heads=2, layers=1, hidden=128):
    """Builds the encoder-decoder: inputs `(source_ids, decoder_input_ids)`, output logits.

    Padding (id 0) is masked in every attention layer through explicit attention masks.
    """
    source = keras.Input((corpus.source_length,), dtype="int32", name="source")
    target = keras.Input((corpus.target_length,), dtype="int32", name="target")

    def pair_mask(query_ids, key_ids):
        query_valid = ops.expand_dims(ops.not_equal(query_ids, 0), 2)
        key_valid = ops.expand_dims(ops.not_equal(key_ids, 0), 1)
        return ops.logical_and(query_valid, key_valid)

    encoder_mask = pair_mask(source, source)
    decoder_mask = pair_mask(target, target)
    cross_mask = pair_mask(target, source)

    x = TokenAndPositionEmbedding(len(corpus.source_vocab), corpus.source_length, width,
                                  name="source_embedding")(source)
    for i in range(layers):
        x = EncoderBlock(width, heads, hidden, name="encoder_%d" % i)(x, encoder_mask)
    encoded = x
    y = TokenAndPositionEmbedding(len(corpus.target_vocab), corpus.target_length, width,
                                  name="target_embedding")(target)
    for i in range(layers):
        y = DecoderBlock(width, heads, hidden, name="decoder_%d" % i)(
            y, encoded, decoder_mask, cross_mask
        )
    logits = keras.layers.Dense(len(corpus.target_vocab), name="logits")(y)
    return keras.Model([source, target], logits, name="translator")


def probe_batch(corpus, count):
    """The first `count` held-out pairs as model inputs, with their source and target tokens."""
    pairs = corpus.heldout[:count]
    source_ids, decoder_in, _ = translation_data.to_arrays(pairs, corpus)
    source_tokens = [translation_data.pad(p.source, corpus.source_length) for p in pairs]
    target_tokens = [translation_data.decoder_tokens(p, corpus.target_length)[1] for p in pairs]
    return pairs, (source_ids, decoder_in), source_tokens, target_tokens


def alignment_accuracy(cross_attention, pairs):
    """Share of Chinese content words whose strongest cross-attention is their English word.

    Args:
      cross_attention: `[examples, heads, Tq, Tk]` weights of one cross-attention layer; rows
        are decoder positions (labelled by the token they predict), columns source positions.
      pairs: The `translation_data.Pair` of each example.

    Returns:
      `(accuracy, hits, total)`.
    """
    mean_over_heads = np.asarray(cross_attention, dtype="float32").mean(axis=1)
    hits = total = 0
    for weights, pair in zip(mean_over_heads, pairs):
        for row in pair.content_positions():
            scores = np.nan_to_num(weights[row, : len(pair.source)], nan=-1.0)
            hits += int(np.argmax(scores) == pair.alignment[row])
            total += 1
    return hits / max(total, 1), hits, total


def translate(model, corpus, pairs):
    """Greedy decoding of `pairs`' English sentences; returns the Chinese token lists."""
    source_ids, _, _ = translation_data.to_arrays(pairs, corpus)
    vocab = corpus.target_vocab
    decoded = np.zeros((len(pairs), corpus.target_length), "int32")
    decoded[:, 0] = vocab.id(translation_data.START)
    for t in range(corpus.target_length - 1):
        logits = model.predict_on_batch([source_ids, decoded])
        decoded[:, t + 1] = np.argmax(logits[:, t], axis=-1)
    results = []
    for row in decoded[:, 1:]:
        words = vocab.decode(row)
        if translation_data.END in words:
            words = words[: words.index(translation_data.END)]
        results.append(words)
    return results


SIZES = {
    # name: corpus and model settings
    "full": dict(train_size=4000, heldout_size=200, width=64, heads=4, layers=2, hidden=128,
                 batch_size=64, epochs=12),
    "small": dict(train_size=2500, heldout_size=100, width=64, heads=2, layers=1, hidden=128,
                  batch_size=64, epochs=5),
}


def train(logdir, run_name="translation", epochs=None, small=False, learning_rate=1e-3,
          probe_examples=4, seed=0, update_freq=50, verbose=2):
    """Trains the translator and logs loss and attention under `<logdir>/<run_name>`.

    Saves the model as `<logdir>/<run_name>/model.keras` and a summary (settings, final loss,
    training seconds) as `<logdir>/<run_name>/result.json`.

    Returns the result dictionary.
    """
    settings = training.sized_settings(SIZES, small, epochs)
    keras.utils.set_random_seed(seed)
    corpus = translation_data.make_corpus(settings["train_size"], settings["heldout_size"], seed)
    model = build_model(corpus, settings["width"], settings["heads"], settings["layers"],
                        settings["hidden"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    train_x = translation_data.to_arrays(corpus.train, corpus)
    heldout_x = translation_data.to_arrays(corpus.heldout, corpus)
    probe_pairs, probe, source_tokens, target_tokens = probe_batch(corpus, probe_examples)

    run_dir = pathlib.Path(logdir) / run_name
    seconds = training.fit_logged(
        model,
        run_dir,
        [train_x[0], train_x[1]],
        train_x[2],
        ([heldout_x[0], heldout_x[1]], heldout_x[2]),
        settings,
        verbose,
        probe=probe,
        tokens={"source": source_tokens, "target": target_tokens},
        update_freq=update_freq,
        max_examples=probe_examples,
    )

    examples = corpus.heldout[:3]
    for pair, words in zip(examples, translate(model, corpus, examples)):
        print("%s  ->  %s" % (" ".join(pair.source), " ".join(words)))
    return training.write_result(run_dir, settings, learning_rate, seed, seconds, probe_examples,
                                 final_loss=float(model.history.history["loss"][-1]))


def parse_args(argv=None):
    return training.parse_args(argv, __doc__.split("\n")[0], "translation",
                               "held-out pairs whose attention is logged")


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return training.train_from_args(train, parse_args(argv))


if __name__ == "__main__":
    main()
