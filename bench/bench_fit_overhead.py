"""Wall-time overhead of `AttentionLogger` on `model.fit`, at the default cadence.

Trains the same small English->Chinese-sized encoder-decoder Transformer (like the demo's:
width 64, 4 heads, 2 encoder + 2 decoder blocks, 6 attention layers, batch 64, 12 epochs of 63
steps) with and without the callback, side by side: two models built from the same seed and
warmed up (their train functions traced) first, then the training run epoch by epoch, the two
variants alternating which goes first. The logged variant keeps one callback for the whole run,
so it captures what one long `fit` would (step 0, every 100 steps, every epoch end) and its
one-time cost (tracing the probe pass) is counted once per run.

Prints each epoch's pair, the ratio of the summed wall times (target: <= 1.02) and of the
median epoch, the ratio of process CPU times, the CPU time of the logger's own threads (its
captures on the training thread, its writes on its writer thread: what the process ratio
would add if nothing else moved), and the time spent inside the callback; on a
machine shared with other work the wall times of single epochs are noisy, the time inside the
callback is not. `main(argv)` also returns these figures (for `bench/run.py`).

Usage:

```
python bench/bench_fit_overhead.py                       # about 1 minute on 2 idle CPU cores
python bench/bench_fit_overhead.py --repeats 3 --epochs 5    # shorter runs, more of them
```
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from tb_attention_plugin import AttentionLogger  # noqa: E402

SOURCE_VOCABULARY = 800
TARGET_VOCABULARY = 1200
SOURCE_LENGTH = 14
TARGET_LENGTH = 16


class TimedAttentionLogger(AttentionLogger):
    """AttentionLogger that records the time spent in its own hooks (a low-noise estimate)
    and the CPU time of its own work: its captures on the training thread, its writes on the
    background writer's thread."""

    capture_seconds = []  # per capture that wrote something, in order, over all instances
    first_capture_seconds = []  # the first capture of each instance (includes tracing)
    check_seconds = 0.0  # cadence checks of batches without a capture
    capture_cpu_seconds = 0.0  # thread CPU of every capture (TensorFlow's own pools not counted)
    writer_cpu_seconds = 0.0  # thread CPU of every write on the background writer's thread

    def _write_in_background(self, items, step, health):
        writer = self._writer
        if not getattr(writer, "_timed", False):
            write = writer.write

            def timed_write(*args, **kwargs):
                started = time.thread_time()
                try:
                    return write(*args, **kwargs)
                finally:
                    TimedAttentionLogger.writer_cpu_seconds += time.thread_time() - started

            writer.write, writer._timed = timed_write, True
        super()._write_in_background(items, step, health)

    def _capture_and_write(self, step):
        started, cpu_started = time.perf_counter(), time.thread_time()
        logged = self._last_logged_step
        try:
            super()._capture_and_write(step)
        finally:
            TimedAttentionLogger.capture_cpu_seconds += time.thread_time() - cpu_started
        if self._last_logged_step != logged:
            elapsed = time.perf_counter() - started
            if logged is None:
                TimedAttentionLogger.first_capture_seconds.append(elapsed)
            else:
                TimedAttentionLogger.capture_seconds.append(elapsed)
            self._in_capture = elapsed
        return None

    def on_train_batch_end(self, batch, logs=None):
        self._in_capture = 0.0
        started = time.perf_counter()
        super().on_train_batch_end(batch, logs)
        TimedAttentionLogger.check_seconds += time.perf_counter() - started - self._in_capture


