"""Format version 2 codes (`u8-loglin-zlib`, "faithful codes"): level indices and their stored
bytes (numpy only).

With x = weight / scale, the decoded levels, ascending, indexed by a level index u
(docs/format.md, "Payload encoding u8-loglin-zlib"):

    u = 0                       exactly 0
    u = 1 .. LOG_LEVELS         LOG_FLOOR * r**(u - 1), r = (LINEAR_FROM / 254 / LOG_FLOOR)**(1/203)
                                (log domain, ratio r = 1.0566: at most 2.8% relative error)
    u = LOG_LEVELS + 1 .. 440   (u - LOG_LEVELS - 1 + LINEAR_FROM) / 254
                                (linear, v1's grid from 18/254 up: at most scale/508 absolute)

Stored bytes: one primary byte per value (u itself when u < ESCAPE, ESCAPE for u >= ESCAPE,
MASKED), then one extension byte `u - ESCAPE` per escaped value, in row-major order.

Example:

>>> import numpy as np
>>> codes = quantize_v2(np.array([[1.0, 0.5, 1e-3, 0.0]], np.float32), np.float32(1.0))
>>> codes.tolist(), list(pack_codes(codes))
([[440, 313, 127, 0]], [254, 254, 127, 0, 186, 59])
>>> unpack_v2(pack_codes(codes), 1, 4).tolist()
[[440, 313, 127, 0]]
"""

import functools
import math

import numpy as np

from tb_attention_plugin.codes_v1 import LEVELS, MASKED
from tb_attention_plugin.step_header import FormatError

LOG_FLOOR = 1e-6
LINEAR_FROM = 18
LOG_LEVELS = 203
LOG_STEP = math.log(LINEAR_FROM / LEVELS / LOG_FLOOR) / LOG_LEVELS  # ln r
V2_LEVELS = 1 + LOG_LEVELS + (LEVELS - LINEAR_FROM + 1)  # 441 levels, u = 0 .. 440
V2_MASKED = V2_LEVELS  # level index of a masked position in decoded uint16 codes
ESCAPE = 254
MAX_RELATIVE_ERROR = math.exp(LOG_STEP / 2) - 1  # 0.0279, for weights >= LOG_FLOOR * scale


def v2_levels():
    """The 441 decoded levels of format version 2 as float64 fractions of the scale, ascending.

    >>> levels = v2_levels()
    >>> len(levels), float(levels[0]), float(levels[1]), float(levels[-1])
    (441, 0.0, 1e-06, 1.0)
    """
    log_part = LOG_FLOOR * np.exp(LOG_STEP * np.arange(LOG_LEVELS, dtype=np.float64))
    linear_part = np.arange(LINEAR_FROM, LEVELS + 1, dtype=np.float64) / LEVELS
    return np.concatenate([[0.0], log_part, linear_part])


_V2_LEVELS = v2_levels()
# Between the last log level and the first linear one, round in the log domain.
_V2_LINEAR_EDGE = math.sqrt(_V2_LEVELS[LOG_LEVELS] * _V2_LEVELS[LOG_LEVELS + 1])


def v2_table(scale):
    """Float32 weights of the 442 version 2 level indices at `scale` (index 441: NaN, masked).

    `v2_table(scale)[codes]` is `codes_to_weights(codes, scale)` for decoded version 2 codes.
    """
    table = np.empty(V2_LEVELS + 1, np.float32)
    table[:V2_LEVELS] = _V2_LEVELS * np.float64(np.float32(scale))
    table[V2_MASKED] = np.nan
    return table


def level_rule_v2(x):
    """Nearest version 2 level index of fractions `x` in [0, 1] (float32 array) as uint16.

    The rounding rule of docs/format.md in float32 arithmetic, as version 2 writers have
    applied it since the format began: THE definition of the stored level indices. Writers take
    the same levels from a table derived from this function (`_level_lookup`); this slow,
    readable form is what the table and the tests check against.

    >>> level_rule_v2(np.array([0, 2e-7, 1e-6, 0.5, 1], np.float32)).tolist()
    [0, 0, 1, 313, 440]
    """
    x = np.asarray(x, np.float32)
    with np.errstate(divide="ignore"):
        log_index = np.rint(np.log(np.maximum(x, np.float32(1e-30)) / np.float32(LOG_FLOOR))
                            * np.float32(1 / LOG_STEP)) + 1
    np.clip(log_index, 1, LOG_LEVELS, out=log_index)
    linear_index = np.rint(x * np.float32(LEVELS)) + (LOG_LEVELS + 1 - LINEAR_FROM)
    np.clip(linear_index, LOG_LEVELS + 1, V2_LEVELS - 1, out=linear_index)
    index = np.where(x >= np.float32(_V2_LINEAR_EDGE), linear_index, log_index)
    index[x < np.float32(LOG_FLOOR / 2)] = 0
    return index.astype(np.uint16)


