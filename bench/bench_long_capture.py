"""Capture time of a GPT-2-small-shaped model at 1024 tokens against one plain forward pass.

A keras-hub `GPT2Backbone` with GPT-2 small's dims (12 layers x 12 heads, hidden 768,
intermediate 3072) and random weights, a small vocabulary, 1024 tokens, 1 probe example. Under
the default 4 MiB budget every layer is POOLED, so each capture computes its layers in blocks.

Measures (median of `--repeats` after one warm-up, which includes the shape pass and tracing):

- plain: one forward pass of the probe, traced (`tf.function`), as the capture is;
- capture: `ProbeCapture` as the callback runs it (the traced pass with blocked attention and
  the numpy reductions);
- capture + write: the callback's whole capture (`_capture_and_write`, then waiting for its
  background writer: capture, the budget's plan, encoding every layer's overview and windows,
  writing the event file).

Prints the seconds and the ratios to the plain pass (target: capture <= 3x), and the time of
encoding alone.

    python bench/bench_long_capture.py [--tokens 1024] [--layers 12] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TARGET = 3.0


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    """Runs the benchmark with command-line `argv`; prints and returns the seconds of each
    pass (`plain`, `capture`, `whole`, `encode`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from tb_attention_plugin import AttentionLogger

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256, num_layers=args.layers, num_heads=args.heads,
        hidden_dim=args.hidden, intermediate_dim=4 * args.hidden, dropout=0.0,
        max_sequence_length=args.tokens)
    probe = {"token_ids": np.random.default_rng(0).integers(1, 256, (1, args.tokens))
             .astype("int32"), "padding_mask": np.ones((1, args.tokens), "int32")}
    backbone(probe)
    backbone.compile("adam", "mse")  # the callback reads the optimizer's step

    plain_function = tf.function(lambda x: backbone(x, training=False), autograph=False)
    plain_function(probe)
    plain = median_seconds(lambda: plain_function(probe), args.repeats)

    with tempfile.TemporaryDirectory() as logdir:
        logger = AttentionLogger(logdir, probe, update_freq="epoch")
        logger.set_model(backbone)
        records = logger._probe_capture(backbone)  # warm-up: shape pass, plan, tracing
        plan = logger._capture_plan
        modes = sorted({p.mode for p in plan.layers.values()})
        capture = median_seconds(lambda: logger._probe_capture(backbone), args.repeats)
        records = logger._probe_capture(backbone)
        start = time.perf_counter()
        logger._summary_items(records)
        encode = time.perf_counter() - start
        steps = iter(range(1, 10**6))
        logger._capture_and_write(0)

        def capture_and_write():
            logger._capture_and_write(next(steps))
            logger.on_train_end()  # waits for the background writer: encoded and written

        whole = median_seconds(capture_and_write, args.repeats)
        traced = logger._probe_capture.compiled is not None
    print("GPT2Backbone %d layers x %d heads, hidden %d, %d tokens, 1 example; layers: %s; "
          "traced capture: %s" % (args.layers, args.heads, args.hidden, args.tokens,
                                  "/".join(modes), traced))
    example = next(iter(plan.layers.values()))
    if example.mode == "pooled":
        print("pooled in %dx%d blocks, windows: %s" % (
            example.block[0], example.block[1],
            ", ".join("%s %s x %s" % w for w in example.windows)))
    print("%-34s %10s %8s" % ("pass", "seconds", "ratio"))
    for name, seconds in [("plain forward (traced)", plain), ("capture", capture),
                          ("capture + encode + write", whole), ("encode alone", encode)]:
        print("%-34s %10.3f %8.2f" % (name, seconds, seconds / plain))
    print("capture / plain forward: %.2f (target <= %.1f): %s"
          % (capture / plain, TARGET, "met" if capture / plain <= TARGET else "NOT met"))
    print("capture + encode + write / plain forward: %.2f" % (whole / plain))
    return {"plain": plain, "capture": capture, "whole": whole, "encode": encode,
            "modes": modes, "tokens": args.tokens, "layers": args.layers, "heads": args.heads}


if __name__ == "__main__":
    main()
