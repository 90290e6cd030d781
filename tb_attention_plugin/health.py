"""Head health: per-head measures, roles, sinks, alarms over steps and head similarity (numpy only).

The Keras callback feeds full-precision post-softmax weights (and, when the patched attention
sees them, the pre-softmax logits) of a probe set to `HeadHealth`, block by block; the server
feeds decoded stored steps the same way. Nothing here imports keras or tensorflow. The formulas,
thresholds and references are in docs/health.md.

Example:

>>> import numpy as np
>>> weights = np.zeros((1, 2, 6, 6), np.float32)       # 1 example, 2 heads, 6 tokens
>>> weights[0, 0] = np.eye(6)                           # head 0 attends to itself
>>> weights[0, 1] = np.eye(6, k=-1); weights[0, 1, 0, 0] = 1   # head 1: the previous token
>>> health = head_health(weights)
>>> health["roles"]
['diagonal', 'previous-token']
>>> round(float(health["previous_token"][1]), 3)
1.0
"""

import collections
import math
import statistics

import numpy as np

# Role names, in the order `role_of` tries them, with the score each is read from.
ROLES = (
    ("induction", "induction"),
    ("previous-token", "previous_token"),
    ("diagonal", "diagonal"),
    ("monotonic", "monotonic"),
    ("first-token", "first_token"),
)

# Score a head must reach for the role (docs/health.md says why each value).
ROLE_THRESHOLDS = {
    "induction": 0.3,
    "previous_token": 0.5,
    "diagonal": 0.5,
    "monotonic": 0.6,
    "first_token": 0.5,
}
# Normalised entropy at or above which a head without a role is called "diffuse".
DIFFUSE_ENTROPY = 0.9

SINK_THRESHOLD = 0.3  # Gu et al. 2024: key k is a sink of a head when alpha_k > 0.3
SINK_MIN_QUERIES = 4  # a key seen by fewer queries than this is never a sink (see docs)
MONOTONIC_BAND = 1  # keys within +-1 of the monotonic path count as on it
# Head similarity compares at most this many query rows per example, evenly spread: its cost
# is H^2 / 2 passes over the rows, which would otherwise outgrow every other measure on long
# sequences (docs/health.md, "Head similarity").
SIMILARITY_ROWS = 128

ENTROPY_FLOOR = 0.02  # normalised entropy; about 99% of every row on one of 128 keys
ENTROPY_DROP = 0.5  # alarm when entropy falls below half the median of its recent history
ENTROPY_WINDOW = 5  # how many previous logged steps make the recent history
ENTROPY_MIN_HISTORY = 3  # logged steps needed before a drop can be judged
MAX_LOGIT_BOUND = 100.0  # alarm when the largest pre-softmax logit passes this
LOGIT_GROWTH = 10.0  # a fall in entropy comes with logit growth at 10x its recent median

SCORES = ("previous_token", "diagonal", "first_token", "induction", "monotonic")
MEASURES = ("entropy", "entropy_nats", "max_logit") + SCORES

_TINY = np.float32(1e-30)


# --------------------------------------------------------------------------------------------
# Input checks and the rows every measure uses


def _as_batch(weights, name="weights"):
    array = np.asarray(weights, dtype=np.float32)
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise ValueError(
            "%s must have shape [heads, Tq, Tk] or [batch, heads, Tq, Tk], got %s"
            % (name, tuple(array.shape))
        )
    if 0 in array.shape:
        raise ValueError("%s has an empty axis: shape %s" % (name, tuple(array.shape)))
    return array


def _mask_for(mask, shape):
    """Boolean `mask` (True = attended, Keras' convention) broadcast to `shape` [B, H, Tq, Tk].

    A `[B, Tq, Tk]` mask (what Keras' MultiHeadAttention takes) gets its head axis added.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("mask must be boolean (True = attended), got values other than 0/1")
        mask = mask.astype(bool)
    if mask.ndim == 3 and len(shape) == 4 and mask.shape[0] in (1, shape[0]):
        mask = mask[:, np.newaxis]
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            "mask of shape %s does not fit weights of shape %s"
            % (tuple(mask.shape), tuple(shape))
        ) from None


class _Rows:
    """What every measure of one block needs: renormalised rows, masks and row validity."""

    def __init__(self, weights, mask):
        attended = ~np.isnan(weights)
        if mask is not None:
            attended &= _mask_for(mask, weights.shape)
        kept = np.where(attended, weights, np.float32(0))
        row_sum = kept.sum(axis=-1, dtype=np.float32)
        # An Inf anywhere makes its row's sum infinite (or NaN): one check per row, not per value.
        if not np.isfinite(row_sum).all():
            raise ValueError("weights contains Inf (NaN or mask marks masked positions)")
        if kept.min() < 0:
            raise ValueError("weights contains negative values: pass post-softmax weights")
        self.attended = attended
        self.keys = np.count_nonzero(attended, axis=-1)  # K_i, unmasked keys of each row [B, H, Tq]
        # Fully masked or all-zero rows (Keras >= 3.10 zeroes padded queries) are padding.
        self.valid = (self.keys > 0) & (row_sum > 0)
        # A row with one visible key (causal row 0) has no choice: it says nothing of the head.
        self.informative = self.valid & (self.keys > 1)
        kept *= (np.float32(1) / np.where(self.valid, row_sum, np.float32(1)))[..., np.newaxis]
        self.p = kept  # [B, H, Tq, Tk], rows sum to 1 (valid) or 0, masked entries 0


def _row_sum(values, rows):
    """`(total, count)` of `values [B, H, n]` over `rows [B, H, n]`: float64 and int, [B, H]."""
    return np.where(rows, values, 0).sum(axis=-1, dtype=np.float64), rows.sum(axis=-1)


def _mean_of(total, count, least=1):
    """`total / count` where `count >= least`, NaN elsewhere."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= least, total / np.maximum(count, 1), np.nan)


