"""AttentionLogger under distributed training, with real strategies and real processes.

- TensorFlow `MirroredStrategy` over two logical CPU devices;
- `keras.distribution.DataParallel` and a `ModelParallel` layout on JAX over two host devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`);
- two JAX processes on localhost (`jax.distributed.initialize`, gloo CPU collectives) each
  running `model.fit` with the callback on one log directory: weights replicated or sharded over
  both processes (the probe pass is a collective: both run it, process 0 writes) and a whole
  model per process (process 1 skips the probe);
- two PyTorch processes under `torch.distributed` (gloo): rank 0 writes.

In every case each `(tag, step)` is written once, into one event file, and the stored scores
equal the layer's own `return_attention_scores=True` on an undistributed copy of the model.
Device layouts must be set before a backend starts, so each case runs in fresh processes.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import callback_helpers as helpers  # noqa: E402
from tb_attention_plugin import AttentionLogger  # noqa: E402
from tb_attention_plugin.logger import distribution  # noqa: E402
from test_callback_behaviour import data, fit_recording_warnings, raw_steps  # noqa: E402
from test_callback_behaviour import small_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")

# Shared head of every child: the tests' helpers, a check against an undistributed copy.
CHILD_HEAD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
""")

CHECK = textwrap.dedent("""
    def check(weights, run_dir, probe):
        # The last capture (epoch end) against the layer's own scores, undistributed.
        import keras
        import callback_helpers as helpers
        from test_callback_behaviour import small_model
        plain = small_model()
        plain.set_weights(weights)
        reference = helpers.references_by_tag(plain, probe, lambda layer: layer.path)["mha"]
        steps = helpers.read_logs(run_dir)[0]["train"]["mha"]
        last = steps[max(steps)]["weights"]
        helpers.check_against_reference(last, reference, "mha")
        return list(last.shape)
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(script, args, backend, extra_env=None):
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                       **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-c", script] + [str(a) for a in args], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(processes, timeout=900):
    """Waits for every process; returns their RESULT objects (kills all on a failure)."""
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            assert process.returncode == 0, err[-4000:]
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert lines, (out[-2000:], err[-2000:])
            results.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def assert_each_step_once(run_dir, expected_steps):
    files = [name for name in os.listdir(run_dir) if name.startswith("events.out.tfevents.")]
    assert len(files) == 1, files
    steps = raw_steps(run_dir)
    assert steps == {"mha": expected_steps}, steps


# ------------------------------------------------------------- TensorFlow: MirroredStrategy

MIRRORED = (CHILD_HEAD + CHECK + textwrap.dedent("""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from test_callback_behaviour import data, fit_recording_warnings, small_model
    from tb_attention_plugin import AttentionLogger
    logdir = sys.argv[1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = data(16)
    probe = x[:2]
    result = {{"replicas": strategy.num_replicas_in_sync}}
    for name in ("traced", "eager"):
        with strategy.scope():
            model = small_model()
        logger = AttentionLogger(os.path.join(logdir, name), probe, update_freq=2,
                                 run_eagerly=name == "eager")
        _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=8, epochs=2)
        result[name] = {{"shape": check(model.get_weights(), os.path.join(logdir, name), probe),
                        "warnings": [str(w.message) for w in caught]}}
    print("RESULT " + json.dumps(result), flush=True)
""")).format(tests=TESTS)


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    (result,) = finish([start(MIRRORED, [tmp_path], "tensorflow")])
    assert result["replicas"] == 2
    for name in ("traced", "eager"):
        assert result[name] == {"shape": [2, 2, 8, 8], "warnings": []}
        # 16 examples in batches of 8: steps 1, 2 | 3, 4; captures at 0, 2 (cadence), 4.
        assert_each_step_once(tmp_path / name / "train", [0, 2, 4])


# ------------------------------------------------- JAX: keras.distribution, one and two processes

JAX_LAYOUTS = textwrap.dedent("""
    import keras
    def distributions(multi_process):
        devices = keras.distribution.list_devices()
        mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
        layout = keras.distribution.LayoutMap(mesh)
        for part in ("query", "key", "value"):  # heads split over the two devices
            layout["mha/%s/kernel" % part] = (None, "model", None)
        # Across processes each process feeds its own part of the batch.
        shard = {{"auto_shard_dataset": False}} if multi_process else {{}}
        return [("data_parallel", keras.distribution.DataParallel(devices=devices, **shard)),
                ("model_parallel", keras.distribution.ModelParallel(
                    layout_map=layout, batch_dim_name="batch", **shard))]
""")

JAX_DEVICES = (CHILD_HEAD + CHECK + JAX_LAYOUTS + textwrap.dedent("""
    import jax
    from test_callback_behaviour import data, fit_recording_warnings, small_model
    from tb_attention_plugin import AttentionLogger
    logdir = sys.argv[1]
    x, y = data(8)
    probe = x[:2]
    result = {{"devices": len(jax.devices())}}
    for name, layout in distributions(False):
        keras.distribution.set_distribution(layout)
        model = small_model()
        logger = AttentionLogger(os.path.join(logdir, name), probe, update_freq=2)
        _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
        kernel = model.get_layer("mha")._query_dense.kernel.value
        weights = model.get_weights()
        keras.distribution.set_distribution(None)
        result[name] = {{"shape": check(weights, os.path.join(logdir, name), probe),
                        "warnings": [str(w.message) for w in caught],
                        "kernel_devices": len(kernel.sharding.device_set),
                        "kernel_split": not kernel.is_fully_replicated}}
    print("RESULT " + json.dumps(result), flush=True)
""")).format(tests=TESTS)


def test_jax_data_and_model_parallel_over_two_host_devices(tmp_path):
    pytest.importorskip("jax")
    (result,) = finish([start(JAX_DEVICES, [tmp_path], "jax",
                              {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})])
    assert result["devices"] == 2
    assert result["data_parallel"] == {"shape": [2, 2, 8, 8], "warnings": [],
                                       "kernel_devices": 2, "kernel_split": False}
    # The heads' weights live half on each device: the scores are gathered from both.
    assert result["model_parallel"] == {"shape": [2, 2, 8, 8], "warnings": [],
                                        "kernel_devices": 2, "kernel_split": True}
    for name in ("data_parallel", "model_parallel"):
        assert_each_step_once(tmp_path / name / "train", [0, 2])


JAX_PROCESS = (CHILD_HEAD + CHECK + JAX_LAYOUTS + textwrap.dedent("""
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    process, port, logdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(coordinator_address="127.0.0.1:" + port, num_processes=2,
                               process_id=process)
    from jax.experimental import multihost_utils
    gathers = []
    allgather = multihost_utils.process_allgather
    def counting_allgather(*args, **kwargs):  # counts, then the real collective
        gathers.append(1)
        return allgather(*args, **kwargs)
    multihost_utils.process_allgather = counting_allgather
    from test_callback_behaviour import data, fit_recording_warnings, small_model
    from tb_attention_plugin import AttentionLogger
    from tb_attention_plugin.logger import distribution
    x, y = data(8)
    probe = x[:2]
    result = {{}}
    for name, layout in distributions(True) + [("whole_model_each", None)]:
        keras.distribution.set_distribution(layout)
        model = small_model()
        logger = AttentionLogger(os.path.join(logdir, name), probe, update_freq=2)
        before = len(gathers)
        _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
        probe_gathers = len(gathers) - before
        weights = [distribution.to_numpy(v.value) for v in model.weights]  # a collective too
        keras.distribution.set_distribution(None)
        role = distribution.process_role(model)  # what the callback asked at on_train_begin
        result[name] = {{"role": role._asdict(),
                        "warnings": [str(w.message) for w in caught],
                        "probe_gathers": probe_gathers}}
        if process == 0:
            result[name]["shape"] = check(weights, os.path.join(logdir, name), probe)
    print("RESULT " + json.dumps(result), flush=True)
""")).format(tests=TESTS)


def test_two_jax_processes_write_each_step_once(tmp_path):
    pytest.importorskip("jax")
    port = free_port()
    results = finish([start(JAX_PROCESS, [i, port, tmp_path], "jax") for i in (0, 1)])
    for process, result in enumerate(results):
        for name in ("data_parallel", "model_parallel", "whole_model_each"):
            role = result[name]["role"]
            assert (role["process"], role["count"], role["writes"]) == (process, 2, process == 0)
            assert role["collective"] == (name != "whole_model_each"), (name, role)
            assert role["runs_probe"] == (process == 0 or name != "whole_model_each")
            assert result[name]["warnings"] == []
        # Heads split over the processes: every process gathers the scores of each capture.
        assert result["model_parallel"]["probe_gathers"] > 0
        assert result["whole_model_each"]["probe_gathers"] == 0
    for name in ("data_parallel", "model_parallel", "whole_model_each"):
        assert results[0][name]["shape"] == [2, 2, 8, 8]
        assert_each_step_once(tmp_path / name / "train", [0, 2])


# ----------------------------------------------------------------- PyTorch: torch.distributed

TORCH_PROCESS = (CHILD_HEAD + textwrap.dedent("""
    rank, port, logdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + port, rank=rank,
                            world_size=2)
    import keras
    from test_callback_behaviour import data, fit_recording_warnings, small_model
    from tb_attention_plugin import AttentionLogger
    from tb_attention_plugin.logger import distribution
    x, y = data(8)
    logger = AttentionLogger(logdir, x[:2], update_freq=1)
    model = small_model()
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=2)
    dist.barrier()
    print("RESULT " + json.dumps({{"backend": keras.backend.backend(),
                                  "role": distribution.process_role(model)._asdict(),
                                  "warnings": [str(w.message) for w in caught]}}), flush=True)
    dist.destroy_process_group()
