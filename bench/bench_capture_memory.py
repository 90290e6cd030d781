"""Peak extra memory of one capture of one 32-head layer at 8192 tokens (issue 11 point 3).

tracemalloc cannot see TensorFlow's allocations, so each measurement runs in its own
subprocess and reads the kernel's resident-set high-water mark (`VmHWM` of
/proc/self/status) after resetting it (`/proc/self/clear_refs`) once the model, the probe and
TensorFlow are loaded: extra = high-water mark during the pass - resident size before it.

Side by side, in separate processes, for a one-layer model (`--layer mha`:
`MultiHeadAttention`, 32 heads; `--layer gqa`: `GroupedQueryAttention`, 32 query heads over 8
key/value heads; `--layer attention`: `Attention`, one head; causal, 1 example):

- capture: `capture.capture_attention` with the plan the default 4 MiB budget chooses (the
  layer POOLED: computed in query chunks, reduced, dropped), eager; and the same capture
  traced into a graph (`CompiledCapture`, the callback's default on TensorFlow);
- plain: one plain `model(probe)` forward pass, which materialises the `[1, 32, T, T]` scores
  (TensorFlow's CPU attention has no fused kernel). At 8192 tokens that is 8.6 GB per copy, so
  the plain pass runs at `--plain-tokens` (default 2048) unless the machine has room for it
  (`--plain-tokens 8192`), next to a capture at the same length for the ratio.

Prints MB and ratios; the target is capture extra <= 512 MB at 8192 tokens.

    python bench/bench_capture_memory.py [--layer mha|gqa|attention] [--tokens 8192] [--heads 32]
                                         [--plain-tokens 2048]
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_MB = 512


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def attention_output(kind, inputs, heads, key_dim):
    """The causal self-attention layer measured (named "mha" whatever its kind) applied to
    `inputs`, and its number of heads."""
    import keras

    if kind == "mha":
        layer = keras.layers.MultiHeadAttention(heads, key_dim, name="mha")
        return layer(inputs, inputs, use_causal_mask=True), heads
    if kind == "gqa":
        layer = keras.layers.GroupQueryAttention(key_dim, heads, max(1, heads // 4), name="mha")
        return layer(inputs, inputs, use_causal_mask=True), heads
    layer = keras.layers.Attention(use_scale=True, name="mha")
    return layer([inputs, inputs], use_causal_mask=True), 1


def child(kind, mode, tokens, heads, key_dim):
    sys.path.insert(0, REPO)
    import keras
    import numpy as np

    from tb_attention_plugin.logger import budget, capture, summaries

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 64))  # any length: the warm-up runs 8 tokens
    outputs, heads = attention_output(kind, inputs, heads, key_dim)
    model = keras.Model(inputs, outputs)
    probe = np.random.default_rng(0).normal(size=(1, tokens, 64)).astype("float32")
    sites, _ = capture.find_attention_layers(model)
    plans = None
    if mode != "plain":
        shapes = capture.layer_shapes(model, probe[:, :8], sites)  # warm-up at 8 tokens
        calls = [summaries.LayerCall("mha", full_shape=(1, heads, tokens, tokens), causal=True)]
        plan = budget.Budget(budget.Limits(), probe_size=1).plan_for(calls)
        plans = {("mha", 0): plan.layers["mha"]}
        assert shapes and plan.layers["mha"].mode == "pooled", plan
    compiled = None
    if mode == "traced":
        compiled = capture.CompiledCapture(model, probe, sites, plans)
    else:
        model(probe[:, :8])  # load the kernels before measuring
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status("VmRSS")
    start = time.perf_counter()
    if mode == "plain":
        keras.ops.convert_to_numpy(model(probe))
    elif mode == "eager":
        records = capture.capture_attention(model, probe, sites, plans).records
        assert records and records[0].pooled is not None
    else:
        records = compiled().records
        assert records and records[0].pooled is not None
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "seconds": seconds}))


def measure(kind, mode, tokens, heads, key_dim):
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, "--layer", kind,
         "--tokens", str(tokens), "--heads", str(heads), "--key-dim", str(key_dim)],
        capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError("%s at %d tokens failed:\n%s" % (mode, tokens, result.stderr[-3000:]))
    values = json.loads(result.stdout.strip().splitlines()[-1])
    values["extra_mb"] = (values["peak"] - values["before"]) / 2**20
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=["mha", "gqa", "attention"], default="mha",
                        help="MultiHeadAttention, GroupedQueryAttention (heads / 4 key/value "
                        "heads) or Attention (one head)")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--key-dim", type=int, default=16)
    parser.add_argument("--plain-tokens", type=int, default=2048)
    parser.add_argument("--modes", default="eager,traced",
                        help="capture passes to measure at --tokens (eager, traced)")
    parser.add_argument("--child", choices=["plain", "eager", "traced"])
    args = parser.parse_args()
    if args.child:
        child(args.layer, args.child, args.tokens, args.heads, args.key_dim)
        return
    heads = 1 if args.layer == "attention" else args.heads
    scores_mb = heads * args.tokens ** 2 * 4 / 2**20
    print("one %s layer, %d heads, causal, 1 example; float32 scores at %d tokens: %.0f MB"
          % (args.layer, heads, args.tokens, scores_mb))
    rows = []
    for mode in args.modes.split(","):
        values = measure(args.layer, mode, args.tokens, heads, args.key_dim)
        rows.append(("capture (%s) at %d" % (mode, args.tokens), values))
    plain = measure(args.layer, "plain", args.plain_tokens, heads, args.key_dim)
    same = measure(args.layer, "eager", args.plain_tokens, heads, args.key_dim) \
        if args.plain_tokens != args.tokens else rows[0][1]
    rows += [("plain forward at %d" % args.plain_tokens, plain),
             ("capture (eager) at %d" % args.plain_tokens, same)]
    print("%-28s %12s %10s" % ("pass", "extra MB", "seconds"))
    for name, values in rows:
        print("%-28s %12.1f %10.2f" % (name, values["extra_mb"], values["seconds"]))
    worst = max(values["extra_mb"] for name, values in rows[:len(args.modes.split(","))])
    print("capture extra at %d tokens: %.1f MB (target <= %d MB): %s"
          % (args.tokens, worst, TARGET_MB, "met" if worst <= TARGET_MB else "NOT met"))
    print("ratio capture / plain forward extra memory at %d tokens: %.3f"
          % (args.plain_tokens, same["extra_mb"] / max(plain["extra_mb"], 1e-9)))
    print("ratio capture extra at %d / its float32 scores: %.4f"
          % (args.tokens, worst / scores_mb))


if __name__ == "__main__":
    main()