def _row_mean(values, rows):
    """Mean of `values [B, H, n]` over `rows [B, H, n]`; NaN for an example/head without rows."""
    return _mean_of(*_row_sum(values, rows))


def _row_entropies(rows):
    """Per row: (normalised entropy, entropy in nats), each [B, H, Tq]."""
    p = rows.p
    plogp = p + _TINY
    np.log(plogp, out=plogp)
    plogp *= p
    nats = -plogp.sum(axis=-1, dtype=np.float32)
    normalised = nats / np.log(np.maximum(rows.keys, 2)).astype(np.float32)
    return normalised, nats


def _entropies(rows):
    """Per example and head: (normalised entropy, entropy in nats), each [B, H]."""
    normalised, nats = _row_entropies(rows)
    return _row_mean(normalised, rows.informative), _row_mean(nats, rows.informative)


def _offset_sums(rows, queries, keys):
    """`(total, count)` over informative rows `queries` of p[i, keys[i]], per example and head.

    `queries` index the rows of `rows` (a block of query rows, or all of them)."""
    queries = np.asarray(queries, dtype=np.intp)
    keys = np.asarray(keys, dtype=np.intp)
    if queries.size == 0:
        shape = rows.p.shape[:2]
        return np.zeros(shape), np.zeros(shape, np.int64)
    return _row_sum(rows.p[:, :, queries, keys], rows.informative[:, :, queries])


def _offset_score(rows, queries, keys):
    """Mean over informative rows `queries` of p[i, keys[i]], per example and head [B, H]."""
    return _mean_of(*_offset_sums(rows, queries, keys))


def _sink_sums(rows, cross, first_query=0):
    """`(total, count)` per example, head and key [B, H, Tk] over the informative queries
    i >= k (all queries for cross-attention) that see key k; the rows of `rows` are the
    queries `first_query, first_query + 1, ...`."""
    _, _, tq, tk = rows.p.shape
    seen = rows.attended & rows.informative[..., np.newaxis]
    if not cross:
        queries = np.arange(first_query, first_query + tq)
        seen &= queries[:, np.newaxis] >= np.arange(tk)[np.newaxis, :]
    return np.where(seen, rows.p, 0).sum(axis=-2, dtype=np.float64), seen.sum(axis=-2)


def _sink_alpha(rows, cross, min_queries):
    """alpha_k per example, head and key [B, H, Tk]: mean over informative queries i >= k
    (all queries for cross-attention) that see key k; NaN with fewer than `min_queries`."""
    return _mean_of(*_sink_sums(rows, cross), least=min_queries)


def _monotonic_advance(rows, band, score):
    """Runs the monotonic-path dynamic programme over the rows of `rows`, in order, from
    `score [B, H, Tk]` (the best path mass ending at each key after the previous rows; zeros
    before the first row), updated in place. Returns the number of valid rows [B, H]."""
    p = rows.p
    b, h, tq, tk = p.shape
    cumulative = np.concatenate(
        [np.zeros((b, h, tq, 1), np.float32), np.cumsum(p, axis=-1, dtype=np.float32)], axis=-1
    )
    upper = np.minimum(np.arange(tk) + band + 1, tk)
    lower = np.maximum(np.arange(tk) - band, 0)
    on_band = cumulative[..., upper] - cumulative[..., lower]  # mass of keys j-band..j+band
    # Padded rows add nothing (their p is 0 anyway; the mask makes it explicit). Query-major
    # and contiguous, so that each step of the loop reads one block.
    on_band = np.ascontiguousarray(
        np.moveaxis(on_band * rows.valid[..., np.newaxis], 2, 0), dtype=np.float32
    )
    for i in range(tq):
        np.maximum.accumulate(score, axis=-1, out=score)  # the path may stay or move right
        score += on_band[i]
    return rows.valid.sum(axis=-1)


def _monotonic(rows, band):
    """Share of attention mass within +-band keys of the best non-decreasing path [B, H]."""
    b, h, _, tk = rows.p.shape
    score = np.zeros((b, h, tk), np.float32)
    count = _monotonic_advance(rows, band, score)
    return _mean_of(score.max(axis=-1), count)


def similarity_rows(queries, most=None):
    """The query rows head similarity compares: all `queries` rows, or `most` of them evenly
    spread (row `floor((j + 1) * queries / most) - 1` for `j < most`, so the last row is
    always in), as sorted int indices. The same rows whether a layer is fed whole or in chunks.

    Example:

    >>> similarity_rows(8, most=4).tolist()
    [1, 3, 5, 7]
    """
    if most is None or queries <= most:
        return np.arange(queries)
    return (np.arange(1, most + 1) * queries) // most - 1


def _causal_ragged(attended, positions, tk):
    """For rows at query `positions` that attend no key after their own position: `(queries,
    keys, starts)` indexing each row's keys `0..position` one row after the other (`starts`: the
    first index of each row), else None."""
    lengths = np.minimum(positions + 1, tk)
    future = positions[:, np.newaxis] < np.arange(tk)[np.newaxis, :]
    if not future.any() or attended[..., future].any():
        return None
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    queries = np.repeat(np.arange(len(positions)), lengths)
    keys = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    return queries, keys, starts


