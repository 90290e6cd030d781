"""A TensorFlow-free writer for attention summaries (numpy + the `tensorboard` package).

It writes the same event files as the TensorFlow summary op, so Keras 3 on the JAX or PyTorch
backend (or any numpy code) can feed the Attention tab.
"""

import operator
import threading
import time

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin import health_summary
from tb_attention_plugin import metadata
from tb_attention_plugin import names


class AttentionWriter:
    """Writes attention weights (and scalars) to a TensorBoard run directory without TensorFlow.

    Args:
      logdir: The run directory; created if missing. A local path or any URL TensorBoard's
        gfile knows: `gs://`, `s3://`, `hdfs://` with TensorFlow installed, else `s3://` (boto3)
        and every fsspec protocol (`gs://` with gcsfs, `memory://`, ...). No component may
        hold a quote, backslash or control character (TensorBoard's data server could not read
        the run back): `ValueError`.
      flush_secs: How often queued events are flushed to disk.
      filename_suffix: Suffix of the event file name.

    Example:

    ```python
    with AttentionWriter("logs/run1") as writer:
        writer.attention("decoder/cross_attention", weights, step=100,
                         query_tokens=target_tokens, key_tokens=source_tokens)
    ```
    """

    def __init__(self, logdir, flush_secs=120, filename_suffix=".attention"):
        # Imported here so that importing this package stays light for TensorBoard's loader.
        # EventFileWriter creates the directory and writes through TensorBoard's gfile
        # (tb_attention_plugin.fs), so remote log directories work as local ones.
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        names.check_run_dir(str(logdir))
        self._writer = EventFileWriter(
            str(logdir), flush_secs=flush_secs, filename_suffix=filename_suffix
        )
        self._tags_with_metadata = set()
        self._lock = threading.Lock()

    @property
    def logdir(self):
        return self._writer.get_logdir()

    def attention(
        self,
        name,
        weights,
        step,
        *,
        query_tokens=None,
        key_tokens=None,
        mask=None,
        images=None,
        image_grid=None,
        prefix_tokens=None,
        description=None,
        reduced=None,
        max_bytes=None,
        windows=None,
        kv_heads=None,
        kv_group_size=None,
        query_special=None,
        key_special=None,
    ):
        """Validates, encodes and queues one step of one tag (arguments as `attention()`).

        `max_bytes`: a size budget for this step of this tag. When the full weights would take
        more, the step is stored POOLED (docs/format.md, "Pooled steps"): an overview of block
        means and maxes covering every position, at the smallest power-of-two block that fits,
        plus exact windows: by default the last queries' rows over all keys and the first
        queries (causal attention), or the first and last queries' rows (otherwise).
        `windows=[(name, (q0, q1), (k0, k1)), ...]` names the exact windows to keep instead.

        `kv_heads` (or `kv_group_size`) records the key/value group of every head of a
        grouped-query layer; `query_special` / `key_special` (booleans per position) mark
        special and padding tokens.

        Raises `ValueError`/`TypeError` before anything is written when the input is bad.
        Returns True.

        Example (a 12-layer model at 1024 tokens within 4 MiB per step):

        ```python
        writer.attention("layer_3", weights, step, max_bytes=4 * 2**20 // 12,
                         windows=[("answer", (1000, 1024), (0, 1024))])
        # 32 query heads over 8 key/value heads; padding positions marked special:
        writer.attention("layer_4", weights, step, kv_heads=8,
                         query_special=~padding_mask, key_special=~padding_mask)
        ```
        """
        blobs = encoding.encode_attention(
            weights,
            query_tokens=query_tokens,
            key_tokens=key_tokens,
            mask=mask,
            images=images,
            image_grid=image_grid,
            prefix_tokens=prefix_tokens,
            reduced=reduced,
            max_bytes=max_bytes,
            windows=windows,
            kv_heads=kv_heads,
            kv_group_size=kv_group_size,
            query_special=query_special,
            key_special=key_special,
        )
        self.write_blobs(name, blobs, step, description=description)
        return True

    def write_blobs(self, name, blobs, step, description=None):
        """Queues already-encoded blobs (from `encoding.encode_step`) under `name`."""
        from tensorboard.compat.proto import tensor_pb2
        from tensorboard.compat.proto import tensor_shape_pb2
        from tensorboard.compat.proto import types_pb2

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]
            ),
            string_val=blobs,
        )
        self._write_value(name, step, tensor, metadata.create_summary_metadata(description))

    def health(self, tag, result, step, *, scalars=True, description=None):
        """Queues the head-health record of one layer at one step, and its two scalars.

        Writes `health_summary.to_record(result)` under `<tag>/health` (plugin "attention", a
        rank-0 string tensor of JSON; docs/format.md), and, with `scalars=True`, the Scalars
        dashboard's `attention_health/<tag>/min_entropy` and `.../max_logit` (each only when
        some head has it).

        Args:
          tag: the layer's attention tag (the name its `attention()` steps are written under).
          result: `health.HeadHealth.result()` of that layer (or the `HeadHealth` itself).
          step: the step, an integer.

        Raises `ValueError`/`TypeError` before anything is written when the input is bad.
        Returns True.

        Example:

        ```python
        from tb_attention_plugin import health
        with AttentionWriter("logs/run1") as writer:
            result = health.head_health(weights, logits=logits, causal=True)  # [B, H, T, T]
            writer.attention("decoder/layer_0", weights[:2], step=100)
            writer.health("decoder/layer_0", result, step=100)
        ```
        """
        from tensorboard.compat.proto import tensor_pb2
        from tensorboard.compat.proto import tensor_shape_pb2
        from tensorboard.compat.proto import types_pb2

        if hasattr(result, "result") and callable(result.result):
            result = result.result()
        record = health_summary.to_record(result)
        name = health_summary.health_tag(tag)
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[health_summary.encode(record)],
        )
        self._write_value(name, step, tensor, metadata.create_health_metadata(description))
        if scalars:
            for scalar_name, value in health_summary.layer_scalars(result).items():
                self.scalar(health_summary.scalar_tag(tag, scalar_name), value, step)
        return True

    def scalar(self, name, value, step, description=None):
        """Queues a scalar summary readable by TensorBoard's Scalars dashboard."""
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.scalar import metadata as scalar_metadata
        from tensorboard.util import tensor_util

        tensor = tensor_util.make_tensor_proto(np.float32(value))
        md = scalar_metadata.create_summary_metadata(display_name=name, description=description or "")
        self._write_value(name, step, tensor, md)

    def _write_value(self, name, step, tensor, summary_metadata):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.compat.proto import summary_pb2

        if not isinstance(name, str):
            raise TypeError("name must be a string, got %r" % (name,))
        if not name:
            raise ValueError("name must not be empty")
        names.check(name, "tag")
        if step is None:
            raise ValueError("step is required for AttentionWriter")
        try:
            step = operator.index(step)  # ints, numpy and eager integer tensors; not 1.5 or "1"
        except TypeError:
            raise TypeError("step must be an integer, got %r" % (step,)) from None
        with self._lock:
            value = summary_pb2.Summary.Value(tag=name, tensor=tensor)
            # TensorBoard keeps only the first metadata of a tag; repeating it wastes space.
            if name not in self._tags_with_metadata:
                value.metadata.CopyFrom(summary_metadata)
                self._tags_with_metadata.add(name)
            event = event_pb2.Event(
                wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value])
            )
            self._writer.add_event(event)

    def flush(self):
        """Writes queued events to disk."""
        self._writer.flush()

    def close(self):
        """Flushes and closes the event file."""
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
