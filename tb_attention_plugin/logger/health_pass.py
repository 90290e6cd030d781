"""Head health at each capture: the measures of every captured layer over a probe SET.

The `AttentionLogger` displays a few probe examples, but a head's health (entropy, max logit,
sinks, roles, similarity; `tb_attention_plugin.health`, docs/health.md) should describe the
head, not one sentence. `HealthPass` runs the model on the health probe set (`health_probe=`,
by default the probe the user gave, all of it) in blocks of `batch_size` sequences through the
same patched capture as the displayed probe, feeds each block's full-precision scores and its
per-head maximum pre-softmax logits to one `health.HeadHealth` per layer call, and keeps only
the measures: nothing of size `[B, H, Tq, Tk]` outlives a block. On TensorFlow the blocks run
through one traced graph (the last block is padded with earlier probe examples to the same
shape, and the padding is dropped before measuring).

Layers the budget POOLS (`budget.py`: their full `[Tq, Tk]` matrices do not fit
`max_bytes_per_step`) are measured too, without those matrices: they are computed in query
chunks by their blocked pass (`blocked.py`, plan mode "stream"), which hands each chunk to a
`health_stream.ChunkedHeadHealth` (`chunk_feed.py`) and drops it; the results equal
`HeadHealth`'s on the full matrices. With `inputs=None` (the displayed probe is the whole probe
set) there is no pass of its own: the displayed capture's pooled layers hand their chunks over
as the display computes them (`stream_display`), and a pooled layer whose full scores were
read anyway hands them over whole. In a pass of its own, a pooled layer that cannot be computed
in chunks (`blocked.supports`) runs its plain attention and gets no record. A layer whose measures cannot be computed costs that layer's record, with
one `AttentionLoggerWarning` per cause.

Example:

```python
ids, offset = tba.induction_probe(vocab_size=1000, length=32, batch=64)
inputs, repeat_offset = health_inputs((ids, offset), probe_batch=x[:2])
health = HealthPass(inputs, repeat_offset, patterns=None, run_eagerly=False,
                    problems=Problems(), batch_size=8)
results = health(model)   # {tag: HeadHealth.result()}, every captured layer call
```
"""

import numbers

import keras
import numpy as np

from tb_attention_plugin import health as health_measures
from tb_attention_plugin import health_stream

from tb_attention_plugin.logger import capture
from tb_attention_plugin.logger import probe as probe_utils

DEFAULT_BATCH_SIZE = 8  # probe sequences per forward pass of the health probe set


def health_inputs(health_probe, probe_batch):
    """`(inputs, repeat_offset)` of the `health_probe=` argument; `(None, None)` when off.

    Args:
      health_probe: `None` or `True` (the probe, all of it), `False` (no health), a batch of
        model inputs (array, tuple/list or dict of arrays), or `(inputs, repeat_offset)` as
        `tb_attention_plugin.induction_probe(...)` returns it: `inputs` is then an induction
        probe (a random sequence of `repeat_offset` tokens repeated) and the causal layers'
        records get the induction score.
      probe_batch: the `probe=` batch, as the user gave it.

    Raises `ValueError` for anything else (naming `health_probe`).
    """
    if health_probe is False:
        return None, None
    if health_probe is None or health_probe is True:
        return probe_batch, None
    repeat_offset = None
    if (isinstance(health_probe, tuple) and len(health_probe) == 2
            and isinstance(health_probe[1], numbers.Integral)
            and not isinstance(health_probe[1], bool)):
        health_probe, repeat_offset = health_probe
        repeat_offset = int(repeat_offset)
        if repeat_offset < 3:
            raise ValueError("health_probe=(inputs, repeat_offset) needs repeat_offset >= 3 (the "
                             "length of the repeated sequence), got %d" % repeat_offset)
    try:
        size = probe_utils.batch_size(health_probe)
    except ValueError:
        raise ValueError(
            "health_probe must be None, True, False, a batch of model inputs or (inputs, "
            "repeat_offset) from tb_attention_plugin.induction_probe, got %r"
            % (type(health_probe).__name__,)
        ) from None
    if size < 1:
        raise ValueError("health_probe holds no examples")
    inputs = keras.tree.map_structure(
        lambda value: np.asarray(value) if hasattr(value, "shape") else value, health_probe)
    if repeat_offset is not None:
        length = _sequence_length(inputs)
        if length is not None and length <= repeat_offset:
            raise ValueError(
                "health_probe has %d positions: no query in the second copy of a sequence of "
                "repeat_offset=%d tokens" % (length, repeat_offset))
    return inputs, repeat_offset


