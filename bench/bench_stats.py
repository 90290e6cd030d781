"""Per-head statistics over a whole run: first computation vs a repeated (cached) request.

Writes a logdir with `AttentionWriter` (default: 100 steps x 12 layers, 2 examples x 12 heads x
128 tokens, the `AttentionLogger` defaults for a BERT-base-sized model) into a temporary
directory, loads it with TensorBoard's Python reader keeping every step, then asks
`aggregates.tag_statistics` for every layer twice and prints both times and their ratio; then
does the same through the plugin's HTTP route (`GET /stats` of a fresh plugin, served by
TensorBoard's WSGI app, JSON encoding included). Target: the repeated request for all layers
under 1 s.

    python bench/bench_stats.py [--steps 100] [--layers 12] [--heads 12] [--tokens 128]
"""

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def attention_like(rng, shape, sharpness):
    """Softmax of noisy logits with a locality bias: roughly what trained heads look like."""
    *_, tq, tk = shape
    logits = rng.normal(size=shape).astype(np.float32) * sharpness
    logits += 3.0 * np.exp(-np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :]) / 4.0)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def write_logdir(logdir, args):
    from tb_attention_plugin.writer import AttentionWriter

    rng = np.random.default_rng(0)
    shape = (args.examples, args.heads, args.tokens, args.tokens)
    mask = np.ones(shape, bool)
    mask[1:, :, :, args.tokens * 3 // 4 :] = False  # later examples padded to 3/4 length
    tokens = [["tok%d" % i for i in range(args.tokens)]] * args.examples
    with AttentionWriter(os.path.join(logdir, "train"), flush_secs=3600) as writer:
        for step in range(0, args.steps * 100, 100):
            for layer in range(args.layers):
                weights = attention_like(rng, shape, sharpness=0.5 + layer / 4)
                writer.attention(
                    "encoder/layer_%d/self_attention" % layer,
                    np.where(mask, weights, 0),
                    step,
                    mask=mask,
                    query_tokens=tokens,
                    key_tokens=tokens,
                )


def load_provider(logdir):
    from tensorboard.backend.event_processing import data_ingester
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    from tb_attention_plugin import metadata

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance={metadata.PLUGIN_NAME: 0},  # --samples_per_plugin=attention=0
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, logdir)


def all_layers(provider, tags, cache):
    from tensorboard import context as tb_context

    from tb_attention_plugin.server import aggregates
    from tb_attention_plugin.server import reader as reader_lib

    ctx = tb_context.RequestContext()
    reader = reader_lib.AttentionReader(provider)
    started = time.perf_counter()
    results = [
        aggregates.tag_statistics(reader, ctx, "", "train", tag, cache=cache) for tag in tags
    ]
    return time.perf_counter() - started, results


def http_all_layers(client, tags):
    started = time.perf_counter()
    bodies = []
    for tag in tags:
        response = client.get("/data/plugin/attention/stats", query_string={"run": "train", "tag": tag})
        assert response.status_code == 200, response.get_data()[:300]
        bodies.append(response.get_data())
    return time.perf_counter() - started, bodies


def plugin_client(provider, logdir):
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test

    from tb_attention_plugin.server import loader

    context = base_plugin.TBContext(data_provider=provider, logdir=logdir)
    plugin = loader.AttentionLoader().load(context)
    return werkzeug_test.Client(application.TensorBoardWSGI([plugin])), plugin


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--examples", type=int, default=2)
    args = parser.parse_args()

    from tb_attention_plugin.server import aggregates

    tags = ["encoder/layer_%d/self_attention" % layer for layer in range(args.layers)]
    with tempfile.TemporaryDirectory(prefix="bench_stats_") as logdir:
        started = time.perf_counter()
        write_logdir(logdir, args)
        written = time.perf_counter() - started
        size = sum(e.stat().st_size for e in os.scandir(os.path.join(logdir, "train")))
        print(
            "wrote %d steps x %d layers of [%d, %d, %d, %d] in %.1f s (%.1f MB)"
            % (args.steps, args.layers, args.examples, args.heads, args.tokens, args.tokens,
               written, size / 1e6)
        )
        started = time.perf_counter()
        provider = load_provider(logdir)
        loaded = time.perf_counter() - started
        print("TensorBoard's Python reader loaded the run in %.1f s" % loaded)

        cache = aggregates.StepStatisticsCache()
        first, results = all_layers(provider, tags, cache)
        computed = cache.misses
        repeated, again = all_layers(provider, tags, cache)
        assert again == results and cache.misses == computed, "repeat was not served from cache"
        assert all(len(r["steps"]) == args.steps and not r["errors"] for r in results)

        client, plugin = plugin_client(provider, logdir)
        http_first, bodies = http_all_layers(client, tags)
        http_repeated, bodies_again = http_all_layers(client, tags)
        assert bodies_again == bodies
        assert plugin._aggregates.statistics_cache.misses == computed, "HTTP repeat recomputed"

    print("first request, all %d layers:    %8.3f s (%.1f ms per step and layer)"
          % (args.layers, first, 1000 * first / computed))
    print("repeated request, all %d layers: %8.3f s (%d cache hits)"
          % (args.layers, repeated, cache.hits))
    print("ratio first / repeated: %.0fx; repeated under 1 s: %s"
          % (first / repeated, "yes" if repeated < 1.0 else "NO"))
    print("GET /stats, all %d layers, first:    %8.3f s" % (args.layers, http_first))
    print("GET /stats, all %d layers, repeated: %8.3f s (ratio %.0fx; under 1 s: %s)"
          % (args.layers, http_repeated, http_first / http_repeated,
             "yes" if http_repeated < 1.0 else "NO"))


if __name__ == "__main__":
    main()
