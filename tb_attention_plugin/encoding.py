"""Encodes attention weights into the blobs of one step and decodes them again (numpy only).

See docs/format.md for the layout. Every writer (TensorFlow summary op, TensorFlow-free writer,
Keras callback) goes through `encode_step`; every reader goes through `decode_header` and
`decode_codes`.

Format version 2 (written since) stores "faithful" log-linear codes (`u8-loglin-zlib`): every
weight of at least 1e-6 of its head's largest decodes within 2.8% of its value and within
`scale / 508` of it. Version 1 (`u8-zlib`, linear codes) is still read. `decode_codes` returns
uint8 codes for a version 1 payload and uint16 level indices for a version 2 payload;
`codes_to_weights` turns either into weights.

Example:

>>> import numpy as np
>>> w = np.full((2, 3), 1 / 3, np.float32)
>>> blobs = encode_step(w, query_tokens=["a", "b"], key_tokens=["x", "y", "z"])
>>> header = decode_header(blobs[0])
>>> header["shape"]
[1, 1, 2, 3]
>>> weights = codes_to_weights(decode_codes(blobs[1], header), header["scales"][0])
>>> bool(abs(weights - 1 / 3).max() < 0.002)
True
>>> header["version"], header["encoding"], str(decode_codes(blobs[1], header).dtype)
(2, 'u8-loglin-zlib', 'uint16')
"""

import functools
import json
import math
import numbers
import zlib

import numpy as np

from tb_attention_plugin import metadata
from tb_attention_plugin import png

ENCODING_V1 = "u8-zlib"
ENCODING_V2 = "u8-loglin-zlib"
ENCODING = ENCODING_V2  # what writers write now
ENCODINGS = {1: ENCODING_V1, 2: ENCODING_V2}  # format version -> payload encoding
MASKED = 255  # the masked code of both versions' stored bytes
LEVELS = 254  # v1: codes 0..254 carry weights code * scale / 254; 255 is "masked"
# Both versions: |decoded - weight| <= scale * MAX_ERROR <= MAX_ERROR for weights in [0, 1].
MAX_ERROR = 1.0 / (2 * LEVELS)

# Version 2 codes (docs/format.md, "Payload encoding u8-loglin-zlib"). With x = weight / scale,
# the decoded levels, ascending, indexed by a level index u:
#   u = 0                       exactly 0
#   u = 1 .. LOG_LEVELS         LOG_FLOOR * r**(u - 1), r = (LINEAR_FROM / 254 / LOG_FLOOR)**(1/203)
#                               (log domain, ratio r = 1.0566: at most 2.8% relative error)
#   u = LOG_LEVELS + 1 .. 440   (u - LOG_LEVELS - 1 + LINEAR_FROM) / 254
#                               (linear, v1's grid from 18/254 up: at most scale/508 absolute)
# Stored bytes: one primary byte per value (u itself when u < ESCAPE, ESCAPE for u >= ESCAPE,
# MASKED), then one extension byte `u - ESCAPE` per escaped value, in row-major order.
LOG_FLOOR = 1e-6
LINEAR_FROM = 18
LOG_LEVELS = 203
LOG_STEP = math.log(LINEAR_FROM / LEVELS / LOG_FLOOR) / LOG_LEVELS  # ln r
V2_LEVELS = 1 + LOG_LEVELS + (LEVELS - LINEAR_FROM + 1)  # 441 levels, u = 0 .. 440
V2_MASKED = V2_LEVELS  # level index of a masked position in decoded uint16 codes
ESCAPE = 254
MAX_RELATIVE_ERROR = math.exp(LOG_STEP / 2) - 1  # 0.0279, for weights >= LOG_FLOOR * scale
# A head of up to 64 values takes at most 2 bytes per value before zlib: this slack keeps
# small heads version 2 within `payload_bound`.
PAYLOAD_SLACK = 64
# Weights a little outside [0, 1] are float rounding (fp16 softmax); further out is a user error.
RANGE_TOLERANCE = 1e-3
# One step's tensor must stay far below TensorBoard's 256 MiB gRPC response limit.
MAX_VALUES_PER_STEP = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024 * 1024
# The full shape a pooled step's overview may describe (its stored values obey the limit above).
MAX_POOLED_VALUES = MAX_VALUES_PER_STEP * 1024
# Full float32 weights a writer pools in one call (4 GiB of float32).
MAX_POOLED_INPUT_VALUES = 1 << 30
# A token longer than this many characters is stored as its first MAX_TOKEN_CHARS - 1 characters
# and "…" (the tab shows a token in one cell; a 10 kB "token" is a tokenizer bug, not a label).
MAX_TOKEN_CHARS = 256
TRUNCATED_TOKEN_MARK = "\u2026"
# Probe images are stored as PNG in every step's blobs: at most this many pixels per image
# (2048 x 2048), at most MAX_IMAGE_SIDE per side. Larger images are refused with a clear error.
MAX_IMAGE_PIXELS = 2048 * 2048
MAX_IMAGE_SIDE = 8192


class FormatError(ValueError):
    """Stored data that does not follow docs/format.md (corrupt, truncated or from the future)."""


