"""The health pass of a POOLED layer (measured from its query chunks) vs a plain forward pass.

One causal `MultiHeadAttention` layer (default 8 heads, 2048 tokens) and a health probe of 8
sequences (one block of the health pass). Each measurement runs in its own subprocess and reads
the resident-set high-water mark (`VmHWM`, reset through `/proc/self/clear_refs` after the
model and TensorFlow are loaded and the pass ran once, so tracing is not counted):

- health: `HealthPass` with the layer pooled, as the `AttentionLogger` runs it at each capture
  (traced graph; the blocked pass hands each query chunk to `ChunkedHeadHealth` through
  `tf.numpy_function`), similarity included;
- health-full: the same `HealthPass` with the layer FULL (its `[8, H, T, T]` scores captured
  and measured by `HeadHealth`: what an unpooled layer costs);
- plain: `model.predict` of the same 8 sequences, which materialises the `[8, H, T, T]` scores
  (TensorFlow's CPU attention has no fused kernel).

Prints wall and CPU seconds and the peak extra memory of each, their ratios, and the size of
the full float32 scores the health pass never makes.

    python bench/bench_pooled_health_pass.py [--tokens 2048] [--heads 8] [--examples 8]
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench_capture_memory import _status  # noqa: E402  (this folder is sys.path[0])


def _reset_high_water():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(mode, tokens, heads, examples):
    sys.path.insert(0, REPO)
    import keras
    import numpy as np

    from tb_attention_plugin.logger import health_pass
    from tb_attention_plugin.logger.problems import Problems

    keras.utils.set_random_seed(0)
    inputs = keras.Input((tokens, 64))
    outputs = keras.layers.MultiHeadAttention(heads, 16, name="mha")(
        inputs, inputs, use_causal_mask=True)
    model = keras.Model(inputs, outputs)
    probe = np.random.default_rng(0).normal(size=(examples, tokens, 64)).astype("float32")
    if mode in ("health", "health-full"):
        measure = health_pass.HealthPass(probe, None, patterns=None, run_eagerly=False,
                                         problems=Problems(), batch_size=examples)
        pooled = {("mha", 0): "mha"} if mode == "health" else {}

        def run():
            results = measure(model, pooled=pooled)
            assert "mha" in results, "no record"
    else:
        def run():
            model.predict(probe, batch_size=examples, verbose=0)
    run()  # traces (health pass: shape pass + graph); not counted
    before = _status("VmRSS")
    _reset_high_water()
    started, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    extra = _status("VmHWM") - before
    print(json.dumps({"wall": wall, "cpu": cpu, "extra_mb": extra / 2**20}))


def run_child(mode, args):
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--tokens", str(args.tokens), "--heads",
         str(args.heads), "--examples", str(args.examples)],
        capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--child", choices=("health", "health-full", "plain"))
    parser.add_argument("--skip-full", action="store_true",
                        help="do not run health-full (it needs the full scores in memory)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tokens, args.heads, args.examples)
        return
    health = run_child("health", args)
    full = None if args.skip_full else run_child("health-full", args)
    plain = run_child("plain", args)
    scores_mb = args.examples * args.heads * args.tokens**2 * 4 / 2**20
    print("one causal layer, %d heads x %d tokens, %d probe sequences (full float32 scores: "
          "%.0f MB)" % (args.heads, args.tokens, args.examples, scores_mb))
    for name, r in (("health pass, pooled", health), ("health pass, full", full),
                    ("plain forward", plain)):
        if r is not None:
            print("%-20s wall %6.2f s  CPU %6.2f s  peak extra %6.0f MB"
                  % (name, r["wall"], r["cpu"], r["extra_mb"]))
    if full is not None:
        print("ratios pooled/full health pass: wall %.2fx, CPU %.2fx, peak extra memory %.2fx"
              % (health["wall"] / full["wall"], health["cpu"] / full["cpu"],
                 health["extra_mb"] / max(full["extra_mb"], 1e-9)))
    print("ratios health/plain: wall %.2fx, CPU %.2fx, peak extra memory %.2fx"
          % (health["wall"] / plain["wall"], health["cpu"] / plain["cpu"],
             health["extra_mb"] / max(plain["extra_mb"], 1e-9)))


if __name__ == "__main__":
    main()