# Fast rounding by table. A non-negative float32 orders like its bits read as an int32, so the
# rule is a step function of the bits. `bits >> _BUCKET_SHIFT` (the exponent and 8 mantissa
# bits: 256 buckets per octave) indexes the level at the start of the bucket; buckets are
# narrower than the gap between any two rounding boundaries (at most 0.4% of a value wide, the
# log levels are 5.7% apart and the linear ones 1/254), so one comparison with the next
# boundary finishes the rounding. The boundaries are found from `level_rule_v2` itself
# (bisection over float32 bit patterns), so the table reproduces the rule bit for bit.
_BUCKET_SHIFT = 15
_ONE_BITS = int(np.array(1.0, np.float32).view(np.int32))
_LEVEL_CHUNK = 1 << 16  # values rounded at a time: the temporaries stay in the CPU's cache


def _rule_boundaries():
    """int32 bits of the smallest float32 fraction in [0, 1] that `level_rule_v2` puts at
    level u or above, for u = 1 .. V2_LEVELS - 1. Bisection is exact because the rule is
    monotone in `x`; `bench/bench_encode_speed.py --exhaustive` checks the table against the
    rule on every float32 fraction, tests/test_fast_codes.py around every boundary."""
    wanted = np.arange(1, V2_LEVELS, dtype=np.int64)
    low = np.zeros(wanted.shape, np.int64)
    high = np.full(wanted.shape, _ONE_BITS, np.int64)  # the rule puts 1.0 at the last level
    while np.any(low < high):
        middle = (low + high) // 2
        reached = level_rule_v2(middle.astype(np.int32).view(np.float32)) >= wanted
        high = np.where(reached, middle, high)
        low = np.where(reached, low, middle + 1)
    return low


@functools.lru_cache(maxsize=None)
def _level_lookup():
    """`(first_level, next_boundary)` per bucket (`bits >> _BUCKET_SHIFT` of fractions 0 .. 1):
    the uint16 level of the bucket's first fraction, and the int32 bits of the smallest
    fraction of the level above it (the int32 maximum above the last level)."""
    boundaries = _rule_boundaries()
    bucket_starts = np.arange((_ONE_BITS >> _BUCKET_SHIFT) + 1, dtype=np.int64) << _BUCKET_SHIFT
    first_level = np.searchsorted(boundaries, bucket_starts, side="right")
    if np.diff(first_level).max() > 1 or first_level[-1] != V2_LEVELS - 1:
        raise AssertionError("a bucket of the level table holds two rounding boundaries")
    above = np.append(boundaries, np.iinfo(np.int32).max).astype(np.int32)
    return first_level.astype(np.uint16), above[first_level]


class _Scratch:
    """Buffers of `_LEVEL_CHUNK` values reused by `_fractions_to_levels` (no allocation per
    chunk)."""

    def __init__(self, size):
        self.fractions = np.empty(size, np.float32)
        self.bucket = np.empty(size, np.intp)
        self.boundary = np.empty(size, np.int32)
        self.above = np.empty(size, bool)


def _fractions_to_levels(x, out, scratch):
    """Writes the level indices (`level_rule_v2`) of float32 fractions `x` (at most 1, no NaN;
    one-dimensional) into the uint16 array `out`, by table."""
    first_level, next_boundary = _level_lookup()
    n = len(x)
    bits = x.view(np.int32)
    bucket = np.right_shift(bits, _BUCKET_SHIFT, out=scratch.bucket[:n], casting="unsafe")
    # mode="clip" skips numpy's bounds check (the fast path) and maps negative fractions and
    # -0.0 (negative int32 bits) to bucket 0, level 0.
    np.take(first_level, bucket, out=out, mode="clip")
    boundary = np.take(next_boundary, bucket, out=scratch.boundary[:n], mode="clip")
    out += np.greater_equal(bits, boundary, out=scratch.above[:n])