def _as_numpy(value):
    """Converts numpy arrays, Python lists and eager framework tensors to numpy."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # TensorFlow eager tensor or torch tensor on CPU
    elif hasattr(value, "__array__") and not isinstance(value, np.ndarray):
        value = np.asarray(value)
    return np.asarray(value)


def normalize_weights(weights, name="weights", max_values=MAX_VALUES_PER_STEP):
    """Validates attention weights and returns `(float32 [B, H, Tq, Tk], source_rank, dtype)`.

    Raises `TypeError` for non-numeric data and `ValueError` for a wrong rank, empty axes,
    NaN/Inf, values outside [0, 1] or a tensor too large for one step.
    """
    try:
        array = _as_numpy(weights)
    except Exception as e:  # ragged lists, objects numpy cannot hold
        raise TypeError("%s must be a numeric array, got %r (%s)" % (name, type(weights), e))
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            "%s must hold real numbers (float16/32/64 or bfloat16), got dtype %s"
            % (name, array.dtype)
        )
    source_dtype = str(array.dtype)
    rank = array.ndim
    if rank not in (2, 3, 4):
        raise ValueError(
            "%s must have shape [Tq, Tk], [heads, Tq, Tk] or [batch, heads, Tq, Tk]; got rank %d "
            "shape %s" % (name, rank, tuple(array.shape))
        )
    if 0 in array.shape:
        raise ValueError("%s has an empty axis: shape %s" % (name, tuple(array.shape)))
    if array.size > max_values:
        raise ValueError(
            "%s has %d values, more than the %d one step may hold; log fewer examples, heads or "
            "tokens, or give max_bytes to store it pooled (shape %s)"
            % (name, array.size, max_values, tuple(array.shape))
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("%s contains NaN or Inf" % name)
    low, high = float(array.min()), float(array.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            "%s must be attention probabilities in [0, 1] (after softmax); found values in "
            "[%g, %g]" % (name, low, high)
        )
    array = np.clip(array, 0.0, 1.0)
    while array.ndim < 4:
        array = array[np.newaxis]
    return array, rank, source_dtype


def normalize_tokens(tokens, batch, length, name):
    """Returns `None` or one list of `length` strings per example (`batch` lists).

    Accepts one list for all examples or one list per example; strings or UTF-8 bytes.
    """
    if tokens is None:
        return None
    tokens = _as_numpy(tokens) if not isinstance(tokens, (list, tuple)) else tokens
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)):
        raise TypeError("%s must be a list of strings (or one list per example)" % name)
    per_example = len(tokens) > 0 and all(isinstance(t, (list, tuple)) for t in tokens)
    lists = list(tokens) if per_example else [tokens] * batch
    if len(lists) != batch:
        raise ValueError(
            "%s has token lists for %d examples but the weights have batch %d"
            % (name, len(lists), batch)
        )
    result = []
    for i, example in enumerate(lists):
        if len(example) != length:
            raise ValueError(
                "%s[%d] has %d tokens but the attention axis has length %d"
                % (name, i, len(example), length)
            )
        strings = []
        for token in example:
            if isinstance(token, bytes):
                token = token.decode("utf-8", errors="replace")
            if not isinstance(token, str):
                raise TypeError(
                    "%s must hold strings, got %r (%s)" % (name, token, type(token).__name__)
                )
            strings.append(truncate_token(token))
        result.append(strings)
    return result


def truncate_token(token):
    """`token`, or its first `MAX_TOKEN_CHARS - 1` characters and "…" when it is longer."""
    if len(token) <= MAX_TOKEN_CHARS:
        return token
    return token[: MAX_TOKEN_CHARS - 1] + TRUNCATED_TOKEN_MARK


def check_image_size(height, width, name="images"):
    """Raises `ValueError` when one probe image is larger than the stored format allows."""
    if height * width > MAX_IMAGE_PIXELS or max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(
            "%s are %dx%d pixels; at most %d pixels per image (e.g. 2048x2048) and %d per side "
            "are stored with every step: pass a downscaled copy (the tab draws attention over "
            "the patch grid, a few hundred pixels per side are plenty)"
            % (name, height, width, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE)
        )


def normalize_mask(mask, source_shape, name="mask"):
    """Returns a bool array `[B, H, Tq, Tk]` (True = attended) or `None`.

    `mask` must broadcast to the weights' shape as given (numpy rules).
    """
    if mask is None:
        return None
    array = _as_numpy(mask)
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number):
            raise TypeError("%s must be boolean, got dtype %s" % (name, array.dtype))
        array = array != 0
    try:
        array = np.broadcast_to(array, source_shape)
    except ValueError:
        raise ValueError(
            "%s of shape %s does not broadcast to the weights' shape %s"
            % (name, tuple(array.shape), tuple(source_shape))
        ) from None
    while array.ndim < 4:
        array = array[np.newaxis]
    return array


def infer_patch_grid(key_length, prefix_tokens=None):
    """Guesses `(grid, prefix_tokens)` for a ViT key axis: a square grid after 0 or 1 prefix."""
    candidates = [prefix_tokens] if prefix_tokens is not None else [1, 0]
    for prefix in candidates:
        side = math.isqrt(max(key_length - prefix, 0))
        if side > 0 and side * side == key_length - prefix:
            return [side, side], prefix
    raise ValueError(
        "cannot infer a square patch grid from %d key positions; pass image_grid=(rows, cols) "
        "and prefix_tokens" % key_length
    )


def whole_number(value, name, minimum):
    """Returns `value` as an int no smaller than `minimum`.

    Accepts Python and numpy integers and integral floats; raises `TypeError` for anything else
    and `ValueError` below `minimum`, both naming the argument.
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not float(value).is_integer()
    ):
        raise TypeError("%s must be an integer, got %r" % (name, value))
    number = int(value)
    if number < minimum:
        raise ValueError("%s must be an integer >= %d, got %d" % (name, minimum, number))
    return number


