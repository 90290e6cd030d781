"""Stored bytes per attention value: tb-attention vs float32 `tf.summary.write` of the same tensor.

Both are written side by side in one run into separate event files; the ratio of the event
files' sizes is printed with the format's measured maximum absolute error.

    python bench/bench_size.py
"""

import glob
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests' reader goes through TensorBoard's real data provider, as the plugin does.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def attention_like(shape, causal=False, sharpness=2.0, seed=0):
    """Softmax of random logits with a diagonal bias: what trained heads roughly look like."""
    rng = np.random.default_rng(seed)
    *lead, tq, tk = shape
    logits = rng.normal(size=shape).astype(np.float32) * sharpness
    logits += 3.0 * np.exp(-np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :]) / 4.0)
    if causal:
        logits = np.where(np.tril(np.ones((tq, tk), bool)), logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _size(directory):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, "events*")))


CASES = [
    ("BERT-base layer, 2 examples x 12 heads x 128 tokens", (2, 12, 128, 128), False),
    ("GPT causal layer, 1 x 12 heads x 512 tokens", (1, 12, 512, 512), True),
    ("one 512x512 head, bidirectional", (1, 1, 512, 512), False),
]


def measure(steps=3):
    """Rows `(case, values, size ratio, max abs error, our bytes per step, float32 bytes per
    step)` and the format's error bound."""
    import tensorflow as tf

    import tb_attention_plugin as tba
    from tb_attention_plugin import encoding
    from readback import read_back

    rows = []
    for name, shape, causal in CASES:
        weights = attention_like(shape, causal)
        mask = np.broadcast_to(np.tril(np.ones(shape[-2:], bool)), shape) if causal else None
        with tempfile.TemporaryDirectory() as ours, tempfile.TemporaryDirectory() as plain:
            ours_writer = tf.summary.create_file_writer(ours)
            plain_writer = tf.summary.create_file_writer(plain)
            for step in range(steps):
                with ours_writer.as_default(step=step):
                    tba.attention("layer", weights, mask=mask)
                with plain_writer.as_default(step=step):
                    tf.summary.write("layer", tf.constant(weights))
            ours_writer.close()
            plain_writer.close()
            ours_bytes, plain_bytes = _size(ours), _size(plain)
            (_, _, stored), *_ = read_back(ours)["."]["layer"]
            error = np.nanmax(np.abs(stored - weights))
        rows.append((name, weights.size, ours_bytes / plain_bytes, float(error),
                     ours_bytes / steps, plain_bytes / steps))
    return rows, encoding.MAX_ERROR


def main():
    rows, bound = measure()
    print("stored size vs float32 tf.summary.write (same tensor, 3 steps each)")
    print("%-55s %12s %8s %10s" % ("case", "values", "ratio", "max err"))
    for name, values, ratio, error, *_ in rows:
        print("%-55s %12d %8.3f %10.5f" % (name, values, ratio, error))
    print("target ratio <= 0.25; error bound %.5f" % bound)
    return rows


if __name__ == "__main__":
    main()
