"""Capture time of a GPT-2-small-shaped model at 1024 tokens against one plain forward pass.

A keras-hub `GPT2Backbone` with GPT-2 small's dims (12 layers x 12 heads, hidden 768,
intermediate 3072) and random weights, a small vocabulary, 1024 tokens, 1 probe example. Under
the default 4 MiB budget every layer is POOLED, so each capture computes its layers in blocks.

Measures (median of `--repeats` after one warm-up, which includes the shape pass and tracing):

- plain: one forward pass of the probe, traced (`tf.function`), as the capture is;
- capture: `ProbeCapture` as the callback runs it without head health (`health_probe=False`:
  the traced pass with blocked attention and the numpy reductions);
- capture + head health: the same with the default `health_probe` (the probe itself): one
  traced pass whose pooled layers hand their query chunks to the health measures as they go
  (`HealthPass.stream_display`), then the measures' results;
- encode alone: the summary items of one capture (every pooled layer's overview and windows
  encoded: `encoding.encode_pooled_step`; full layers are encoded when written);
- capture + encode + write: the callback's whole capture (`_capture_and_write`, then waiting for
  its background writer: capture, health pass, the budget's plan, encoding every layer, writing
  the event file).

Prints the seconds and the ratios to the plain pass (targets: capture <= 3x; capture + encode +
write <= 2x). With `--baseline
REV` the encoder of commit REV (`encode_pooled_step` and `encode_attention` of its
`tb_attention_plugin/encoding.py`) is timed too, side by side with the current one in the same
run (interleaved), and the pooled layers' bytes both write are compared.

    python bench/bench_long_capture.py [--tokens 1024] [--layers 12] [--repeats 3]
                                       [--baseline e4eb333]
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
TARGET = 3.0
WHOLE_TARGET = 2.0


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_encoder(revision, directory):
    """`(encode_pooled_step, encode_attention)` of `tb_attention_plugin/encoding.py` at git
    `revision`."""
    source = subprocess.run(["git", "-C", REPO, "show", "%s:tb_attention_plugin/encoding.py"
                             % revision], capture_output=True, text=True, check=True).stdout
    path = os.path.join(directory, "baseline_encoding.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("baseline_encoding", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.encode_pooled_step, module.encode_attention


def side_by_side(logger, records, encoders, repeats):
    """`{name: (encode seconds, capture + encode + write seconds)}` of each encoder in
    `encoders` (`{name: (encode_pooled_step, encode_attention)}`), runs interleaved; the blobs
    of pooled layers are equal."""
    from tb_attention_plugin import encoding

    current = encoding.encode_pooled_step, encoding.encode_attention
    steps = iter(range(1, 10**6))
    times = {name: ([], []) for name in encoders}
    blobs = {}
    try:
        for _ in range(repeats):
            for name, encoder in encoders.items():
                encoding.encode_pooled_step, encoding.encode_attention = encoder
                start = time.perf_counter()
                items = logger._summary_items(records)
                times[name][0].append(time.perf_counter() - start)
                blobs[name] = [item.blobs for item in items]
                start = time.perf_counter()
                logger._capture_and_write(next(steps))
                logger.on_train_end()  # waits for the background writer: encoded and written
                times[name][1].append(time.perf_counter() - start)
    finally:
        encoding.encode_pooled_step, encoding.encode_attention = current
    if any(b != blobs["current"] for b in blobs.values()):
        raise AssertionError("the encoders wrote different bytes")
    return {name: tuple(statistics.median(t) for t in pair) for name, pair in times.items()}


def build(args):
    """The backbone and its probe."""
    import keras
    import keras_hub
    import numpy as np

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256, num_layers=args.layers, num_heads=args.heads,
        hidden_dim=args.hidden, intermediate_dim=4 * args.hidden, dropout=0.0,
        max_sequence_length=args.tokens)
    probe = {"token_ids": np.random.default_rng(0).integers(1, 256, (1, args.tokens))
             .astype("int32"), "padding_mask": np.ones((1, args.tokens), "int32")}
    backbone(probe)
    backbone.compile("adam", "mse")  # the callback reads the optimizer's step
    return backbone, probe


def main(argv=None):
    """Runs the benchmark with command-line `argv`; prints and returns the seconds of each
    pass (`plain`, `capture`, `health`, `whole`, `encode`, and with a baseline
    `baseline_whole`, `baseline_encode`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="a git revision whose encoder to time alongside")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tb_attention_plugin import AttentionLogger, encoding

    backbone, probe = build(args)
    plain_function = tf.function(lambda x: backbone(x, training=False), autograph=False)
    plain_function(probe)
    plain = median_seconds(lambda: plain_function(probe), args.repeats)

    with tempfile.TemporaryDirectory() as logdir:
        encoders = {"current": (encoding.encode_pooled_step, encoding.encode_attention)}
        if args.baseline:
            encoders = {"baseline": baseline_encoder(args.baseline, logdir), **encoders}
        bare = AttentionLogger(os.path.join(logdir, "bare"), probe, update_freq="epoch",
                               health_probe=False)
        logger = AttentionLogger(os.path.join(logdir, "run"), probe, update_freq="epoch")
        for each in (bare, logger):
            each.set_model(backbone)
            each._probe_capture(backbone)  # warm-up: shape pass, plan, tracing
        plan = logger._capture_plan
        modes = sorted({p.mode for p in plan.layers.values()})
        capture = median_seconds(lambda: bare._probe_capture(backbone), args.repeats)
        records = logger._probe_capture(backbone)
        logger._capture_and_write(0)  # warm-up of the health pass and the writer
        health = median_seconds(lambda: capture_with_health(logger, backbone), args.repeats)
        timed = side_by_side(logger, records, encoders, args.repeats)
        traced = logger._probe_capture.compiled is not None
        unmeasured = set(plan.layers) - set(logger._last_health_step)
        if unmeasured:  # the one-pass health must have measured every layer
            raise AssertionError("no head health for %s" % sorted(unmeasured))
    report(args, plan, modes, traced, plain, capture, health, timed)
    result = {"plain": plain, "capture": capture, "health": health,
              "encode": timed["current"][0], "whole": timed["current"][1],
              "modes": modes, "tokens": args.tokens, "layers": args.layers, "heads": args.heads}
    if args.baseline:
        result.update(baseline_encode=timed["baseline"][0], baseline_whole=timed["baseline"][1])
    return result