def normalize_images(images, batch, key_length, grid=None, prefix_tokens=None):
    """Returns `(png_blobs, image_info)` for probe images `[B, height, width, channels]`."""
    if prefix_tokens is not None:
        prefix_tokens = whole_number(prefix_tokens, "prefix_tokens", 0)
    if grid is not None:
        try:
            rows, cols = (grid.tolist() if isinstance(grid, np.ndarray) else grid)
        except (TypeError, ValueError):
            raise TypeError("image_grid must be (rows, cols), got %r" % (grid,)) from None
        grid = [whole_number(rows, "image_grid rows", 1), whole_number(cols, "image_grid cols", 1)]
    array = _as_numpy(images)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "images must have shape [batch, height, width, 1|3|4], got %s" % (tuple(array.shape),)
        )
    if array.shape[0] != batch:
        raise ValueError(
            "images has %d examples but the weights have batch %d" % (array.shape[0], batch)
        )
    check_image_size(int(array.shape[1]), int(array.shape[2]))
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("images contains NaN or Inf")
        low, high = float(array.min()), float(array.max())
        if low >= 0 and high <= 1:
            array = array * 255.0
        elif high - low > 0 and (low < 0 or high > 255):
            array = (array - low) / (high - low) * 255.0  # e.g. standardised inputs
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    if grid is None:
        grid, prefix_tokens = infer_patch_grid(key_length, prefix_tokens)
    else:
        if prefix_tokens is None:
            prefix_tokens = key_length - grid[0] * grid[1]
        if prefix_tokens < 0 or grid[0] * grid[1] + prefix_tokens != key_length:
            raise ValueError(
                "image_grid %s with %s prefix tokens does not match %d key positions"
                % (grid, prefix_tokens, key_length)
            )
    info = {
        "grid": grid,
        "prefix_tokens": int(prefix_tokens),
        "height": int(array.shape[1]),
        "width": int(array.shape[2]),
    }
    return [png.encode_png(np.ascontiguousarray(image)) for image in array], info


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
_CHUNK_VALUES = 1 << 20  # values quantised at a time (a few MiB of float32 temporaries)
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


def _v2_codes(matrix, scale, masked=None):
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


def quantize(matrix, mask=None, version=None):
    """Quantises one `[Tq, Tk]` float32 matrix. Returns `(codes, float scale)`.

    Version 2 (the default, `metadata.FORMAT_VERSION`): uint16 level indices, `V2_MASKED`
    where masked. Version 1: uint8 linear codes, 255 where masked (kept to write version 1
    data for tests). `codes_to_weights(codes, scale)` decodes both.

    >>> codes, scale = quantize(np.array([[1.0, 0.01, 1e-5, 0.0]], np.float32))
    >>> [round(float(w), 7) for w in codes_to_weights(codes, scale)[0]]
    [1.0, 0.0097783, 1.01e-05, 0.0]
    """
    version = metadata.FORMAT_VERSION if version is None else version
    scale = _largest(matrix, mask)
    if version == 1:
        if scale > 0:
            codes = np.rint(matrix * (np.float32(LEVELS) / scale)).astype(np.uint8)
        else:
            codes = np.zeros(matrix.shape, np.uint8)
        if mask is not None:
            codes[~mask] = MASKED
        return codes, float(scale)
    if version != 2:
        raise ValueError("cannot write format version %r" % (version,))
    masked = None if mask is None else ~np.asarray(mask, bool)
    if scale > 0:
        return _v2_codes(matrix, scale, masked), float(scale)
    codes = np.zeros(np.shape(matrix), np.uint16)
    if masked is not None:
        codes[masked] = V2_MASKED
    return codes, float(scale)


# The stored primary byte of each level index: ESCAPE for escaped levels, MASKED for V2_MASKED.
_PRIMARY_OF_LEVEL = np.minimum(np.arange(V2_MASKED + 1), ESCAPE).astype(np.uint8)
_PRIMARY_OF_LEVEL[V2_MASKED] = MASKED


def _look_up(table, indices, out):
    """`out[:] = table[indices]` for one-dimensional arrays of indices within `table`, in
    cache-sized chunks through numpy's fast (`mode="clip"`, unchecked) gather."""
    for start in range(0, len(indices), _LEVEL_CHUNK):
        stop = start + _LEVEL_CHUNK
        np.take(table, indices[start:stop], out=out[start:stop], mode="clip")
    return out


def _largest(matrix, mask=None):
    """float32 largest value of `matrix` where `mask` (all of it when None); 0 when none."""
    if mask is None:
        return np.float32(matrix.max()) if matrix.size else np.float32(0.0)
    if not np.any(mask):
        return np.float32(0.0)
    return np.float32(np.max(matrix, where=mask, initial=-np.inf))  # no copy of the attended


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
    primary = _look_up(_PRIMARY_OF_LEVEL, flat, np.empty(flat.size, np.uint8))
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


def encode_step(
    weights,
    query_tokens=None,
    key_tokens=None,
    mask=None,
    images=None,
    image_grid=None,
    prefix_tokens=None,
    reduced=None,
    version=None,
):
    """Validates and encodes one step of one tag. Returns the list of blobs (bytes).

    Nothing is written here: all validation happens before a writer touches a file.
    `version` is the format version to write: `metadata.FORMAT_VERSION` (2) unless given; 1
    writes the old linear codes (for tests of reading old data). No payload is larger than
    `payload_bound(Tq * Tk)`: a step whose faithful codes would be is written as version 1.
    """
    array, rank, source_dtype = normalize_weights(weights)
    batch, heads, tq, tk = array.shape
    source_shape = _as_numpy(weights).shape
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    mask = normalize_mask(mask, source_shape)
    image_blobs, image_info = [], None
    if images is not None:
        image_blobs, image_info = normalize_images(images, batch, tk, image_grid, prefix_tokens)
    version = metadata.FORMAT_VERSION if version is None else version
    if version not in ENCODINGS:
        raise ValueError("cannot write format version %r" % (version,))
    payloads, scales, lengths = _encode_payloads(array, mask, version)
    if version == 2 and max(len(p) for p in payloads) > payload_bound(tq * tk):
        # Faithful codes of weights spread evenly over [0, scale] (uniform random numbers, not
        # a softmax head) can take more than a byte per value; a payload never exceeds what one
        # byte per value compresses to at worst (size budgets count on it), so such a step is
        # written with version 1's linear codes.
        version = 1
        payloads, scales, lengths = _encode_payloads(array, mask, version)
    header = {
        "version": version,
        "shape": [batch, heads, tq, tk],
        "source_rank": rank,
        "source_dtype": source_dtype,
        "encoding": ENCODINGS[version],
        "scales": scales,
        "query_tokens": query_tokens,
        "key_tokens": key_tokens,
        "image": image_info,
        "reduced": reduced,
    }
    header.update(payload_checks(payloads, lengths))
    return [_header_blob(header)] + payloads + image_blobs


