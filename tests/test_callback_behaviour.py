"""AttentionLogger behaviour: cadence, coexistence with keras.callbacks.TensorBoard, failures
that must not stop training, restoring layers, limits, mixed precision, other backends."""

import glob
import os
import subprocess
import sys
import textwrap
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callback_helpers as helpers  # noqa: E402
from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin.logger import capture  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_model(attention_layers=None, length=8, vocabulary_size=20):
    """Embedding -> attention layers (each `layer(x, x)`, residual) -> pooled regression."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocabulary_size, 8)(inputs)
    for layer in attention_layers or [keras.layers.MultiHeadAttention(2, 4, name="mha")]:
        x = x + layer(x, x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    return model


def data(count=30, length=8, vocabulary_size=20):
    rng = np.random.default_rng(0)
    return (rng.integers(1, vocabulary_size, size=(count, length)),
            rng.normal(size=(count, 1)).astype("float32"))


def fit_recording_warnings(model, x, y, callbacks, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, verbose=0, callbacks=callbacks, **kwargs)
    return history, [w for w in caught if issubclass(w.category, AttentionLoggerWarning)]


def raw_steps(run_dir):
    """`{tag: [steps in file order]}` of attention events, read event by event."""
    from tensorboard.backend.event_processing import event_file_loader

    steps = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag.endswith("/health"):
                    continue  # head-health records (same plugin), written at the same steps
                if value.metadata.plugin_data.plugin_name == "attention" or (
                    value.tag in steps
                ):
                    steps.setdefault(value.tag, []).append(event.step)
    return steps


# ------------------------------------------------------------------------------ cadence


def test_cadence_with_steps_per_execution_over_two_fit_calls(tmp_path):
    model = small_model()
    model.compile("adam", "mse", steps_per_execution=3)
    x, y = data(30)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=4)
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=3, epochs=1)
    _, caught2 = fit_recording_warnings(model, x, y, [logger], batch_size=3, epochs=1)
    # 10 batches per epoch, run 3 at a time: the optimizer step after each execution is
    # 3, 6, 9, 10 | 13, 16, 19, 20. Logged: 0 (start), the first step past each multiple of 4
    # (6 for 4, 9 for 8, 13 for 12, 16, 20), each epoch end (10, 20), each step once.
    expected = [0, 6, 9, 10, 13, 16, 20]
    assert raw_steps(tmp_path / "train") == {"mha": expected}
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]["mha"]) == expected
    assert not caught and not caught2


def test_coexists_with_keras_tensorboard_update_freq(tmp_path):
    model = small_model()
    x, y = data(20)
    tensorboard = keras.callbacks.TensorBoard(str(tmp_path), update_freq=2)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=3)
    _, caught = fit_recording_warnings(model, x, y, [tensorboard, logger], batch_size=4, epochs=2)
    attention, scalars = helpers.read_logs(tmp_path)
    # Odd steps (3, 9) survive TensorBoard's global record_if(step % 2 == 0).
    assert sorted(attention["train"]["mha"]) == [0, 3, 5, 6, 9, 10]
    assert "epoch_loss" in scalars["train"]  # TensorBoard's own summaries, same run
    assert not caught


# ------------------------------------------------------------------ failures never stop fit


def test_unwritable_log_dir_warns_once_and_training_completes(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the log directory should be")
    model = small_model()
    x, y = data(16)
    logger = AttentionLogger(str(blocker / "logs"), x[:2], update_freq=1)
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "writing attention summaries" in str(caught[0].message)
    assert str(blocker / "logs") in str(caught[0].message)
    helpers.assert_unpatched(model)


class ScoresRefused(keras.layers.MultiHeadAttention):
    """Raises when asked for scores (as flash attention does)."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        if return_attention_scores:
            raise RuntimeError("this layer cannot return scores")
        return super()._compute_attention(query, key, value, attention_mask, training, False,
                                          **kwargs)


