"""Hands the query chunks of a pooled layer's blocked pass to a numpy consumer (the health pass).

`blocked.blocked_attention(..., on_chunk=hook(sink, symbolic))` calls the hook with each
chunk's weights in query order. Run eagerly (JAX, PyTorch, TensorFlow eager) the hook converts
the chunk to numpy and feeds the sink at once; while a TensorFlow graph is traced it inserts a
`tf.numpy_function` that does the same when the graph runs, and the next chunk waits for it,
so at most one chunk's weights are alive at a time and the sink sees the chunks in order.

A `ChunkSink` forwards to its current `target` (a `health_stream.ChunkedHeadHealth`, replaced
by the health pass at each capture) and keeps the first error instead of raising it: a layer
whose chunks cannot be measured loses its health record, the forward pass goes on.

Example:

```python
sink = ChunkSink()
sink.target = ChunkedHeadHealth(queries=8192, causal=True)
output, reduced = blocked.blocked_attention(layer, q, k, v, mask, block, windows=(),
                                            on_chunk=hook(sink, symbolic=False))
sink.target.end_batch()
```
"""

import numpy as np


class ChunkSink:
    """Where the chunks of one layer call go: `target.add_chunk(start, weights, mask)`.

    `error` holds the first exception raised by the target (later chunks are then ignored)
    or the reason the layer is not computed in chunks at all (`unsupported`: said while a
    graph is traced, so it outlives `reset`).
    """

    def __init__(self):
        self.target = None
        self.error = None
        self._unsupported = None

    def reset(self, target):
        """Sends the chunks of the next forward passes to `target`; forgets the target's error."""
        self.target, self.error = target, self._unsupported

    def feed(self, start, weights, mask):
        if self.target is None or self.error is not None:
            return
        try:
            self.target.add_chunk(start, weights, mask)
        except Exception as e:  # the user's forward pass must not fail because of a measure
            self.error = e

    def unsupported(self, reason):
        """The layer ran its plain attention: its chunks will never come."""
        self._unsupported = self._unsupported or ValueError(reason)
        self.error = self.error or self._unsupported


def plan_hook(plan, symbolic):
    """`on_chunk` for a layer call's plan: feeding `plan.chunks` where it has them (mode
    "stream" in the health pass; a displayed "pooled" layer whose head health is measured in
    the same pass, `HealthPass.stream_display`), else None."""
    return None if plan.chunks is None else hook(plan.chunks, symbolic)


def hook(sink, symbolic):
    """`blocked_attention`'s `on_chunk` feeding `sink`: eager, or a `tf.numpy_function` in a
    traced TensorFlow graph (`symbolic=True`)."""
    if symbolic:
        return _traced_hook(sink)
    from tb_attention_plugin.logger import distribution

    def feed(start, stop, weights, mask):
        mask = None if mask is None else distribution.to_numpy(mask).astype(bool)
        sink.feed(start, distribution.to_numpy(weights), mask)
        return None

    return feed


def _traced_hook(sink):
    import tensorflow as tf

    def feed(start, stop, weights, mask):
        def run(weights, *mask):
            sink.feed(start, weights, mask[0] if mask else None)
            return np.int32(stop)

        inputs = [weights] if mask is None else [weights, tf.cast(mask, tf.bool)]
        return tf.numpy_function(run, inputs, tf.int32, stateful=True, name="health_chunk")

    return feed
