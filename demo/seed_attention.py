"""The article's function-style attention, made correct, trained in a TF2 loop and logged.

The project grew from an article ("如何在TensorFlow中可视化注意力权重?") whose code does not do
what it says:

- Its `multi_head_attention` calls `scaled_dot_product_attention(q, k, v)` `num_heads` times on the
  same unprojected inputs: every "head" is the same head, the concatenated output is `num_heads`
  times too wide, and only the last head's weights are returned. Here every head has its own
  slice of learned query/key/value projections (`split_heads`), the heads are merged back and
  projected by an output matrix, and the weights of all heads come back as
  `[batch, heads, Tq, Tk]`.
- Its mask convention (`mask * -1e9`, 1 = hidden) is undocumented and fails for boolean masks;
  here `mask` is documented, may be boolean or 0/1, and hidden positions get exactly zero weight.
- It runs a TF1 `tf.compat.v1.Session` with `feed_dict={input_tensor: input_tensor}` and calls
  `tf.summary.scalar` on the weight matrix. TF2 has no sessions (eager code and `tf.function`
  replace them) and a scalar summary holds one number: the matrix fails to log. Here
  `tb_attention_plugin.attention` logs the whole weight tensor with its tokens, eagerly and from
  inside a `tf.function`, for the Attention tab.

The tiny task is "running maximum": for the digits `3 1 4 1 5 9 2 6` predict `3 3 4 4 5 9 9 9`.
One causal self-attention layer solves it by putting each row's weight on the largest digit seen
so far, which is easy to read in the tab; the causal mask keeps every future position at zero.

Usage:

```
python -m demo.seed_attention --logdir logs --run-name seed_attention
tensorboard --logdir logs
```
"""

import argparse
import os
import pathlib
import time

import numpy as np
import tensorflow as tf

SEQUENCE_LENGTH = 8
DIGITS = 10
TAG = "running_max/self_attention"


def scaled_dot_product_attention(q, k, v, mask=None):
    """Attention of queries `q` over keys `k`, mixing values `v`.

    Args:
      q: `[..., Tq, depth]`.
      k: `[..., Tk, depth]`.
      v: `[..., Tk, depth_v]`.
      mask: Optional, broadcastable to `[..., Tq, Tk]`; `True` (or 1) marks a position the query
        must NOT see (a future token, padding). Every query needs at least one visible key.

    Returns:
      `(output [..., Tq, depth_v], weights [..., Tq, Tk])`; hidden positions get weight 0.

    Example:

    ```python
    causal = causal_mask(4)  # True above the diagonal
    output, weights = scaled_dot_product_attention(q, k, v, mask=causal)
    ```
    """
    logits = tf.matmul(q, k, transpose_b=True)
    logits /= tf.math.sqrt(tf.cast(tf.shape(k)[-1], logits.dtype))
    if mask is not None:
        hidden = tf.cast(mask, tf.bool)
        logits = tf.where(hidden, tf.constant(-1e9, logits.dtype), logits)
    weights = tf.nn.softmax(logits, axis=-1)
    return tf.matmul(weights, v), weights


def causal_mask(length):
    """`[length, length]` bool, `True` above the diagonal: the future a position may not see."""
    return tf.linalg.band_part(tf.ones((length, length)), 0, -1) - tf.eye(length) > 0


def split_heads(x, num_heads):
    """`[batch, T, width]` -> `[batch, heads, T, width / heads]`: each head gets its own slice."""
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    depth = x.shape[-1] // num_heads
    x = tf.reshape(x, (batch, length, num_heads, depth))
    return tf.transpose(x, (0, 2, 1, 3))


def merge_heads(x):
    """`[batch, heads, T, depth]` -> `[batch, T, heads * depth]`."""
    x = tf.transpose(x, (0, 2, 1, 3))
    shape = tf.shape(x)
    return tf.reshape(x, (shape[0], shape[1], x.shape[2] * x.shape[3]))


class MultiHeadAttentionWeights(tf.Module):
    """The learned projections of multi-head attention: `wq`, `wk`, `wv`, `wo` (`width x width`)."""

    def __init__(self, width, num_heads, seed=0):
        super().__init__()
        if width % num_heads:
            raise ValueError("width %d is not divisible by num_heads %d" % (width, num_heads))
        init = tf.keras.initializers.GlorotUniform(seed=seed)
        self.num_heads = num_heads
        self.wq, self.wk, self.wv, self.wo = (
            tf.Variable(init((width, width)), name=name) for name in ("wq", "wk", "wv", "wo")
        )


def multi_head_attention(query, key, value, params, mask=None):
    """Multi-head attention with real per-head projections.

    Args:
      query: `[batch, Tq, width]`; key, value: `[batch, Tk, width]`.
      params: A `MultiHeadAttentionWeights`.
      mask: As in `scaled_dot_product_attention`, broadcastable to `[batch, heads, Tq, Tk]`.

    Returns:
      `(output [batch, Tq, width], weights [batch, heads, Tq, Tk])`.

    Example:

    ```python
    params = MultiHeadAttentionWeights(width=32, num_heads=2)
    output, weights = multi_head_attention(x, x, x, params, mask=causal_mask(8))
    ```
    """
    q = split_heads(tf.matmul(query, params.wq), params.num_heads)
    k = split_heads(tf.matmul(key, params.wk), params.num_heads)
    v = split_heads(tf.matmul(value, params.wv), params.num_heads)
    attended, weights = scaled_dot_product_attention(q, k, v, mask)
    return tf.matmul(merge_heads(attended), params.wo), weights


