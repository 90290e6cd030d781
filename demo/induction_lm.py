"""A two-layer causal language model in which a previous-token head and an induction head appear,
logged on a 1536-token probe, so that every step is stored in the POOLED long-sequence layout.

The model reads sequences of random tokens built from a recurring span: a random span of `P`
tokens (no token twice in a span) repeated to the end. The first copy cannot be predicted; every
later token can, by the two-step circuit of Olsson et al. (2022), "In-context Learning and
Induction Heads": a **previous-token head** in layer 0 copies into each position the token
before it, and an **induction head** in layer 1 looks for the earlier position whose previous
token is the current token and predicts what followed it. Because `P` differs from sequence to
sequence, no fixed positional offset does the job: the heads must match content.

Training has two stages (one `fit`, one `AttentionLogger`): 32 x 64 tokens with `4 <= P <= 16`
(the heads form here, at 64 tokens, where a step is cheap), then 1 x 1024 tokens with
`4 <= P <= 512` (the heads learn to work at every distance). `AttentionLogger` logs both
layers before training and every `update_freq` (40) steps on an induction probe
(`tb_attention_plugin.induction_probe`: a random span of `L = 768` tokens repeated once, 1536
tokens, 800 token ids so that no id recurs within a copy), and measures head health
(`health_probe=`) over 2 such sequences. At the default budget (4 MiB a step) the logger
keeps one example and pools both layers: 2 heads x `payload_bound(T * T)` is 4,148,618 bytes
at `T = 1440`, under 4 MiB, and 4,720,186 at 1536, over it, so one 2-head layer alone no
longer fits in full (at 1024 tokens the logger pooled layer 0 and kept layer 1 in full,
measured). A step holds the overview (4 x 4 blocks, each block's mean and max) and the exact
windows: in `last_queries` (the last 64 queries over all keys) `layer_0/self_attention` draws
a line one below the diagonal (previous token) and `layer_1/self_attention` a line at key
`i - L + 1` (induction: the token after the earlier copy of token `i`), from the step the
head-health records name (`tb_attention_plugin.health.emergence_step`;
`tests/test_demo_roles.py` measures both on the window and in the records and prints them).

Positions (`RotaryAttention`, a `MultiHeadAttention` subclass that overrides only `call`):
rotary positions on 16 of each head's 32 dimensions, one pair per period 2, 3, 5, 7, ..., 19
positions, and the queries at position `i` scaled by `log(i + 1) / log(64)`; the other 16
dimensions carry content at any distance. Measured (2026-11-29, shared 2-core machine; CPU
seconds from `time.process_time`; vocabulary 576 and a 1024-token probe `L = 512` unless
said; scores are `health.head_health`'s means over the probe's rows, "window" the same on its
last 64 rows):

- Sinusoids added to the tokens (the previous version of this demo, trained at 64 tokens) do
  not extrapolate: induction 0.72/0.83 on `L = 16`, 0.015/0.023 on `L = 512`; no schedule with
  them showed the heads at 1024 tokens within the budget (training at 2 x 1024 from the start:
  no induction by step 200, 97 CPU s; 64 then 1024 tokens, doubling lengths, random position
  offsets, sinusoids of base 10: 0.012-0.027 on `L = 512`).
- Rotary (geometric frequencies from period 6 to 47), 600 steps at 32 x 64: `L = 16`
  previous-token 0.82/0.45, induction 0.94/0.92; on `L = 512` 0.085/0.080 and 0.070/0.061:
  the softmax spreads over 1000 keys instead of 64. With the log-length scaling of the
  queries: 0.015/0.16 and 0.04/0.06. Layer 0's weight then sits on aliases of the previous
  token, distances where every rotated pair is back near its phase at distance 1, which
  64-token training never showed: with all 32 dimensions of layer 0 rotated (previous-token
  0.38/0.05) at distances 755, 479, 102, 270, 233; with a learned linear bias on key
  positions folded into the query and key vectors at 177, 101 (and layer 1 learned to prefer
  far keys); with the prime periods (0.46/0.02) at 91, 301, 661, 211 (1 + multiples of 30).
- A second stage at long lengths removes them within 20 steps: after 400 steps at 32 x 64,
  2 x 1024 tokens with `P <= 16` fixed layer 0 (previous-token 0.85 on `L = 512`, 77% of the
  last rows' weight on distance 1) but not layer 1 (induction 0.19/0.10: the training spans
  never reached 512); with `P <= 512` both: previous-token 0.96/0.77 and induction 0.80/0.80
  after 20 long steps (14 CPU s), 0.96/0.71 and 0.89/0.88 after 40.
- 4 heads of 16 dimensions (8 rotated, periods 3, 5, 7, 11; all 4 pooled at 1024 tokens): no
  heads by step 420, not even at 64 tokens (`L = 16` induction <= 0.07).
- On the 1536-token probe (`L = 768`, vocabulary 800), CI size, read back from the event
  files: long stage 40 steps at 1 x 1536, learning rate 3e-3, 360 + 40 steps: previous-token
  window 0.71/0.62 and records 0.87/0.77, induction window 0.76/0.81 and records 0.87/0.84,
  emerging at step 380, 127 CPU s of training with a capture every 20 steps. Stopping the
  first stage at 240 steps: no heads (the 64-token phase change comes first); batches of 16
  instead of 32 neither. The long stage at 1 x 1024 tokens carries to 1536: induction window
  0.55/0.58, records 0.77/0.71. With learning rate 5e-3, 280 + 60 steps (this CI size):
  previous-token window 0.76 (head 0; head 1 0.10) and induction 0.67/0.64 at step 340,
  records 0.82 and 0.81/0.82, emerging at step 320 (the same in the test suite's run). CPU
  of the whole `train(small=True)` process, run back to back (load average 1-4): 88.8 s,
  against 51.3 s for the previous 64-token demo, +37.5 s (50 long steps and 1 health sequence
  instead: 84.3 s, not worth the weaker measure). The
  full size (400 + 120 steps): previous-token window 0.98 (head 0; head 1 0.06), induction
  0.87/0.92 at step 520, emerging at step 440; loss on the probe's repeated half 0.31 (8.06 on
  the first); process CPU 132.8 s against 76.9 s for the previous demo's full size, +56 s
  of the main job (back to back, load average 3-4).

The model takes any length (positions are computed, not looked up).

Data are generated here (no download).

Usage:

```
python -m demo.induction_lm --logdir logs --run-name induction_lm
tensorboard --logdir logs   # Attention tab: layer_0 then layer_1 of run induction_lm/train
```
"""

