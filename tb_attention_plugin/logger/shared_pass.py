"""One forward pass for the displayed capture and the head health, when the health set is the probe.

By default (`health_probe=None`) head health is measured over the whole `probe` batch while the
Attention tab shows its first `max_examples`. When that whole batch fits one health block, the
displayed capture runs over all of it and the health pass measures its records: one traced
graph and one forward pass per capture instead of two (the first capture's tracing is most of
the callback's cost at the default cadence). Everything the display plans, encodes and writes
sees only the first `max_examples` (`first_examples`), as when the capture ran over them alone.

Example:

```python
if shared_pass.shares(probe, health_is_probe=True, block=health_pass.DEFAULT_BATCH_SIZE):
    capture_inputs = probe_utils.slice_batch(batch, probe.size)   # every example
records = probe_capture(model)                                     # [size, H, Tq, Tk] each
health = health(model, records)                                    # over every example
shown = shared_pass.first_examples(records, probe.examples)        # what the tab gets
```
"""

from tb_attention_plugin.logger import capture


def shares(probe, health_is_probe, block):
    """Whether the displayed capture should run over the whole probe for the health pass too.

    `probe`: the logger's `probe.Probe`; `health_is_probe`: the health set is the probe batch
    itself (no induction offset); `block`: the health pass's sequences per forward pass."""
    return health_is_probe and probe.size <= block


def first_examples(records, count):
    """The `capture.AttentionRecord`s (or `capture.LayerShape`s) of `records` cut to their
    first `count` examples; records with no more than `count` are returned as they are."""
    return [_first(record, count) for record in records]


def _first(record, count):
    longest = record.shape[0]
    if getattr(record, "max_logit", None) is not None:
        longest = max(longest, len(record.max_logit))  # a pooled record's: every example
    if longest <= count:
        return record
    shape = (min(count, record.shape[0]),) + tuple(record.shape[1:])
    if isinstance(record, capture.LayerShape):
        return record._replace(shape=shape)
    # A pooled record's overview already holds only the examples its plan keeps.
    scores = None if record.scores is None else record.scores[:count]
    mask = record.mask
    if mask is not None and getattr(mask, "ndim", 0) == 4:
        mask = mask[:count]  # a batch axis of 1 broadcasts and stays
    max_logit = None if record.max_logit is None else record.max_logit[:count]
    first = capture.AttentionRecord(record.tag, record.site, scores, mask, record.cross,
                                    record.causal, shape=shape, pooled=record.pooled,
                                    max_logit=max_logit, kv_heads=record.kv_heads)
    if hasattr(record, "source"):
        first.source = record.source
    return first