def capture_with_health(logger, model):
    """One capture of `logger` with its head-health measures, as `_capture_and_write` runs
    them (without the plan, the encoding and the writing)."""
    logger._health.start_capture()
    logger._measure_health(logger._probe_capture(model), 0)


def report(args, plan, modes, traced, plain, capture, health, timed):
    print("GPT2Backbone %d layers x %d heads, hidden %d, %d tokens, 1 example; layers: %s; "
          "traced capture: %s" % (args.layers, args.heads, args.hidden, args.tokens,
                                  "/".join(modes), traced))
    example = next(iter(plan.layers.values()))
    if example.mode == "pooled":
        print("pooled in %dx%d blocks, windows: %s" % (
            example.block[0], example.block[1],
            ", ".join("%s %s x %s" % w for w in example.windows)))
    rows = [("plain forward (traced)", plain), ("capture, no head health", capture),
            ("capture + head health (one pass)", health)]
    for name, (encode, whole) in timed.items():
        label = "" if name == "current" else " (%s %s)" % (name, args.baseline)
        rows += [("encode alone" + label, encode), ("capture + encode + write" + label, whole)]
    print("%-44s %10s %8s" % ("pass", "seconds", "ratio"))
    for name, seconds in rows:
        print("%-44s %10.3f %8.2f" % (name, seconds, seconds / plain))
    print("capture / plain forward: %.2f (target <= %.1f): %s"
          % (capture / plain, TARGET, "met" if capture / plain <= TARGET else "NOT met"))
    for name, (encode, whole) in timed.items():
        print("capture + encode + write / plain forward%s: %.2f (target <= %.1f): %s"
              % ("" if name == "current" else " (%s)" % name, whole / plain, WHOLE_TARGET,
                 "met" if whole / plain <= WHOLE_TARGET else "NOT met"))


if __name__ == "__main__":
    main()