import os
import pathlib
import time

import keras
import numpy as np
from keras import ops

import tb_attention_plugin
from demo import training

PAD = 0  # reserved id: never drawn, so the probe and the data share the vocabulary

SIZES = {
    # Two stages of training, in this order: `short_steps` batches of `batch_size` x `length`
    # tokens whose spans of min_period..max_period tokens recur (the heads form here), then
    # `long_steps` batches of `long_batch` x `long_length` tokens with spans of up to
    # `long_max_period` tokens (the heads learn to work at every distance up to the probe's).
    # repeat: L of the displayed induction probe (2 L tokens, stored pooled).
    "full": dict(length=64, vocab_size=800, width=64, heads=2, min_period=4, max_period=16,
                 short_steps=400, batch_size=32, long_length=1024, long_max_period=512,
                 long_steps=120, long_batch=1, repeat=768, epochs=1, update_freq=40),
    "small": dict(length=64, vocab_size=800, width=64, heads=2, min_period=4, max_period=16,
                  short_steps=280, batch_size=32, long_length=1024, long_max_period=512,
                  long_steps=60, long_batch=1, repeat=768, epochs=1, update_freq=40),
}
HEALTH_PROBE_SIZE = 2  # induction-probe sequences (2 L tokens each) the head-health measures use
ROTARY_PERIODS = (2, 3, 5, 7, 11, 13, 17, 19)  # positions, per rotated pair of dimensions
LOG_LENGTH = 64  # queries at position i are scaled by log(i + 1) / log(LOG_LENGTH)