def payload_checks(payloads, lengths):
    """The header fields that let a reader trust payload blobs without inflating them:
    `payload_crc32` (CRC-32 of each stored blob, as `zlib.crc32` computes it) and
    `payload_lengths` (the bytes each inflates to), in blob order from blob 1, like `scales`.

    >>> checks = payload_checks([zlib.compress(b"ab")], [2])
    >>> checks["payload_crc32"] == [zlib.crc32(zlib.compress(b"ab"))], checks["payload_lengths"]
    (True, [2])
    """
    return {"payload_crc32": [zlib.crc32(p) for p in payloads],
            "payload_lengths": [int(n) for n in lengths]}


def _header_blob(header):
    """Blob 0 of a step: the header as compact UTF-8 JSON (tokens kept as written)."""
    return json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def payload_bound(values):
    """The most bytes a payload of `values` weights takes, in either version, known before
    encoding (size budgets count on it): zlib's compressBound of one byte per value, plus
    `PAYLOAD_SLACK` for the extension bytes of small version 2 heads. `encode_step` keeps
    every version 2 payload within it.

    >>> payload_bound(16), payload_bound(1 << 20)
    (93, 1048973)
    """
    return values + (values >> 12) + (values >> 14) + (values >> 25) + 13 + PAYLOAD_SLACK


def _encode_payloads(array, mask, version):
    """`(payloads, scales, inflated lengths)` of every head of every example."""
    payloads, scales, lengths = [], [], []
    for b in range(array.shape[0]):
        for h in range(array.shape[1]):
            codes, scale = quantize(array[b, h], None if mask is None else mask[b, h], version)
            raw = pack_codes(codes)
            payloads.append(zlib.compress(raw, 6))
            scales.append(scale)
            lengths.append(len(raw))
    return payloads, scales, lengths


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


def _check_payload_checks(header, payloads):
    """`payload_crc32` and `payload_lengths` are optional (older writers), but both or neither,
    one entry per payload blob."""
    crcs, lengths = header.get("payload_crc32"), header.get("payload_lengths")
    if crcs is None and lengths is None:
        return
    for key, values, top in (("payload_crc32", crcs, 0xFFFFFFFF),
                             ("payload_lengths", lengths, 2 * MAX_VALUES_PER_STEP)):
        if (not isinstance(values, list) or len(values) != payloads
                or not all(_is_int(v) and 0 <= v <= top for v in values)):
            raise FormatError("step header %s must hold %d integers" % (key, payloads))


def vouched_length(blob, header, index, shape=None):
    """The inflated length of payload blob `index` when the header's checksum vouches for it,
    else None (an older header without checksums, or a blob that differs from what was
    written). A vouched blob is exactly one plain zlib stream of the right length, as the
    writer made it: it can be handed on without inflating it (`inflate_raw` checks the rest).

    >>> blobs = encode_step(np.full((1, 1, 2, 2), 0.5, np.float32))
    >>> header = decode_header(blobs[0])
    >>> vouched_length(blobs[1], header, 1)  # 4 codes, each with an extension byte
    8
    >>> vouched_length(blobs[1] + b"x", header, 1) is None
    True
    """
    crcs = header.get("payload_crc32")
    if crcs is None or not 1 <= index <= len(crcs):
        return None
    if zlib.crc32(blob) != crcs[index - 1] or not is_plain_zlib(blob):
        return None
    length = header["payload_lengths"][index - 1]
    cells, limit = _stored_length_range(header, shape)
    return length if cells <= length <= limit else None


def _stored_length_range(header, shape=None):
    """`(values, most bytes)` of one stored part of `shape` (the step's `[Tq, Tk]` when None):
    version 2 holds at most one extension byte per value, version 1 exactly one byte."""
    tq, tk = header["shape"][2:] if shape is None else shape
    cells = tq * tk
    return cells, 2 * cells if header.get("version", 1) >= 2 else cells


def is_plain_zlib(blob):
    """True when `blob` starts with a zlib header for deflate without a preset dictionary and
    has room for the trailer (what `zlib.compress` writes)."""
    return (
        len(blob) >= 6
        and blob[0] & 0x0F == 8  # deflate
        and (blob[0] << 8 | blob[1]) % 31 == 0
        and not blob[1] & 0x20  # no preset dictionary
    )


def _check_tokens(header, key, length):
    tokens = header.get(key)
    if tokens is None:
        return
    batch = header["shape"][0]
    if not isinstance(tokens, list) or len(tokens) != batch:
        raise FormatError("header %s must hold %d token lists" % (key, batch))
    for example in tokens:
        if not isinstance(example, list) or len(example) != length:
            raise FormatError("header %s lists must have %d tokens" % (key, length))
        if not all(isinstance(t, str) for t in example):
            raise FormatError("header %s must hold strings" % key)


