"""What the Keras demos (`demo.translation`, `demo.vision`) share: sizes, the logged fit, the
result file and the command line.

Example, inside a demo's `train`:

```python
settings = training.sized_settings(SIZES, small, epochs)
...
seconds = training.fit_logged(model, run_dir, x, y, (test_x, test_y), settings, verbose,
                              probe=probe, update_freq=50, max_examples=4)
return training.write_result(run_dir, settings, learning_rate, seed, seconds, 4,
                             test_accuracy=0.9)
```
"""

import argparse
import json
import time


def sized_settings(sizes, small, epochs):
    """A copy of `sizes["small"]` or `sizes["full"]`, with `epochs` instead when it is given."""
    settings = dict(sizes["small" if small else "full"])
    if epochs is not None:
        settings["epochs"] = epochs
    return settings


def fit_logged(model, run_dir, inputs, targets, validation_data, settings, verbose,
               **logger_options):
    """Fits `model`, logging to `run_dir`, and saves it as `<run_dir>/model.keras`.

    `keras.callbacks.TensorBoard` logs the loss per epoch and
    `AttentionLogger(run_dir, **logger_options)` the attention. `inputs` may be a dataset of
    `(inputs, targets)` batches (then `targets` is None), taken in its order. Returns the
    training seconds.
    """
    import keras

    import tb_attention_plugin

    callbacks = [
        keras.callbacks.TensorBoard(str(run_dir), update_freq="epoch"),
        tb_attention_plugin.AttentionLogger(str(run_dir), **logger_options),
    ]
    started = time.monotonic()
    batched = targets is None  # a dataset: its own batches, in its order
    model.fit(
        inputs,
        targets,
        validation_data=validation_data,
        batch_size=None if batched else settings["batch_size"],
        epochs=settings["epochs"],
        callbacks=callbacks,
        verbose=verbose,
        shuffle=not batched,
    )
    seconds = time.monotonic() - started
    model.save(run_dir / "model.keras")
    return seconds


def write_result(run_dir, settings, learning_rate, seed, seconds, probe_examples, **measured):
    """Writes the run's settings and `measured` figures as `<run_dir>/result.json`; returns them."""
    result = dict(settings, learning_rate=learning_rate, seed=seed, train_seconds=seconds,
                  probe_examples=probe_examples, **measured)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def parse_args(argv, description, run_name, probe_help, learning_rate=1e-3):
    """The demo command line: `--logdir`, `--run-name` (default `run_name`), `--epochs`,
    `--small`, `--learning-rate` (default `learning_rate`), `--probe-examples` (described by
    `probe_help`) and `--seed`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--logdir", default="logs", help="TensorBoard log root")
    parser.add_argument("--run-name", default=run_name, help="run directory under --logdir")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs")
    parser.add_argument("--small", action="store_true", help="reduced size (CI)")
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--probe-examples", type=int, default=4, help=probe_help)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def train_from_args(train, args, describe=lambda result: ""):
    """Calls a demo's `train` with the parsed command line `args` and prints how it went.

    The printed line ends with `describe(result)`, e.g. `", test accuracy 0.950"`. Returns the
    result dictionary.
    """
    result = train(args.logdir, args.run_name, args.epochs, args.small, args.learning_rate,
                   args.probe_examples, args.seed)
    print("trained %s in %.1f s%s" % (args.run_name, result["train_seconds"], describe(result)))
    return result
