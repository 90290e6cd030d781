"""`GET /health` over a whole run: from stored records vs computed from stored steps.

Writes two runs with `AttentionWriter` (default: 100 steps x 12 layers x 12 heads): "logged"
holds the head-health records (`AttentionWriter.health`) and "computed" only the attention
steps (2 examples x 128 tokens, as the summary op's users store them). A fresh plugin over
TensorBoard's Python reader answers `/health` of each run: the first request (records parsed,
or measures computed from every stored step), a repeated one after the answer cache is
dropped (records or computed steps cached), and a revalidation (304). Prints times and ratios.

    python bench/bench_health_server.py [--steps 100] [--layers 12] [--heads 12] [--tokens 128]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    from plugin_client import get, production_plugin, wsgi_client
    from tb_attention_plugin import health
    from tb_attention_plugin.writer import AttentionWriter

    rng = np.random.default_rng(0)
    shape = (2, args.heads, args.tokens, args.tokens)
    logits = rng.normal(size=shape).astype(np.float32) * 2
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    result = health.head_health(weights, logits=logits)
    logdir = tempfile.mkdtemp(prefix="bench-health-server-")
    with AttentionWriter(os.path.join(logdir, "logged")) as writer:
        for step in range(args.steps):
            for layer in range(args.layers):
                writer.health("layer_%02d" % layer, result, step=step * 100)
    with AttentionWriter(os.path.join(logdir, "computed")) as writer:
        for step in range(args.steps):
            for layer in range(args.layers):
                writer.attention("layer_%02d" % layer, weights, step=step * 100)

    plugin = production_plugin(logdir)
    client = wsgi_client(plugin)
    times = {}
    for run in ("logged", "computed"):
        started = time.perf_counter()
        first = get(client, "/health", run=run)
        times[run, "first"] = time.perf_counter() - started
        assert first.status_code == 200, first.get_data()[:200]
        plugin._health._answers = type(plugin._health._answers)(max_entries=4)
        started = time.perf_counter()
        again = get(client, "/health", run=run)
        times[run, "cached steps"] = time.perf_counter() - started
        started = time.perf_counter()
        revalidated = get(client, "/health", headers={"If-None-Match": again.headers["ETag"]}, run=run)
        times[run, "304"] = time.perf_counter() - started
        assert revalidated.status_code == 304
        print("%s: %d bytes" % (run, len(first.get_data())))
    for (run, kind), seconds in times.items():
        print("%-8s %-13s %8.3f s   %6.2fx the logged run's first answer"
              % (run, kind, seconds, seconds / times["logged", "first"]))


if __name__ == "__main__":
    main()