def _js_example_sums(rows, valid, positions=None, sample=None):
    """Per example, the Jensen-Shannon divergence (bits) of two heads' rows summed over the rows
    `valid` in both, and the number of those rows: `(total [B, H, H], rows [B, H, H])`. The
    diagonal holds 0 and each head's number of `valid` rows (JS(p, p) = 0).

    `positions`: the query position of each row of `rows` (default `0, 1, ...`); `sample`: the
    positions compared (`similarity_rows`; default all), the others are left out.

    JS(p, q) = (sum p log2 p + sum q log2 q) / 2 - sum m log2 m with m = (p + q) / 2, and
    sum m log2 m = (sum s log2 s) / 2 - 1 for s = p + q (rows summing to 1). When no row attends
    a key after its own position (causal attention), each row is compared over its keys up to
    that position only; otherwise over the keys some row attends.
    """
    p, attended = rows.p, rows.attended
    b, h, tq, tk = p.shape
    positions = np.arange(tq) if positions is None else np.asarray(positions)
    if sample is not None:
        keep = np.flatnonzero(np.isin(positions, sample))
        p, attended, valid = p[:, :, keep], attended[:, :, keep], valid[:, :, keep]
        positions, tq = positions[keep], len(keep)
    if tq == 0:
        return np.zeros((b, h, h)), np.zeros((b, h, h), np.int64)
    ragged = _causal_ragged(attended, positions, tk)
    if ragged is not None:
        queries, keys, starts = ragged
        flat = p[:, :, queries, keys]  # [B, H, sum of row lengths], rows one after the other

        def row_sums(x):
            return np.add.reduceat(x, starts, axis=-1)
    else:
        used = np.flatnonzero(attended.any(axis=(0, 1, 2)))
        tk = int(used[-1]) + 1 if used.size else 1
        flat = np.ascontiguousarray(p[..., :tk]).reshape(b, h, tq * tk)

        def row_sums(x):
            return x.reshape(x.shape[:-1] + (tq, tk)).sum(axis=-1)

    return _js_pair_sums(flat, row_sums, valid)


def _js_pair_sums(flat, row_sums, valid):
    """`_js_example_sums` of rows laid out in `flat [B, H, n]`, `row_sums` summing each row."""
    b, h, _ = flat.shape
    plogp = row_sums(flat * np.log2(flat + _TINY))  # [B, H, rows]
    total = np.zeros((b, h, h))
    count = np.zeros((b, h, h), np.int64)
    pair_sum = np.empty((b, h - 1, flat.shape[-1]), np.float32)
    scratch = np.empty_like(pair_sum)
    for first in range(h - 1):
        others = slice(first + 1, h)
        s, t = pair_sum[:, : h - first - 1], scratch[:, : h - first - 1]
        np.add(flat[:, first : first + 1], flat[:, others], out=s)
        s += _TINY
        np.log2(s, out=t)
        t *= s
        js = 0.5 * (plogp[:, first : first + 1] + plogp[:, others]) - (0.5 * row_sums(t) - 1.0)
        both = valid[:, first : first + 1] & valid[:, others]
        total[:, first, others], count[:, first, others] = _row_sum(np.maximum(js, 0), both)
    total = total + total.transpose(0, 2, 1)
    count = count + count.transpose(0, 2, 1)
    count[:, np.arange(h), np.arange(h)] = valid.sum(axis=-1)
    return total, count


def _js_over_examples(total, count):
    """Sum over examples of each example's mean divergence, and the number of examples with
    rows: `(total [H, H], examples [H, H])` from `_js_example_sums`' per-example sums."""
    per_example = _mean_of(total, count)
    present = ~np.isnan(per_example)
    return np.where(present, per_example, 0).sum(axis=0), present.sum(axis=0)


def _js_rows(rows, valid):
    """Sum over examples of the mean Jensen-Shannon divergence (bits) of two heads' rows:
    returns (total [H, H], examples [H, H])."""
    return _js_over_examples(*_js_example_sums(rows, valid))


# --------------------------------------------------------------------------------------------
# The measures, streamed over a probe set


