"""The format version 2 encoder and decoder as first written (tb-attention 0.2), kept as the
reference that the table-driven `tb_attention_plugin.encoding` must reproduce byte for byte
(tests/test_fast_codes.py) and as the "old" side of bench/bench_encode_speed.py.

Straight numpy, one formula per step of docs/format.md: the fraction `x = min(weight / scale,
1)` in float32, its level by the rounding rule (log domain below the geometric mean of levels
203 and 204, linear above, 0 below half the log floor), then one primary byte per value and
the extension bytes.
"""

import math
import zlib

import numpy as np

from tb_attention_plugin import encoding

_LINEAR_EDGE = math.sqrt(encoding.v2_levels()[encoding.LOG_LEVELS]
                         * encoding.v2_levels()[encoding.LOG_LEVELS + 1])
_CHUNK_VALUES = 1 << 20


def levels(x):
    """Nearest version 2 level index of fractions `x` in [0, 1] (float32 array) as uint16."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_index = np.rint(np.log(np.maximum(x, np.float32(1e-30)) / np.float32(encoding.LOG_FLOOR))
                            * np.float32(1 / encoding.LOG_STEP)) + 1
    np.clip(log_index, 1, encoding.LOG_LEVELS, out=log_index)
    linear_index = np.rint(x * np.float32(encoding.LEVELS)) + (
        encoding.LOG_LEVELS + 1 - encoding.LINEAR_FROM)
    np.clip(linear_index, encoding.LOG_LEVELS + 1, encoding.V2_LEVELS - 1, out=linear_index)
    index = np.where(x >= np.float32(_LINEAR_EDGE), linear_index, log_index)
    index[x < np.float32(encoding.LOG_FLOOR / 2)] = 0
    with np.errstate(invalid="ignore"):  # NaN at masked positions: overwritten by the caller
        return index.astype(np.uint16)


def quantize(matrix, mask=None):
    """`(uint16 level indices, float scale)` of one `[Tq, Tk]` float32 matrix (mask: True =
    attended), as `encoding.quantize(matrix, mask)` returned them in version 0.2."""
    attended = matrix if mask is None else matrix[mask]
    scale = np.float32(attended.max()) if attended.size else np.float32(0.0)
    if scale > 0:
        matrix = np.asarray(matrix, np.float32)
        codes = np.empty(matrix.shape, np.uint16)
        rows = max(1, _CHUNK_VALUES // max(1, matrix.shape[-1]))
        for start in range(0, matrix.shape[0], rows):
            with np.errstate(invalid="ignore"):
                x = np.minimum(matrix[start:start + rows] / scale, np.float32(1))
            codes[start:start + rows] = levels(x)
    else:
        codes = np.zeros(matrix.shape, np.uint16)
    if mask is not None:
        codes[~mask] = encoding.V2_MASKED
    return codes, float(scale)


def pack_codes(codes):
    """Primary bytes (level, 254 = escape, 255 = masked), then the extension bytes."""
    flat = np.asarray(codes, np.uint16).ravel()
    primary = np.minimum(flat, encoding.ESCAPE).astype(np.uint8)
    primary[flat == encoding.V2_MASKED] = encoding.MASKED
    extension = flat[(flat >= encoding.ESCAPE) & (flat != encoding.V2_MASKED)] - encoding.ESCAPE
    return primary.tobytes() + extension.astype(np.uint8).tobytes()


def unpack_v2(raw, rows, cols):
    """Inverse of `pack_codes`; `encoding.FormatError` when the bytes are malformed."""
    cells = rows * cols
    primary = np.frombuffer(raw, np.uint8, count=min(cells, len(raw)))
    escaped = primary == encoding.ESCAPE
    escapes = int(np.count_nonzero(escaped))
    if len(raw) != cells + escapes:
        raise encoding.FormatError("payload holds %d bytes, expected %d" % (len(raw), cells + escapes))
    codes = primary.astype(np.uint16)
    codes[primary == encoding.MASKED] = encoding.V2_MASKED
    extension = np.frombuffer(raw, np.uint8, offset=cells).astype(np.uint16)
    if escapes and int(extension.max()) > encoding.V2_LEVELS - 1 - encoding.ESCAPE:
        raise encoding.FormatError("payload extension byte beyond the last level")
    codes[escaped] = extension + encoding.ESCAPE
    return codes.reshape(rows, cols)


def payload(matrix, mask=None):
    """`(zlib payload blob, scale)` of one head of a full step."""
    codes, scale = quantize(matrix, mask)
    return zlib.compress(pack_codes(codes), 6), scale


def nan_masked_payload(matrix, scale_from=None):
    """`(zlib payload blob, scale)` of a pooled step's overview or window (NaN = masked)."""
    attended = ~np.isnan(matrix)
    source = matrix if scale_from is None else scale_from
    scale_values = source[~np.isnan(source)]
    scale = np.float32(scale_values.max()) if scale_values.size else np.float32(0.0)
    filled = np.where(attended, matrix, 0).astype(np.float32)
    if scale > 0:
        codes = np.empty(filled.shape, np.uint16)
        rows = max(1, _CHUNK_VALUES // max(1, filled.shape[-1]))
        for start in range(0, filled.shape[0], rows):
            x = np.minimum(filled[start:start + rows] / scale, np.float32(1))
            codes[start:start + rows] = levels(x)
    else:
        codes = np.zeros(filled.shape, np.uint16)
    codes[~attended] = encoding.V2_MASKED
    return zlib.compress(pack_codes(codes), 6), float(scale)
