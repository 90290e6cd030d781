"""The AttentionLogger's whole health pass per capture vs the probe's forward pass.

`bench_health.py` times the numpy measures alone on synthetic attention. This times what the
callback really runs at each capture with `health_probe=`: the forward passes of the probe set
in blocks of 8 sequences through the patched, traced capture (scores and per-head max logits
read out of every layer), then `HeadHealth` per layer call, only the measures kept
(`logger/health_pass.py`). The model is bench_health's plain Keras Transformer (default: 12
layers, 12 heads, d_model 768, causal, 128 tokens) on a 64-sequence induction probe. Both
sides are timed alternating, in one run, best of `--repeats`; prints the ratio health pass /
forward pass (`model.predict` of the same 64 sequences; target <= 1.5x), with and without the
Jensen-Shannon similarity.

    python bench/bench_health_capture.py [--layers 12] [--heads 12] [--examples 64]
                                         [--tokens 128] [--d-model 768] [--repeats 2]

About 15 minutes at the default size on 2 shared cores.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def timed(function):
    started, cpu = time.perf_counter(), time.process_time()
    value = function()
    return (time.perf_counter() - started, time.process_time() - cpu), value


def measure(layers=12, heads=12, examples=64, tokens=128, d_model=768, vocab=1000,
            batch_size=8, repeats=2):
    """Returns seconds (best of `repeats`, wall and CPU) and the ratios, as a dict."""
    from bench_health import build_model

    from tb_attention_plugin import induction_probe
    from tb_attention_plugin.logger.health_pass import HealthPass
    from tb_attention_plugin.logger.problems import Problems

    args = argparse.Namespace(layers=layers, heads=heads, tokens=tokens, d_model=d_model,
                              vocab=vocab)
    ids, offset = induction_probe(vocab, tokens // 2, batch=examples)
    model = build_model(args)
    model.predict(ids, batch_size=len(ids), verbose=0)  # build and trace, not timed
    passes = {
        similarity: HealthPass(ids, offset, patterns=None, run_eagerly=False,
                               problems=Problems(), batch_size=batch_size,
                               similarity=similarity)
        for similarity in (True, False)
    }
    for health in passes.values():
        health(model)  # traces the block graph once, not timed
        assert health.compiled is not None, "the health pass did not run as a traced graph"
    forwards, full, cheap = [], [], []
    for _ in range(repeats):
        forwards.append(timed(lambda: model.predict(ids, batch_size=len(ids), verbose=0))[0])
        seconds, results = timed(lambda: passes[True](model))
        full.append(seconds)
        cheap.append(timed(lambda: passes[False](model))[0])
    assert len(results) == layers and all(r["examples"] == examples for r in results.values())
    forward, full, cheap = min(forwards), min(full), min(cheap)
    return {
        "offset": offset,
        "forward_wall": forward[0], "forward_cpu": forward[1],
        "health_wall": full[0], "health_cpu": full[1],
        "without_similarity_wall": cheap[0],
        "ratio_wall": full[0] / forward[0], "ratio_cpu": full[1] / forward[1],
        "ratio_without_similarity": cheap[0] / forward[0],
    }


def main():
    from bench_health import parse_probe_shape

    args = parse_probe_shape(__doc__.splitlines()[0], "--batch-size", 8)
    r = measure(args.layers, args.heads, args.examples, args.tokens, args.d_model, args.vocab,
                args.batch_size, args.repeats)
    print("probe set: %d sequences x %d tokens (induction probe, L = %d); best of %d; %d CPUs"
          % (args.examples, args.tokens, r["offset"], args.repeats, os.cpu_count()))
    print("forward pass (predict), %d layers x %d heads, d_model %d: %7.2f s wall, %7.2f s CPU"
          % (args.layers, args.heads, args.d_model, r["forward_wall"], r["forward_cpu"]))
    print("health pass (blocks of %d: capture + measures, similarity): %7.2f s wall, %7.2f s CPU"
          % (args.batch_size, r["health_wall"], r["health_cpu"]))
    print("ratio health pass / forward pass: %.2fx wall (target <= 1.5x: %s), %.2fx CPU; "
          "without similarity %.2fx wall"
          % (r["ratio_wall"], "yes" if r["ratio_wall"] <= 1.5 else "NO", r["ratio_cpu"],
             r["ratio_without_similarity"]))


if __name__ == "__main__":
    main()