class HeadHealth:
    """Accumulates head-health measures of one attention layer over a probe set, block by block.

    Every measure is computed per example (a mean over that example's rows) and then averaged
    over the examples fed so far, so feeding the probe set in blocks gives the same answer as
    feeding it at once. Only sums of size `[H]`, `[H, Tk]` and `[H, H]` are kept.

    Args:
      repeat_offset: `L` for an induction probe (a random sequence of length `L` repeated, see
        `induction_probe`): token `i` equals token `i - L` in the second copy. None: no
        induction score.
      repeat_start: first query position of the second copy (default `repeat_offset`; pass
        `L + 1` when a BOS token was prepended to the probe).
      causal: True to mask every key after its query (`k > i`). Keras returns 0, not NaN, at
        masked positions: pass `causal=True` or the `mask`, or a causal row counts its future
        keys as seen (entropy is normalised by the wrong count).
      cross: True for cross-attention (queries and keys are different sequences): scores
        monotonicity instead of previous-token / diagonal / induction, and sinks over all queries.
      similarity: also accumulate the head-by-head Jensen-Shannon divergence (`H^2 / 2` row
        comparisons per example: the most expensive measure).
      similarity_rows: how many query rows of each example the similarity compares, evenly
        spread (`similarity_rows()`); None compares every row.
      sink_min_queries: a key averaged over fewer queries than this is never a sink.
      monotonic_band: keys within this distance of the monotonic path count as on it.

    Example:

    ```python
    health = HeadHealth(repeat_offset=32)
    ids, offset = induction_probe(vocab_size=1000, length=32, batch=64)
    for start in range(0, 64, 16):                      # blocks of 16 probe sequences
        weights, logits = my_attention(ids[start:start + 16])   # [16, H, 64, 64] each
        health.update(weights, logits=logits)
    result = health.result()
    result["induction"], result["roles"], result["sinks"]
    ```
    """

    def __init__(self, repeat_offset=None, repeat_start=None, causal=False, cross=False,
                 similarity=True, sink_min_queries=SINK_MIN_QUERIES,
                 monotonic_band=MONOTONIC_BAND, similarity_rows=SIMILARITY_ROWS):
        if repeat_offset is not None:
            repeat_offset = int(repeat_offset)
            if repeat_offset < 3:
                raise ValueError(
                    "repeat_offset must be >= 3 (with 2 the induction target i - L + 1 is the "
                    "previous token), got %d" % repeat_offset
                )
            if cross:
                raise ValueError("an induction probe is self-attention: cross must be False")
        if repeat_start is not None and repeat_offset is None:
            raise ValueError("repeat_start needs repeat_offset")
        self.repeat_offset = repeat_offset
        self.repeat_start = repeat_offset if repeat_start is None else int(repeat_start)
        if repeat_offset is not None and self.repeat_start < repeat_offset:
            raise ValueError(
                "repeat_start %d is before the second copy can begin (repeat_offset %d)"
                % (self.repeat_start, repeat_offset)
            )
        self.cross = bool(cross)
        self.causal = bool(causal)
        if self.causal and self.cross:
            raise ValueError("causal applies to self-attention: cross must be False")
        self.similarity = bool(similarity)
        self.similarity_rows = None if similarity_rows is None else int(similarity_rows)
        if self.similarity_rows is not None and self.similarity_rows < 1:
            raise ValueError("similarity_rows must be >= 1 or None, got %d" % similarity_rows)
        self.sink_min_queries = int(sink_min_queries)
        self.monotonic_band = int(monotonic_band)
        if self.sink_min_queries < 1 or self.monotonic_band < 0:
            raise ValueError("sink_min_queries must be >= 1 and monotonic_band >= 0")
        self.shape = None  # (H, Tq, Tk) of the first block
        self.examples = 0
        self._sums = {}
        self._counts = {}
        self._max_logit = None
        self._sink = None
        self._js = None

    def _add(self, name, per_example):
        present = ~np.isnan(per_example)
        total = np.where(present, per_example, 0).sum(axis=0)
        count = present.sum(axis=0)
        if name in self._sums:
            self._sums[name] += total
            self._counts[name] += count
        else:
            self._sums[name], self._counts[name] = total, count

    def update(self, weights, logits=None, mask=None):
        """Adds a block of the probe set.

        Args:
          weights: post-softmax attention `[B, H, Tq, Tk]` (or `[H, Tq, Tk]`), full precision;
            NaN marks masked positions.
          logits: the pre-softmax scores of the same shape, or None. Masked positions and
            non-finite values are ignored.
          mask: boolean, True = attended, broadcastable to the weights (or Keras' `[B, Tq, Tk]`).

        Returns:
          self.
        """
        weights = _as_batch(weights)
        b, h, tq, tk = weights.shape
        self._check_shape(h, tq, tk)
        if self.causal:
            future = np.triu(np.ones((tq, tk), bool), k=1)
            mask = ~future if mask is None else _mask_for(mask, weights.shape) & ~future
        rows = _Rows(weights, mask)

        normalised, nats = _entropies(rows)
        measures = {"entropy": normalised, "entropy_nats": nats}
        positions = np.arange(tq)
        measures["first_token"] = _offset_score(rows, positions, np.zeros_like(positions))
        if not self.cross:
            measures["previous_token"] = _offset_score(rows, positions[1:], positions[1:] - 1)
            measures["diagonal"] = _offset_score(rows, positions, positions)
            if self.repeat_offset is not None:
                queries = positions[self.repeat_start :]
                keys = queries - self.repeat_offset + 1
                measures["induction"] = _offset_score(rows, queries, keys)
        else:
            measures["monotonic"] = _monotonic(rows, self.monotonic_band)
        measures["sink_alpha"] = _sink_alpha(rows, self.cross, self.sink_min_queries)

        if logits is not None:
            logits = _as_batch(logits, "logits")
            if logits.shape != weights.shape:
                raise ValueError(
                    "logits of shape %s do not match weights of shape %s"
                    % (tuple(logits.shape), tuple(weights.shape))
                )
            usable = rows.attended & np.isfinite(logits)
            largest = np.where(usable, logits, -np.inf).max(axis=(0, 2, 3))
            self._max_logit = (
                largest if self._max_logit is None else np.maximum(self._max_logit, largest)
            )
        js = None
        if self.similarity:
            js = _js_example_sums(rows, rows.informative, sample=self.similarity_sample())
        return self._add_examples(measures, js)

    def similarity_sample(self):
        """The query rows the similarity compares (`similarity_rows()` of this layer's `Tq`)."""
        return similarity_rows(self.shape[1], self.similarity_rows)

    def _check_shape(self, h, tq, tk):
        """Takes the first block's `(H, Tq, Tk)`; later blocks must have the same."""
        if self.shape is None:
            if not self.cross and tq != tk:
                raise ValueError(
                    "self-attention needs Tq == Tk, got Tq=%d, Tk=%d (pass cross=True for "
                    "cross-attention)" % (tq, tk)
                )
            if self.repeat_offset is not None and self.repeat_start >= tq:
                raise ValueError(
                    "the probe has %d positions: no query in its second copy (repeat_start %d)"
                    % (tq, self.repeat_start)
                )
            self.shape = (h, tq, tk)
        elif (h, tq, tk) != self.shape:
            raise ValueError(
                "a block of shape [*, %d, %d, %d] does not match the first block's [*, %d, %d, %d]"
                % ((h, tq, tk) + self.shape)
            )

    def _add_examples(self, measures, js=None):
        """Adds the measures of a block of examples: `{name: [B, H]}` (NaN: the example has no
        row for it; `"sink_alpha"` `[B, H, Tk]`) and, with similarity, `_js_example_sums`'
        per-example sums. Shared by `update` and the query-chunked
        `health_stream.ChunkedHeadHealth`. Returns self."""
        for name, per_example in measures.items():
            self._add(name, per_example)
        if self.similarity and js is not None:
            total, count = _js_over_examples(*js)
            if self._js is None:
                self._js = [total, count]
            else:
                self._js[0] += total
                self._js[1] += count
        self.examples += len(measures["entropy"])
        return self

    def _mean(self, name):
        h = self.shape[0]
        if name not in self._sums:
            return np.full(h, np.nan, np.float32)
        count = self._counts[name]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, self._sums[name] / np.maximum(count, 1), np.nan)
        return mean.astype(np.float32)

    def result(self):
        """The measures of every head, averaged over the examples fed so far.

        Returns:
          a dict:
          - `"entropy"`, `"entropy_nats"`, `"max_logit"`, `"previous_token"`, `"diagonal"`,
            `"first_token"`, `"induction"`, `"monotonic"`: float32 `[H]`, NaN where the
            measure does not apply (no logits, no induction probe, self- vs cross-attention)
            or no row could be used;
          - `"sink_alpha"`: float32 `[H, Tk]`, alpha_k of every key (NaN: too few queries);
          - `"sinks"`: per head, a list of `(key, alpha)` with alpha > 0.3, largest first;
          - `"divergence"`: float32 `[H, H]` mean Jensen-Shannon divergence in bits (only
            with `similarity=True`), for `cluster_heads`;
          - `"roles"`: per head, `role_of` of its scores;
          - `"examples"`: how many probe examples were fed.
        """
        if self.shape is None:
            raise ValueError("HeadHealth.result() before any update(): nothing was measured")
        h, _, tk = self.shape
        result = {name: self._mean(name) for name in MEASURES if name != "max_logit"}
        result["max_logit"] = (
            np.full(h, np.nan, np.float32)
            if self._max_logit is None
            else np.where(np.isfinite(self._max_logit), self._max_logit, np.nan).astype(np.float32)
        )
        count = self._counts["sink_alpha"]
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha = np.where(count > 0, self._sums["sink_alpha"] / np.maximum(count, 1), np.nan)
        result["sink_alpha"] = alpha.astype(np.float32)
        result["sinks"] = []
        for head in range(h):
            keys = np.flatnonzero(np.nan_to_num(alpha[head], nan=0.0) > SINK_THRESHOLD)
            keys = keys[np.argsort(-alpha[head, keys], kind="stable")]
            result["sinks"].append([(int(k), float(alpha[head, k])) for k in keys])
        if self.similarity:
            total, count = self._js
            with np.errstate(invalid="ignore", divide="ignore"):
                divergence = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            result["divergence"] = divergence.astype(np.float32)
        result["roles"] = [role_of(scores_of(result, head)) for head in range(h)]
        result["examples"] = self.examples
        return result


