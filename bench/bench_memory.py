"""TensorBoard's memory with attention logged: the same logdir with and without attention.

Writes the serving benchmark's logdir (`bench_serving.write_logdir`: 100 steps of a 12-layer x
12-head model at 512x512, one example, next to a 512x512 and a 128x128 PNG per step through
`tf.summary.image`) and the same logdir without the attention tags. For the Rust data server
(default) and the Python reader (`--load_fast=false`), starts a real `tensorboard` on each,
waits until every step is listed, and sums the resident memory (RSS) of the whole process tree:
the `tensorboard` Python process and its children (the Rust `tensorboard-data-server`).

Prints per reader: RSS with and without attention, their ratio, and the extra RSS per byte of
attention stored in the event files (both readers keep every retained step in memory, as
stored: close to 1.0 means nothing is held decoded or copied twice).

    python bench/bench_memory.py [--layers 12] [--steps 100]
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time
import urllib.parse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_serving  # noqa: E402
from tensorboard_process import get_json  # noqa: E402
from tensorboard_process import tensorboard  # noqa: E402

READERS = {"rust data server": (), "python reader": ("--load_fast=false",)}


def write_logdir_without_attention(root, steps):
    """`bench_serving.write_logdir` minus the attention tags: the same PNGs at the same steps."""
    bench_serving.write_logdir(root, 0, steps)


def event_bytes(root):
    return sum(f.stat().st_size for f in pathlib.Path(root).rglob("*") if f.is_file())


def _process_tree_rss(port):
    """`(bytes of RSS, process count)` of the `tensorboard` listening on `port` and all its
    descendants (`bench_serving.process_tree`)."""
    pids = bench_serving.process_tree(port)
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue  # exited meanwhile
        total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return total, len(pids)


def _wait_for_images(base, steps, timeout=300):
    query = urllib.parse.urlencode({"run": "train", "tag": bench_serving.IMAGE_TAG})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(get_json(base + "/data/plugin/images/images?" + query)) == steps:
                return
        except (AssertionError, OSError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError("tensorboard did not load %d image steps in %ds" % (steps, timeout))


def loaded_rss(logdir, flags, layers, steps, attention):
    """RSS of the tensorboard process tree once every step of `logdir` is loaded."""
    flags = (*flags, "--samples_per_plugin=images=%d" % steps)
    with tensorboard(logdir, *flags, wait_for_plugin="attention" if attention else "images",
                     ready_timeout=300) as base:
        if attention:
            bench_serving.wait_until_loaded(base, layers, steps)
        else:
            _wait_for_images(base, steps)
        port = int(base.rsplit(":", 1)[1])
        time.sleep(2)  # let a reload that was under way finish
        samples = []
        for _ in range(3):
            samples.append(_process_tree_rss(port))
            time.sleep(1)
    return max(size for size, _ in samples), samples[-1][1]


def measure(with_attention, without_attention, layers, steps, readers=READERS):
    """`{reader: {"with": bytes, "without": bytes, "attention bytes": bytes, "processes": n}}`."""
    attention_bytes = event_bytes(with_attention) - event_bytes(without_attention)
    results = {}
    for name, flags in readers.items():
        with_rss, processes = loaded_rss(with_attention, flags, layers, steps, True)
        without_rss, _ = loaded_rss(without_attention, flags, layers, steps, False)
        results[name] = {"with": with_rss, "without": without_rss,
                         "attention bytes": attention_bytes, "processes": processes}
    return results


def print_results(results):
    print("%-20s %12s %12s %8s %18s %10s" % ("reader", "RSS with", "RSS without", "ratio",
                                            "extra / stored", "processes"))
    for name, r in results.items():
        print("%-20s %9.0f MB %9.0f MB %8.2f %18.2f %10d" % (
            name, r["with"] / 1e6, r["without"] / 1e6, r["with"] / r["without"],
            (r["with"] - r["without"]) / r["attention bytes"], r["processes"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        with_attention = pathlib.Path(tmp) / "with"
        without_attention = pathlib.Path(tmp) / "without"
        bench_serving.write_logdir(with_attention, args.layers, args.steps)
        write_logdir_without_attention(without_attention, args.steps)
        print("logdir: %d layers x %d heads x %dx%d, %d steps: %.0f MB of events with attention, "
              "%.1f MB without" % (args.layers, bench_serving.HEADS, bench_serving.SIZE,
                                   bench_serving.SIZE, args.steps,
                                   event_bytes(with_attention) / 1e6,
                                   event_bytes(without_attention) / 1e6))
        results = measure(with_attention, without_attention, args.layers, args.steps)
    print_results(results)
    return results


if __name__ == "__main__":
    main()