def decode_header(blob):
    """Parses and validates a step header. Raises `FormatError` for anything malformed."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > MAX_HEADER_BYTES:
        raise FormatError("step header is missing or too large")
    try:
        header = json.loads(bytes(blob).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError("step header is not UTF-8 JSON: %s" % e) from None
    if not isinstance(header, dict):
        raise FormatError("step header is not a JSON object")
    version = header.get("version")
    if not _is_int(version) or version not in metadata.SUPPORTED_VERSIONS:
        raise FormatError(
            "step written in format version %r; this tb-attention reads version(s) %s: upgrade "
            "tb-attention" % (version, sorted(metadata.SUPPORTED_VERSIONS))
        )
    if header.get("encoding") != ENCODINGS[version]:
        raise FormatError(
            "unknown payload encoding %r for format version %d" % (header.get("encoding"), version)
        )
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(_is_int(n) and n > 0 for n in shape)
    ):
        raise FormatError("step header shape must be 4 positive integers, got %r" % (shape,))
    batch, heads, tq, tk = shape
    pooled_layout = header.get("layout") == LAYOUT_POOLED
    if batch * heads * tq * tk > (MAX_POOLED_VALUES if pooled_layout else MAX_VALUES_PER_STEP):
        raise FormatError("step header shape %s is larger than any writer produces" % shape)
    layout = header.get("layout", LAYOUT_FULL)
    if layout not in (LAYOUT_FULL, LAYOUT_POOLED):
        raise FormatError("unknown step layout %r" % (layout,))
    parts = 1
    if layout == LAYOUT_POOLED:
        if version < 2:
            raise FormatError("a pooled step must be format version 2 or later")
        parts = 1 + _check_pooled(header, batch, heads, tq, tk)
    scales = header.get("scales")
    if (
        not isinstance(scales, list)
        or len(scales) != batch * heads * parts
        or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 + RANGE_TOLERANCE
            for s in scales
        )
    ):
        raise FormatError("step header must hold %d scales in [0, 1]" % (batch * heads * parts))
    _check_payload_checks(header, len(scales))
    _check_tokens(header, "query_tokens", tq)
    _check_tokens(header, "key_tokens", tk)
    image = header.get("image")
    if image is not None:
        if not isinstance(image, dict):
            raise FormatError("step header image must be an object")
        grid, prefix = image.get("grid"), image.get("prefix_tokens")
        if (
            not isinstance(grid, list)
            or len(grid) != 2
            or not all(_is_int(n) and n > 0 for n in grid)
            or not _is_int(prefix)
            or prefix < 0
            or grid[0] * grid[1] + prefix != tk
        ):
            raise FormatError("step header image grid does not match the key axis")
    header.setdefault("reduced", None)
    if layout == LAYOUT_POOLED and header["blobs"] != _pooled_blobs(
        batch * heads, len(header["windows"]), image is not None
    ):
        raise FormatError("step header blob indexes do not match its shape, windows and images")
    return header


def _check_pooled(header, batch, heads, tq, tk):
    """Validates `pooled` and `windows` of a pooled header; returns the number of windows."""
    pooled = header.get("pooled")
    if not isinstance(pooled, dict):
        raise FormatError("a pooled step header needs a 'pooled' object")
    block, grid = pooled.get("block"), pooled.get("grid")
    if (
        not isinstance(block, list) or len(block) != 2 or not all(_is_int(n) and n > 0 for n in block)
        or not isinstance(grid, list) or len(grid) != 2
        or grid != [pool_grid(tq, block[0]), pool_grid(tk, block[1])]
    ):
        raise FormatError("pooled block %r and grid %r do not match the shape" % (block, grid))
    if batch * heads * 2 * grid[0] * grid[1] > MAX_VALUES_PER_STEP:
        raise FormatError("pooled overview is larger than any writer produces")
    windows = header.get("windows")
    if not isinstance(windows, list):
        raise FormatError("a pooled step header needs a 'windows' list")
    names, values = set(), 0
    for entry in windows:
        if not isinstance(entry, dict):
            raise FormatError("a window must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_WINDOW_NAME or name in names:
            raise FormatError("window names must be distinct strings of 1 to %d characters"
                              % MAX_WINDOW_NAME)
        names.add(name)
        for axis, length in (("query", tq), ("key", tk)):
            span = entry.get(axis)
            if (
                not isinstance(span, list) or len(span) != 2
                or not all(_is_int(n) for n in span) or not 0 <= span[0] < span[1] <= length
            ):
                raise FormatError("window %r %s range %r is not within [0, %d)"
                                  % (name, axis, span, length))
        values += (entry["query"][1] - entry["query"][0]) * (entry["key"][1] - entry["key"][0])
    if batch * heads * values > MAX_VALUES_PER_STEP:
        raise FormatError("pooled windows are larger than any writer produces")
    blobs = header.get("blobs")
    if not isinstance(blobs, dict):
        raise FormatError("a pooled step header needs a 'blobs' object")
    return len(windows)


def blob_count(header):
    """Number of blobs a step with this header has."""
    batch, heads = header["shape"][:2]
    parts = 1 + len(header.get("windows") or ()) if is_pooled(header) else 1
    return 1 + batch * heads * parts + (batch if header.get("image") else 0)


def payload_index(header, example, head):
    """Blob index of one head's payload (full steps); raises `IndexError` when out of range or
    when the step is pooled (see `overview_index`, `window_index`)."""
    batch, heads = header["shape"][:2]
    if is_pooled(header):
        raise IndexError("this step is pooled: ask for its overview or one of its windows")
    if not (0 <= example < batch) or not (0 <= head < heads):
        raise IndexError(
            "example %d / head %d out of range (batch %d, heads %d)" % (example, head, batch, heads)
        )
    return 1 + example * heads + head


def image_index(header, example):
    """Blob index of one example's probe image; raises `IndexError` when absent."""
    batch, heads = header["shape"][:2]
    if not header.get("image"):
        raise IndexError("this step stores no probe images")
    if not 0 <= example < batch:
        raise IndexError("example %d out of range (batch %d)" % (example, batch))
    if is_pooled(header):
        return header["blobs"]["images"] + example
    return 1 + batch * heads + example


