"""Where a capture goes: `RunWriter`, the summary file writer of the logger's run directory.

It writes through the TensorFlow-free `AttentionWriter` on every backend (an event file with
the suffix `.attention` beside keras.callbacks.TensorBoard's own): on TensorFlow too, since
`tf.summary`'s Python per summary cost the training job more than encoding the summaries (the
logger's background writer calls it; `bench/bench_fit_overhead.py`). The file is opened at the
first write, and opened again in a new directory when the run directory is removed during
training. A layer whose summary the summary API rejects (NaN scores of a diverged layer, logits
instead of probabilities) costs only that summary, with one warning.

Example:

```python
writer = RunWriter("logs/train", Problems())
written = writer.write(items, scalars={"mha/entropy/head_0": 0.7}, step=100)
writer.flush()
```
"""

from tb_attention_plugin import fs


class RunWriter:
    """Writes `summaries.SummaryItem`s and scalars of one step to `run_dir`.

    `problems` (a `problems.Problems`) reports what could not be written.
    """

    def __init__(self, run_dir, problems):
        self.run_dir = run_dir
        self._problems = problems
        self._writer = None

    def write(self, items, scalars, step, health=None):
        """Writes one capture; returns the tags written (items the summary API rejects are
        reported and left out). Other errors (an unwritable directory) propagate.

        `health`: `{tag: health.HeadHealth.result()}`, each written as the record
        `<tag>/health` with the scalars `attention_health/<tag>/min_entropy` and `max_logit`
        (`health_summary`, docs/format.md)."""
        self._reopen_if_removed()
        return self.write_plain(items, scalars, step, health)

    def write_plain(self, items, scalars, step, health=None):
        """`write` through the TensorFlow-free `AttentionWriter`, on every backend."""
        from tb_attention_plugin.writer import AttentionWriter

        if self._writer is None:  # it creates the directory, through TensorBoard's gfile
            self._writer = AttentionWriter(self.run_dir)
        written = []
        for item in items:
            try:
                if item.blobs is not None:
                    self._writer.write_blobs(item.tag, item.blobs, step)
                else:
                    self._writer.attention(item.tag, item.weights, step, **item.summary_options())
            except (ValueError, TypeError) as e:
                self._warn_invalid(item.tag, step, e)
                continue
            written.append(item.tag)
        for tag, value in scalars.items():
            self._writer.scalar(tag, value, step)
        for tag, result in (health or {}).items():
            try:
                self._writer.health(tag, result, step)
            except (ValueError, TypeError) as e:
                self._warn_health(tag, step, e)
        self._writer.flush()
        return written

    def flush(self):
        """Flushes the open file, if any; a failure becomes one warning."""
        if self._writer is None:
            return
        try:
            self._writer.flush()
        except Exception as e:
            self._problems.warn(("flush", type(e).__name__), "flushing summaries failed (%s)" % e)

    def _reopen_if_removed(self):
        if self._writer is None or not fs.vanished(self.run_dir):
            return  # remote run dirs (gs://, ram://) never vanish: no new file per capture
        # Removed while training: the open event file went with it and every later write
        # would vanish silently, so start a new file in a new directory.
        self._problems.warn(
            "vanished",
            "the log directory %s was removed during training; it is created again"
            % self.run_dir,
        )
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except Exception:
            pass  # the old file is gone: nothing left to save

    def _warn_health(self, tag, step, error):
        self._problems.warn(
            ("invalid health", tag),
            "cannot write the head-health record of %s at step %d (%s: %s); other layers are "
            "written" % (tag, step, type(error).__name__, error),
        )

    def _warn_invalid(self, tag, step, error):
        # The summary API checks before writing anything: one layer's bad scores cost only
        # that layer's summary.
        self._problems.warn(
            ("invalid", tag),
            "cannot log %s at step %d (%s: %s); other layers are logged and later steps "
            "of this one are tried again"
            % (tag, step, type(error).__name__, error),
        )
