"""Trains every demo into one log directory, ready for `tensorboard --logdir`.

Runs (one directory each under `--logdir`):

- `translation_lr1e-3`, `translation_lr3e-4`: the English->Chinese Transformer at two learning
  rates, to compare runs side by side in the Attention tab (the slower run aligns later);
- `vision`: the Vision Transformer on synthetic shapes, attention drawn over the images;
- `seed_attention`: the article's function-style attention, fixed, from a custom TF2 loop;
- `induction_lm`: a two-layer causal language model on recurring random spans, logged pooled
  on a 1536-token probe, where layer 0 turns to the previous token and layer 1 grows induction
  heads (at about step 320 of the CI size).

A demo already trained into `--logdir` with the same options is not trained again (running
the main job a second time only restarts TensorBoard); `--retrain` trains every demo afresh. Each
run directory holds `demo_run.json` (options, status, seconds): a run left unfinished, or trained
with other options, is removed and trained again, so that its steps are never logged twice. A
directory of that name that `run_all` did not write is never touched: that is an error.

Usage:

```
python -m demo.run_all --logdir logs          # a few minutes on 2 CPU cores
python -m demo.run_all --logdir logs --small  # reduced sizes, for CI
tensorboard --logdir logs
```
"""

import argparse
import json
import os
import pathlib
import shutil
import time

RUN_RECORD = "demo_run.json"  # in each run directory: {"options", "status", "seconds"}


def _run_record(run_dir):
    """The `demo_run.json` of a run directory, `None` when it has none (or it is unreadable)."""
    try:
        return json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None


def _prepare(run_dir, options, retrain):
    """`True` when the run in `run_dir` is already trained with `options` (skip it); otherwise
    makes `run_dir` empty and marks it as training, and returns `False`.

    Raises `FileExistsError` when `run_dir` exists but was not written by `run_all`."""
    record = _run_record(run_dir)
    if record is None and run_dir.exists():
        raise FileExistsError(
            "%s exists and was not written by demo.run_all (no %s): choose another --logdir"
            % (run_dir, RUN_RECORD))
    if record is not None:
        if not retrain and record.get("status") == "finished" and record.get("options") == options:
            return True
        shutil.rmtree(run_dir)  # unfinished, other options or --retrain: never log steps twice
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps({"options": options, "status": "training"}))
    return False


def _finish(run_dir, options, seconds):
    (run_dir / RUN_RECORD).write_text(
        json.dumps({"options": options, "status": "finished", "seconds": seconds}))


def run_all(logdir, small=False, probe_examples=4, verbose=2, retrain=False):
    """Trains all demos under `logdir`; returns `{run name: (result dict, seconds)}`.

    A demo already trained there with the same `small` and `probe_examples` is skipped (its
    result is `None`, its seconds those of its training) unless `retrain`."""
    from demo import induction_lm
    from demo import keras_hub_lora
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
            logdir, name, small=small, probe_examples=min(probe_examples, 4), verbose=verbose)),
        ("keras_hub_lora", lambda name: keras_hub_lora.train(
            logdir, name, small=small, verbose=verbose)),
    ]
    options = {"small": bool(small), "probe_examples": int(probe_examples)}
    results = {}
    for name, train in runs:
        run_dir = pathlib.Path(logdir) / name
        if _prepare(run_dir, options, retrain):
            print("== %s: already trained in %s (--retrain trains it again)" % (name, run_dir),
                  flush=True)
            results[name] = (None, _run_record(run_dir).get("seconds", 0.0))
            continue
        print("== %s" % name, flush=True)
        started = time.monotonic()
        result = train(name)
        results[name] = (result, time.monotonic() - started)
        _finish(run_dir, options, results[name][1])
    return results


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="logs", help="TensorBoard log root")
    parser.add_argument("--small", action="store_true", help="reduced sizes (CI)")
    parser.add_argument("--probe-examples", type=int, default=4,
                        help="examples whose attention is logged, per demo")
    parser.add_argument("--retrain", action="store_true",
                        help="train every demo again, even one already trained into --logdir")
    args = parser.parse_args(argv)
    results = run_all(args.logdir, args.small, args.probe_examples, retrain=args.retrain)
    for name, (_, seconds) in results.items():
        print("%-20s %6.1f s" % (name, seconds))
    print("tensorboard --logdir %s" % args.logdir)
    return results


if __name__ == "__main__":
    main()
