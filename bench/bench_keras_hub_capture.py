"""Capture cost of keras-hub LLM layers read by the adapters, as ratios measured in one run.

Two measures, each side by side in one process:

- **capture**: a 2-layer Llama-style `LlamaBackbone` (4 query heads over 2 key/value heads,
  hidden 64, rotary positions) on a probe of `--tokens` tokens (default 2048): the callback's
  capture (`ProbeCapture` with the default budget, so the layers are pooled from their
  Softmax-sublayer probabilities) against one traced forward pass of the same probe
  (target: <= 3x). Median of `--repeats` after a warm-up (tracing, the shape pass).
- **fit**: a Gemma 2-style model (soft-cap, sliding window; 2 layers, hidden 64) trained on
  `--fit-steps` batches per epoch with and without `AttentionLogger` at its default cadence
  (`update_freq=100`), both warmed up first, epochs alternating which goes first; the ratio of
  summed wall times and of process CPU time (target: <= 1.02).

    python bench/bench_keras_hub_capture.py [--tokens 2048] [--repeats 3] [--epochs 4]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_long_capture import median_seconds as _median  # noqa: E402


def capture_ratio(tokens, repeats):
    """`(plain seconds, capture seconds)` of the Llama-style probe."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from tb_attention_plugin.logger import budget, capture
    from tb_attention_plugin.logger.problems import Problems

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=500, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=64, intermediate_dim=128)
    probe = {"token_ids": np.random.default_rng(0).integers(1, 500, (1, tokens)).astype("int32"),
             "padding_mask": np.ones((1, tokens), "int32")}
    plain = tf.function(lambda x: backbone(x, training=False), autograph=False)
    tensors = {k: tf.constant(v) for k, v in probe.items()}
    plain(tensors)
    planner = budget.Budget(budget.Limits(), 1)

    def plan(shapes):  # as the callback plans: every layer call of the capture together
        layers = planner.plan_for([_call(s) for s in shapes]).layers
        return {(s.path, s.index): layers[s.tag] for s in shapes}

    probe_capture = capture.ProbeCapture(probe, problems=Problems(), planner=plan)
    records = probe_capture(backbone)  # warm-up: shape pass, tracing
    assert len(records) == 2, records
    modes = ["pooled" if r.pooled is not None else "full" for r in records]
    return (_median(lambda: plain(tensors), repeats),
            _median(lambda: probe_capture(backbone), repeats), modes)


def _call(shape):
    from tb_attention_plugin.logger import summaries

    return summaries.LayerCall(shape.tag, full_shape=shape.shape, causal=shape.causal)


def fit_ratio(epochs, steps):
    """`(plain wall, logged wall, plain CPU, logged CPU)` summed over the timed epochs."""
    import keras
    import numpy as np

    import tb_attention_plugin as tba

    sys.path.insert(0, os.path.join(REPO, "tests"))
    import keras_hub_families as families

    family = families.FAMILIES["gemma2"]
    data = families.probe_inputs(family, count=8 * steps, seed=1)
    targets = np.roll(data["token_ids"], -1, axis=1)
    models = {}
    for variant in ("plain", "logged"):
        keras.utils.set_random_seed(3)
        models[variant] = families.trainable_model(family)
    logger = tba.AttentionLogger(tempfile.mkdtemp(), probe=families.probe_inputs(family))
    callbacks = {"plain": [], "logged": [logger]}
    totals = {"plain": [0.0, 0.0], "logged": [0.0, 0.0]}
    for epoch in range(epochs + 1):  # epoch 0 warms both up (tracing) and is not counted
        order = ("plain", "logged") if epoch % 2 else ("logged", "plain")
        for variant in order:
            wall, cpu = time.perf_counter(), time.process_time()
            models[variant].fit(data, targets, batch_size=8, epochs=1, verbose=0,
                                callbacks=callbacks[variant])
            if epoch:
                totals[variant][0] += time.perf_counter() - wall
                totals[variant][1] += time.process_time() - cpu
    return totals["plain"][0], totals["logged"][0], totals["plain"][1], totals["logged"][1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fit-steps", type=int, default=150)
    args = parser.parse_args(argv)
    plain, captured, modes = capture_ratio(args.tokens, args.repeats)
    print("capture, Llama-style 2 layers x 4 heads at %d tokens (%s): plain traced forward "
          "%.3f s, capture %.3f s, ratio %.2fx (target <= 3x)"
          % (args.tokens, "/".join(modes), plain, captured, captured / plain))
    wall_plain, wall_logged, cpu_plain, cpu_logged = fit_ratio(args.epochs, args.fit_steps)
    print("fit, Gemma 2-style, %d epochs of %d steps, update_freq=100: wall %.1f s / %.1f s = "
          "%.3f, CPU %.1f s / %.1f s = %.3f (target <= 1.02)"
          % (args.epochs, args.fit_steps, wall_logged, wall_plain, wall_logged / wall_plain,
             cpu_logged, cpu_plain, cpu_logged / cpu_plain))
    return {"capture_ratio": captured / plain, "fit_wall": wall_logged / wall_plain,
            "fit_cpu": cpu_logged / cpu_plain}


if __name__ == "__main__":
    main()
