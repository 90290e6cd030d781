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

keras-hub layers (`--layer llama`: a one-layer Llama 3 backbone, grouped-query, rotary
positions; `--layer gemma`: Gemma 2, logit soft-cap, sliding window; 4 query heads over 2
key/value heads by default) make their own `[1, H, T, T]` probabilities in every forward pass
on TensorFlow, so their capture is measured against the plain forward pass at the same length
(`--plain-tokens`, default `--tokens`): eager capture against an eager forward, the traced
capture against a traced forward; the capture's own memory is the difference of the two peaks.

    python bench/bench_capture_memory.py [--layer mha|gqa|attention|llama|gemma] [--tokens 8192]
                                         [--heads 32] [--plain-tokens 2048]
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
KERAS_HUB = ("llama", "gemma")  # one-layer keras-hub backbones, read by the owner adapters


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


def keras_hub_backbone(kind, heads):
    """A one-layer keras-hub backbone, causal: `llama` (Llama 3: `heads` query heads over
    `heads / 2` key/value heads, rotary positions) or `gemma` (Gemma 2: the same heads, logit
    soft-cap 50, a sliding window of 4096 tokens). Hidden size 64, head size 16."""
    import keras_hub

    models = keras_hub.models
    common = dict(vocabulary_size=256, num_layers=1, num_query_heads=heads,
                  num_key_value_heads=max(1, heads // 2), hidden_dim=64, intermediate_dim=128)
    if kind == "llama":
        return models.Llama3Backbone(**common)
    return models.GemmaBackbone(
        head_dim=16, query_head_dim_normalize=False, use_post_ffw_norm=True,
        use_post_attention_norm=True, attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
        use_sliding_window_attention=True, sliding_window_size=4096, **common)


def model_and_probe(kind, tokens, heads, key_dim):
    """`(model, probe, heads)` of the measured layer kind, at `tokens` tokens, 1 example."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if kind in KERAS_HUB:
        model = keras_hub_backbone(kind, heads)
        probe = {"token_ids": np.random.default_rng(0).integers(1, 256, (1, tokens)).astype(
            "int32"), "padding_mask": np.ones((1, tokens), "int32")}
        return model, probe, heads
    inputs = keras.Input((None, 64))  # any length: the warm-up runs 8 tokens
    outputs, heads = attention_output(kind, inputs, heads, key_dim)
    probe = np.random.default_rng(0).normal(size=(1, tokens, 64)).astype("float32")
    return keras.Model(inputs, outputs), probe, heads


def _first_tokens(probe, count):
    if isinstance(probe, dict):
        return {name: value[:, :count] for name, value in probe.items()}
    return probe[:, :count]


def pooled_plans(model, probe, sites, tokens, heads):
    """The default 4 MiB budget's plan for the one attention call at `tokens` tokens (the shape
    pass runs at 8 tokens, a warm-up), asserted POOLED."""
    from tb_attention_plugin.logger import budget, capture, summaries

    (shape,) = capture.layer_shapes(model, _first_tokens(probe, 8), sites)
    calls = [summaries.LayerCall(shape.tag, full_shape=(1, heads, tokens, tokens), causal=True)]
    plan = budget.Budget(budget.Limits(), probe_size=1).plan_for(calls).layers[shape.tag]
    assert plan.mode == "pooled", plan
    return {(shape.path, shape.index): plan}


def child(kind, mode, tokens, heads, key_dim):
    sys.path.insert(0, REPO)
    import keras
    import tensorflow as tf

    from tb_attention_plugin.logger import capture

    model, probe, heads = model_and_probe(kind, tokens, heads, key_dim)
    sites, _ = capture.find_attention_layers(model)
    plans = None if mode.startswith("plain") else pooled_plans(model, probe, sites, tokens, heads)
    run = None
    if mode == "traced":
        run = capture.CompiledCapture(model, probe, sites, plans)
    elif mode == "plain_traced":
        traced = tf.function(lambda x: model(x, training=False), autograph=False)
        tensors = tf.nest.map_structure(tf.convert_to_tensor, probe)
        traced.get_concrete_function(tensors)
        run = lambda: traced(tensors)  # noqa: E731
    model(_first_tokens(probe, 8))  # load the kernels before measuring
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status("VmRSS")
    start = time.perf_counter()
    if mode == "plain":
        keras.ops.convert_to_numpy(model(probe, training=False))
    elif mode == "eager":
        records = capture.capture_attention(model, probe, sites, plans).records
        assert records and records[0].pooled is not None
    elif mode == "traced":
        records = run().records
        assert records and records[0].pooled is not None
    else:
        keras.ops.convert_to_numpy(run())
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


def _print_rows(rows):
    print("%-34s %12s %10s" % ("pass", "extra MB", "seconds"))
    for name, values in rows:
        print("%-34s %12.1f %10.2f" % (name, values["extra_mb"], values["seconds"]))


def stock_report(args, heads, scores_mb):
    """A Keras layer's capture never materialises the scores: its whole extra counts."""
    modes = args.modes.split(",")
    rows = [("capture (%s) at %d" % (mode, args.tokens),
             measure(args.layer, mode, args.tokens, heads, args.key_dim)) for mode in modes]
    plain = measure(args.layer, "plain", args.plain_tokens, heads, args.key_dim)
    same = measure(args.layer, "eager", args.plain_tokens, heads, args.key_dim) \
        if args.plain_tokens != args.tokens else rows[0][1]
    rows += [("plain forward at %d" % args.plain_tokens, plain),
             ("capture (eager) at %d" % args.plain_tokens, same)]
    _print_rows(rows)
    worst = max(values["extra_mb"] for _, values in rows[:len(modes)])
    print("capture extra at %d tokens: %.1f MB (target <= %d MB): %s"
          % (args.tokens, worst, TARGET_MB, "met" if worst <= TARGET_MB else "NOT met"))
    print("ratio capture / plain forward extra memory at %d tokens: %.3f"
          % (args.plain_tokens, same["extra_mb"] / max(plain["extra_mb"], 1e-9)))
    print("ratio capture extra at %d / its float32 scores: %.4f"
          % (args.tokens, worst / scores_mb))


def keras_hub_report(args, heads, scores_mb):
    """A keras-hub layer makes its own probabilities in every forward pass (TensorFlow's CPU
    path): the capture's own memory is its pass's extra above the plain pass's, eager against
    eager and traced against traced, at one length."""
    tokens = args.tokens if args.plain_tokens is None else args.plain_tokens
    pairs = (("eager", "plain"), ("traced", "plain_traced"))
    rows, own = [], []
    for captured, plain in pairs:
        values = [measure(args.layer, mode, tokens, heads, args.key_dim)
                  for mode in (captured, plain)]
        rows += [("capture (%s) at %d" % (captured, tokens), values[0]),
                 ("%s forward at %d" % (plain.replace("_", " "), tokens), values[1])]
        own.append((captured, values[0]["extra_mb"] - values[1]["extra_mb"],
                    values[0]["extra_mb"] / max(values[1]["extra_mb"], 1e-9)))
    _print_rows(rows)
    for mode, mb, ratio in own:
        print("capture (%s) at %d tokens: %.1f MB above the plain forward's peak (target <= %d "
              "MB): %s; ratio of the two peaks %.3f"
              % (mode, tokens, mb, TARGET_MB, "met" if mb <= TARGET_MB else "NOT met", ratio))
    print("the layer's own float32 probabilities at %d tokens: %.0f MB"
          % (tokens, heads * tokens ** 2 * 4 / 2**20))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=["mha", "gqa", "attention"] + list(KERAS_HUB),
                        default="mha",
                        help="MultiHeadAttention, GroupedQueryAttention (heads / 4 key/value "
                        "heads), Attention (one head), or a one-layer keras-hub Llama 3 or "
                        "Gemma 2 backbone (heads / 2 key/value heads)")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=None,
                        help="default 32; 4 for the keras-hub layers")
    parser.add_argument("--key-dim", type=int, default=16)
    parser.add_argument("--plain-tokens", type=int, default=None,
                        help="default 2048; for the keras-hub layers --tokens")
    parser.add_argument("--modes", default="eager,traced",
                        help="capture passes to measure at --tokens (eager, traced)")
    parser.add_argument("--child", choices=["plain", "plain_traced", "eager", "traced"])
    args = parser.parse_args()
    hub = args.layer in KERAS_HUB
    heads = args.heads or (4 if hub else 32)
    if args.child:
        child(args.layer, args.child, args.tokens, heads, args.key_dim)
        return
    heads = 1 if args.layer == "attention" else heads
    scores_mb = heads * args.tokens ** 2 * 4 / 2**20
    print("one %s layer, %d heads, causal, 1 example; float32 scores at %d tokens: %.0f MB"
          % (args.layer, heads, args.tokens, scores_mb))
    if hub:
        keras_hub_report(args, heads, scores_mb)
        return
    args.plain_tokens = args.plain_tokens or 2048
    stock_report(args, heads, scores_mb)


if __name__ == "__main__":
    main()
