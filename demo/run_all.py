"""Trains every demo into one log directory, ready for `tensorboard --logdir`.

Runs (one directory each under `--logdir`):

- `translation_lr1e-3`, `translation_lr3e-4`: the English->Chinese Transformer at two learning
  rates, to compare runs side by side in the Attention tab (the slower run aligns later);
- `vision`: the Vision Transformer on synthetic shapes, attention drawn over the images;
- `seed_attention`: the article's function-style attention, fixed, from a custom TF2 loop;
- `induction_lm`: a two-layer causal language model on recurring random spans, where layer 0
  turns to the previous token and layer 1 grows induction heads (at about step 175-200).

Usage:

```
python -m demo.run_all --logdir logs          # a few minutes on 2 CPU cores
python -m demo.run_all --logdir logs --small  # reduced sizes, for CI
tensorboard --logdir logs
```
"""

import argparse
import os
import time


def run_all(logdir, small=False, probe_examples=4, verbose=2):
    """Trains all demos under `logdir`; returns `{run name: (result dict, seconds)}`."""
    from demo import induction_lm
    from demo import seed_attention
    from demo import translation
    from demo import vision

    runs = [
        ("translation_lr1e-3", lambda name: translation.train(
            logdir, name, small=small, learning_rate=1e-3, probe_examples=probe_examples,
            verbose=verbose)),
        ("translation_lr3e-4", lambda name: translation.train(
            logdir, name, small=small, learning_rate=3e-4, probe_examples=probe_examples,
            verbose=verbose)),
        ("vision", lambda name: vision.train(
            logdir, name, small=small, probe_examples=probe_examples, verbose=verbose)),
        ("seed_attention", lambda name: seed_attention.train(
            logdir, name, steps=200 if small else 600, log_every=50 if small else 150,
            probe_examples=min(probe_examples, 4))),
        ("induction_lm", lambda name: induction_lm.train(
            logdir, name, small=small, probe_examples=probe_examples, verbose=verbose)),
    ]
    results = {}
    for name, train in runs:
        print("== %s" % name, flush=True)
        started = time.monotonic()
        result = train(name)
        results[name] = (result, time.monotonic() - started)
    return results


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="logs", help="TensorBoard log root")
    parser.add_argument("--small", action="store_true", help="reduced sizes (CI)")
    parser.add_argument("--probe-examples", type=int, default=4,
                        help="examples whose attention is logged, per demo")
    args = parser.parse_args(argv)
    results = run_all(args.logdir, args.small, args.probe_examples)
    for name, (_, seconds) in results.items():
        print("%-20s %6.1f s" % (name, seconds))
    print("tensorboard --logdir %s" % args.logdir)
    return results


if __name__ == "__main__":
    main()