def block(x, heads, width, hidden, name, context=None, self_mask=None, cross_mask=None,
          causal=False):
    attention = keras.layers.MultiHeadAttention(heads, width // heads, name=name + "_self")
    x = keras.layers.LayerNormalization()(
        x + attention(x, x, attention_mask=self_mask, use_causal_mask=causal))
    if context is not None:
        cross = keras.layers.MultiHeadAttention(heads, width // heads, name=name + "_cross")
        x = keras.layers.LayerNormalization()(x + cross(x, context, attention_mask=cross_mask))
    feed_forward = keras.layers.Dense(width)(keras.layers.Dense(hidden, activation="relu")(x))
    return keras.layers.LayerNormalization()(x + feed_forward)


def build_translator(width=64, heads=4, layers=2, hidden=128):
    source = keras.Input((SOURCE_LENGTH,), dtype="int32", name="source")
    target = keras.Input((TARGET_LENGTH,), dtype="int32", name="target")
    source_valid = ops.not_equal(source, 0)
    target_valid = ops.not_equal(target, 0)
    encoder_mask = ops.logical_and(source_valid[:, :, None], source_valid[:, None, :])
    decoder_mask = ops.logical_and(target_valid[:, :, None], target_valid[:, None, :])
    cross_mask = ops.logical_and(target_valid[:, :, None], source_valid[:, None, :])
    x = keras.layers.Embedding(SOURCE_VOCABULARY, width)(source)
    for i in range(layers):
        x = block(x, heads, width, hidden, "encoder_%d" % i, self_mask=encoder_mask)
    y = keras.layers.Embedding(TARGET_VOCABULARY, width)(target)
    for i in range(layers):
        y = block(y, heads, width, hidden, "decoder_%d" % i, context=x,
                  self_mask=decoder_mask, cross_mask=cross_mask, causal=True)
    model = keras.Model([source, target], keras.layers.Dense(TARGET_VOCABULARY)(y))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
    )
    return model


def padded(rng, count, length, vocabulary):
    ids = rng.integers(3, vocabulary, size=(count, length))
    lengths = rng.integers(length // 2, length + 1, size=count)
    ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return ids


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4000, help="training pairs (batch 64)")
    parser.add_argument("--epochs", type=int, default=12,
                        help="epochs of one training run (the demo trains 12)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="training runs per variant (each logged run has a new callback)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    source = padded(rng, args.samples, SOURCE_LENGTH, SOURCE_VOCABULARY)
    target = padded(rng, args.samples, TARGET_LENGTH, TARGET_VOCABULARY)
    labels = np.roll(target, -1, axis=1)
    x, fit_kwargs = [source, target], dict(batch_size=64, verbose=0)
    probe = [source[:4], target[:4]]

    models = {}
    for variant in ("plain", "logged"):
        keras.utils.set_random_seed(0)
        models[variant] = build_translator()
        models[variant].fit(x, labels, epochs=1, steps_per_epoch=2, **fit_kwargs)  # trace

    logdir = tempfile.mkdtemp(prefix="bench_fit_overhead_")
    totals = {"plain": 0.0, "logged": 0.0}
    cpu_totals = {"plain": 0.0, "logged": 0.0}
    round_ratios = []
    steps_per_epoch = -(-args.samples // 64)
    print("model: 6 attention layers (width 64, 4 heads), %d steps per epoch; %d run(s) of %d "
          "epochs per variant, interleaved epoch by epoch"
          % (steps_per_epoch, args.repeats, args.epochs))
    print("AttentionLogger defaults: update_freq=100 (and each epoch end), max_examples=2")
    for repeat in range(args.repeats):
        # One training run, cut into one-epoch fit calls so that the two variants alternate
        # often (load from other processes hits both alike). The logger keeps its state
        # across the calls, so it captures exactly what one long fit would.
        logger = TimedAttentionLogger(os.path.join(logdir, "run_%d" % repeat), probe)
        for epoch in range(args.epochs):
            order = ("plain", "logged") if epoch % 2 == 0 else ("logged", "plain")
            times = {}
            for variant in order:
                callbacks = [logger] if variant == "logged" else []
                started, cpu_started = time.perf_counter(), time.process_time()
                models[variant].fit(x, labels, epochs=1, callbacks=callbacks, **fit_kwargs)
                times[variant] = time.perf_counter() - started
                totals[variant] += times[variant]
                cpu_totals[variant] += time.process_time() - cpu_started
            round_ratios.append(times["logged"] / times["plain"])
            print("run %d epoch %2d: plain %.2f s, with AttentionLogger %.2f s, ratio %.4f"
                  % (repeat, epoch, times["plain"], times["logged"], round_ratios[-1]))
    ratios = sorted(r for r in round_ratios)
    print("fit wall-time ratio (with / without AttentionLogger): %.4f summed, %.4f median epoch"
          % (totals["logged"] / totals["plain"], ratios[len(ratios) // 2]))
    print("process CPU-time ratio (less sensitive to other load on the machine): %.4f"
          % (cpu_totals["logged"] / cpu_totals["plain"]))
    own_cpu = TimedAttentionLogger.capture_cpu_seconds + TimedAttentionLogger.writer_cpu_seconds
    print("CPU of the logger's own threads: captures %.2f s (training thread), writes %.2f s "
          "(writer thread); 1 + their share of the plain fit's process CPU (%.1f s): %.4f"
          % (TimedAttentionLogger.capture_cpu_seconds, TimedAttentionLogger.writer_cpu_seconds,
             cpu_totals["plain"], 1 + own_cpu / cpu_totals["plain"]))
    first = TimedAttentionLogger.first_capture_seconds
    later = sorted(TimedAttentionLogger.capture_seconds)
    inside = sum(first) + sum(later) + TimedAttentionLogger.check_seconds
    print("time inside the callback: first capture of each run %.0f ms (tracing the probe), "
          "%d later captures %.1f ms median, cadence checks %.0f ms in all; "
          "%.4f of plain fit time"
          % (1000 * np.median(first), len(later), 1000 * later[len(later) // 2] if later else 0,
             1000 * TimedAttentionLogger.check_seconds, inside / totals["plain"]))
    return {
        "plain seconds": totals["plain"],
        "logged seconds": totals["logged"],
        "wall ratio": totals["logged"] / totals["plain"],
        "median epoch ratio": ratios[len(ratios) // 2],
        "cpu ratio": cpu_totals["logged"] / cpu_totals["plain"],
        "own cpu seconds": own_cpu,
        "plain cpu seconds": cpu_totals["plain"],
        "callback seconds": inside,
        "callback share": inside / totals["plain"],
    }


if __name__ == "__main__":
    main()
