"""The logger encodes and writes on a background thread: nothing it captured is lost.

A training job in a subprocess logs every step to a slow disk (0.3 s per write, so that writes
still wait when the job ends), then ends without `on_train_end`: Ctrl-C (SIGINT), or an
exception out of `fit`. Every step captured before the end is read back complete (weights and
the head-health record), with TensorBoard's real data provider. The job puts Python's own
SIGINT handler back, as a script started with `nohup` or `&` (SIGINT ignored) must.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import callback_helpers as helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOB = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import keras, numpy as np
    from tb_attention_plugin import AttentionLogger

    logdir, ending = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    sequences = keras.Input((8, 4))
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(sequences, sequences,
                                                                 use_causal_mask=True)
    model = keras.Model(sequences, keras.layers.Dense(1)(attended[:, -1]))
    model.compile("adam", "mse")
    examples = np.random.default_rng(0).normal(size=(32, 8, 4)).astype("float32")
    logger = AttentionLogger(logdir, examples[:4], update_freq=1)
    write = logger._writer.write

    def slow_disk_write(*args, **kwargs):
        time.sleep(0.3)
        return write(*args, **kwargs)

    logger._writer.write = slow_disk_write

    class End(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch < 3:
                return
            print("LOGGED", logger._last_logged_step, "WAITING", logger._background.pending,
                  flush=True)
            if ending == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the KeyboardInterrupt lands here
            raise RuntimeError("the training job crashed")

    model.fit(examples, np.zeros((32, 1), "float32"), batch_size=4, epochs=1, verbose=0,
              callbacks=[logger, End()])
""")


@pytest.mark.parametrize("ending", ["sigint", "crash"])
def test_every_captured_step_is_written_when_the_job_ends_without_on_train_end(tmp_path, ending):
    job = subprocess.run([sys.executable, "-c", JOB, str(tmp_path), ending], cwd=REPO,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert job.returncode != 0, job.stdout
    expected = {"sigint": "KeyboardInterrupt", "crash": "the training job crashed"}[ending]
    assert expected in job.stderr, job.stderr[-3000:]
    words = job.stdout.split()
    last_step, waiting = int(words[words.index("LOGGED") + 1]), int(words[-1])
    assert last_step == 4 and waiting >= 1, job.stdout  # writes were still waiting at the end
    attention, _ = helpers.read_logs(tmp_path)
    steps = attention["train"]["mha"]
    assert sorted(steps) == list(range(last_step + 1))
    assert all(step["weights"].shape == (2, 2, 8, 8) for step in steps.values())
    assert sorted(helpers.read_health(tmp_path)["train"]["mha"]) == list(range(last_step + 1))
