"""Can `demo/induction_lm.py` show its heads on a probe long enough to be stored POOLED?

At the default budget (`max_bytes_per_step`, 4 MiB) the logger keeps one probe example before
it pools; a layer of 2 heads no longer fits in full from about 1472 tokens (at 1024 tokens the
logger pools one of the demo's 2 layers and keeps the other in full). This trains the demo's
model (2 layers x 2 heads of 32 dimensions) under a training schedule and prints, every
`--every` steps, the CPU seconds spent in training and three probes' role scores per head
(`health.head_health`, mean over every query):

- `long`: the induction probe of `--longest` tokens (`L = longest / 2`), the one the pooled
  layout shows; `hit`: the share of its last 64 rows (the `last_queries` window) whose largest
  weight in layer 1 is on key `i - L + 1`;
- `short`: an induction probe of `L = 16` (32 tokens);
- `recurring`: `--longest` tokens of one span of 16 recurring.

It also prints the CPU seconds per optimizer step at 2048 tokens per step for each length.

    python bench/bench_induction_lengths.py --schedule 32x64*280,1x1024*60/512 --vocab 800 \
        --longest 1536 --learning-rate 5e-3                      # the demo's CI size
    python bench/bench_induction_lengths.py --positions sinusoid --schedule 32x64*300,2x1024*100

`--schedule`: `BATCHxLENGTH*STEPS[/MAXPERIOD]` stages in order (spans of 4 to `MAXPERIOD`
tokens recur, default 16); `--positions`: `rotary` (the demo's `RotaryAttention`) or
`sinusoid` (sinusoids added to the tokens, the demo's positions before, `--base` 10000; 10
keeps every period within 63 positions). About 3-8 minutes per schedule on 2 shared cores.
The measured numbers are in demo/induction_lm.py's docstring.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

WINDOW_ROWS = 64  # rows of the pooled layout's default `last_queries` window


def parse_schedule(text):
    """`"32x64*300,2x1024*100/512"` -> `[((32, 64, 16), 300), ((2, 1024, 512), 100)]`:
    `(batch, length, longest recurring span)` and steps per stage."""
    stages = []
    for part in text.split(","):
        part, _, period = part.partition("/")
        shape, _, steps = part.partition("*")
        batch, length = (int(n) for n in shape.split("x"))
        stages.append(((batch, length, int(period or 16)), int(steps or 1)))
    return stages


def attention_maps(model, ids):
    """Post-softmax weights `[B, H, T, T]` of each `layer_<i>` of an induction_lm model."""
    x = model.get_layer("embedding")(ids)
    maps = []
    for block in [layer for layer in model.layers if layer.name.startswith("layer_")]:
        normed = block.norm(x)
        out, weights = block.self_attention(normed, normed, use_causal_mask=True,
                                            return_attention_scores=True)
        maps.append(np.asarray(weights))
        x = x + out
    return maps


def role_scores(model, ids, offset):
    """`(previous-token [H] of layer 0, induction [H] of layer 1, hit [H] of layer 1)`."""
    from tb_attention_plugin import health

    maps = attention_maps(model, ids)
    previous = health.head_health(maps[0], causal=True, similarity=False)["previous_token"]
    induction = health.head_health(maps[1], causal=True, repeat_offset=offset,
                                   similarity=False)["induction"]
    rows = min(WINDOW_ROWS, ids.shape[1] - offset)
    queries = np.arange(ids.shape[1] - rows, ids.shape[1])
    peaks = maps[1][:, :, -rows:, :].argmax(axis=-1)
    hit = (peaks == (queries - offset + 1)[None, None, :]).mean(axis=(0, 2))
    return previous, induction, hit


def step_costs(args, shapes, steps=30):
    """CPU seconds per optimizer step for each `(batch, length)`, after one warm-up fit."""
    import keras

    from demo import induction_lm

    costs = {}
    for batch, length in shapes:
        keras.utils.set_random_seed(0)
        model = build(args)
        rows = induction_lm.make_sequences(batch * steps, length, args.vocab, 4, max_period=16)
        model.fit(rows[:batch, :-1], rows[:batch, 1:], batch_size=batch, verbose=0)
        started = time.process_time()
        model.fit(rows[:, :-1], rows[:, 1:], batch_size=batch, verbose=0)
        costs[(batch, length)] = (time.process_time() - started) / steps
    return costs


def _sinusoid_model(vocab, longest, base):
    """The demo's model before rotary positions: fixed sinusoids of `base` (Vaswani et al.)
    added to the token vectors, for `longest` positions, and Keras' own MultiHeadAttention."""
    import keras
    from keras import ops

    from demo import induction_lm

    rates = 1.0 / np.power(base, np.arange(0, 64, 2) / 64)
    table = np.zeros((longest, 64), np.float32)
    table[:, 0::2] = np.sin(np.arange(longest)[:, None] * rates)
    table[:, 1::2] = np.cos(np.arange(longest)[:, None] * rates)

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = keras.layers.LayerNormalization(name="norm")
            self.self_attention = keras.layers.MultiHeadAttention(2, 32, name="self_attention")

        def call(self, x):
            normed = self.norm(x)
            return x + self.self_attention(normed, normed, use_causal_mask=True)

    class Embedding(induction_lm.Tokens):
        def call(self, ids):
            count = ops.shape(ids)[-1]
            return self.tokens(ids) + ops.convert_to_tensor(table)[None, :count]

    ids = keras.Input((None,), dtype="int32")
    x = Embedding(vocab, 64, name="embedding")(ids)
    for i in range(2):
        x = Block(name="layer_%d" % i)(x)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    return keras.Model(ids, keras.layers.Dense(vocab, name="logits")(x))


