"""Which process of a distributed job writes, and which processes run the probe pass.

Every process of a multi-process job runs the callbacks, so without care every process would
capture and write each `(tag, step)` once per process. One process writes:

- TensorFlow: the chief of the cluster in `TF_CONFIG`, or worker 0 when there is no chief
  (no `TF_CONFIG`: the only process writes);
- JAX: process 0 (`jax.process_index()`);
- PyTorch: rank 0, when `torch.distributed` is initialised.

The probe pass is a collective where the model's weights live on devices of several processes
(JAX multi-controller with `keras.distribution.DataParallel`/`ModelParallel` over all devices,
sharded weights): every process must run it, in step, and the scores of all processes are
gathered for the writer. Where each process holds its own whole model, the other processes
skip the probe pass altogether.

Example:

```python
role = distribution.process_role(model)
if role.runs_probe:
    records = capture(...)      # every process, when role.collective
    if role.writes:
        write(records)
```
"""

import collections
import json
import os

import numpy as np

Role = collections.namedtuple("Role", ["writes", "runs_probe", "collective", "process", "count"])
Role.__doc__ = """This process's part in logging attention.

`writes`: this process writes the summaries; `runs_probe`: it runs the probe pass;
`collective`: the probe pass needs every process (all run it in the same steps);
`process`, `count`: this process's index and the number of processes (for messages)."""


def process_role(model=None):
    """The `Role` of this process for `model` on the current Keras backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_role(model)
    if backend == "torch":
        return _torch_role()
    if backend == "tensorflow":
        return _tensorflow_role()
    return _single()


def _single():
    return Role(writes=True, runs_probe=True, collective=False, process=0, count=1)


def _role(index, count, collective):
    writes = index == 0
    return Role(writes=writes, runs_probe=writes or collective, collective=collective,
                process=index, count=count)


def _jax_role(model):
    import jax

    count = jax.process_count()
    if count == 1:
        return _single()
    return _role(jax.process_index(), count, _weights_span_processes(model))


def _weights_span_processes(model):
    """True when a weight of `model` is a JAX array with shards on another process's devices:
    then any computation with it is a multi-process program that every process must run."""
    if model is None:
        return False
    for variable in model.variables:
        value = getattr(variable, "value", variable)
        if getattr(value, "is_fully_addressable", True) is False:
            return True
    return False


def _torch_role():
    try:
        import torch.distributed as dist
    except ImportError:
        return _single()
    if not (dist.is_available() and dist.is_initialized()):
        return _single()
    # Keras 3 on PyTorch keeps a whole model in every process: the probe pass is local.
    return _role(dist.get_rank(), dist.get_world_size(), False)


def _tensorflow_role():
    index, count = tf_config_task(os.environ.get("TF_CONFIG"))
    return _role(index, count, False)


def tf_config_task(tf_config):
    """`(index, count)` for a `TF_CONFIG` JSON string: index 0 is the process that writes (the
    chief, or worker 0 when there is no chief), others get their position among the training
    tasks (chief and workers), parameter servers and evaluators a position after them."""
    if not tf_config:
        return 0, 1
    try:
        config = json.loads(tf_config)
        cluster = config.get("cluster") or {}
        task = config.get("task") or {}
        task_type, task_index = task.get("type"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return 0, 1  # not ours to validate: TensorFlow reports a malformed TF_CONFIG
    trainers = [("chief", i) for i in range(len(cluster.get("chief") or []))]
    trainers += [("worker", i) for i in range(len(cluster.get("worker") or []))]
    count = max(len(trainers), 1)
    if not task_type or (not trainers and task_type in ("chief", "worker")):
        return 0, 1
    if (task_type, task_index) in trainers:
        return trainers.index((task_type, task_index)), count
    return count, count  # ps, evaluator: never writes training captures


def to_numpy(value):
    """`value` (a backend tensor) as a numpy array holding all of it.

    A JAX array sharded over several processes is gathered with
    `jax.experimental.multihost_utils.process_allgather`, a collective: every process must call
    this for the same arrays in the same order (they do when they all run the probe pass).
    """
    if getattr(value, "is_fully_addressable", True) is False:
        if getattr(value, "is_fully_replicated", False):
            return np.asarray(value.addressable_data(0))  # every process holds all of it
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))
