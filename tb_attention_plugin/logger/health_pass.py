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

A layer whose measures cannot be computed costs that layer's record, with one
`AttentionLoggerWarning` per cause. Layers the budget POOLS (`budget.py`: their full
`[Tq, Tk]` matrices do not fit `max_bytes_per_step`) are not measured either: the measures
need those full matrices, which is what pooling avoids computing; they run their plain fast
path in the health pass; the logger's one reduced-view warning says so.

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


class HealthPass:
    """Computes `health.HeadHealth` results of every captured layer call over a probe set.

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
    """

    def __init__(self, inputs, repeat_offset, patterns, run_eagerly, problems,
                 batch_size=DEFAULT_BATCH_SIZE, similarity=True):
        self.inputs = inputs
        self.repeat_offset = repeat_offset
        self.similarity = bool(similarity)
        self._problems = problems
        self.size = None if inputs is None else probe_utils.batch_size(inputs)
        self.batch_size = None if inputs is None else min(int(batch_size), self.size)
        self._capture = None
        if inputs is not None:
            self._capture = capture.ProbeCapture(
                _rows(inputs, 0, self.batch_size, self.batch_size), patterns=patterns,
                run_eagerly=run_eagerly, problems=problems)
        self._broken = set()  # tags whose measures raised at this capture

    @property
    def compiled(self):
        """The traced capture of the health blocks (TensorFlow), or None."""
        return None if self._capture is None else self._capture.compiled

    def __call__(self, model, records=None, pooled=None):
        """`{tag: HeadHealth.result()}` at the model's current weights.

        `records`: the displayed capture's records, measured directly when this pass has no
        probe set of its own (`inputs=None`). `pooled`: `{(layer path, call index): tag}` of
        the layers the display budget pools; they are not measured (the caller's reduced-view
        warning says so).
        Exceptions of the forward pass propagate; a layer whose measures raise is warned about
        and left out.
        """
        from tb_attention_plugin.logger import budget

        self._broken = set()
        layers, maxima = {}, {}
        pooled = pooled or {}
        if self.inputs is None:
            records = [r for r in records or [] if r.pooled is None and r.tag not in
                       set(pooled.values())]
            self._add_block(layers, maxima, records, len(records[0].scores)
                            if records else 0)
        else:
            if self._capture.plans is None and pooled:
                # Pooled layers run their plain fast path: no [B, H, T, T] in the health pass.
                self._capture.plans = {
                    key: budget.LayerPlan("skip", (0, 0, 0, 0), 0, 0) for key in pooled}
            for start in range(0, self.size, self.batch_size):
                stop = min(start + self.batch_size, self.size)
                block = _rows(self.inputs, start, stop, self.batch_size)
                self._add_block(layers, maxima, self._capture(model, block), stop - start)
        results = {}
        for tag, layer in layers.items():
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
            induction = (self.repeat_offset is not None and not record.cross and tq == tk
                         and tq > self.repeat_offset)
            layer = health_measures.HeadHealth(
                repeat_offset=self.repeat_offset if induction else None,
                causal=record.causal, cross=record.cross, similarity=self.similarity)
            layers[record.tag] = layer
        return layer

    def _add_block(self, layers, maxima, records, examples):
        for record in records:
            if record.tag in self._broken:
                continue
            try:
                layer = self._layer(layers, record)
                mask = None if record.mask is None else record.mask[:examples]
                layer.update(record.scores[:examples], mask=mask)
            except (ValueError, FloatingPointError) as e:
                self._broken.add(record.tag)
                self._warn(record.tag, e)
                continue
            if record.max_logit is not None:
                # `[B, H]` per example; the padding repeats earlier probe examples: the maximum
                # is unchanged either way.
                largest = np.fmax.reduce(record.max_logit[:examples], axis=0)
                previous = maxima.get(record.tag)
                maxima[record.tag] = (largest if previous is None
                                      else np.fmax(previous, largest))

    def _warn(self, tag, error):
        self._problems.warn(
            ("health", tag, type(error).__name__),
            "no head-health record for %s (%s: %s); other layers are measured"
            % (tag, type(error).__name__, error),
        )