class NoScores(keras.layers.MultiHeadAttention):
    """Returns no scores at all."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        output, _ = super()._compute_attention(query, key, value, attention_mask, training,
                                               True, **kwargs)
        return output, None


@pytest.mark.parametrize("run_eagerly", [False, True])
@pytest.mark.parametrize("broken_class, reason", [
    (ScoresRefused, "raised RuntimeError: this layer cannot return scores"),
    (NoScores, "returned no attention scores"),
])
def test_broken_layer_warns_once_others_are_logged(tmp_path, broken_class, reason, run_eagerly):
    layers = [keras.layers.MultiHeadAttention(2, 4, name="good"), broken_class(2, 4, name="bad")]
    model = small_model(layers)
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=1, run_eagerly=run_eagerly)
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "bad" in messages[0] and reason in messages[0], messages
    assert (logger._probe_capture.compiled is None) == run_eagerly
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]) == ["good"]
    assert sorted(attention["train"]["good"]) == list(range(9))
    helpers.assert_unpatched(model)


def test_log_dir_removed_during_training_is_created_again(tmp_path):
    import shutil

    class RemoveLogDir(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                shutil.rmtree(tmp_path / "train")

    model = small_model()
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=2)
    history, caught = fit_recording_warnings(model, x, y, [RemoveLogDir(), logger],
                                             batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "was removed during training" in messages[0], messages
    attention, _ = helpers.read_logs(tmp_path)
    # Steps 0, 2 and 4 went with the removed directory; 6 and 8 are in the new one.
    assert sorted(attention["train"]["mha"]) == [6, 8]


def test_probe_that_does_not_fit_the_model_warns_once(tmp_path):
    model = small_model()
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), np.zeros((2, 3, 3), "int32"), update_freq=1)
    history, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    assert len(caught) == 1 and "capturing attention failed" in str(caught[0].message)
    helpers.assert_unpatched(model)


def test_unreadable_attention_layers_are_named_in_one_warning(tmp_path):
    class HomemadeAttention(keras.layers.Layer):
        def call(self, query, value):
            return query

    model = small_model([keras.layers.MultiHeadAttention(2, 4, name="mha"),
                         HomemadeAttention(name="homemade")])
    x, y = data(8)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=1)
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "homemade (HomemadeAttention)" in messages[0], messages
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]) == ["mha"]


def test_model_without_attention_warns_once(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x, y = data(8)
    logger = AttentionLogger(str(tmp_path), x[:2].astype("float32"), update_freq=1)
    history, caught = fit_recording_warnings(model, x.astype("float32"), y, [logger],
                                             batch_size=4, epochs=2)
    assert len(history.history["loss"]) == 2
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "found no attention layers" in messages[0], messages


# -------------------------------------------------------------------- layers are restored


class InterruptAfterAttention(keras.layers.Layer):
    armed = False

    def call(self, x):
        if InterruptAfterAttention.armed:
            raise KeyboardInterrupt
        return x


def test_layers_restored_after_keyboard_interrupt_in_probe():
    layers = [keras.layers.MultiHeadAttention(2, 4, name="flash", flash_attention=False)]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(inputs)
    x = layers[0](x, x)
    model = keras.Model(inputs, InterruptAfterAttention()(x))
    object.__setattr__(layers[0], "_flash_attention", True)  # as flash_attention=True sets it
    sites, _ = capture.find_attention_layers(model)
    InterruptAfterAttention.armed = True
    try:
        with pytest.raises(KeyboardInterrupt):
            capture.capture_attention(model, np.ones((2, 6), "int32"), sites)
    finally:
        InterruptAfterAttention.armed = False
    helpers.assert_unpatched(model, {id(layers[0]): True})
    # The probe itself ran with flash attention off (scores cannot come out of flash).
    object.__setattr__(layers[0], "_flash_attention", True)
    result = capture.capture_attention(model, np.ones((2, 6), "int32"), sites)
    assert [r.tag for r in result.records] == ["flash"] and not result.problems
    assert layers[0].__dict__["_flash_attention"] is True
    helpers.assert_unpatched(model, {id(layers[0]): True})


def test_layer_selection_by_pattern(tmp_path):
    layers = [keras.layers.MultiHeadAttention(2, 4, name="encoder_attention"),
              keras.layers.MultiHeadAttention(2, 4, name="decoder_attention")]
    model = small_model(layers)
    x, y = data(8)
    logger = AttentionLogger(str(tmp_path), x[:2], layers="decoder*", update_freq="epoch")
    fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]) == ["decoder_attention"]
    assert sorted(attention["train"]["decoder_attention"]) == [0, 2]


# ---------------------------------------------------------------------------------- limits


def test_limits_crop_examples_and_heads_with_a_note_and_keep_every_position(tmp_path):
    model = small_model([keras.layers.MultiHeadAttention(4, 2, name="mha")], length=10)
    x, y = data(8, length=10)
    tokens = [["t%d" % i for i in range(10)]]
    logger = AttentionLogger(str(tmp_path), x[:3], tokens=tokens, max_examples=1, max_heads=2,
                             update_freq="epoch")
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    for text in ("examples 1 of 3", "heads 2 of 4", "max_examples=1", "max_heads=2"):
        assert text in messages[0], messages[0]
    attention, _ = helpers.read_logs(tmp_path)
    for step in attention["train"]["mha"].values():
        header = step["header"]
        assert header["shape"] == [1, 2, 10, 10]
        assert header["query_tokens"] == [tokens[0]]
        reduced = dict(header["reduced"])
        assert reduced.pop("note") in messages[0]
        assert reduced == {"source_shape": [3, 4, 10, 10], "examples": 1, "heads": 2,
                           "tokens": None, "layers": [1, 1], "max_bytes_per_step": 4 * 2**20}


def test_max_tokens_is_gone_and_windows_are_checked(tmp_path):
    x, _ = data(2, length=10)
    with pytest.raises(TypeError, match="max_tokens"):
        AttentionLogger(str(tmp_path), x, max_tokens=6)
    with pytest.raises(ValueError, match="query range"):
        AttentionLogger(str(tmp_path), x, windows={"*": [("w", (0,), (0, 4))]})
    with pytest.raises(TypeError, match="windows must be"):
        AttentionLogger(str(tmp_path), x, windows="last")


def test_named_windows_are_kept_exactly(tmp_path):
    model = small_model([keras.layers.MultiHeadAttention(2, 4, name="mha")], length=10)
    x, y = data(8, length=10)
    logger = AttentionLogger(str(tmp_path), x[:1], update_freq="epoch",
                             windows={"mh*": [("answer", (-3, None), (2, 8))]})
    fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    attention, _ = helpers.read_logs(tmp_path)
    step = attention["train"]["mha"][2]
    header = step["header"]
    assert header["layout"] == "pooled"
    assert {"name": "answer", "query": [7, 10], "key": [2, 8]} in header["windows"]
    _, _, windows = helpers.pooled_parts(header, step["blobs"])
    reference = helpers.references_by_tag(model, x[:1], lambda layer: "mha")["mha"]
    stored = windows["answer"]
    assert np.abs(stored - reference[:, :, 7:10, 2:8]).max() <= encoding.MAX_ERROR + 1e-6


def test_defaults_keep_a_12_layer_12_head_128_token_model_small(tmp_path):
    # Small random kernels give diffuse, high-entropy attention: the hardest case for zlib
    # (trained or larger-kernel heads are peakier and compress better).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((128,), dtype="int32")
    x = keras.layers.Embedding(500, 48)(inputs)
    for i in range(12):
        attention = keras.layers.MultiHeadAttention(
            12, 4, kernel_initializer=keras.initializers.RandomNormal(stddev=0.05),
            name="layer_%d" % i)
        x = keras.layers.LayerNormalization()(x + attention(x, x))
    model = keras.Model(inputs, x)
    model.compile("adam", "mse")
    probe, _ = data(4, length=128, vocabulary_size=500)
    logger = AttentionLogger(str(tmp_path), probe)
    logger.set_model(model)
    logger.on_train_begin()
    logger.on_train_end()
    files = glob.glob(str(tmp_path / "train" / "events.out.tfevents.*"))
    size = sum(os.path.getsize(f) for f in files)
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]) == sorted("layer_%d" % i for i in range(12))
    # Two examples could take up to 4.5 MiB (1 byte per value): the 4 MiB budget keeps one.
    assert attention["train"]["layer_11"][0]["header"]["shape"] == [1, 12, 128, 128]
    print("bytes per logged step, 12 layers x 12 heads x 128 tokens x 1 example: %d" % size)
    assert size < 4 * 2**20


# ------------------------------------------------------------------------ mixed precision


def test_mixed_precision_scores_are_float32(tmp_path):
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = small_model()
        x, y = data(8)
        logger = AttentionLogger(str(tmp_path), x[:2], update_freq="epoch")
        _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
        references = helpers.references_by_tag(model, x[:2], lambda layer: layer.path)
    finally:
        keras.config.set_dtype_policy(policy)
    assert not caught
    attention, _ = helpers.read_logs(tmp_path)
    step = attention["train"]["mha"][2]
    assert step["header"]["source_dtype"] == "float32"
    helpers.check_against_reference(step["weights"], references["mha"], "mha")


# ---------------------------------------------------------------------- argument checking


@pytest.mark.parametrize("kwargs, message", [
    ({"probe": None}, "probe is required"),
    ({"update_freq": 0}, "update_freq must be a positive integer"),
    ({"max_examples": 0}, "max_examples must be a positive integer"),
    ({"token_roles": {"*": ("source", "nope")}}, "token_roles"),
    ({"vocabulary": ["a", "b"], "probe": np.zeros((2, 4, 4, 3), "float32")},
     "holds no integer token-id array"),
    ({"images": np.zeros((2, 4, 4, 5))}, r"images must have shape \[batch, height, width"),
    ({"images": np.zeros((1, 4, 4, 3))}, "images holds 1 examples, the probe logs 2"),
    ({"update_freq": "steps"}, "update_freq must be a positive integer"),
    ({"update_freq": True}, "update_freq must be a positive integer"),
    ({"tokens": {"encoder": ["a", "b", "c", "d"]}},
     'tokens as a dict takes the keys "source" and "target"'),
    ({"vocabulary": {"source": ["a"], "decoder": ["b"]}},
     'vocabulary as a dict takes the keys "source" and "target"'),
    ({"prefix_tokens": -1}, "prefix_tokens must be a non-negative integer"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    arguments = {"log_dir": "logs", "probe": np.zeros((2, 4), "int32")}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AttentionLogger(**arguments)


def test_update_freq_names_and_the_warning_class_without_keras():
    probe = np.zeros((2, 4), "int32")
    assert AttentionLogger("logs", probe, update_freq="batch").options.update_steps == 1
    assert AttentionLogger("logs", probe, update_freq="epoch").options.update_steps is None
    assert AttentionLogger(probe=probe).options.run_dir == os.path.join("logs", "train")
    # The warning class is public and importing it does not import Keras or TensorFlow.
    code = ("import sys, tb_attention_plugin as tba;"
            "assert issubclass(tba.AttentionLoggerWarning, UserWarning);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120).stdout
    assert imported.strip() == "[]"


# ------------------------------------------------------------------------- other backends

BACKEND_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, keras
    from tb_attention_plugin import AttentionLogger
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(inputs)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x, use_causal_mask=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    x = np.random.randint(1, 20, (8, 6)); y = np.zeros((8, 1), "float32")
    before = model.predict(x, verbose=0)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[AttentionLogger(sys.argv[1], x[:2], update_freq=1)])
    assert not [k for k in model.get_layer("mha").__dict__ if k in ("call", "_compute_attention")]
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_write_without_tensorflow(tmp_path, backend):
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        pytest.skip("the %s package is not installed in this environment" % backend)
    environment = dict(os.environ, KERAS_BACKEND=backend)
    subprocess.run([sys.executable, "-c", BACKEND_SCRIPT, str(tmp_path)], check=True,
                   cwd=REPO, env=environment, timeout=300)
    attention, _ = helpers.read_logs(tmp_path)
    steps = attention["train"]["mha"]
    assert sorted(steps) == [0, 1, 2, 3, 4]
    helpers.assert_causal(steps[4]["weights"], "mha")


# ------------------------------------------------------- saving, roles, images, other writer


def test_model_checkpoint_and_saving_are_unaffected(tmp_path):
    model = small_model()
    x, y = data(16)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "model.keras"))
    logger = AttentionLogger(str(tmp_path / "logs"), x[:2], update_freq=1)
    _, caught = fit_recording_warnings(model, x, y, [logger, checkpoint], batch_size=4,
                                       epochs=2)
    assert not caught
    restored = keras.saving.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    helpers.assert_unpatched(restored)
    model.save(str(tmp_path / "again.keras"))
    again = keras.saving.load_model(str(tmp_path / "again.keras"))
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_token_roles_override_and_tokens_that_do_not_fit(tmp_path):
    layers = [keras.layers.MultiHeadAttention(2, 4, name="first"),
              keras.layers.MultiHeadAttention(2, 4, name="second")]
    model = small_model(layers, length=4)
    x, y = data(8, length=4)
    source, target = ["s0", "s1", "s2", "s3"], ["t0", "t1", "t2", "t3"]
    logger = AttentionLogger(str(tmp_path), x[:1], tokens={"source": source, "target": target},
                             token_roles={"sec*": ("target", "source")}, update_freq="epoch")
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    assert not caught
    attention, _ = helpers.read_logs(tmp_path)
    first = attention["train"]["first"][2]["header"]
    second = attention["train"]["second"][2]["header"]
    assert (first["query_tokens"], first["key_tokens"]) == ([source], [source])
    assert (second["query_tokens"], second["key_tokens"]) == ([target], [source])

    logger = AttentionLogger(str(tmp_path / "short"), x[:1], tokens=["only", "three", "tokens"],
                             update_freq="epoch")
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 4, messages  # one per (layer, axis)
    assert "first: tokens has 3 entries but the attention axis has 4" in messages[0]
    attention, _ = helpers.read_logs(tmp_path / "short")
    assert attention["train"]["first"][4]["header"]["query_tokens"] is None


def test_given_patch_grid_for_a_non_square_image(tmp_path):
    keras.utils.set_random_seed(0)
    images = keras.Input((8, 16, 3))
    x = keras.layers.Conv2D(8, 4, strides=4)(images)  # 2 x 4 patches, no class token
    x = keras.layers.Reshape((8, 8))(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="patches")(x, x)
    model = keras.Model(images, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 8, 16, 3)).astype("uint8")
    logger = AttentionLogger(str(tmp_path), pixels[:2].astype("float32"), images=pixels[:2],
                             image_grid=(2, 4), update_freq="epoch")
    _, caught = fit_recording_warnings(model, pixels.astype("float32"), np.zeros((4, 1)),
                                       [logger], batch_size=2, epochs=1)
    assert not caught
    attention, _ = helpers.read_logs(tmp_path)
    step = attention["train"]["patches"][2]
    assert step["header"]["image"] == {"grid": [2, 4], "prefix_tokens": 0, "width": 16,
                                       "height": 8}
    np.testing.assert_array_equal(step["images"][1], pixels[1])


def test_new_optimizer_going_back_in_steps_warns_once_and_never_repeats_a_step(tmp_path):
    model = small_model()
    x, y = data(16)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=2)
    fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    model.compile("adam", "mse")  # a new optimizer: its step starts at 0 again
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=3)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "went back to 0" in messages[0], messages
    steps = raw_steps(tmp_path / "train")["mha"]
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps


def test_writer_without_tensorflow_writes_the_same_summaries(tmp_path):
    # JAX and PyTorch runs write through AttentionWriter; exercise that path directly.
    model = small_model()
    x, _ = data(4)
    logger = AttentionLogger(str(tmp_path), x[:2], tokens=[["w"] * 8], statistics=True)
    logger.set_model(model)
    records = capture.capture_attention(model, x[:2], capture.find_attention_layers(model)[0])
    items = logger._summary_items(records.records)
    logger._writer.write_plain(items, {"mha/entropy/head_0": 0.5}, step=7)
    logger.on_train_end()
    attention, scalars = helpers.read_logs(tmp_path)
    step = attention["train"]["mha"][7]
    assert step["header"]["key_tokens"] == [["w"] * 8, ["w"] * 8]
    np.testing.assert_allclose(step["weights"], records.records[0].scores, atol=2e-3)
    assert scalars["train"]["mha/entropy/head_0"] == [(7, 0.5)]