def _sequence_length(inputs):
    for value in keras.tree.flatten(inputs):
        if hasattr(value, "shape") and len(value.shape) >= 2:
            return int(value.shape[1])
    return None


def _rows(inputs, start, stop, pad_to):
    """Examples `start:stop` of every array, padded with the first examples to `pad_to`."""

    def cut(value):
        if not hasattr(value, "shape") or len(value.shape) < 1:
            return value
        block = value[start:stop]
        missing = pad_to - (stop - start)
        if missing > 0:
            block = np.concatenate([block, value[:missing]], axis=0)
        return block

    return keras.tree.map_structure(cut, inputs)


class _Stream:
    """The health of one pooled layer call, measured from the query chunks of its blocked pass."""

    def __init__(self, tag, sink, make_health):
        self.tag = tag
        self.sink = sink
        self._make_health = make_health  # () -> a fresh health_stream.ChunkedHeadHealth

    def restart(self):
        self.sink.reset(self._make_health())

    def end_batch(self, examples):
        if self.sink.error is not None:
            return
        if not self.sink.target.fed:
            self.sink.error = ValueError("its blocked pass handed over no query chunks")
            return
        try:
            self.sink.target.end_batch(examples)
        except ValueError as e:
            self.sink.error = e


class _Blocks:
    """One probe set run in blocks through a patched capture whose pooled layers stream."""

    def __init__(self, inputs, batch_size, capture_options):
        self.inputs = inputs
        self.size = probe_utils.batch_size(inputs)
        self.batch_size = min(int(batch_size), self.size)
        self.streams = {}  # (layer path, call index) -> _Stream, filled by the planner
        self.capture = capture.ProbeCapture(
            _rows(inputs, 0, self.batch_size, self.batch_size), **capture_options)


