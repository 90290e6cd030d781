"""Pooled steps (docs/format.md, "Pooled steps"): an overview of the whole matrix in blocks
(mean and max of each block) plus exact windows, for heads too large to store in full (numpy
only).

`pool` computes the overview from full weights, `default_windows` and `choose_pooling` decide
what a step keeps, `encode_pooled_step` writes it and `decode_overview` / `decode_window` read
it back.

Example:

>>> from tb_attention_plugin.step_header import decode_header
>>> w = np.full((1, 1, 64, 64), 1 / 64, np.float32)
>>> means, maxes = pool(w, 16)
>>> blobs = encode_pooled_step([1, 1, 64, 64], 16, means, maxes, [])
>>> header = decode_header(blobs[0])
>>> decode_overview(blobs[1], header, header["scales"][0])[1].shape
(4, 4)
"""

import math

import numpy as np

from tb_attention_plugin import step_facts
from tb_attention_plugin.codes_v2 import V2_MASKED, pack_levels, quantize_v2
from tb_attention_plugin.step_header import (
    ENCODINGS, LAYOUT_POOLED, MAX_POOLED_VALUES, MAX_VALUES_PER_STEP, MAX_WINDOW_NAME,
    RANGE_TOLERANCE, header_blob, overview_shape, payload_checks, pool_grid, pooled_blob_indexes,
    window,
)
from tb_attention_plugin.step_inputs import as_numpy, normalize_images, normalize_tokens, whole_number
from tb_attention_plugin.step_payload import (
    codes_to_weights, compressed_payloads, inflate_codes, payload_bound,
)

# Rows of the default windows never exceed this (a window of 64 query rows is a screenful).
MAX_DEFAULT_WINDOW_ROWS = 64
_CHUNK_VALUES = 1 << 20  # values pooled at a time (a few MiB of float32 temporaries)


def _block_pair(block):
    """`(bq, bk)` from an int or a pair of positive ints."""
    if isinstance(block, (list, tuple, np.ndarray)):
        if len(block) != 2:
            raise ValueError("block must be an int or (query block, key block), got %r" % (block,))
        return whole_number(block[0], "block[0]", 1), whole_number(block[1], "block[1]", 1)
    size = whole_number(block, "block", 1)
    return size, size


