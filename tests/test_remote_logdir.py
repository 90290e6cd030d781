"""Log directories that are not on the local disk, and names and sizes the readers cannot take.

`ram://` (TensorFlow's in-memory filesystem) stands in for `gs://` and `s3://`: it goes through
`tf.io.gfile` exactly as they do, and `os.path` knows nothing of it. Without TensorFlow,
TensorBoard's stub gfile serves fsspec protocols: `memory://` stands in there. Every capture is
read back with TensorBoard's own reader (its data provider over `EventMultiplexer`).
"""

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import callback_helpers as helpers  # noqa: E402
import tb_attention_plugin as tba  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin import names  # noqa: E402
from tb_attention_plugin import AttentionLogger  # noqa: E402
from test_callback_behaviour import data, fit_recording_warnings, small_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_counter = itertools.count()


@pytest.fixture
def ram_logdir():
    """A fresh `ram://` log directory, removed afterwards (the filesystem lives per process)."""
    root = "ram://logs_%d_%d" % (os.getpid(), next(_counter))
    yield root
    if tf.io.gfile.exists(root):
        tf.io.gfile.rmtree(root)


def event_files(run_dir):
    return tf.io.gfile.glob(run_dir + "/events.out.tfevents.*")


def uniform(batch, heads, tq, tk):
    return np.full((batch, heads, tq, tk), 1.0 / tk, np.float32)


# ------------------------------------------------------------------------ ram:// log dirs


def test_callback_on_a_remote_log_dir_keeps_one_event_file_and_never_warns(ram_logdir):
    model = small_model()
    x, y = data(16)
    logger = AttentionLogger(ram_logdir, x[:2], update_freq=2)
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=3)
    assert not caught, [str(w.message) for w in caught]
    # One training session, one file: a second fit() call goes on writing into it.
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    assert not caught, [str(w.message) for w in caught]
    assert len(event_files(ram_logdir + "/train")) == 1
    attention, _ = helpers.read_logs(ram_logdir)
    assert sorted(attention["train"]["mha"]) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    probe = x[:2]
    reference = helpers.references_by_tag(model, probe, lambda layer: layer.path)["mha"]
    helpers.check_against_reference(attention["train"]["mha"][16]["weights"], reference, "mha")


def test_summary_op_on_a_remote_log_dir_eager_and_in_tf_function(ram_logdir):
    writer = tf.summary.create_file_writer(ram_logdir + "/run")
    weights = uniform(2, 2, 3, 3)

    @tf.function
    def traced(step):
        with writer.as_default(step=step):
            return tba.attention("traced", tf.constant(weights), query_tokens=["a", "b", "c"])

    with writer.as_default():
        for step in range(3):
            assert tba.attention("eager", weights, step=step, key_tokens=["x", "y", "z"])
    for step in range(3):
        assert bool(traced(tf.constant(step, tf.int64)))
    writer.close()
    assert len(event_files(ram_logdir + "/run")) == 1
    attention, _ = helpers.read_logs(ram_logdir)
    assert {tag: sorted(steps) for tag, steps in attention["run"].items()} == {
        "eager": [0, 1, 2], "traced": [0, 1, 2]}
    np.testing.assert_allclose(attention["run"]["traced"][2]["weights"], weights, atol=2e-3)
    assert attention["run"]["eager"][1]["header"]["key_tokens"] == [["x", "y", "z"]] * 2


def test_writer_on_a_remote_log_dir(ram_logdir):
    with tba.AttentionWriter(ram_logdir + "/run") as writer:
        for step in range(3):
            writer.attention("mha", uniform(1, 2, 4, 4), step)
        writer.scalar("loss", 0.5, 2)
    assert len(event_files(ram_logdir + "/run")) == 1
    attention, scalars = helpers.read_logs(ram_logdir)
    assert sorted(attention["run"]["mha"]) == [0, 1, 2]
    assert scalars["run"]["loss"] == [(2, 0.5)]


# Without TensorFlow: TensorBoard's stub gfile, memory:// through fsspec. `tensorflow` is made
# unimportable before anything else runs, so nothing can reach it.
WITHOUT_TENSORFLOW = textwrap.dedent("""
    import json, os, sys, warnings
    sys.modules["tensorflow"] = None  # import tensorflow -> ImportError
    sys.path.insert(0, {tests!r})
    import numpy as np
    import tb_attention_plugin as tba
    from tb_attention_plugin import fs
    root = "memory://logs"
    with tba.AttentionWriter(root + "/writer") as writer:
        for step in range(3):
            writer.attention("mha", np.full((1, 2, 4, 4), 0.25, "float32"), step)
    result = {{"gfile": fs.gfile().__name__}}
    if {with_keras!r}:
        import keras
        from test_callback_behaviour import data, fit_recording_warnings, small_model
        from tb_attention_plugin import AttentionLogger
        # A quote in a layer name: TensorFlow refuses it in name scopes, JAX trains with it.
        model = small_model([keras.layers.MultiHeadAttention(2, 4, name="mha"),
                             keras.layers.MultiHeadAttention(2, 4, name='say "hi"')])
        x, y = data(8)
        _, caught = fit_recording_warnings(
            model, x, y, [AttentionLogger(root, x[:2], update_freq=1)], batch_size=4, epochs=2)
        result["warnings"] = [str(w.message) for w in caught]
        result["backend"] = keras.backend.backend()
    import callback_helpers as helpers
    attention, _ = helpers.read_logs(root)
    result["steps"] = {{run: {{tag: sorted(steps) for tag, steps in tags.items()}}
                       for run, tags in attention.items()}}
    result["files"] = {{run: len(fs.glob(root + "/" + run + "/events.out.tfevents.*"))
                       for run in attention}}
    result["tensorflow_imported"] = sorted(m for m in sys.modules
                                          if m.startswith("tensorflow") and sys.modules[m])
    print("RESULT " + json.dumps(result))
""")