class RunningMaxModel(tf.Module):
    """Digit and position embeddings, one causal multi-head attention layer, a digit classifier."""

    def __init__(self, width=32, num_heads=2, seed=0):
        super().__init__()
        normal = tf.keras.initializers.RandomNormal(stddev=0.5, seed=seed)
        self.digit_embedding = tf.Variable(normal((DIGITS, width)), name="digit_embedding")
        self.position_embedding = tf.Variable(
            normal((SEQUENCE_LENGTH, width)), name="position_embedding"
        )
        self.attention = MultiHeadAttentionWeights(width, num_heads, seed=seed + 1)
        glorot = tf.keras.initializers.GlorotUniform(seed=seed + 2)
        self.classifier = tf.Variable(glorot((width, DIGITS)), name="classifier")
        self.classifier_bias = tf.Variable(tf.zeros((DIGITS,)), name="classifier_bias")

    def __call__(self, digits):
        """`digits` int `[batch, T]` -> `(logits [batch, T, 10], weights [batch, heads, T, T])`."""
        x = tf.gather(self.digit_embedding, digits) + self.position_embedding
        attended, weights = multi_head_attention(
            x, x, x, self.attention, mask=causal_mask(SEQUENCE_LENGTH)
        )
        return tf.matmul(attended, self.classifier) + self.classifier_bias, weights


def make_batch(rng, batch_size):
    """Random digit sequences and their running maxima, both int32 `[batch, T]`."""
    digits = rng.integers(0, DIGITS, (batch_size, SEQUENCE_LENGTH))
    return digits.astype("int32"), np.maximum.accumulate(digits, axis=1).astype("int32")


def train(logdir, run_name="seed_attention", steps=400, log_every=100, batch_size=64,
          learning_rate=3e-3, probe_examples=2, seed=0):
    """Trains the running-max model with a custom loop, logging loss and attention.

    Attention of the probe batch is logged eagerly at step 0 (untrained) and at the last step,
    and from inside the compiled training step every `log_every` steps in between.

    Returns:
      A dict with `logged`: `{step: (mode, weights [probe, heads, T, T] float32)}` (mode
      `"eager"` or `"tf.function"`), `probe` (the digits), `accuracy` on fresh sequences and
      `train_seconds`.
    """
    import tb_attention_plugin

    rng = np.random.default_rng(seed)
    tf.random.set_seed(seed)
    model = RunningMaxModel(seed=seed)
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    probe, _ = make_batch(np.random.default_rng(seed + 1000), probe_examples)
    probe_tokens = [[str(d) for d in row] for row in probe]
    visible = tf.logical_not(causal_mask(SEQUENCE_LENGTH))  # the summary op's mask: True = shown
    writer = tf.summary.create_file_writer(str(pathlib.Path(logdir) / run_name))

    def log_probe_attention(step):
        _, weights = model(probe)
        tb_attention_plugin.attention(
            TAG,
            weights,
            step=step,
            query_tokens=probe_tokens,
            key_tokens=probe_tokens,
            mask=visible,
            description="Causal self-attention of the running-max task (article code, fixed).",
        )
        return weights

    @tf.function
    def train_step(digits, targets, step):
        with tf.GradientTape() as tape:
            logits, _ = model(digits)
            loss = tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            )
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        tf.summary.scalar("loss", loss, step=step)
        # The last step is logged eagerly after the loop; a step must not be written twice.
        in_graph_logging = tf.logical_and(tf.equal(step % log_every, 0), step < steps)
        with tf.summary.record_if(in_graph_logging):
            weights = log_probe_attention(step)
        return loss, weights

    logged = {}
    started = time.monotonic()
    with writer.as_default():
        logged[0] = ("eager", log_probe_attention(tf.constant(0, tf.int64)).numpy())
        for step in range(1, steps + 1):
            digits, targets = make_batch(rng, batch_size)
            _, weights = train_step(digits, targets, tf.constant(step, tf.int64))
            if step % log_every == 0 and step < steps:
                logged[step] = ("tf.function", weights.numpy())
        logged[steps] = ("eager", log_probe_attention(tf.constant(steps, tf.int64)).numpy())
    writer.flush()
    seconds = time.monotonic() - started

    digits, targets = make_batch(np.random.default_rng(seed + 2000), 1000)
    logits, _ = model(digits)
    accuracy = float(np.mean(np.argmax(logits.numpy(), axis=-1) == targets))
    return {"logged": logged, "probe": probe, "accuracy": accuracy, "train_seconds": seconds}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="logs", help="TensorBoard log root")
    parser.add_argument("--run-name", default="seed_attention", help="run directory under --logdir")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--small", action="store_true", help="reduced size (CI)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = parse_args(argv)
    steps = args.steps or (200 if args.small else 600)
    result = train(args.logdir, args.run_name, steps=steps, log_every=max(steps // 4, 1),
                   learning_rate=args.learning_rate, seed=args.seed)
    print("trained %s in %.1f s, running-max accuracy %.3f"
          % (args.run_name, result["train_seconds"], result["accuracy"]))
    return result


if __name__ == "__main__":
    main()
