"""Head health of a pooled layer from query chunks vs `HeadHealth` on its full matrices.

The health pass measures a POOLED layer from the query chunks its blocked pass computes
(`health_stream.ChunkedHeadHealth`, docs/health.md "Pooled layers"). This bench feeds one causal
layer's attention (default 8 examples x 8 heads x 1024 tokens, an induction probe, similarity
included) both ways, side by side in one process:

- full: `HeadHealth.update` on the whole `[B, H, T, T]` block (what a FULL layer gets);
- chunked: `ChunkedHeadHealth.add_chunk` on `[B, H, rows, T]` chunks made one at a time (the
  full tensor never exists).

It prints the CPU time of each and their ratio, the peak of numpy memory each allocates
(`tracemalloc`; for "full" on top of its input, which it also needs), and the largest
difference between the two results (they are equal up to float rounding).

    python bench/bench_health_stream.py [--examples 8] [--heads 8] [--tokens 1024] [--rows 64]
"""

import argparse
import time
import tracemalloc

import numpy as np

from tb_attention_plugin import health
from tb_attention_plugin.health_stream import ChunkedHeadHealth

MEASURES = ("entropy", "entropy_nats", "previous_token", "diagonal", "first_token", "induction",
            "sink_alpha", "divergence")


def chunk(args, start, stop):
    """Causal softmax rows `[start, stop)` of a locally biased random layer, deterministic per
    chunk, so that both runs see the same weights."""
    rng = np.random.default_rng(start)
    shape = (args.examples, args.heads, stop - start, args.tokens)
    logits = rng.normal(size=shape).astype(np.float32)
    rows = np.arange(start, stop)[:, None]
    keys = np.arange(args.tokens)[None, :]
    logits += np.where(keys == rows - 1, 4.0, 0.0).astype(np.float32)[None, :1]
    logits = np.where(keys <= rows, logits, -np.inf)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)


def timed(run):
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.process_time()
    result = run()
    seconds = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def measure(args):
    options = dict(causal=True, repeat_offset=args.tokens // 2)
    starts = range(0, args.tokens, args.rows)
    full = np.concatenate([chunk(args, s, min(s + args.rows, args.tokens)) for s in starts],
                          axis=2)

    def run_full():
        return health.HeadHealth(**options).update(full).result()

    def run_chunked():
        stream = ChunkedHeadHealth(queries=args.tokens, **options)
        for start in starts:
            stream.add_chunk(start, chunk(args, start, min(start + args.rows, args.tokens)))
        stream.end_batch()
        return stream.result()

    expected, full_seconds, full_peak = timed(run_full)
    del full
    got, chunked_seconds, chunked_peak = timed(run_chunked)
    difference = max(float(np.nanmax(np.abs(got[m] - expected[m]))) for m in MEASURES)
    return {"full_seconds": full_seconds, "chunked_seconds": chunked_seconds,
            "full_peak_mb": full_peak / 2**20, "chunked_peak_mb": chunked_peak / 2**20,
            "input_mb": args.examples * args.heads * args.tokens**2 * 4 / 2**20,
            "max_difference": difference, "roles_equal": got["roles"] == expected["roles"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    r = measure(args)
    print("layer [%d, %d, %d, %d] (%.0f MB float32), chunks of %d rows"
          % (args.examples, args.heads, args.tokens, args.tokens, r["input_mb"], args.rows))
    print("CPU: full %.2f s, chunked %.2f s, ratio chunked/full %.2fx"
          % (r["full_seconds"], r["chunked_seconds"], r["chunked_seconds"] / r["full_seconds"]))
    print("numpy peak: full %.0f MB (+ its %.0f MB input), chunked %.0f MB (input included): "
          "ratio %.3fx" % (r["full_peak_mb"], r["input_mb"], r["chunked_peak_mb"],
                           r["chunked_peak_mb"] / (r["full_peak_mb"] + r["input_mb"])))
    print("largest difference between the results: %.2g; roles equal: %s"
          % (r["max_difference"], r["roles_equal"]))


if __name__ == "__main__":
    main()