def run_without_tensorflow(with_keras, backend="jax"):
    script = WITHOUT_TENSORFLOW.format(tests=os.path.join(REPO, "tests"), with_keras=with_keras)
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_writer_without_tensorflow_writes_to_an_fsspec_url():
    pytest.importorskip("fsspec")
    result = run_without_tensorflow(with_keras=False)
    assert result["gfile"].startswith("tensorboard.compat.tensorflow_stub")
    assert result["steps"] == {"writer": {"mha": [0, 1, 2]}}
    assert result["files"] == {"writer": 1}
    assert result["tensorflow_imported"] == []


def test_callback_on_jax_without_tensorflow_writes_to_an_fsspec_url():
    pytest.importorskip("fsspec")
    pytest.importorskip("jax")
    result = run_without_tensorflow(with_keras=True, backend="jax")
    assert result["backend"] == "jax"
    # The one warning: the layer whose path TensorBoard's data server could not read back.
    assert len(result["warnings"]) == 1, result["warnings"]
    assert """'say "hi"' -> 'say _hi_'""" in result["warnings"][0]
    assert result["steps"] == {"writer": {"mha": [0, 1, 2]},
                               "train": {"mha": [0, 1, 2, 3, 4], "say _hi_": [0, 1, 2, 3, 4]}}
    assert result["files"] == {"writer": 1, "train": 1}
    assert result["tensorflow_imported"] == []


def test_removed_local_run_dir_is_still_recovered_but_remote_paths_are_never_checked():
    from tb_attention_plugin import fs

    assert fs.vanished("/no/such/directory/anywhere")
    assert fs.vanished("file:///no/such/directory/anywhere")
    assert not fs.vanished(REPO)
    assert not fs.vanished("gs://bucket/no/such/prefix")  # no network round trip either
    assert fs.join("gs://bucket/logs", "train") == "gs://bucket/logs/train"
    assert fs.join("logs", "train") == os.path.join("logs", "train")


# ------------------------------------------------------ names the data server cannot read


BAD_NAMES = ['say "hi"', "back\\slash", "tab\there", "nul\x00"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_summary_op_and_writer_refuse_unreadable_tags(tmp_path, name):
    writer = tf.summary.create_file_writer(str(tmp_path / "op"))
    with writer.as_default(), pytest.raises(ValueError, match="cannot read back"):
        tba.attention(name, uniform(1, 1, 2, 2), step=0)
    with tba.AttentionWriter(tmp_path / "plain") as plain:
        with pytest.raises(ValueError, match="cannot read back") as error:
            plain.attention(name, uniform(1, 1, 2, 2), 0)
        assert repr(name) in str(error.value)
        plain.attention("fine", uniform(1, 1, 2, 2), 0)  # the writer stays usable
    attention, _ = helpers.read_logs(tmp_path)
    assert attention == {"plain": {"fine": attention["plain"]["fine"]}}


def test_summary_op_checks_the_tag_with_its_name_scopes(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(), tf.name_scope("fine"):
        assert tba.attention("ok", uniform(1, 1, 2, 2), step=0)
    attention, _ = helpers.read_logs(tmp_path)
    assert list(attention["."]) == ["fine/ok"]


def test_writer_and_callback_refuse_unreadable_run_directories(tmp_path):
    with pytest.raises(ValueError, match="run directory component 'run\"1'"):
        tba.AttentionWriter(tmp_path / 'run"1')
    with pytest.raises(ValueError, match=re.escape("run directory component %r" % "logs\\x")):
        AttentionLogger(str(tmp_path / "logs\\x"), np.zeros((2, 8), "int32"))
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------- token length, image size


def test_long_tokens_are_truncated_with_a_mark(tmp_path):
    long_token = "x" * 10000
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("mha", uniform(1, 1, 2, 2), 0, query_tokens=[long_token, "b"],
                         key_tokens=["a" * encoding.MAX_TOKEN_CHARS, "b"])
    header = helpers.read_logs(tmp_path)[0]["run"]["mha"][0]["header"]
    stored = header["query_tokens"][0][0]
    assert len(stored) == encoding.MAX_TOKEN_CHARS and stored.endswith("\u2026")
    assert stored[:-1] == long_token[: encoding.MAX_TOKEN_CHARS - 1]
    assert header["key_tokens"][0][0] == "a" * encoding.MAX_TOKEN_CHARS  # at the limit: kept


def test_images_over_the_size_bound_are_a_clear_error(tmp_path):
    side = 2049  # just over 2048 x 2048 pixels
    big = np.zeros((1, side, side, 1), np.uint8)
    with tba.AttentionWriter(tmp_path / "run") as writer:
        with pytest.raises(ValueError, match="2049x2049 pixels; at most 4194304"):
            writer.attention("vit", uniform(1, 1, 5, 5), 0, images=big, image_grid=(2, 2))
        writer.attention("vit", uniform(1, 1, 5, 5), 0, images=big[:, :2048, :2048],
                         image_grid=(2, 2))
    with pytest.raises(ValueError, match="at most 4194304 pixels"):
        AttentionLogger(str(tmp_path / "logs"), np.zeros((1, 4, 4, 3), "float32"),
                        images=np.zeros((1, 1, 9000, 3), "float32"))