def build(args):
    """The demo's model (width 64, 2 heads, 2 layers) with `args.positions`, compiled."""
    import keras

    from demo import induction_lm

    if args.positions == "rotary":
        model = induction_lm.build_model(args.vocab, 64, 2)
    else:
        model = _sinusoid_model(args.vocab, max(args.longest, 1024), args.base)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def figures(values):
    """`"0.123/0.456"`: one figure per head."""
    return "/".join("%.3f" % value for value in values)


def train(stages, args):
    """Trains under `stages`, prints the probes' scores every `args.every` steps; returns the
    model."""
    import keras

    import tb_attention_plugin
    from demo import induction_lm

    keras.utils.set_random_seed(0)
    model = build(args)
    vocab, longest = args.vocab, args.longest
    probes = {
        "long": tb_attention_plugin.induction_probe(vocab, longest // 2, batch=2, seed=0),
        "short": tb_attention_plugin.induction_probe(vocab, 16, batch=8, seed=0),
        "recurring": (induction_lm.make_sequences(2, longest, vocab, 16, seed=99,
                                                  max_period=16)[:, :-1], 16),
    }
    schedule = [shape for shape, steps in stages for _ in range(steps)]
    data = {shape: induction_lm.make_sequences(shape[0] * schedule.count(shape), shape[1],
                                               vocab, 4, seed=i, max_period=shape[2])
            for i, shape in enumerate(sorted(set(schedule)))}
    used = dict.fromkeys(data, 0)
    cpu = 0.0
    for step in range(len(schedule) + 1):
        if step % args.every == 0 or step == len(schedule):
            parts = []
            for name, (ids, offset) in probes.items():
                previous, induction, hit = role_scores(model, ids, offset)
                parts.append("%s prev %s ind %s hit %s" % (
                    name, figures(previous), figures(induction), figures(hit)))
            print("step %4d  train CPU %5.0f s | %s" % (step, cpu, " | ".join(parts)),
                  flush=True)
        if step == len(schedule):
            return model
        shape = schedule[step]
        rows = data[shape][used[shape]:used[shape] + shape[0]]
        used[shape] += shape[0]
        started = time.process_time()
        model.train_on_batch(rows[:, :-1], rows[:, 1:])
        cpu += time.process_time() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedule", default="32x64*280,1x1024*60/512")
    parser.add_argument("--positions", choices=("rotary", "sinusoid"), default="rotary")
    parser.add_argument("--vocab", type=int, default=800)
    parser.add_argument("--longest", type=int, default=1536, help="tokens of the long probes")
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--base", type=float, default=10000.0, help="sinusoids' base")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--no-costs", action="store_true", help="skip the per-step costs")
    args = parser.parse_args(argv)
    stages = parse_schedule(args.schedule)
    if not args.no_costs:
        costs = step_costs(args, [(32, 64), (8, 256), (2, 1024)])
        reference = costs[(32, 64)]
        for (batch, length), cost in costs.items():
            print("%2d x %4d tokens: %.3f CPU s per step, %.1fx the 32 x 64 step"
                  % (batch, length, cost, cost / reference))
    train(stages, args)


if __name__ == "__main__":
    main()