def head_health(weights, logits=None, mask=None, **options):
    """All head-health measures of one layer in one call: `HeadHealth(**options)` fed once.

    Example:

    ```python
    result = head_health(weights, logits=logits, repeat_offset=32)   # weights [64, H, 64, 64]
    result["entropy"], result["max_logit"], result["roles"]
    ```
    """
    return HeadHealth(**options).update(weights, logits=logits, mask=mask).result()


def scores_of(result, head):
    """The scores of one head of a `HeadHealth.result()` as a dict of floats, for `role_of`."""
    return {name: float(result[name][head]) for name in MEASURES if name in result}


def role_of(scores, thresholds=None):
    """The role of a head from its scores.

    The first role, in the order induction, previous-token, diagonal, monotonic, first-token,
    whose score reaches its threshold (`ROLE_THRESHOLDS`: 0.3, 0.5, 0.5, 0.6, 0.5); otherwise
    "diffuse" when the normalised entropy is at least 0.9, otherwise "none". Missing or NaN
    scores never match.

    Example:

    >>> role_of({"previous_token": 0.82, "first_token": 0.1, "entropy": 0.2})
    'previous-token'
    >>> role_of({"previous_token": 0.1, "entropy": 0.95})
    'diffuse'
    """
    thresholds = dict(ROLE_THRESHOLDS, **(thresholds or {}))
    for role, score in ROLES:
        value = scores.get(score)
        if value is not None and not math.isnan(value) and value >= thresholds[score]:
            return role
    entropy = scores.get("entropy")
    if entropy is not None and not math.isnan(entropy) and entropy >= DIFFUSE_ENTROPY:
        return "diffuse"
    return "none"


# --------------------------------------------------------------------------------------------
# Probe


