"""AttentionLogger under faults not covered by test_callback_behaviour.py (which has the
unwritable and the removed log directory): a full disk, layers whose scores turn NaN or fail
once, and a real Ctrl-C (SIGINT) in the middle of a capture, eager or while the probe is traced.

Training goes on (or stops, for Ctrl-C, as the user asked), the model is left unpatched, and
every capture already written reads back through TensorBoard's data provider.
"""

import contextlib
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callback_helpers as helpers  # noqa: E402
from tb_attention_plugin import AttentionLogger  # noqa: E402
from test_callback_behaviour import data, fit_recording_warnings, small_model  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))


def assert_probabilities(attention, run="train"):
    """Every logged step holds rows that sum to 1 (the data is real scores, not debris)."""
    for tag, steps in attention[run].items():
        for step, logged in steps.items():
            sums = np.nansum(logged["weights"], axis=-1)
            assert np.allclose(sums, 1, atol=0.02), (tag, step)


# --------------------------------------------------------------------------- the disk fills

CHILD_TRAINING = textwrap.dedent("""
    import json, os, resource, signal, sys
    sys.path.insert(0, {tests!r})
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if {file_size_limit!r}:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit!r}, {file_size_limit!r}))
    import callback_helpers as helpers
    from tb_attention_plugin import AttentionLogger
    from test_callback_behaviour import data, fit_recording_warnings, small_model
    model = small_model()
    x, y = data(16)
    logger = AttentionLogger({log_dir!r}, x[:2], update_freq=1)
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=3)
    helpers.assert_unpatched(model)
    print(json.dumps({{"epochs": len(history.history["loss"]),
                      "warnings": [str(w.message) for w in caught]}}))
""")


@contextlib.contextmanager
def small_disk(size_bytes):
    """`(path, file_size_limit)`: a tmpfs of `size_bytes` where mounting is allowed (root), else a
    plain folder and a file size limit of `size_bytes` for the training process."""
    path = tempfile.mkdtemp(prefix="tb-attention-full-")
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%d" % size_bytes, "tmpfs", path],
        capture_output=True, timeout=30).returncode == 0
    try:
        yield path, None if mounted else size_bytes
    finally:
        if mounted:
            subprocess.run(["umount", path], check=True, timeout=30)
        shutil.rmtree(path, ignore_errors=True)


def test_full_disk_warns_once_training_completes_and_written_steps_read_back():
    with small_disk(4096) as (disk, file_size_limit):
        log_dir = os.path.join(disk, "logs")
        script = CHILD_TRAINING.format(tests=TESTS, file_size_limit=file_size_limit, log_dir=log_dir)
        child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert child.returncode == 0, child.stderr[-3000:]
        result = json.loads(child.stdout.strip().splitlines()[-1])
        assert result["epochs"] == 3
        assert len(result["warnings"]) == 1, result["warnings"]
        assert "writing attention summaries" in result["warnings"][0]
        assert "training goes on" in result["warnings"][0]
        attention, _ = helpers.read_logs(log_dir)
        steps = sorted(attention["train"]["mha"])
        # The first captures fit on the disk and read back whole; the rest was refused.
        assert len(steps) >= 2 and steps == list(range(len(steps))) and steps[-1] < 12, steps
        assert_probabilities(attention)


# ----------------------------------------------------------------------- broken layers


class NaNScores(keras.layers.MultiHeadAttention):
    """Scores turn NaN (a diverged layer) after its first `nan_from` captures."""

    calls = 0
    nan_from = 0

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        output, scores = super()._compute_attention(query, key, value, attention_mask, training,
                                                    return_attention_scores, **kwargs)
        if return_attention_scores:
            NaNScores.calls += 1
            if NaNScores.calls > NaNScores.nan_from:
                scores = scores * float("nan")
        return output, scores


class FailsOnce(keras.layers.MultiHeadAttention):
    """Raises on its second capture only (a transient failure)."""

    calls = 0

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        if return_attention_scores:
            FailsOnce.calls += 1
            if FailsOnce.calls == 2:
                raise RuntimeError("transient failure")
        return super()._compute_attention(query, key, value, attention_mask, training,
                                          return_attention_scores, **kwargs)


def test_nan_scores_of_the_first_layer_cost_only_that_layer(tmp_path):
    NaNScores.calls, NaNScores.nan_from = 0, 4
    model = small_model([NaNScores(2, 4, name="diverged"),
                         keras.layers.MultiHeadAttention(2, 4, name="healthy")])
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=2, run_eagerly=True)
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "cannot log diverged" in messages[0] and "NaN" in messages[0], messages
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]["healthy"]) == [0, 2, 4, 6, 8]
    # The diverged layer is logged while its scores were finite (4 captures), then left out.
    assert sorted(attention["train"]["diverged"]) == [0, 2, 4, 6]
    assert_probabilities(attention)
    helpers.assert_unpatched(model)


def test_transient_layer_failure_warns_once_and_other_layers_keep_logging(tmp_path):
    FailsOnce.calls = 0
    model = small_model([FailsOnce(2, 4, name="flaky"),
                         keras.layers.MultiHeadAttention(2, 4, name="steady")])
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=1, run_eagerly=True)
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "flaky" in messages[0] and "transient failure" in messages[0]
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]["steady"]) == list(range(9))
    assert sorted(attention["train"]["flaky"]) == [0]  # named in the warning, then skipped
    assert_probabilities(attention)
    helpers.assert_unpatched(model)


# ----------------------------------------------------------------------- Ctrl-C (SIGINT)


class CtrlC(keras.layers.MultiHeadAttention):
    """Sends this process a real SIGINT from inside the probe pass, on its `at`-th scores call."""

    calls = 0
    at = None

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        if return_attention_scores:
            CtrlC.calls += 1
            if CtrlC.calls == CtrlC.at:
                os.kill(os.getpid(), signal.SIGINT)
        return super()._compute_attention(query, key, value, attention_mask, training,
                                          return_attention_scores, **kwargs)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt during the test, whatever the harness set.

    Python installs `signal.default_int_handler` only when SIGINT is not ignored at start-up;
    `nohup` and `cmd &` in a non-interactive shell start the suite with SIGINT ignored, so the
    test installs the handler it needs (on the main thread, where pytest runs tests) and puts
    the harness's back afterwards.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("run_eagerly, interrupt_at, logged_before", [
    (True, 4, [0, 1, 2]),  # eager probe: the 4th capture is interrupted
    (False, 1, []),        # traced probe: interrupted while tracing, at the very first capture
])
def test_ctrl_c_mid_capture_stops_training_and_leaves_a_clean_model(tmp_path, run_eagerly,
                                                                     interrupt_at, logged_before,
                                                                     ctrl_c_raises):
    CtrlC.calls, CtrlC.at = 0, interrupt_at
    model = small_model([CtrlC(2, 4, name="mha")])
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=1, run_eagerly=run_eagerly)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[logger])
    helpers.assert_unpatched(model)
    if logged_before:
        attention, _ = helpers.read_logs(tmp_path)
        assert sorted(attention["train"]["mha"]) == logged_before
        assert_probabilities(attention)
    else:
        assert not os.path.exists(tmp_path / "train") or helpers.read_logs(tmp_path)[0] == {}
    # The user trains on: the same logger and model log again from where the optimizer is.
    CtrlC.at = None
    step = int(np.asarray(model.optimizer.iterations.value))
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    assert len(history.history["loss"]) == 1 and not caught, [str(w.message) for w in caught]
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]["mha"]) == sorted(set(logged_before) | set(range(step, step + 5)))
    assert_probabilities(attention)
    helpers.assert_unpatched(model)