""")).format(tests=TESTS)


def test_two_torch_processes_write_each_step_once(tmp_path):
    pytest.importorskip("torch")
    port = free_port()
    results = finish([start(TORCH_PROCESS, [rank, port, tmp_path], "torch") for rank in (0, 1)])
    for rank, result in enumerate(results):
        assert result["backend"] == "torch" and result["warnings"] == []
        assert result["role"] == {"writes": rank == 0, "runs_probe": rank == 0,
                                  "collective": False, "process": rank, "count": 2}
    assert_each_step_once(tmp_path / "train", [0, 1, 2, 3, 4])
    attention, _ = helpers.read_logs(tmp_path)
    assert sorted(attention["train"]["mha"]) == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------- TensorFlow: TF_CONFIG


def tf_config(task_type, index, chief=True, workers=2):
    cluster = {"worker": ["host:%d" % i for i in range(workers)], "ps": ["ps:0"]}
    if chief:
        cluster["chief"] = ["chief:0"]
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("config, expected", [
    (None, (0, 1)),
    (tf_config("chief", 0), (0, 3)),
    (tf_config("worker", 0), (1, 3)),           # a chief exists: worker 0 does not write
    (tf_config("worker", 0, chief=False), (0, 2)),  # no chief: worker 0 writes
    (tf_config("worker", 1, chief=False), (1, 2)),
    (tf_config("ps", 0), (3, 3)),
    (tf_config("evaluator", 0), (3, 3)),
    ("not json", (0, 1)),
])
def test_tf_config_names_the_writer(config, expected):
    assert distribution.tf_config_task(config) == expected


class CountingAttention(keras.layers.MultiHeadAttention):
    """Counts the calls that ask for scores: only the probe pass does."""

    probes = 0

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
        if return_attention_scores:
            CountingAttention.probes += 1
        return super()._compute_attention(query, key, value, attention_mask, training,
                                          return_attention_scores, **kwargs)


@pytest.mark.parametrize("task, written", [(("worker", 1), False), (("worker", 0), True)])
def test_tensorflow_worker_that_is_not_the_writer_skips_the_probe(tmp_path, monkeypatch, task,
                                                                 written):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TF_CONFIG is read on the TensorFlow backend")
    monkeypatch.setenv("TF_CONFIG", tf_config(*task, chief=False))
    CountingAttention.probes = 0
    model = small_model([CountingAttention(2, 4, name="mha")])
    x, y = data(8)
    logger = AttentionLogger(str(tmp_path), x[:2], update_freq=1)
    _, caught = fit_recording_warnings(model, x, y, [logger], batch_size=4, epochs=1)
    assert not caught
    assert (CountingAttention.probes > 0) == written  # the other worker never runs the probe
    assert os.path.isdir(tmp_path / "train") == written
    if written:
        attention, _ = helpers.read_logs(tmp_path)
        assert sorted(attention["train"]["mha"]) == [0, 1, 2]
        np.testing.assert_allclose(
            np.nansum(attention["train"]["mha"][2]["weights"], axis=-1), 1, atol=0.02)