class HealthPass:
    """Computes `health.HeadHealth` results of every captured layer call over a probe set.

    Layers the display budget POOLS are computed in query chunks here too (their `[B, H, Tq,
    Tk]` attention never exists): `blocked.py` hands each chunk to a
    `health_stream.ChunkedHeadHealth`, whose result equals `HeadHealth`'s on the full matrices.

    Args:
      inputs: the health probe set (model inputs with a batch axis), or None to reuse the
        records of the displayed capture (`measure(records=...)`).
      repeat_offset: `L` of an induction probe, or None.
      patterns: the logger's layer patterns (`layers=`).
      run_eagerly: as the logger's `run_eagerly`.
      problems: the logger's `Problems`.
      batch_size: probe sequences per forward pass.
      similarity: also measure head similarity (the Jensen-Shannon divergence, two thirds of
        the measures' cost) for `similarity_groups`.

    With `inputs=None` the displayed capture runs over the whole probe set: its full layers
    are measured from their records, its pooled layers from the query chunks of the display's
    own blocked pass (`stream_display`), so a capture costs one forward pass.
    """

    def __init__(self, inputs, repeat_offset, patterns, run_eagerly, problems,
                 batch_size=DEFAULT_BATCH_SIZE, similarity=True):
        self.inputs = inputs
        self.repeat_offset = repeat_offset
        self.similarity = bool(similarity)
        self._problems = problems
        self._capture_options = dict(patterns=patterns, run_eagerly=run_eagerly,
                                     problems=problems)
        self._blocks = None if inputs is None else self._new_blocks(inputs, batch_size)
        self.size = None if inputs is None else self._blocks.size
        self.batch_size = None if inputs is None else self._blocks.batch_size
        self._display_streams = {}  # inputs=None: (layer path, call index) -> _Stream
        self._pooled = {}
        self._broken = set()  # tags whose measures raised at this capture

    @property
    def compiled(self):
        """The traced capture of the health blocks (TensorFlow), or None."""
        return None if self._blocks is None else self._blocks.capture.compiled

    def _new_blocks(self, inputs, batch_size):
        blocks = _Blocks(inputs, batch_size, self._capture_options)
        blocks.capture.planner = lambda shapes: self._plan(shapes, blocks)
        return blocks

    def __call__(self, model, records=None, pooled=None):
        """`{tag: HeadHealth.result()}` at the model's current weights.

        `records`: the displayed capture's records, measured directly when this pass has no
        probe set of its own (`inputs=None`); its pooled layers were measured while it ran
        (`stream_display`). `pooled`: `{(layer path, call index): tag}` of the layers the
        display budget pools; with a probe set of its own they are measured from the query
        chunks of their blocked pass over it.
        Exceptions of the forward pass propagate; a layer whose measures raise is warned about
        and left out.
        """
        self._broken = set()
        self._pooled = dict(pooled or {})
        layers, maxima = {}, {}
        if self.inputs is None:
            self._measure_display(layers, maxima, records or [])
        else:
            self._run_blocks(model, self._blocks, layers, maxima)
        return self._results(layers, maxima)

    def stream_display(self, shapes, plans):
        """The display capture's `plans` with its POOLED layers' query chunks streamed here.

        For `inputs=None`: each pooled plan gets a `chunk_feed.ChunkSink` (`plans[key].chunks`)
        feeding a `ChunkedHeadHealth`, fresh at each capture (`start_capture`). `shapes`: the
        shape pass's `capture.LayerShape`s. Returns the new `{(path, index): LayerPlan}`."""
        import dataclasses

        by_key = {(shape.path, shape.index): shape for shape in shapes}
        plans = dict(plans)
        self._display_streams = {}
        for key, plan in plans.items():
            if plan.mode != "pooled" or key not in by_key:
                continue
            stream = self._new_stream(by_key[key])
            plans[key] = dataclasses.replace(plan, chunks=stream.sink)
            self._display_streams[key] = stream
        return plans

    def start_capture(self):
        """Before a displayed capture (`inputs=None`): its pooled layers' measures start anew."""
        for stream in self._display_streams.values():
            stream.restart()

    def _measure_display(self, layers, maxima, records):
        """`inputs=None`: the displayed records (every probe example) and the pooled layers'
        streams of the same pass."""
        self._add_block(layers, maxima, records, None)  # None: every example, no padding
        for stream in self._display_streams.values():
            stream.end_batch(None)
            layers.setdefault(stream.tag, stream)

    def _run_blocks(self, model, blocks, layers, maxima):
        """Runs the probe set in blocks: full layers feed `layers`, pooled ones their streams."""
        if blocks.capture.plans is None and not self._pooled:
            blocks.capture.plans = {}  # nothing pooled: no shape pass needed
        for stream in blocks.streams.values():
            stream.restart()
        for start in range(0, blocks.size, blocks.batch_size):
            stop = min(start + blocks.batch_size, blocks.size)
            block = _rows(blocks.inputs, start, stop, blocks.batch_size)
            self._add_block(layers, maxima, blocks.capture(model, block), stop - start)
            for stream in blocks.streams.values():
                stream.end_batch(stop - start)
        for stream in blocks.streams.values():
            # A layer asked for its scores by the model itself was measured from them.
            layers.setdefault(stream.tag, stream)

    def _plan(self, shapes, blocks):
        """The health capture's plans from its shape pass: the display's pooled layers stream
        their chunks to a `ChunkedHeadHealth` (mode "stream"); the other layers are captured
        in full."""
        from tb_attention_plugin.logger import blocked
        from tb_attention_plugin.logger import budget

        plans = {}
        for shape in shapes:
            key = (shape.path, shape.index)
            batch, heads, queries, keys = (int(n) for n in shape.shape)
            if key not in self._pooled:
                continue
            stream = blocks.streams[key] = self._new_stream(shape)
            # One overview block per chunk: the health pass keeps nothing of the overview.
            rows = blocked.chunk_rows(batch, heads, keys, 1)
            plans[key] = budget.LayerPlan(
                "stream", tuple(shape.shape), batch, heads, shape.causal, block=(rows, keys),
                chunks=stream.sink)
        return plans

    def _new_stream(self, shape):
        """A started `_Stream` (its own `chunk_feed.ChunkSink`) of one pooled layer call."""
        from tb_attention_plugin.logger import chunk_feed

        stream = _Stream(shape.tag, chunk_feed.ChunkSink(), self._stream_health(shape))
        stream.restart()
        return stream

    def _stream_health(self, shape):
        """A factory of `ChunkedHeadHealth` for one pooled layer call."""
        _, _, queries, keys = (int(n) for n in shape.shape)
        options = dict(repeat_offset=self._induction_offset(shape.cross, queries, keys),
                       causal=shape.causal, cross=shape.cross, similarity=self.similarity)
        return lambda: health_stream.ChunkedHeadHealth(queries=queries, **options)

    def _induction_offset(self, cross, queries, keys):
        induction = (self.repeat_offset is not None and not cross and queries == keys
                     and queries > self.repeat_offset)
        return self.repeat_offset if induction else None

    def _results(self, layers, maxima):
        results = {}
        for tag, layer in layers.items():
            if isinstance(layer, _Stream):
                if layer.sink.error is not None:
                    self._warn(tag, layer.sink.error)
                    continue
                layer = layer.sink.target.health
            if tag in self._broken or layer.shape is None:
                continue
            try:
                result = layer.result()
            except ValueError as e:
                self._warn(tag, e)
                continue
            largest = maxima.get(tag)
            if largest is not None:
                result["max_logit"] = largest.astype(np.float32)
            results[tag] = result
        return results

    def _layer(self, layers, record):
        layer = layers.get(record.tag)
        if layer is None:
            _, _, tq, tk = record.scores.shape
            layer = health_measures.HeadHealth(
                repeat_offset=self._induction_offset(record.cross, tq, tk),
                causal=record.causal, cross=record.cross, similarity=self.similarity)
            layers[record.tag] = layer
        return layer

    def _add_block(self, layers, maxima, records, examples):
        for record in records:
            if record.tag in self._broken:
                continue
            if record.pooled is not None:  # a streamed layer: only its max logit is here
                self._add_max_logit(maxima, record, examples)
                continue
            try:
                layer = self._layer(layers, record)
                mask = None if record.mask is None else record.mask[:examples]
                layer.update(record.scores[:examples], mask=mask)
            except (ValueError, FloatingPointError) as e:
                self._broken.add(record.tag)
                self._warn(record.tag, e)
                continue
            self._add_max_logit(maxima, record, examples)

    @staticmethod
    def _add_max_logit(maxima, record, examples):
        if record.max_logit is not None:
            # `[B, H]` per example; the padding repeats earlier probe examples: the maximum
            # is unchanged either way.
            largest = np.fmax.reduce(record.max_logit[:examples], axis=0)
            previous = maxima.get(record.tag)
            maxima[record.tag] = largest if previous is None else np.fmax(previous, largest)

    def _warn(self, tag, error):
        self._problems.warn(
            ("health", tag, type(error).__name__),
            "no head-health record for %s (%s: %s); other layers are measured"
            % (tag, type(error).__name__, error),
        )
