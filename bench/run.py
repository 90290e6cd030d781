"""Every tb-attention benchmark in one run, side by side, with one table of ratios at the end.

Runs, in this process and one after the other:

- `bench_codes.measure`: relative and absolute error, row-entropy error and bytes/value of
  float32, format v1 codes and format v2 codes at 128, 1024 and 4096 tokens (causal head with
  a sink, bidirectional head, ViT head);
- `bench_encode_speed.measure`: writing and reading faithful codes, the table-driven encoder
  against the encoder first written (byte-identical outputs), at 1024 and 4096 tokens;
- `bench_size.measure`: stored bytes per attention value against float32 `tf.summary.write`
  of the same tensor, with the format's error;
- `bench_fit_overhead.main`: `model.fit` with and without `AttentionLogger` at its default
  cadence (wall time, CPU time, and the time spent inside the callback);
- `bench_serving.measure`: one 512x512 head of a step of a 100-step, 12-layer x 12-head logdir
  against TensorBoard's images plugin serving a 512x512 PNG from the same logdir, on the Rust
  data server and on the Python reader;
- `bench_memory.measure`: the RSS of the whole `tensorboard` process tree with that logdir
  loaded against the same logdir without attention, on both readers.

Prints each benchmark's own output, then the table `measure | ours | baseline | ratio | target
| met?`. About 6 minutes on 2 shared CPU cores; `--quick` shrinks every size (about 3 minutes).

    python bench/run.py [--quick] [--layers 12] [--steps 100] [--epochs 12]
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_codes  # noqa: E402
import bench_encode_speed  # noqa: E402
import bench_fit_overhead  # noqa: E402
import bench_memory  # noqa: E402
import bench_serving  # noqa: E402
import bench_size  # noqa: E402


def _ms(seconds):
    return "%.2f ms" % (seconds * 1000)


def _mb(size):
    return "%.0f MB" % (size / 1e6)


def row(measure, ours, baseline, ratio, target, limit=None, also=True):
    """One table row; met when `ratio <= limit` and `also` (a second condition) hold."""
    met = "-" if limit is None else ("yes" if ratio <= limit and also else "NO")
    return (measure, ours, baseline, "%.3f" % ratio, target, met)


def size_rows():
    rows, bound = bench_size.measure()
    print("stored size vs float32 tf.summary.write (same tensor, 3 steps each)")
    for name, values, ratio, error, ours, plain in rows:
        print("  %-55s ratio %.3f, max error %.5f (bound %.5f)" % (name, ratio, error, bound))
    return [
        row("stored bytes/value: " + name,
            "%.3f B/value (max err %.5f)" % (ours / values, error),
            "%.3f B/value" % (plain / values), ratio,
            "<= 0.25, err <= %.5f" % bound, 0.25, also=error <= bound)
        for name, values, ratio, error, ours, plain in rows
    ]


def encode_speed_rows(tokens, repeats=3):
    """new/old time of v2 codes (quantize + pack), payloads (+ zlib) and decoding."""
    print("faithful codes: table-driven encoder vs the encoder first written (same bytes)")
    rows = []
    for count in tokens:
        for kind in ("causal", "bidirectional"):
            for part, (old, new) in bench_encode_speed.measure(kind, count, repeats).items():
                print("  %-14s %5d %-8s old %8.1f ms  new %8.1f ms  %.2fx"
                      % (kind, count, part, old * 1000, new * 1000, new / old))
                rows.append(row("v2 %s, %s head, %d tokens (new / old encoder)"
                                % (part, kind, count), _ms(new), _ms(old), new / old, "-"))
    return rows


def codes_rows(tokens):
    results = bench_codes.measure(tokens)
    print("faithful codes: float32 vs v1 vs v2 (and the rejected 8-bit log code)")
    bench_codes.print_results(results)
    by_key = {(r["kind"], r["tokens"], r["code"]): r for r in results}

    def summary(r):
        return "abs %.2f/508, rel %.1f%%, H row %.2f%%, %.3f B/value" % (
            r["abs"], 100 * r["rel max"], 100 * r["H row"], r["B/value"])

    rows = []
    for (kind, size, code), v2 in by_key.items():
        if code != "v2":
            continue
        # The worst share of any v2 promise: abs <= scale/508, rel <= 2.79% (the issue: 3%),
        # row entropy <= 1%, <= 1.0 byte/value.
        worst = max(v2["abs"], v2["rel max"] / 0.03, v2["H row"] / 0.01, v2["B/value"] / 1.0)
        rows.append(row("v2 codes, %s head, %d tokens (worst share of a bound)" % (kind, size),
                        summary(v2), "v1: " + summary(by_key[kind, size, "v1"]), worst,
                        "<= 1.0", 1.0))
    return rows


def fit_rows(epochs, samples):
    figures = bench_fit_overhead.main(["--epochs", str(epochs), "--samples", str(samples)])
    plain = figures["plain seconds"]
    return [
        row("fit wall time, AttentionLogger defaults (noisy here)",
            "%.1f s" % figures["logged seconds"], "%.1f s" % plain, figures["wall ratio"],
            "<= 1.02", 1.02),
        row("fit CPU time, AttentionLogger defaults", "", "", figures["cpu ratio"], "<= 1.02",
            1.02),
        row("fit: time inside the callback (1 + share)",
            "%.2f s" % figures["callback seconds"], "%.1f s" % plain,
            1 + figures["callback share"], "<= 1.02", 1.02),
    ]


def serving_and_memory_rows(layers, steps, requests):
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        with_attention = pathlib.Path(tmp) / "with"
        without_attention = pathlib.Path(tmp) / "without"
        started = time.perf_counter()
        bench_serving.write_logdir(with_attention, layers, steps)
        bench_memory.write_logdir_without_attention(without_attention, steps)
        print("logdir: %d layers x %d heads x %dx%d, %d steps, 1 example: %s of events (%s "
              "without attention), written in %.0f s"
              % (layers, bench_serving.HEADS, bench_serving.SIZE, bench_serving.SIZE, steps,
                 _mb(bench_memory.event_bytes(with_attention)),
                 _mb(bench_memory.event_bytes(without_attention)),
                 time.perf_counter() - started))
        for reader, flags in bench_memory.READERS.items():
            results = bench_serving.measure(with_attention, flags, layers, steps, requests)
            images = statistics.median(results["images"])
            print("serving, %s: %s" % (reader, {
                key: _ms(statistics.median(value)) if isinstance(value, list) else value
                for key, value in results.items()}))
            small = statistics.median(results["images, 128x128 PNG"])
            cold = statistics.median(results["head (cold)"])
            cached = statistics.median(results["head (cached)"])
            rows += [
                row("serve one 512x512 head, step not asked before (%s)" % reader, _ms(cold),
                    _ms(images) + " (512x512 PNG)", cold / images, "<= 1.0", 1.0),
                row("the same against a 128x128 PNG, %d B (%s)"
                    % (results["small png bytes"], reader), _ms(cold),
                    _ms(small) + " (128x128 PNG)", cold / small, "-"),
                row("serve the same head again, plugin LRU (%s)" % reader, _ms(cached),
                    _ms(images) + " (512x512 PNG)", cached / images, "-"),
            ]
        memory = bench_memory.measure(with_attention, without_attention, layers, steps)
        bench_memory.print_results(memory)
        for reader, r in memory.items():
            rows.append(row("tensorboard RSS, logdir with / without attention (%s)" % reader,
                            _mb(r["with"]), _mb(r["without"]), r["with"] / r["without"],
                            "-", None))
            rows.append(row("extra RSS per stored attention byte (%s)" % reader,
                            _mb(r["with"] - r["without"]), _mb(r["attention bytes"]),
                            (r["with"] - r["without"]) / r["attention bytes"], "<= 1.25",
                            1.25))
    return rows


def print_table(rows):
    header = ("measure", "ours", "baseline", "ratio", "target", "met?")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 layers, 30 steps, 20 requests, 4 epochs of 2000 pairs, "
                             "heads of 128 and 1024 tokens")
    parser.add_argument("--layers", type=int, help="serving/memory logdir layers (12)")
    parser.add_argument("--steps", type=int, help="serving/memory logdir steps (100)")
    parser.add_argument("--requests", type=int, help="timed requests per serving row (40)")
    parser.add_argument("--epochs", type=int, help="fit-overhead epochs per variant (12)")
    parser.add_argument("--samples", type=int, help="fit-overhead training pairs (4000)")
    args = parser.parse_args()
    parser.add_argument("--tokens", type=int, nargs="+",
                        help="faithful-codes head sizes (128 1024 4096)")
    quick = {"layers": 4, "steps": 30, "requests": 20, "epochs": 4, "samples": 2000,
             "tokens": [128, 1024]}
    full = {"layers": 12, "steps": 100, "requests": 40, "epochs": 12, "samples": 4000,
            "tokens": [128, 1024, 4096]}
    sizes = {k: getattr(args, k) or (quick if args.quick else full)[k] for k in full}

    started = time.perf_counter()
    rows = codes_rows(sizes["tokens"])
    rows += encode_speed_rows([t for t in sizes["tokens"] if t >= 1024])
    rows += size_rows()
    rows += fit_rows(sizes["epochs"], sizes["samples"])
    rows += serving_and_memory_rows(sizes["layers"], sizes["steps"], sizes["requests"])
    print_table(rows)
    print("\n%s; %s, %d CPU cores; total %.0f s"
          % (" ".join(["python bench/run.py"] + sys.argv[1:]), platform.machine(),
             len(os.sched_getaffinity(0)), time.perf_counter() - started))


if __name__ == "__main__":
    main()