def induction_probe(vocab_size, length, batch=64, seed=0, reserved_ids=(0,)):
    """Builds an induction probe: `batch` random token sequences of `length`, each repeated.

    Token ids are drawn from `range(vocab_size)` minus `reserved_ids` (padding, BOS, ...),
    without repetition inside a copy when the vocabulary allows it, so that every token of the
    second copy has exactly one earlier occurrence. An induction head at query `i` of the second
    copy attends to `i - length + 1`, the token after that occurrence.

    Args:
      vocab_size: number of token ids of the model.
      length: `L`, the length of one copy (>= 3).
      batch: number of probe sequences.
      seed: seed of the random draw (the same seed gives the same probe).
      reserved_ids: ids never drawn.

    Returns:
      `(ids, repeat_offset)`: int32 `[batch, 2 * length]` and `length`; pass
      `repeat_offset=length` to `HeadHealth`. To prepend a BOS column, use
      `np.concatenate([np.full((batch, 1), bos), ids], axis=1)` and `repeat_start=length + 1`.

    Example:

    >>> ids, offset = induction_probe(vocab_size=100, length=5, batch=2)
    >>> ids.shape, offset, bool((ids[:, :5] == ids[:, 5:]).all()), bool((ids != 0).all())
    ((2, 10), 5, True, True)
    """
    vocab_size, length, batch = int(vocab_size), int(length), int(batch)
    if length < 3:
        raise ValueError("length must be >= 3 (with 2 induction equals previous-token), got %d"
                         % length)
    if batch < 1:
        raise ValueError("batch must be >= 1, got %d" % batch)
    if vocab_size < 1:
        raise ValueError("vocab_size must be >= 1, got %d" % vocab_size)
    keep = np.ones(vocab_size, bool)
    reserved = np.asarray(list(reserved_ids), dtype=np.int64)
    keep[reserved[(reserved >= 0) & (reserved < vocab_size)]] = False
    allowed = np.flatnonzero(keep)
    if allowed.size < 2:
        raise ValueError(
            "vocab_size %d with reserved_ids %r leaves %d token(s) to draw from: need at least 2"
            % (vocab_size, tuple(reserved_ids), allowed.size)
        )
    rng = np.random.default_rng(seed)
    distinct = allowed.size >= length
    picks = [rng.choice(allowed.size, size=length, replace=not distinct) for _ in range(batch)]
    first = allowed[np.stack(picks)]
    return np.concatenate([first, first], axis=1).astype(np.int32), length


# --------------------------------------------------------------------------------------------
# Alarms and changes over steps

Alarm = collections.namedtuple("Alarm", ["step", "kind", "value", "reference"])
Alarm.__doc__ = """An alarm at `step`: `kind` is "entropy-floor", "entropy-drop" or "max-logit";
`value` the measure at that step; `reference` the threshold it crossed (for a drop: the median
of the recent history)."""


def _series(steps, values):
    steps = list(steps)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(steps) != values.size:
        raise ValueError(
            "a series needs one value per step: %d steps, values of shape %s"
            % (len(steps), tuple(values.shape))
        )
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("steps must increase")
    return steps, values


def entropy_alarms(steps, values, floor=ENTROPY_FLOOR, drop=ENTROPY_DROP, window=ENTROPY_WINDOW,
                   min_history=ENTROPY_MIN_HISTORY):
    """Entropy-collapse alarms of one head over steps (Zhai et al. 2023).

    An alarm is raised at the step where a condition starts to hold (not again while it keeps
    holding): "entropy-floor" when the entropy is below `floor`; "entropy-drop" when it is below
    `(1 - drop)` times the median of the previous `window` logged values (at least `min_history`
    of them, NaN skipped). NaN values raise nothing.

    Example:

    >>> entropy_alarms([0, 100, 200, 300, 400], [0.8, 0.8, 0.75, 0.3, 0.01])
    [Alarm(step=300, kind='entropy-drop', value=0.3, reference=0.8), Alarm(step=400, kind='entropy-floor', value=0.01, reference=0.02)]
    """
    steps, values = _series(steps, values)
    values = values.tolist()  # plain floats: the server judges 144 heads x 100 steps at once
    alarms = []
    below_floor = dropped = False
    for index, (step, value) in enumerate(zip(steps, values)):
        if math.isnan(value):
            continue
        now_below = value < floor
        if now_below and not below_floor:
            alarms.append(Alarm(step, "entropy-floor", float(value), float(floor)))
        below_floor = now_below
        history = [v for v in values[max(0, index - window) : index] if not math.isnan(v)]
        now_dropped = False
        if len(history) >= min_history:
            median = float(statistics.median(history))
            now_dropped = value < (1 - drop) * median
            if now_dropped and not dropped and not now_below:
                alarms.append(Alarm(step, "entropy-drop", float(value), median))
        dropped = now_dropped
    return alarms


def logit_alarms(steps, values, bound=MAX_LOGIT_BOUND):
    """Max-logit growth alarms of one head over steps (Wortsman et al. 2023): "max-logit" at each
    step where the maximum pre-softmax logit passes `bound` after being at or below it.

    Example:

    >>> logit_alarms([0, 10, 20, 30], [8.0, 60.0, 140.0, 150.0])
    [Alarm(step=20, kind='max-logit', value=140.0, reference=100.0)]
    """
    steps, values = _series(steps, values)
    alarms = []
    above = False
    for step, value in zip(steps, values):
        if math.isnan(value):
            continue
        now_above = value > bound
        if now_above and not above:
            alarms.append(Alarm(step, "max-logit", float(value), float(bound)))
        above = now_above
    return alarms


def emergence_step(steps, values, threshold):
    """The step at which a role emerged: the logged step with the largest rise of its score over
    the previous logged step, or None when the last score is below `threshold` (the role is not
    there at the end) or there is no rise. NaN values are skipped.

    Example:

    >>> emergence_step([0, 100, 200, 300], [0.05, 0.08, 0.7, 0.75], threshold=0.5)
    200
    >>> emergence_step([0, 100, 200, 300], [0.05, 0.08, 0.7, 0.4], threshold=0.5) is None
    True
    """
    steps, values = _series(steps, values)
    present = ~np.isnan(values)
    steps = [s for s, keep in zip(steps, present) if keep]
    values = values[present]
    if values.size < 2 or values[-1] < threshold:
        return None
    rises = np.diff(values)
    best = int(np.argmax(rises))
    return steps[best + 1] if rises[best] > 0 else None