def pool(weights, block, mask=None):
    """Block means and block maxes of attention weights: the reference for pooled steps.

    Args:
      weights: float `[..., Tq, Tk]`; NaN marks a masked position.
      block: an int (square blocks) or `(bq, bk)`; edge blocks are shorter.
      mask: optional bool broadcastable to `weights` (False = masked).

    Returns:
      `(means, maxes)`, float32 `[..., ceil(Tq/bq), ceil(Tk/bk)]`: the mean and the max over the
      unmasked positions of each block; NaN where a block has no unmasked position.

    >>> w = np.array([[0.5, 0.25, 0.25], [1.0, np.nan, 0.0]], np.float32)
    >>> means, maxes = pool(w, 2)
    >>> means.tolist(), maxes.tolist()
    ([[0.5833333134651184, 0.125]], [[1.0, 0.25]])
    """
    bq, bk = _block_pair(block)
    array = np.asarray(weights, np.float32)
    if array.ndim < 2:
        raise ValueError("weights must have at least 2 axes [..., Tq, Tk]")
    if mask is not None:
        array = np.where(np.broadcast_to(np.asarray(mask, bool), array.shape), array, np.nan)
    lead, (tq, tk) = array.shape[:-2], array.shape[-2:]
    nq, nk = pool_grid(tq, bq), pool_grid(tk, bk)
    flat = array.reshape((-1, tq, tk))
    means = np.empty((flat.shape[0], nq, nk), np.float32)
    maxes = np.empty((flat.shape[0], nq, nk), np.float32)
    rows = max(1, _CHUNK_VALUES // max(1, bq * nk * bk))  # block rows at a time
    for i, matrix in enumerate(flat):
        padded = np.full((nq * bq, nk * bk), np.nan, np.float32)
        padded[:tq, :tk] = matrix
        for start in range(0, nq, rows):
            part = padded[start * bq:(start + rows) * bq].reshape(-1, bq, nk, bk)
            attended = ~np.isnan(part)
            count = attended.sum(axis=(1, 3))
            total = np.where(attended, part, 0).sum(axis=(1, 3), dtype=np.float64)
            largest = np.where(attended, part, -np.inf).max(axis=(1, 3))
            with np.errstate(invalid="ignore", divide="ignore"):
                means[i, start:start + rows] = np.where(count > 0, total / count, np.nan)
            maxes[i, start:start + rows] = np.where(count > 0, largest, np.nan)
    return means.reshape(lead + (nq, nk)), maxes.reshape(lead + (nq, nk))


def check_window(name, query, key, tq, tk):
    """Validates one window's name and half-open ranges; returns `(name, (q0, q1), (k0, k1))`."""
    if not isinstance(name, str) or not name or len(name) > MAX_WINDOW_NAME:
        raise ValueError("a window name must be a string of 1 to %d characters, got %r"
                         % (MAX_WINDOW_NAME, name))
    ranges = []
    for label, span, length in (("query", query, tq), ("key", key, tk)):
        try:
            start, stop = span
        except (TypeError, ValueError):
            raise ValueError("window %r %s range must be (start, stop), got %r"
                             % (name, label, span)) from None
        start = whole_number(start, "window %r %s start" % (name, label), 0)
        stop = whole_number(stop, "window %r %s stop" % (name, label), 1)
        if not start < stop <= length:
            raise ValueError(
                "window %r %s range [%d, %d) must satisfy 0 <= start < stop <= %d"
                % (name, label, start, stop, length)
            )
        ranges.append((start, stop))
    return name, ranges[0], ranges[1]


def is_causal(weights=None, mask=None):
    """True when `[..., T, T]` attention is causal: `mask` (False = masked) or, without a mask,
    the weights themselves put nothing above the diagonal.

    >>> is_causal(np.tril(np.ones((3, 3), np.float32)) / 3), is_causal(np.ones((2, 2)) / 2)
    (True, False)
    """
    source = mask if mask is not None else weights
    if source is None:
        return False
    array = np.asarray(source)
    tq, tk = array.shape[-2:]
    if tq != tk or tq < 2:
        return False
    upper = np.triu(np.ones((tq, tk), bool), 1)
    if mask is not None:
        return not np.broadcast_to(array, array.shape)[..., upper].any()
    return not (array[..., upper] > 0).any()


def default_windows(shape, rows, causal):
    """The default exact windows of a pooled step, as `[(name, (q0, q1), (k0, k1))]`.

    Causal self-attention: `last_queries`, the last `rows` queries over all keys, and
    `first_queries`, the first `rows` queries over the keys they can see (the first `rows`).
    Otherwise (bidirectional, cross-attention): the first and the last `rows` queries over all
    keys. Both: `first_key`, every query's weight on key 0 (attention sinks, [CLS]; `/stats`
    takes `first_token_share` from it), when there is more than one key.

    >>> default_windows([1, 12, 1024, 1024], 16, causal=True)  # doctest: +NORMALIZE_WHITESPACE
    [('last_queries', (1008, 1024), (0, 1024)), ('first_queries', (0, 16), (0, 16)),
     ('first_key', (0, 1024), (0, 1))]
    """
    tq, tk = shape[2], shape[3]
    rows = max(1, min(int(rows), tq))
    last = ("last_queries", (tq - rows, tq), (0, tk))
    if causal and tq == tk:
        windows = [last, ("first_queries", (0, rows), (0, rows))]
    else:
        windows = [("first_queries", (0, rows), (0, tk)), last]
    return windows + ([("first_key", (0, tq), (0, 1))] if tk > 1 else [])


def encode_pooled_step(shape, block, means, maxes, windows, query_tokens=None, key_tokens=None,
                       images=None, image_grid=None, prefix_tokens=None, reduced=None,
                       source_rank=4, source_dtype="float32", kv_heads=None, kv_group_size=None,
                       query_special=None, key_special=None):
    """Encodes one POOLED step from an already-reduced capture. Returns the list of blobs.

    Args:
      shape: the FULL `[B, H, Tq, Tk]` the overview covers.
      block: `(bq, bk)` (or an int for square blocks): positions per block.
      means, maxes: float `[B, H, nq, nk]` (`nq = ceil(Tq/bq)`, `nk = ceil(Tk/bk)`): each
        block's mean and max over its unmasked positions, NaN where the block is all masked
        (`pool` computes them from full weights).
      windows: list of `(name, (q0, q1), (k0, k1), weights [B, H, q1-q0, k1-k0])`, half-open
        ranges; the window's exact weights, NaN where masked. May be empty.
      query_tokens, key_tokens, images, image_grid, prefix_tokens, reduced, source_rank,
        source_dtype, kv_heads, kv_group_size, query_special, key_special: as for
        `encode_step` (tokens and special positions cover the full `Tq` / `Tk`).

    Raises `ValueError` / `TypeError` for inconsistent input, before anything is written.

    >>> from tb_attention_plugin.step_header import decode_header
    >>> w = np.full((1, 2, 8, 8), 1 / 8, np.float32)
    >>> means, maxes = pool(w, 4)
    >>> blobs = encode_pooled_step([1, 2, 8, 8], 4, means, maxes,
    ...                            [("last_queries", (6, 8), (0, 8), w[:, :, 6:, :])])
    >>> header = decode_header(blobs[0])
    >>> header["layout"], header["pooled"], header["blobs"]
    ('pooled', {'block': [4, 4], 'grid': [2, 2]}, {'overview': 1, 'windows': [3], 'images': None})
    >>> means, maxes = decode_overview(blobs[1], header, header["scales"][0])
    >>> float(means[0, 0]), means.shape
    (0.125, (2, 2))
    """
    shape = _checked_shape(shape)
    block = _block_pair(block)
    planes = _checked_overview(means, maxes, shape, block)
    checked, window_arrays = _checked_windows(windows, shape)
    batch, tq, tk = shape[0], shape[2], shape[3]
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    facts = step_facts.header_fields(
        step_facts.group_size(shape[1], kv_heads, kv_group_size),
        step_facts.special_positions(query_special, batch, tq, "query_special"),
        step_facts.special_positions(key_special, batch, tk, "key_special"))
    image_blobs, image_info = [], None
    if images is not None:
        image_blobs, image_info = normalize_images(images, batch, tk, image_grid, prefix_tokens)
    payloads, scales, lengths = _pooled_payloads(planes, window_arrays)
    header = _pooled_header(shape, block, checked, image_info is not None, source_rank,
                            source_dtype)
    header.update(scales=scales, query_tokens=query_tokens, key_tokens=key_tokens,
                  image=image_info, reduced=reduced)
    header.update(facts)
    header.update(payload_checks(payloads, lengths))
    return [header_blob(header)] + payloads + image_blobs


def _pooled_header(shape, block, windows, images, source_rank, source_dtype):
    """The first fields of a pooled step's header, in their stored order, up to `blobs`."""
    batch, heads, tq, tk = shape
    return {
        "version": 2,
        "layout": LAYOUT_POOLED,
        "shape": shape,
        "source_rank": source_rank,
        "source_dtype": source_dtype,
        "encoding": ENCODINGS[2],
        "pooled": {"block": list(block), "grid": [pool_grid(tq, block[0]), pool_grid(tk, block[1])]},
        "windows": windows,
        "blobs": pooled_blob_indexes(batch * heads, len(windows), images),
    }


def _pooled_payloads(planes, window_arrays):
    """`(payloads, scales, inflated lengths)` of a pooled step: every head's overview (means
    rows, then maxes rows, at the scale of its largest max), then every window's heads."""
    stacked = np.concatenate(planes, axis=2)  # [B, H, 2*nq, nk]: means plane, then maxes plane
    batch, heads = stacked.shape[:2]
    parts = [(stacked[b, h], planes[1][b, h]) for b in range(batch) for h in range(heads)]
    parts += [(array[b, h], None) for array in window_arrays
              for b in range(batch) for h in range(heads)]
    values = stacked.size + sum(array.size for array in window_arrays)
    return compressed_payloads(lambda part: nan_masked_codes(*part), parts, values)


def _checked_shape(shape):
    """The full `[B, H, Tq, Tk]` of a pooled step as a list of ints; `ValueError` when it is
    not one or larger than any step describes."""
    if not isinstance(shape, (list, tuple, np.ndarray)) or len(shape) != 4:
        raise ValueError("shape must be the full [B, H, Tq, Tk], got %r" % (shape,))
    batch, heads, tq, tk = (whole_number(n, "shape[%d]" % i, 1) for i, n in enumerate(shape))
    if batch * heads * tq * tk > MAX_POOLED_VALUES:
        raise ValueError("shape %s is larger than any attention a step describes" % (list(shape),))
    return [batch, heads, tq, tk]


def _checked_overview(means, maxes, shape, block):
    """`[means, maxes]` as float32 `[B, H, nq, nk]` clipped to [0, 1], checked against the
    shape and the block size."""
    batch, heads, tq, tk = shape
    (bq, bk), nq, nk = block, pool_grid(tq, block[0]), pool_grid(tk, block[1])
    planes = []
    for label, plane in (("means", means), ("maxes", maxes)):
        array = np.asarray(as_numpy(plane), np.float32)
        if array.shape != (batch, heads, nq, nk):
            raise ValueError("%s must have shape %s (blocks of %dx%d over %dx%d), got %s"
                             % (label, [batch, heads, nq, nk], bq, bk, tq, tk, list(array.shape)))
        _check_probabilities(array, label)
        planes.append(array)
    if np.any(np.isnan(planes[0]) != np.isnan(planes[1])):
        raise ValueError("means and maxes must be NaN (masked) in the same blocks")
    if batch * heads * 2 * nq * nk > MAX_VALUES_PER_STEP:
        raise ValueError("the overview of %dx%d blocks per head is too large for one step; use "
                         "larger blocks" % (nq, nk))
    return planes


def _checked_windows(windows, shape):
    """`(header window objects, float32 weights [B, H, rows, cols] per window)` of a pooled
    step's windows, checked (names, ranges, shapes, probabilities)."""
    batch, heads, tq, tk = shape
    checked, names, window_arrays = [], set(), []
    for window in windows or ():
        try:
            name, query, key, weights = window
        except (TypeError, ValueError):
            raise ValueError("each window must be (name, (q0, q1), (k0, k1), weights), got %r"
                             % (type(window),)) from None
        name, query, key = check_window(name, query, key, tq, tk)
        if name in names:
            raise ValueError("window name %r is used twice" % name)
        names.add(name)
        array = np.asarray(as_numpy(weights), np.float32)
        expected = (batch, heads, query[1] - query[0], key[1] - key[0])
        if array.shape != expected:
            raise ValueError("window %r weights must have shape %s, got %s"
                             % (name, list(expected), list(array.shape)))
        _check_probabilities(array, "window %r weights" % name)
        checked.append({"name": name, "query": list(query), "key": list(key)})
        window_arrays.append(array)
    if sum(a.size for a in window_arrays) > MAX_VALUES_PER_STEP:
        raise ValueError("the windows hold more values than one step may hold")
    return checked, window_arrays


def _check_probabilities(array, label):
    finite = array[~np.isnan(array)]
    if np.isinf(array).any():
        raise ValueError("%s contains Inf" % label)
    if finite.size and (finite.min() < -RANGE_TOLERANCE or finite.max() > 1 + RANGE_TOLERANCE):
        raise ValueError("%s must be attention probabilities in [0, 1]; found [%g, %g]"
                         % (label, finite.min(), finite.max()))
    np.clip(array, 0.0, 1.0, out=array)  # NaN stays NaN


def nan_masked_codes(matrix, scale_from=None):
    """`(packed faithful codes, scale)` of a float32 matrix, NaN = masked (`pack_codes`).

    The scale is the largest value of `scale_from` (of `matrix` when None) that is not NaN.
    """
    masked = np.isnan(matrix)
    scale = np.fmax.reduce(matrix if scale_from is None else scale_from, axis=None)
    if np.isnan(scale):  # nothing attended
        scale = np.float32(0.0)
    if scale > 0:  # NaN fractions get some level here; `masked` then overwrites it
        codes = quantize_v2(matrix, scale, masked=masked)
    else:
        codes = np.where(masked, V2_MASKED, 0).astype(np.uint16)
    return pack_levels(codes), float(scale)


def decode_overview(blob, header, scale):
    """`(means, maxes)` float32 `[nq, nk]` of one overview blob, NaN where a block is masked.

    `scale` is the blob's entry of `header["scales"]` (`scales[overview_index(...) - 1]`).
    """
    codes, _ = inflate_codes(blob, header, shape=overview_shape(header))
    weights = codes_to_weights(codes, scale)
    nq = header["pooled"]["grid"][0]
    return weights[:nq], weights[nq:]


def decode_window(blob, header, name, scale):
    """Float32 exact weights `[q1-q0, k1-k0]` of one window blob, NaN where masked."""
    entry = window(header, name)
    shape = (entry["query"][1] - entry["query"][0], entry["key"][1] - entry["key"][0])
    codes, _ = inflate_codes(blob, header, shape=shape)
    return codes_to_weights(codes, scale)


def pooled_bytes_bound(shape, block, windows, header_bytes=0, image_bytes=0):
    """The most bytes a pooled step takes (payload bounds of the overview and windows), known
    before encoding; `windows` as `[(name, (q0, q1), (k0, k1)), ...]`."""
    batch, heads, tq, tk = shape
    bq, bk = _block_pair(block)
    per_head = payload_bound(2 * pool_grid(tq, bq) * pool_grid(tk, bk))
    for _, (q0, q1), (k0, k1) in windows:
        per_head += payload_bound((q1 - q0) * (k1 - k0))
    return batch * heads * per_head + header_bytes + image_bytes


def choose_pooling(shape, max_bytes, causal, windows=None, fixed_bytes=1024, start=2):
    """`(block, windows)` a pooled step of `shape` takes to fit `max_bytes`, from size bounds
    only (no weights needed: what a capture decides before it computes anything).

    `block` is the smallest power of two from `start` at which the overview of all heads takes
    at most half of the budget left after `fixed_bytes` (header, tokens, images) and the
    windows fit the rest. `windows=[(name, (q0, q1), (k0, k1)), ...]` are kept as given (then
    only the whole must fit); without them the `default_windows` with the most rows (a power
    of two, at most 64) that fit. `ValueError` when even one block per head does not fit.

    >>> choose_pooling([1, 12, 1024, 1024], 4 * 2**20 // 12, causal=True, fixed_bytes=20000)
    ... # doctest: +NORMALIZE_WHITESPACE
    (16, [('last_queries', (1008, 1024), (0, 1024)), ('first_queries', (0, 16), (0, 16)),
          ('first_key', (0, 1024), (0, 1))])
    """
    batch, heads, tq, tk = shape
    block = start
    while True:
        nq, nk = pool_grid(tq, block), pool_grid(tk, block)
        parts = 1 + (3 if windows is None else len(windows))
        header_bytes = fixed_bytes + 24 * batch * heads * parts  # scales in JSON
        overview = batch * heads * payload_bound(2 * nq * nk)
        if windows is not None:
            if pooled_bytes_bound(shape, block, windows, header_bytes) <= max_bytes:
                return block, list(windows)
        elif overview <= (max_bytes - header_bytes) / 2:
            rows = 1 << int(math.log2(min(MAX_DEFAULT_WINDOW_ROWS, tq)))
            while rows >= 1:
                candidate = default_windows(shape, rows, causal)
                if pooled_bytes_bound(shape, block, candidate, header_bytes) <= max_bytes:
                    return block, candidate
                rows //= 2
        if nq == 1 and nk == 1:
            raise ValueError(
                "max_bytes=%d is too small for a step of shape %s: even a single-block overview%s "
                "does not fit (header, tokens and images take about %d bytes); raise max_bytes%s"
                % (max_bytes, list(shape), " and the named windows" if windows else "",
                   header_bytes, "" if windows is None else " or name smaller windows")
            )
        block *= 2
