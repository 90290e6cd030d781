"""Head health of a layer fed by query chunks: the measures without its full attention (numpy only).

A POOLED layer (its `[B, H, Tq, Tk]` attention does not fit the capture budget) is computed a
few query rows at a time (`logger/blocked.py`); `ChunkedHeadHealth` measures it from those
chunks as they pass, and its `result()` equals `health.HeadHealth`'s on the full matrices
(same formulas, same code per row; docs/health.md, "Pooled layers"). Per example it keeps sums
over the rows seen so far: `[B, H]` per measure, `[B, H, Tk]` for the sinks, `[B, H, Tk]` for
the monotonic path's dynamic programme and `[B, H, H]` for the similarity; at the end of a
batch each example's means join the `HeadHealth` sums. Every measure is local to a row (entropy,
previous-token, diagonal, first-token, induction), a sum over rows (sinks, similarity), or a
dynamic programme that walks the rows in order (monotonicity): chunks must come in query order,
which the blocked pass guarantees.

Example:

>>> import numpy as np
>>> from tb_attention_plugin import health
>>> weights = np.tril(np.ones((2, 3, 64, 64), np.float32))
>>> weights /= weights.sum(axis=-1, keepdims=True)           # uniform causal heads
>>> stream = ChunkedHeadHealth(queries=64, causal=True)
>>> for start in range(0, 64, 16):                           # the blocked pass' chunks
...     stream.add_chunk(start, weights[:, :, start:start + 16])
>>> stream.end_batch()
>>> full = health.head_health(weights, causal=True)
>>> bool(np.allclose(stream.result()["entropy"], full["entropy"]))
True
"""

import numpy as np

from tb_attention_plugin import health

# Query rows a causal chunk is measured in at a time, each slice over the keys it can see.
CAUSAL_SLICE_ROWS = 128


class _BatchSums:
    """Per-example sums of one batch over the rows fed so far."""

    def __init__(self, batch, heads, keys, similarity):
        self.shape = (batch, heads, keys)
        self.next_query = 0
        self.sums = {}  # measure -> [total [B, H], rows [B, H]]
        self.sink = [np.zeros((batch, heads, keys)), np.zeros((batch, heads, keys), np.int64)]
        self.path = np.zeros((batch, heads, keys), np.float32)  # monotonic DP state
        self.path_rows = np.zeros((batch, heads), np.int64)
        self.js = ([np.zeros((batch, heads, heads)),
                    np.zeros((batch, heads, heads), np.int64)] if similarity else None)

    def add(self, name, total, count):
        if name in self.sums:
            self.sums[name][0] += total
            self.sums[name][1] += count
        else:
            self.sums[name] = [total, count]