def decode_codes(blob, header):
    """Decompresses one payload blob into codes `[Tq, Tk]` (uint8 for a version 1 header,
    uint16 level indices for version 2); `FormatError` when malformed."""
    return inflate_codes(blob, header)[0]


def inflate_codes(blob, header, shape=None):
    """Returns `(codes [Tq, Tk], whole)` of one payload blob; `FormatError` when malformed.

    `shape` is the `(rows, cols)` of the stored codes when they are not the step's `[Tq, Tk]`
    (a pooled step's overview `overview_shape(header)` or a window's extent).

    `codes` are uint8 for a version 1 header (or one without `version`), uint16 level indices
    for version 2. `whole` is True when the blob is exactly one zlib stream, nothing after its
    checksum (zlib has then checked the stored Adler-32 against these codes), so its deflate
    stream can be handed on as it is.

    >>> blob = encode_step(np.full((2, 2), 0.5, np.float32), version=1)[1]
    >>> codes, whole = inflate_codes(blob, {"shape": [1, 1, 2, 2]})
    >>> codes.tolist(), whole
    ([[254, 254], [254, 254]], True)
    """
    raw, whole = inflate_raw(blob, header, shape)
    tq, tk = header["shape"][2:] if shape is None else shape
    if header.get("version", 1) >= 2:
        return unpack_v2(raw, tq, tk), whole
    return np.frombuffer(raw, np.uint8).reshape(tq, tk), whole


def inflate_raw(blob, header, shape=None):
    """Returns `(stored bytes, whole)` of one payload blob, checked as `inflate_codes` checks
    them but not unpacked: what the server hands on as it is (`/matrix`). `FormatError` when
    malformed (not zlib, wrong length, an extension byte beyond the last level).

    >>> raw, whole = inflate_raw(zlib.compress(bytes([0, 254, 255, 186])),
    ...                          {"version": 2, "shape": [1, 1, 1, 3]})
    >>> list(raw), whole
    ([0, 254, 255, 186], True)
    """
    tq, tk = header["shape"][2:] if shape is None else shape
    faithful = header.get("version", 1) >= 2
    cells, limit = _stored_length_range(header, shape)  # bounded inflate: no zip bombs
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(bytes(blob), limit + 1)
    except zlib.error as e:
        raise FormatError("payload is not valid zlib data: %s" % e) from None
    if len(raw) > limit or not inflater.eof or len(raw) < cells:
        raise FormatError(
            "payload holds %s bytes, expected %s (%dx%d)"
            % (
                len(raw) if len(raw) <= limit else "more than %d" % limit,
                cells if not faithful else "%d to %d" % (cells, limit),
                tq,
                tk,
            )
        )
    if faithful:
        escapes = raw.count(ESCAPE, 0, cells)  # bytes.count: no pass in Python
        if len(raw) != cells + escapes:
            raise FormatError(
                "payload holds %d bytes, expected %d (%dx%d codes and %d extension bytes)"
                % (len(raw), cells + escapes, tq, tk, escapes)
            )
        if escapes and max(raw[cells:]) > V2_LEVELS - 1 - ESCAPE:
            raise FormatError("payload extension byte %d is beyond the last level"
                              % max(raw[cells:]))
    elif len(raw) != cells:
        raise FormatError("payload holds %d bytes, expected %d (%dx%d)" % (len(raw), cells, tq, tk))
    return raw, not inflater.unused_data


def codes_to_weights(codes, scale):
    """Dequantises codes into float32 weights, NaN where masked.

    uint8 codes are version 1 (`code * scale / 254`, 255 masked); uint16 codes are version 2
    level indices (`v2_table(scale)[codes]`, `V2_MASKED` masked).
    """
    codes = np.asarray(codes)
    if codes.dtype == np.uint16:
        if codes.size and int(codes.max()) > V2_MASKED:
            raise FormatError("level index %d is beyond the last level" % int(codes.max()))
        flat = np.ascontiguousarray(codes).reshape(-1)
        weights = _look_up(v2_table(scale), flat, np.empty(flat.size, np.float32))
        return weights.reshape(codes.shape)
    weights = codes.astype(np.float32) * (np.float32(scale) / np.float32(LEVELS))
    weights[codes == MASKED] = np.nan
    return weights


# ---------------------------------------------------------------------------------------------
# Pooled layout (docs/format.md, "Pooled steps"): an overview of the whole matrix in blocks
# (mean and max of each block) plus exact windows, for heads too large to store in full.

LAYOUT_FULL = "full"
LAYOUT_POOLED = "pooled"
MAX_WINDOW_NAME = 100
# Rows of the default windows never exceed this (a window of 64 query rows is a screenful).
MAX_DEFAULT_WINDOW_ROWS = 64


def _block_pair(block):
    """`(bq, bk)` from an int or a pair of positive ints."""
    if isinstance(block, (list, tuple, np.ndarray)):
        if len(block) != 2:
            raise ValueError("block must be an int or (query block, key block), got %r" % (block,))
        return whole_number(block[0], "block[0]", 1), whole_number(block[1], "block[1]", 1)
    size = whole_number(block, "block", 1)
    return size, size