def quantize_v2(matrix, scale, masked=None):
    """uint16 level indices of float32 weights at `scale` (> 0), `V2_MASKED` where `masked`.

    Fractions are `min(weight / scale, 1)` in float32, rounded by `level_rule_v2`'s table.
    """
    flat = np.ascontiguousarray(matrix, np.float32).reshape(-1)
    codes = np.empty(flat.shape, np.uint16)
    scale = np.float32(scale)
    scratch = _Scratch(min(flat.size, _LEVEL_CHUNK))
    for start in range(0, flat.size, _LEVEL_CHUNK):
        stop = min(flat.size, start + _LEVEL_CHUNK)
        x = np.divide(flat[start:stop], scale, out=scratch.fractions[:stop - start])
        np.minimum(x, np.float32(1), out=x)
        _fractions_to_levels(x, codes[start:stop], scratch)
    codes = codes.reshape(np.shape(matrix))
    if masked is not None:
        np.copyto(codes, np.uint16(V2_MASKED), where=masked)
    return codes


# The stored primary byte of each level index: ESCAPE for escaped levels, MASKED for V2_MASKED.
_PRIMARY_OF_LEVEL = np.minimum(np.arange(V2_MASKED + 1), ESCAPE).astype(np.uint8)
_PRIMARY_OF_LEVEL[V2_MASKED] = MASKED


def look_up(table, indices, out):
    """`out[:] = table[indices]` for one-dimensional arrays of indices within `table`, in
    cache-sized chunks through numpy's fast (`mode="clip"`, unchecked) gather."""
    for start in range(0, len(indices), _LEVEL_CHUNK):
        stop = start + _LEVEL_CHUNK
        np.take(table, indices[start:stop], out=out[start:stop], mode="clip")
    return out


def pack_codes(codes):
    """The stored (and wire) bytes of codes: v1 uint8 codes as they are; v2 uint16 level
    indices as one primary byte per value, then one extension byte per escaped value.

    >>> list(pack_codes(np.array([[0, 253, 254, 440, 441]], np.uint16)))
    [0, 253, 254, 254, 255, 0, 186]
    """
    codes = np.asarray(codes)
    if codes.dtype == np.uint8:
        return np.ascontiguousarray(codes).tobytes()
    if codes.dtype != np.uint16:
        raise TypeError("codes must be uint8 (version 1) or uint16 (version 2), got %s" % codes.dtype)
    flat = np.ascontiguousarray(codes).reshape(-1)
    if flat.size and int(flat.max()) > V2_MASKED:
        raise ValueError("level index %d is beyond the last level" % int(flat.max()))
    return pack_levels(flat)


def pack_levels(codes):
    """`pack_codes` of uint16 level indices known to be valid (what `quantize_v2` returns)."""
    flat = codes.reshape(-1)
    primary = look_up(_PRIMARY_OF_LEVEL, flat, np.empty(flat.size, np.uint8))
    extension = (flat[primary == ESCAPE] - ESCAPE).astype(np.uint8)
    return b"".join((primary.data, extension.data))


def unpack_v2(raw, rows, cols):
    """Inverse of `pack_codes` for version 2 bytes; `FormatError` when their length is wrong."""
    cells = rows * cols
    primary = np.frombuffer(raw, np.uint8, count=min(cells, len(raw)))
    escaped = primary == ESCAPE
    escapes = int(np.count_nonzero(escaped))
    if len(raw) != cells + escapes:
        raise FormatError(
            "payload holds %d bytes, expected %d (%dx%d codes and %d extension bytes)"
            % (len(raw), cells + escapes, rows, cols, escapes)
        )
    extension = np.frombuffer(raw, np.uint8, offset=cells)
    if escapes and int(extension.max()) > V2_LEVELS - 1 - ESCAPE:
        raise FormatError("payload extension byte %d is beyond the last level" % int(extension.max()))
    codes = primary.astype(np.uint16)  # a widening copy: faster than any look-up
    np.copyto(codes, np.uint16(V2_MASKED), where=primary == MASKED)
    if escapes:
        codes[escaped] = extension + np.uint16(ESCAPE)
    return codes.reshape(rows, cols)


def weights_v2(codes, scale):
    """float32 weights of uint16 version 2 level indices at `scale`, NaN where masked."""
    if codes.size and int(codes.max()) > V2_MASKED:
        raise FormatError("level index %d is beyond the last level" % int(codes.max()))
    flat = np.ascontiguousarray(codes).reshape(-1)
    weights = look_up(v2_table(scale), flat, np.empty(flat.size, np.float32))
    return weights.reshape(codes.shape)