class ChunkedHeadHealth:
    """`health.HeadHealth` of one layer, fed query chunks of each batch in order.

    Args:
      queries: `Tq`, the number of query rows of the layer (every batch must feed all of them).
      **options: `health.HeadHealth`'s options (`causal`, `cross`, `repeat_offset`,
        `repeat_start`, `similarity`, `sink_min_queries`, `monotonic_band`).

    Feed each batch as `add_chunk(start, weights, mask)` for consecutive query ranges from 0
    to `queries`, then `end_batch()`; `result()` is `HeadHealth.result()` of every batch fed.
    The maximum logit is not seen here (the blocked pass reduces it): `add_max_logit`.

    Example:

    ```python
    stream = ChunkedHeadHealth(queries=8192, causal=True, repeat_offset=4096)
    for start in range(0, 8192, 32):
        stream.add_chunk(start, chunk_weights, chunk_mask)    # [B, H, 32, 8192], [B, 32, 8192]
    stream.end_batch(examples=6)                              # the last 2 examples were padding
    stream.result()["induction"]
    ```
    """

    def __init__(self, queries, **options):
        self.health = health.HeadHealth(**options)
        self.queries = int(queries)
        if self.queries < 1:
            raise ValueError("queries must be >= 1, got %d" % self.queries)
        self._batch = None

    def add_chunk(self, start, weights, mask=None):
        """Adds query rows `start, start + 1, ...` of the current batch.

        Args:
          start: the first query row of the chunk: 0 for a new batch, else where the previous
            chunk ended.
          weights: post-softmax `[B, H, rows, Tk]`; NaN marks masked positions.
          mask: boolean, True = attended, broadcastable to the weights (or `[B, rows, Tk]`).
        """
        weights = health._as_batch(weights)
        b, h, r, tk = weights.shape
        batch = self._begin(start, b, h, r, tk)
        if mask is not None:
            mask = health._mask_for(mask, weights.shape)
        # A causal row sees no key after its own: measure slices of rows over the keys they
        # can see, about half the work of the whole rectangle on a long chunk.
        step = CAUSAL_SLICE_ROWS if self.health.causal else r
        for first in range(0, r, step):
            last = min(first + step, r)
            keys = min(start + last, tk) if self.health.causal else tk
            self._add_slice(batch, start + first, weights[:, :, first:last, :keys],
                            None if mask is None else mask[:, :, first:last, :keys])
        batch.next_query = start + r

    def _add_slice(self, batch, start, weights, mask):
        """Adds the rows of `weights [B, H, rows, keys]` (queries `start, ...`; `keys` may stop
        short of `Tk` where no row of a causal slice looks)."""
        if self.health.causal:
            r, keys = weights.shape[2:]
            future = np.arange(start, start + r)[:, np.newaxis] < np.arange(keys)[np.newaxis, :]
            mask = ~future if mask is None else mask & ~future
        self._add_rows(batch, health._Rows(weights, mask), start)

    def _begin(self, start, b, h, r, tk):
        """The running batch's sums, after checking that the chunk continues it."""
        batch = self._batch
        if batch is None:
            if start != 0:
                raise ValueError("a batch starts at query 0, got a chunk starting at %d" % start)
            self.health._check_shape(h, self.queries, tk)
            batch = self._batch = _BatchSums(b, h, tk, self.health.similarity)
        elif start != batch.next_query or (b, h, tk) != batch.shape:
            raise ValueError(
                "chunk [*, %d, %d:%d, %d] does not continue the batch [%d, %d, :%d, %d]"
                % ((h, start, start + r, tk, batch.shape[0], batch.shape[1], batch.next_query,
                    batch.shape[2])))
        if start + r > self.queries:
            raise ValueError("chunk rows %d:%d pass the layer's %d queries"
                             % (start, start + r, self.queries))
        return batch

    def _add_rows(self, batch, rows, start):
        layer = self.health
        informative = rows.informative
        normalised, nats = health._row_entropies(rows)
        batch.add("entropy", *health._row_sum(normalised, informative))
        batch.add("entropy_nats", *health._row_sum(nats, informative))
        local = np.arange(rows.p.shape[2])
        queries = start + local
        batch.add("first_token", *health._offset_sums(rows, local, np.zeros_like(local)))
        if not layer.cross:
            after_first = queries >= 1
            batch.add("previous_token", *health._offset_sums(
                rows, local[after_first], queries[after_first] - 1))
            batch.add("diagonal", *health._offset_sums(rows, local, queries))
            if layer.repeat_offset is not None:
                repeat = queries >= layer.repeat_start
                batch.add("induction", *health._offset_sums(
                    rows, local[repeat], queries[repeat] - layer.repeat_offset + 1))
        else:
            batch.path_rows += health._monotonic_advance(rows, layer.monotonic_band, batch.path)
        total, count = health._sink_sums(rows, layer.cross, first_query=start)
        keys = total.shape[-1]
        batch.sink[0][..., :keys] += total
        batch.sink[1][..., :keys] += count
        if batch.js is not None:
            total, count = health._js_example_sums(rows, informative, queries,
                                                   sample=layer.similarity_sample())
            batch.js[0] += total
            batch.js[1] += count

    def end_batch(self, examples=None):
        """Ends the current batch: its first `examples` examples (default: all) join the
        measures; the others (padding) are dropped."""
        batch, self._batch = self._batch, None
        if batch is None:
            raise ValueError("end_batch() without a chunk of the batch")
        if batch.next_query != self.queries:
            raise ValueError("the batch ended after %d of %d query rows"
                             % (batch.next_query, self.queries))
        keep = slice(0, batch.shape[0] if examples is None else int(examples))
        measures = {name: health._mean_of(total[keep], count[keep])
                    for name, (total, count) in batch.sums.items()}
        if self.health.cross:
            measures["monotonic"] = health._mean_of(batch.path.max(axis=-1)[keep],
                                                    batch.path_rows[keep])
        measures["sink_alpha"] = health._mean_of(batch.sink[0][keep], batch.sink[1][keep],
                                                 least=self.health.sink_min_queries)
        js = None if batch.js is None else (batch.js[0][keep], batch.js[1][keep])
        self.health._add_examples(measures, js)

    @property
    def fed(self):
        """True while a batch is being fed (a chunk came since the last `end_batch`)."""
        return self._batch is not None

    def add_max_logit(self, largest):
        """Takes the largest pre-softmax logit per head `[H]` of a batch (NaN: none seen)."""
        largest = np.asarray(largest, np.float32)
        largest = np.where(np.isnan(largest), -np.inf, largest)
        previous = self.health._max_logit
        self.health._max_logit = largest if previous is None else np.maximum(previous, largest)

    def result(self):
        """`HeadHealth.result()` of every batch ended so far."""
        return self.health.result()