def vocabulary(size):
    """Token names: `"<pad>"` then distinct two-syllable words (`"bako"`, ...), `size` in all."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    words = [a + b for a in syllables for b in syllables if a != b]
    if size - 1 > len(words):
        raise ValueError("vocabulary size %d is larger than %d" % (size, len(words) + 1))
    return ["<pad>"] + words[: size - 1]


def make_sequences(count, length, vocab_size, min_period, seed=0, max_period=None, max_lead=0):
    """`count` sequences of `length + 1` tokens with a recurring span, int32.

    Each row: a random lead-in (0 to `max_lead` tokens), then a random span of `P` tokens
    (`min_period <= P <= max_period`, default `length // 2`, drawn per row, without repetition
    inside the span) repeated to the end. Ids are drawn from `1 .. vocab_size - 1` (0 is
    padding). Inputs are `[:, :-1]`, next-token targets `[:, 1:]`.

    Example:

    >>> rows = make_sequences(2, 32, 64, min_period=4)
    >>> rows.shape, bool((rows > 0).all())
    ((2, 33), True)
    """
    max_period = length // 2 if max_period is None else max_period
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, vocab_size, (count, length + 1)).astype(np.int32)
    for row in rows:
        lead = int(rng.integers(0, max_lead + 1))
        period = int(rng.integers(min_period, max_period + 1))
        span = rng.choice(np.arange(1, vocab_size), size=period, replace=period >= vocab_size)
        repeats = -(-(length + 1 - lead) // period)
        row[lead:] = np.tile(span, repeats)[: length + 1 - lead]
    return rows


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class RotaryAttention(keras.layers.MultiHeadAttention):
    """`MultiHeadAttention` with rotary positions on part of each head and log-length scaling.

    Only `call` differs from Keras' layer: it projects with the layer's own `_query_dense` /
    `_key_dense` / `_value_dense`, rotates the first `rotary_dims` dimensions of every query
    and key by position (Su et al. 2021, RoPE: pair `p` turns by `2 pi / periods[p]` per
    position), multiplies the query at position `i` by `log(i + 1) / log(log_length)` (as
    Qwen's "logn" attention: softmax stays as sharp with 1000 keys as with 64), then calls
    Keras' own `_compute_attention` and `_output_dense`. The other dimensions are not rotated:
    they match content at any distance (the induction head's job); the rotated ones see only
    relative positions (the previous-token head's job), so the layer takes any length.
    Keeping `_compute_attention` lets `AttentionLogger` compute the layer in query chunks when
    it is pooled (tb_attention_plugin/logger/blocked.py).

    Example:

    >>> layer = RotaryAttention(2, 32, rotary_dims=16)
    >>> x = np.zeros((1, 5, 64), "float32")
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (1, 5, 64)
    """

    def __init__(self, num_heads, key_dim, rotary_dims=16, periods=ROTARY_PERIODS,
                 log_length=LOG_LENGTH, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        if rotary_dims % 2 or rotary_dims > key_dim or len(periods) < rotary_dims // 2:
            raise ValueError("rotary_dims must be even, at most key_dim, with a period per pair")
        self.rotary_dims, self.periods = rotary_dims, tuple(periods)[: rotary_dims // 2]
        self.log_length = log_length

    def _rotate(self, x):
        half = self.rotary_dims // 2
        rates = ops.convert_to_tensor((2 * np.pi / np.array(self.periods)).astype(np.float32))
        angles = ops.cast(ops.arange(ops.shape(x)[1]), "float32")[:, None] * rates[None]
        cos, sin = ops.cos(angles)[None, :, None, :], ops.sin(angles)[None, :, None, :]
        a, b, rest = x[..., :half], x[..., half:self.rotary_dims], x[..., self.rotary_dims:]
        return ops.concatenate([a * cos - b * sin, a * sin + b * cos, rest], axis=-1)

    def call(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None,
             attention_mask=None, return_attention_scores=False, training=None,
             use_causal_mask=False):
        key = value if key is None else key
        mask = self._compute_attention_mask(
            query, value, query_mask=query_mask, value_mask=value_mask, key_mask=key_mask,
            attention_mask=attention_mask, use_causal_mask=use_causal_mask)
        q = self._rotate(self._query_dense(query))
        positions = ops.cast(ops.arange(ops.shape(q)[1]), "float32")
        q = q * (ops.log(positions + 1.0) / np.log(self.log_length))[None, :, None, None]
        k = self._rotate(self._key_dense(key))
        v = self._value_dense(value)
        output, scores = self._compute_attention(q, k, v, mask, training,
                                                 return_attention_scores)
        output = self._output_dense(output)
        return (output, scores) if return_attention_scores else output

    def get_config(self):
        return {**super().get_config(), "rotary_dims": self.rotary_dims,
                "periods": list(self.periods), "log_length": self.log_length}


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class Tokens(keras.layers.Layer):
    """The token embedding (positions enter in the attention layers: `RotaryAttention`)."""

    def __init__(self, vocab_size, width, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.width = vocab_size, width
        # Unit-variance token vectors (Keras' default initialiser, uniform +-0.05, leaves
        # tokens at a few percent of the norm and the induction head forms later).
        self.tokens = keras.layers.Embedding(
            vocab_size, width, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="tokens")

    def build(self, ids_shape):
        self.tokens.build(ids_shape)

    def call(self, ids):
        return self.tokens(ids)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "width": self.width}


@keras.saving.register_keras_serializable(package="tb_attention_demo")
class CausalBlock(keras.layers.Layer):
    """Pre-norm causal self-attention with a residual (attention-only, as in Olsson et al.)."""

    def __init__(self, width, heads, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads = width, heads
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.self_attention = RotaryAttention(heads, width // heads, name="self_attention")

    def build(self, x_shape):
        self.norm.build(x_shape)
        self.self_attention.build(x_shape, x_shape)

    def call(self, x):
        normed = self.norm(x)
        return x + self.self_attention(normed, normed, use_causal_mask=True)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads}


def build_model(vocab_size, width=64, heads=2, layers=2):
    """The causal language model: ids `[batch, length]` (any length) -> next-token logits."""
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = Tokens(vocab_size, width, name="embedding")(ids)
    for i in range(layers):
        x = CausalBlock(width, heads, name="layer_%d" % i)(x)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(ids, logits, name="induction_lm")


def schedule(settings, seed):
    """The two training stages as one `tf.data.Dataset` of `(inputs, targets)` batches, in
    order: `short_steps` batches of short rows, then `long_steps` batches of long rows (one
    dataset, so that one `fit` and one `AttentionLogger` see every step)."""
    import tensorflow as tf

    short = make_sequences(
        settings["short_steps"] * settings["batch_size"], settings["length"],
        settings["vocab_size"], settings["min_period"], seed, max_period=settings["max_period"])
    long = make_sequences(
        settings["long_steps"] * settings["long_batch"], settings["long_length"],
        settings["vocab_size"], settings["min_period"], seed + 2,
        max_period=settings["long_max_period"])

    def batches():
        for rows, size in ((short, settings["batch_size"]), (long, settings["long_batch"])):
            for start in range(0, len(rows), size):
                yield rows[start:start + size, :-1], rows[start:start + size, 1:]

    spec = tf.TensorSpec((None, None), tf.int32)
    steps = settings["short_steps"] + settings["long_steps"]
    return tf.data.Dataset.from_generator(batches, output_signature=(spec, spec)).apply(
        tf.data.experimental.assert_cardinality(steps))


def probe_batch(settings, count, seed=0):
    """An induction probe: `tb_attention_plugin.induction_probe(vocab_size, repeat)`.

    Returns `(ids int32 [count, 2 * repeat], repeat)`: a random span of `repeat` tokens repeated
    once; an induction head at query `i >= repeat` attends to key `i - repeat + 1`.
    """
    return tb_attention_plugin.induction_probe(
        settings["vocab_size"], settings["repeat"], batch=count, seed=seed, reserved_ids=(PAD,)
    )


def train(logdir, run_name="induction_lm", epochs=None, small=False, learning_rate=5e-3,
          probe_examples=4, seed=0, verbose=2):
    """Trains the language model and logs loss and attention under `<logdir>/<run_name>`.

    Writes `<run_name>/model.keras` and `<run_name>/result.json` (settings, losses on the
    first and the repeated half of held-out sequences, training seconds). Returns the result.
    """
    settings = training.sized_settings(SIZES, small, epochs)
    keras.utils.set_random_seed(seed)
    heldout = make_sequences(256, settings["length"], settings["vocab_size"],
                             settings["min_period"], seed + 1, max_period=settings["max_period"])
    model = build_model(settings["vocab_size"], settings["width"], settings["heads"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # At this length the default budget (4 MiB a step) keeps one example: the probe is one.
    probe_examples = min(probe_examples, 1)
    probe, repeat_offset = probe_batch(settings, probe_examples)
    health_probe = probe_batch(settings, HEALTH_PROBE_SIZE, seed=1)
    words = vocabulary(settings["vocab_size"])
    run_dir = pathlib.Path(logdir) / run_name
    started = time.process_time()
    seconds = training.fit_logged(
        model, run_dir, schedule(settings, seed), None, (heldout[:, :-1], heldout[:, 1:]),
        settings, verbose, probe=probe, vocabulary=words, health_probe=health_probe,
        update_freq=settings["update_freq"], max_examples=probe_examples,
    )
    cpu_seconds = time.process_time() - started
    first, repeated = copy_losses(model, settings)
    return training.write_result(
        run_dir, settings, learning_rate, seed, seconds, probe_examples,
        repeat_offset=repeat_offset, final_loss=float(model.history.history["loss"][-1]),
        probe_first_half_loss=first, probe_second_half_loss=repeated, train_cpu_seconds=cpu_seconds,
    )


def copy_losses(model, settings, count=8):
    """Mean next-token loss on the first and on the repeated half of induction-probe rows.

    A model with an induction head predicts the second half (loss near 0) but not the first
    (loss near `ln(vocab_size - 1)`)."""
    ids, offset = probe_batch(settings, count, seed=7)
    logits = np.asarray(model.predict_on_batch(ids), np.float64)[:, :-1]
    targets = ids[:, 1:]
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    loss = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return float(loss[:, : offset - 1].mean()), float(loss[:, offset:].mean())


def parse_args(argv=None):
    return training.parse_args(argv, __doc__.split("\n")[0], "induction_lm",
                               "induction-probe sequences whose attention is logged (at most "
                               "1: the 4 MiB budget keeps one 1536-token example)",
                               learning_rate=5e-3)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return training.train_from_args(
        train, parse_args(argv),
        lambda r: ", probe loss %.2f (first half) / %.2f (repeated half)"
        % (r["probe_first_half_loss"], r["probe_second_half_loss"]),
    )


if __name__ == "__main__":
    main()
