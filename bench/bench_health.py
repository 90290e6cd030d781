"""Head-health measures per capture vs the probe's forward pass, side by side in one run.

Builds a plain Keras Transformer encoder (default: 12 layers, 12 heads, d_model 768, causal
self-attention, 128 tokens: GPT-2-small / BERT-base sized) and times its forward pass on an
induction probe of 64 sequences x 128 tokens (`induction_probe(length=64)`). Then times
`health.HeadHealth` over attention of the same size, 12 layers x [64, 12, 128, 128] with logits,
fed in blocks of 16 probe sequences as the callback does, similarity included. The weights are
softmaxes of random logits with a locality bias, built outside the timed region. Prints both
times and their ratio (target: measures <= 1.5x the forward pass), plus the share of the
Jensen-Shannon similarity (the only measure quadratic in heads).

    python bench/bench_health.py [--layers 12] [--heads 12] [--examples 64] [--tokens 128]
                                 [--d-model 768] [--block 16] [--repeats 2]

`measure(...)` returns the same figures as a dict, for bench/run.py. About 12 minutes at the
default size on 2 shared cores (the forward pass dominates).
"""

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_model(args):
    import keras

    ids = keras.Input(shape=(args.tokens,), dtype="int32")
    x = keras.layers.Embedding(args.vocab, args.d_model)(ids)
    for _ in range(args.layers):
        attention = keras.layers.MultiHeadAttention(args.heads, args.d_model // args.heads)
        x = keras.layers.LayerNormalization()(x + attention(x, x, use_causal_mask=True))
        hidden = keras.layers.Dense(4 * args.d_model, activation="gelu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(args.d_model)(hidden))
    return keras.Model(ids, keras.layers.Dense(args.vocab)(x))


def time_forward(model, ids):
    """(wall seconds, CPU seconds of this process, all threads)."""
    started, cpu = time.perf_counter(), time.process_time()
    model.predict(ids, batch_size=len(ids), verbose=0)
    return time.perf_counter() - started, time.process_time() - cpu


def attention_like(rng, shape, sharpness):
    """(weights with NaN above the diagonal, logits): softmax of noisy, locally biased logits."""
    *_, tq, tk = shape
    logits = rng.normal(size=shape).astype(np.float32) * sharpness
    logits += 3.0 * np.exp(-np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :]) / 4.0)
    future = np.triu(np.ones((tq, tk), bool), k=1)
    masked = np.where(future, -np.inf, logits)
    exp = np.exp(masked - masked.max(-1, keepdims=True))
    weights = exp / exp.sum(-1, keepdims=True)
    return np.where(future, np.nan, weights).astype(np.float32), logits


def time_measures(args, offset, layers):
    """(wall seconds with similarity, without, CPU seconds with similarity), all layers."""
    from tb_attention_plugin.health import HeadHealth

    times = [0.0, 0.0, 0.0]
    for weights, logits in layers:
        for index, similarity in enumerate((True, False)):
            started, cpu = time.perf_counter(), time.process_time()
            health = HeadHealth(repeat_offset=offset, similarity=similarity)
            for start in range(0, args.examples, args.block):
                stop = start + args.block
                health.update(weights[start:stop], logits=logits[start:stop])
            health.result()
            times[index] += time.perf_counter() - started
            if similarity:
                times[2] += time.process_time() - cpu
    return times


def measure(layers=12, heads=12, examples=64, tokens=128, d_model=768, vocab=1000, block=16,
            repeats=2):
    """Times both sides, alternating; returns a dict of seconds (best of `repeats`) and ratios:
    `forward_wall`, `forward_cpu`, `measures_wall`, `measures_cpu`, `similarity_wall`,
    `ratio_wall`, `ratio_cpu` (for bench/run.py's table)."""
    if tokens % 2:
        raise ValueError("tokens must be even (an induction probe is two copies)")
    args = argparse.Namespace(layers=layers, heads=heads, examples=examples, tokens=tokens,
                              d_model=d_model, vocab=vocab, block=block)
    from tb_attention_plugin import induction_probe

    ids, offset = induction_probe(vocab, tokens // 2, batch=examples)
    model = build_model(args)
    model.predict(ids, batch_size=len(ids), verbose=0)  # build and trace, not timed

    # Distinct attention per layer would hold 12 x 2 x 50 MB; the cost of the measures does
    # not depend on the values, so three sharpness levels are cycled over the layers.
    rng = np.random.default_rng(0)
    shape = (examples, heads, tokens, tokens)
    variants = [attention_like(rng, shape, sharpness) for sharpness in (0.5, 1.5, 3.0)]
    attention = [variants[layer % len(variants)] for layer in range(layers)]

    forwards, measures = [], []
    for _ in range(repeats):  # alternate, so that both see the same machine load
        forwards.append(time_forward(model, ids))
        measures.append(time_measures(args, offset, attention))
    (forward, forward_cpu), (full, cheap, full_cpu) = min(forwards), min(measures)
    return {
        "offset": offset,
        "forward_wall": forward,
        "forward_cpu": forward_cpu,
        "measures_wall": full,
        "measures_cpu": full_cpu,
        "similarity_wall": full - cheap,
        "without_similarity_wall": cheap,
        "ratio_wall": full / forward,
        "ratio_cpu": full_cpu / forward_cpu,
    }


def parse_probe_shape(description, block_flag, block_default):
    """The command line both health benchmarks share: the model and probe-set shape, plus the
    block flag (`--block` of the measures, `--batch-size` of the callback's health pass)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument(block_flag, type=int, default=block_default)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.tokens % 2:
        parser.error("--tokens must be even (an induction probe is two copies)")
    return args


def main():
    args = parse_probe_shape(__doc__.splitlines()[0], "--block", 16)
    r = measure(args.layers, args.heads, args.examples, args.tokens, args.d_model, args.vocab,
                args.block, args.repeats)
    print("probe: %d sequences x %d tokens (induction probe, L = %d); best of %d runs; %d CPUs"
          % (args.examples, args.tokens, r["offset"], args.repeats, os.cpu_count()))
    print("forward pass, %d layers x %d heads, d_model %d:   %7.2f s wall, %7.2f s CPU"
          % (args.layers, args.heads, args.d_model, r["forward_wall"], r["forward_cpu"]))
    print("head-health measures, all layers, with similarity: %7.2f s wall, %7.2f s CPU"
          " (blocks of %d)" % (r["measures_wall"], r["measures_cpu"], args.block))
    print("  of which Jensen-Shannon similarity:              %7.2f s wall" % r["similarity_wall"])
    print("ratio measures / forward pass: %.2fx wall (target <= 1.5x: %s), %.2fx CPU; "
          "without similarity %.2fx wall"
          % (r["ratio_wall"], "yes" if r["ratio_wall"] <= 1.5 else "NO", r["ratio_cpu"],
             r["without_similarity_wall"] / r["forward_wall"]))
    print("(the forward pass uses every core, the measures one: with more cores or an "
          "accelerator the ratio grows; see docs/health.md, 'Cost per capture')")


if __name__ == "__main__":
    main()