def pool_grid(length, block):
    """Number of blocks of `block` positions covering `length` positions (the last may be short).

    >>> pool_grid(1024, 16), pool_grid(1000, 16)
    (64, 63)
    """
    return -(-length // block)


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


def _check_window(name, query, key, tq, tk):
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


def encode_pooled_step(
    shape,
    block,
    means,
    maxes,
    windows,
    query_tokens=None,
    key_tokens=None,
    images=None,
    image_grid=None,
    prefix_tokens=None,
    reduced=None,
    source_rank=4,
    source_dtype="float32",
):
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
        source_dtype: as for `encode_step` (tokens cover the full `Tq` / `Tk`).

    Raises `ValueError` / `TypeError` for inconsistent input, before anything is written.

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
    if not isinstance(shape, (list, tuple, np.ndarray)) or len(shape) != 4:
        raise ValueError("shape must be the full [B, H, Tq, Tk], got %r" % (shape,))
    batch, heads, tq, tk = (whole_number(n, "shape[%d]" % i, 1) for i, n in enumerate(shape))
    if batch * heads * tq * tk > MAX_POOLED_VALUES:
        raise ValueError("shape %s is larger than any attention a step describes" % (list(shape),))
    bq, bk = _block_pair(block)
    nq, nk = pool_grid(tq, bq), pool_grid(tk, bk)
    planes = []
    for label, plane in (("means", means), ("maxes", maxes)):
        array = np.asarray(_as_numpy(plane), np.float32)
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
    checked, names, window_arrays = [], set(), []
    for window in windows or ():
        try:
            name, query, key, weights = window
        except (TypeError, ValueError):
            raise ValueError("each window must be (name, (q0, q1), (k0, k1), weights), got %r"
                             % (type(window),)) from None
        name, query, key = _check_window(name, query, key, tq, tk)
        if name in names:
            raise ValueError("window name %r is used twice" % name)
        names.add(name)
        array = np.asarray(_as_numpy(weights), np.float32)
        expected = (batch, heads, query[1] - query[0], key[1] - key[0])
        if array.shape != expected:
            raise ValueError("window %r weights must have shape %s, got %s"
                             % (name, list(expected), list(array.shape)))
        _check_probabilities(array, "window %r weights" % name)
        checked.append({"name": name, "query": list(query), "key": list(key)})
        window_arrays.append(array)
    if sum(a.size for a in window_arrays) > MAX_VALUES_PER_STEP:
        raise ValueError("the windows hold more values than one step may hold")
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    image_blobs, image_info = [], None
    if images is not None:
        image_blobs, image_info = normalize_images(images, batch, tk, image_grid, prefix_tokens)

    payloads, scales, lengths = [], [], []

    def add(raw, scale):
        payloads.append(zlib.compress(raw, 6))
        scales.append(scale)
        lengths.append(len(raw))

    stacked = np.concatenate(planes, axis=2)  # [B, H, 2*nq, nk]: means plane, then maxes plane
    for b in range(batch):
        for h in range(heads):
            add(*_nan_masked_codes(stacked[b, h], scale_from=planes[1][b, h]))
    for array in window_arrays:
        for b in range(batch):
            for h in range(heads):
                add(*_nan_masked_codes(array[b, h]))
    per_part = batch * heads
    header = {
        "version": 2,
        "layout": LAYOUT_POOLED,
        "shape": [batch, heads, tq, tk],
        "source_rank": source_rank,
        "source_dtype": source_dtype,
        "encoding": ENCODINGS[2],
        "pooled": {"block": [bq, bk], "grid": [nq, nk]},
        "windows": checked,
        "blobs": _pooled_blobs(per_part, len(checked), image_info is not None),
        "scales": scales,
        "query_tokens": query_tokens,
        "key_tokens": key_tokens,
        "image": image_info,
        "reduced": reduced,
    }
    header.update(payload_checks(payloads, lengths))
    return [_header_blob(header)] + payloads + image_blobs


def _pooled_blobs(per_part, windows, images):
    """The `blobs` object of a pooled header: index of the first blob of each part."""
    return {
        "overview": 1,
        "windows": [1 + per_part * (1 + w) for w in range(windows)],
        "images": 1 + per_part * (1 + windows) if images else None,
    }


def _check_probabilities(array, label):
    finite = array[~np.isnan(array)]
    if np.isinf(array).any():
        raise ValueError("%s contains Inf" % label)
    if finite.size and (finite.min() < -RANGE_TOLERANCE or finite.max() > 1 + RANGE_TOLERANCE):
        raise ValueError("%s must be attention probabilities in [0, 1]; found [%g, %g]"
                         % (label, finite.min(), finite.max()))
    np.clip(array, 0.0, 1.0, out=array)  # NaN stays NaN


def _nan_masked_codes(matrix, scale_from=None):
    """`(packed faithful codes, scale)` of a float32 matrix, NaN = masked (`pack_codes`)."""
    attended = ~np.isnan(matrix)
    source = matrix if scale_from is None else scale_from
    scale_values = source[~np.isnan(source)]
    scale = np.float32(scale_values.max()) if scale_values.size else np.float32(0.0)
    filled = np.where(attended, matrix, 0).astype(np.float32)
    if scale > 0:
        codes = _v2_codes(filled, scale, masked=~attended)
    else:
        codes = np.where(attended, 0, V2_MASKED).astype(np.uint16)
    return pack_codes(codes), float(scale)


def is_pooled(header):
    """True for a step stored in the pooled layout."""
    return header.get("layout") == LAYOUT_POOLED


def overview_index(header, example, head):
    """Blob index of one head's overview (pooled steps); `IndexError` when out of range."""
    _check_head(header, example, head)
    if not is_pooled(header):
        raise IndexError("this step is stored in full: it has no overview")
    return header["blobs"]["overview"] + example * header["shape"][1] + head


def window_index(header, name, example, head):
    """Blob index of one head's exact window `name`; `KeyError` naming the stored windows when
    there is no such window, `IndexError` when example/head are out of range."""
    _check_head(header, example, head)
    names = [w["name"] for w in header.get("windows") or ()]
    if name not in names:
        raise KeyError(
            "no window %r in this step; its windows are: %s"
            % (name, ", ".join(repr(n) for n in names) or "none (it is stored in full)")
        )
    batch, heads = header["shape"][:2]
    return header["blobs"]["windows"][names.index(name)] + example * heads + head


def window(header, name):
    """The window object `{"name", "query", "key"}` of a pooled header; `KeyError` if absent."""
    for entry in header.get("windows") or ():
        if entry["name"] == name:
            return entry
    raise KeyError(name)


def _check_head(header, example, head):
    batch, heads = header["shape"][:2]
    if not (0 <= example < batch) or not (0 <= head < heads):
        raise IndexError(
            "example %d / head %d out of range (batch %d, heads %d)" % (example, head, batch, heads)
        )


def overview_shape(header):
    """`(2 * nq, nk)`: the stored codes of one overview blob (means rows, then maxes rows)."""
    nq, nk = header["pooled"]["grid"]
    return 2 * nq, nk


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


def full_bytes_bound(shape, header_bytes=0, image_bytes=0):
    """The most bytes a full step of `shape` takes (see `payload_bound`)."""
    batch, heads, tq, tk = shape
    return batch * heads * payload_bound(tq * tk) + header_bytes + image_bytes


def encode_attention(
    weights,
    query_tokens=None,
    key_tokens=None,
    mask=None,
    images=None,
    image_grid=None,
    prefix_tokens=None,
    reduced=None,
    max_bytes=None,
    windows=None,
):
    """Encodes one step in full, or POOLED when the full step would exceed `max_bytes`.

    What both public writers (`tba.attention`, `AttentionWriter.attention`) call. Without
    `max_bytes` this is `encode_step`. With it, a step whose full size (bounded by
    `payload_bound` before encoding) exceeds `max_bytes` is stored pooled: the block size is
    the smallest power of two (2, 4, 8, ...) at which the overview takes at most half of the
    budget left after the header and images and the whole step, windows included, fits
    `max_bytes` (checked on the encoded blobs). `windows=[(name, (q0, q1), (k0, k1)), ...]`
    names the exact windows to keep (half-open query and key ranges); without it the
    `default_windows` are kept with the most rows (a power of two, at most 64) that fit.
    `windows` alone (no `max_bytes`) stores the step pooled at the smallest block that fits
    no budget: give `max_bytes` too.

    Raises `ValueError` when even the coarsest overview and the named windows do not fit.

    >>> w = np.tril(np.ones((256, 256), np.float32))
    >>> w /= w.sum(-1, keepdims=True)
    >>> blobs = encode_attention(w, max_bytes=16 * 1024)
    >>> header = decode_header(blobs[0])
    >>> header["layout"], header["pooled"]["block"], [x["name"] for x in header["windows"]]
    ('pooled', [8, 8], ['last_queries', 'first_queries', 'first_key'])
    >>> sum(map(len, blobs)) <= 16 * 1024
    True
    """
    kwargs = dict(query_tokens=query_tokens, key_tokens=key_tokens, images=images,
                  image_grid=image_grid, prefix_tokens=prefix_tokens, reduced=reduced)
    if max_bytes is None:
        if windows is not None:
            raise ValueError("windows= needs max_bytes=: windows are kept when a step is pooled "
                             "to fit max_bytes")
        return encode_step(weights, mask=mask, **kwargs)
    max_bytes = whole_number(max_bytes, "max_bytes", 1)
    array, rank, source_dtype = normalize_weights(weights, max_values=MAX_POOLED_INPUT_VALUES)
    batch, heads, tq, tk = shape = array.shape
    source_shape = _as_numpy(weights).shape
    mask = normalize_mask(mask, source_shape)
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    image_bytes = 0
    if images is not None:
        image_blobs, _ = normalize_images(images, batch, tk, image_grid, prefix_tokens)
        image_bytes = sum(len(b) for b in image_blobs)
    token_bytes = len(json.dumps([query_tokens, key_tokens], ensure_ascii=False).encode("utf-8"))
    fixed = token_bytes + 1024 + image_bytes
    if array.size <= MAX_VALUES_PER_STEP and full_bytes_bound(shape, fixed + 24 * batch * heads) <= max_bytes:
        return encode_step(weights, mask=mask, **kwargs)
    named = None
    if windows is not None:
        named = [_check_window(*_window_spec(w), tq, tk) for w in windows]
        if len({name for name, _, _ in named}) != len(named):
            raise ValueError("window names must be distinct")
    causal = is_causal(array, mask)
    masked = array if mask is None else np.where(mask, array, np.nan)
    block = 1
    while True:
        block, chosen = choose_pooling(shape, max_bytes, causal, named, fixed, start=block * 2)
        means, maxes = pool(masked, block)
        blobs = encode_pooled_step(
            shape, block, means, maxes,
            [(name, q, k, masked[:, :, q[0]:q[1], k[0]:k[1]]) for name, q, k in chosen],
            source_rank=rank, source_dtype=source_dtype, **kwargs,
        )
        if sum(len(b) for b in blobs) <= max_bytes:
            return blobs


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


def _window_spec(window):
    try:
        name, query, key = window
    except (TypeError, ValueError):
        raise ValueError("each window must be (name, (q0, q1), (k0, k1)), got %r" % (window,)) from None
    return name, query, key