def _fall_step(steps, values):
    present = ~np.isnan(values)
    steps = [s for s, keep in zip(steps, present) if keep]
    values = values[present]
    if values.size < 2:
        return None
    falls = -np.diff(values)
    best = int(np.argmax(falls))
    return steps[best + 1] if falls[best] > 0 else None


def logit_grew(steps, values, step, growth=LOGIT_GROWTH, bound=MAX_LOGIT_BOUND,
               window=ENTROPY_WINDOW):
    """Whether the maximum logit grew with a fall in entropy at `step`: it is above `bound`
    there, or at least `growth` times the median of its previous `window` logged values (NaN
    skipped; a median at or below 0 gives no ratio). This is the logit growth that drives a
    softmax to one-hot (Dehghani et al. 2023, Wortsman et al. 2023). False where the logit at
    `step` is NaN (no logits stored).

    Example:

    >>> steps = [0, 1, 2, 3]
    >>> logit_grew(steps, [5.0, 6.0, 7.0, 70.0], 3), logit_grew(steps, [9.0, 12.0, 15.0, 47.0], 3)
    (True, False)
    """
    steps, values = _series(steps, values)
    if step not in steps:
        raise ValueError("step %r is not one of the logged steps" % (step,))
    index = steps.index(step)
    value = values[index]
    history = values[max(0, index - window) : index]
    history = history[~np.isnan(history)]
    if np.isnan(value):
        return False
    if value > bound:
        return True
    median = float(np.median(history)) if history.size else 0.0
    return median > 0 and bool(value >= growth * median)


Change = collections.namedtuple("Change", ["step", "layer", "head", "kind", "sentence"])
Change.__doc__ = """One change found by `changes`: `kind` is "emerged", "lost", "entropy-floor",
"entropy-drop" or "max-logit"; `sentence` says it in words."""


def _head_name(layer, head):
    prefix = "layer %d" % layer if isinstance(layer, (int, np.integer)) else str(layer)
    return "%s head %d" % (prefix, head)


def _role_series(steps, series, thresholds):
    roles = []
    for index in range(len(steps)):
        scores = {name: float(values[index]) for name, values in series.items()}
        roles.append(role_of(scores, thresholds))
    return roles


def _article(role):
    return "an" if role[0] in "aeiou" else "a"


class _HeadHistory:
    """One head's series over the logged steps, with its role at each step and the step its
    final role emerged (None when it held it from the first step or it did not emerge)."""

    def __init__(self, steps, measures, thresholds):
        self.steps = steps
        self.series = {name: _series(steps, values)[1] for name, values in measures.items()}
        self.roles = _role_series(steps, self.series, thresholds) if steps else []
        score_of = dict(ROLES)
        self.first = self.roles[0] if steps else "none"
        self.last = self.roles[-1] if steps else "none"
        self.gained = self.last if self.last in score_of and self.last != self.first else None
        self.emerged = None
        if self.gained is not None:
            score = score_of[self.gained]
            self.emerged = emergence_step(steps, self.series[score], thresholds[score])

    def role_explaining(self, step):
        """The role that explains the head's entropy falling at `step`, or None: the role the
        head holds at `step`, or the role it gains, when `step` is on its way there (at or
        before the role's emergence step); never when its max logit grew with the fall."""
        if "max_logit" in self.series and logit_grew(self.steps, self.series["max_logit"], step):
            return None
        held = self.roles[self.steps.index(step)]
        if held in dict(ROLES):
            return held
        if self.emerged is not None and step <= self.emerged:
            return self.gained
        return None


def _role_changes(history, layer, head):
    """The head's "emerged" and "lost" changes."""
    name, found = _head_name(layer, head), []
    if history.gained is not None and history.emerged is not None:
        sentence = "%s became %s %s head at step %d" % (
            name, _article(history.gained), history.gained, history.emerged)
        found.append(Change(history.emerged, layer, head, "emerged", sentence))
    if history.first in dict(ROLES) and history.last != history.first:
        step = _fall_step(history.steps, history.series[dict(ROLES)[history.first]])
        if step is not None:
            found.append(Change(step, layer, head, "lost", "%s stopped being %s %s head at step %d"
                                % (name, _article(history.first), history.first, step)))
    return found


def _alarm_changes(history, layer, head, entropy_floor, entropy_drop, logit_bound):
    """The head's entropy alarms that no role explains (`_HeadHistory.role_explaining`), and
    its max-logit alarms."""
    name, found = _head_name(layer, head), []
    if "entropy" in history.series:
        for alarm in entropy_alarms(history.steps, history.series["entropy"], entropy_floor,
                                    entropy_drop):
            if history.role_explaining(alarm.step) is not None:
                continue
            if alarm.kind == "entropy-floor":
                text = "%s: entropy collapsed below %g at step %d (%.3g)" % (
                    name, alarm.reference, alarm.step, alarm.value)
            else:
                text = "%s: entropy dropped to %.3g at step %d (recent median %.3g)" % (
                    name, alarm.value, alarm.step, alarm.reference)
            found.append(Change(alarm.step, layer, head, alarm.kind, text))
    if "max_logit" in history.series:
        for alarm in logit_alarms(history.steps, history.series["max_logit"], logit_bound):
            text = "%s: max logit passed %g at step %d (%.4g)" % (
                name, alarm.reference, alarm.step, alarm.value)
            found.append(Change(alarm.step, layer, head, alarm.kind, text))
    return found


def _change_order(change):
    """By step, then numbered layers before named ones, then head."""
    numbered = isinstance(change.layer, (int, np.integer))
    layer = (0, int(change.layer), "") if numbered else (1, 0, str(change.layer))
    return change.step, layer, change.head, change.kind


def changes(steps, heads, thresholds=None, entropy_floor=ENTROPY_FLOOR, entropy_drop=ENTROPY_DROP,
            logit_bound=MAX_LOGIT_BOUND):
    """What changed over a run, as sentences, in step order, with each head's alarms read with
    its role.

    Args:
      steps: the logged steps, increasing.
      heads: `{(layer, head): {measure: values over steps}}` with measures among `MEASURES`
        (missing ones are skipped, NaN where a step lacks one). `layer` is an int ("layer 3")
        or a name (a tag, written as it is).
      thresholds: overrides of `ROLE_THRESHOLDS`.

    Returns:
      a list of `Change`, ordered by step, then layer (numbered layers first), then head: a
      role that is a head's role at the last step and was not at the first ("became a
      previous-token head at step S", S its `emergence_step`); a role held at the first step
      and not at the last ("stopped being a monotonic head at step S", S the largest fall);
      entropy-collapse alarms (`entropy_alarms`) except where the head's role explains the
      fall (the role it holds at that step, or the role it gains later, from a fall at or
      before the role's emergence step) and its max logit did not grow with it
      (`logit_grew`); max-logit alarms.

    Example:

    >>> steps = [0, 600, 1200, 1800, 2400]
    >>> series = {(3, 5): {"previous_token": [0.1, 0.12, 0.15, 0.7, 0.8],
    ...                    "entropy": [0.9, 0.8, 0.85, 0.3, 0.01]}}
    >>> [change.sentence for change in changes(steps, series)]
    ['layer 3 head 5 became a previous-token head at step 1800']
    >>> series[(3, 5)]["previous_token"] = [0.1] * 5          # the same fall without a role
    >>> [change.kind for change in changes(steps, series)]
    ['entropy-drop', 'entropy-floor']
    """
    thresholds = dict(ROLE_THRESHOLDS, **(thresholds or {}))
    found = []
    for (layer, head), measures in heads.items():
        history = _HeadHistory(list(steps), measures, thresholds)
        found += _role_changes(history, layer, head)
        found += _alarm_changes(history, layer, head, entropy_floor, entropy_drop, logit_bound)
    found.sort(key=_change_order)
    return found


# --------------------------------------------------------------------------------------------
# Head similarity


def js_divergence(weights, mask=None):
    """Mean Jensen-Shannon divergence (bits, in [0, 1]) between the attention rows of every pair
    of heads: float32 `[H, H]`, averaged over rows both heads use and then over examples.

    To compare heads of several layers, concatenate them along the head axis. For a probe set fed
    in blocks, use `HeadHealth(similarity=True)` and read `result()["divergence"]`.

    Example:

    ```python
    divergence = js_divergence(weights)              # weights [B, H, T, T]
    groups = cluster_heads(divergence, threshold=0.1)
    ```
    """
    rows = _Rows(_as_batch(weights), mask)
    total, count = _js_rows(rows, rows.informative)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


SIMILARITY_THRESHOLD = 0.1  # bits of mean JS divergence under which heads attend alike


def cluster_heads(divergence, threshold=SIMILARITY_THRESHOLD):
    """Groups heads that attend alike: average-linkage agglomerative clustering.

    Starting from one cluster per head, the two clusters with the smallest average pairwise
    divergence are merged while that average is at most `threshold`. NaN divergences never join.

    Args:
      divergence: symmetric `[N, N]` (e.g. `js_divergence`), N heads (of one or several layers).
      threshold: the largest average divergence inside a merged cluster.

    Returns:
      int `[N]` cluster labels, numbered 0, 1, ... in order of each cluster's first head.

    Example:

    >>> d = np.array([[0, .02, .9], [.02, 0, .8], [.9, .8, 0]])
    >>> cluster_heads(d, threshold=0.1).tolist()
    [0, 0, 1]
    """
    d = np.asarray(divergence, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError("divergence must be a square [N, N] matrix, got shape %s" % (d.shape,))
    n = d.shape[0]
    d = np.where(np.isnan(d), np.inf, d)
    if not np.allclose(d[np.isfinite(d)], d.T[np.isfinite(d)], atol=1e-6):
        raise ValueError("divergence must be symmetric")
    clusters = [[i] for i in range(n)]
    # linkage[a, b]: average divergence between clusters a and b (sum / sizes).
    linkage = d.copy()
    np.fill_diagonal(linkage, np.inf)
    sizes = np.ones(n)
    alive = np.ones(n, bool)
    while alive.sum() > 1:
        masked = np.where(alive[:, None] & alive[None, :], linkage, np.inf)
        a, b = np.unravel_index(np.argmin(masked), masked.shape)
        if not masked[a, b] <= threshold:
            break
        a, b = min(a, b), max(a, b)
        # Average linkage (UPGMA): the new cluster's distance to c is the size-weighted mean.
        merged = (sizes[a] * linkage[a] + sizes[b] * linkage[b]) / (sizes[a] + sizes[b])
        linkage[a], linkage[:, a] = merged, merged
        linkage[a, a] = np.inf
        sizes[a] += sizes[b]
        alive[b] = False
        clusters[a].extend(clusters[b])
        clusters[b] = []
    labels = np.empty(n, np.int64)
    ordered = sorted((c for c in clusters if c), key=min)
    for label, members in enumerate(ordered):
        labels[members] = label
    return labels
