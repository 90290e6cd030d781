"""The binary format in which `/matrix` hands one attention matrix to the frontend.

Layout (little-endian), also in docs/http_api.md:

```
offset 0  4 bytes  magic "TBAT"
offset 4  u8       wire version = 1
offset 5  u8       dtype: 1 = uint8 linear codes of format v1 (255 = masked,
                              value = code*scale/254),
                          2 = float32 values (NaN = masked),
                          3 = faithful codes of format v2 (docs/format.md, u8-loglin-zlib),
                          4 = overview of a pooled step: two planes of faithful codes, the
                              block means then the block maxes, one scale,
                          5 = overview as float32: two planes, means then maxes
offset 6  u16      reserved, 0
offset 8  u32      rows (Tq)
offset 12 u32      cols (Tk)
offset 16 f32      scale (dtypes 1 and 3; 1.0 for dtype 2)
offset 20          payload: rows*cols bytes (dtype 1), rows*cols*4 bytes (dtype 2), or
                   rows*cols primary bytes + one extension byte per primary 254 (dtype 3);
                   dtypes 4 and 5: the payload of dtype 3 or 2 for 2*rows rows (rows = nq
                   block rows of means, then nq of maxes; cols = nk)
```

One head goes out as the stored codes (dtype 1 or 3, as the step was written), so the server
never re-quantises; a mean over heads is on no code grid and goes out as float32 (dtype 2).

Example:

>>> import numpy as np
>>> codes = np.array([[254, 0], [127, 255]], np.uint8)
>>> matrix = decode(encode_codes(codes, 0.5))
>>> matrix.rows, matrix.cols, matrix.dtype
(2, 2, 1)
>>> float(matrix.weights()[0, 0]), bool(np.isnan(matrix.weights()[1, 1]))
(0.5, True)
"""

import dataclasses
import gzip
import struct
import zlib

import numpy as np

from tb_attention_plugin import encoding

MAGIC = b"TBAT"
WIRE_VERSION = 1
DTYPE_CODES = 1
DTYPE_FLOAT32 = 2
DTYPE_FAITHFUL = 3
DTYPE_OVERVIEW = 4  # pooled step overview: faithful codes, means plane then maxes plane
DTYPE_OVERVIEW_FLOAT32 = 5  # the same as float32 (head=mean of a pooled step)
PLANES = {DTYPE_CODES: 1, DTYPE_FLOAT32: 1, DTYPE_FAITHFUL: 1, DTYPE_OVERVIEW: 2,
          DTYPE_OVERVIEW_FLOAT32: 2}
MASKED = 255
LEVELS = 254
HEADER = struct.Struct("<4sBBHIIf")  # 20 bytes

_GZIP_MEMBER_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown


class WireError(ValueError):
    """Bytes that are not a valid /matrix answer."""


@dataclasses.dataclass(frozen=True)
class WireMatrix:
    """A decoded /matrix answer: `data` is uint8 codes (dtype 1), float32 values (dtype 2) or
    uint16 level indices of format version 2 (dtype 3); for an overview (dtypes 4 and 5) the
    same for `2 * rows` rows: the means plane, then the maxes plane (`planes()`)."""

    dtype: int
    rows: int
    cols: int
    scale: float
    data: np.ndarray

    def planes(self):
        """`(means, maxes)` float32 `[rows, cols]` of an overview answer (dtypes 4 and 5)."""
        if PLANES[self.dtype] != 2:
            raise WireError("dtype %d is one matrix, not an overview" % self.dtype)
        weights = self.weights()
        return weights[: self.rows], weights[self.rows :]

    def weights(self):
        """Returns float32 `[rows, cols]` weights, NaN where masked (`[2*rows, cols]` for an
        overview: see `planes()`)."""
        if self.dtype in (DTYPE_FLOAT32, DTYPE_OVERVIEW_FLOAT32):
            return self.data
        if self.dtype in (DTYPE_FAITHFUL, DTYPE_OVERVIEW):
            return encoding.codes_to_weights(self.data, self.scale)
        weights = self.data.astype(np.float32) * (np.float32(self.scale) / np.float32(LEVELS))
        weights[self.data == MASKED] = np.nan
        return weights


def _header(dtype, rows, cols, scale):
    return HEADER.pack(MAGIC, WIRE_VERSION, dtype, 0, rows, cols, scale)


def codes_dtype(codes, planes=1):
    """The wire dtype of decoded codes: 1 for v1 uint8 codes, 3 for v2 uint16 level indices,
    4 for the v2 codes of an overview (`planes=2`)."""
    if planes == 2:
        return DTYPE_OVERVIEW
    return DTYPE_FAITHFUL if np.asarray(codes).dtype == np.uint16 else DTYPE_CODES


def _rows(codes, planes):
    if planes == 2 and (codes.dtype != np.uint16 or codes.shape[0] % 2):
        raise WireError("an overview is v2 codes of 2*rows rows")
    return codes.shape[0] // planes


def encode_codes(codes, scale, planes=1):
    """Encodes codes `[rows, cols]` as `encoding.decode_codes` returns them (v1 uint8 codes,
    255 = masked: dtype 1; v2 uint16 level indices: dtype 3, packed as stored) with their scale.
    `planes=2`: the `[2*nq, nk]` v2 codes of a pooled step's overview (dtype 4, rows = nq).

    >>> means_and_maxes = np.array([[300, 0], [440, 441]], np.uint16)
    >>> decode(encode_codes(means_and_maxes, 0.5, planes=2)).planes()[1].tolist()
    [[0.5, nan]]
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint16:
        codes = codes.astype(np.uint8, copy=False)
    rows, cols = _rows(codes, planes), codes.shape[1]
    return _header(codes_dtype(codes, planes), rows, cols, scale) + encoding.pack_codes(codes)


def encode_values(values, planes=1):
    """Encodes float32 values `[rows, cols]` (NaN = masked); `planes=2`: an overview's means
    and maxes stacked as `[2*nq, nk]` (dtype 5, rows = nq)."""
    values = np.ascontiguousarray(values, dtype="<f4")
    rows, cols = values.shape[0] // planes, values.shape[1]
    dtype = DTYPE_OVERVIEW_FLOAT32 if planes == 2 else DTYPE_FLOAT32
    return _header(dtype, rows, cols, 1.0) + values.tobytes()


def stored_dtype(faithful, planes=1):
    """The wire dtype of stored bytes: 1 (v1 codes), 3 (v2 codes) or 4 (a v2 overview)."""
    if planes == 2:
        return DTYPE_OVERVIEW
    return DTYPE_FAITHFUL if faithful else DTYPE_CODES


def encode_stored(raw, rows, cols, scale, dtype):
    """The answer for stored bytes `raw` as they are (`reader.StoredPart.raw`), no unpacking."""
    return _header(dtype, rows, cols, scale) + bytes(raw)


def gzip_stored(raw, rows, cols, scale, dtype, zlib_payload):
    """`encode_stored` as a gzip member reusing the stored deflate stream `zlib_payload`
    (exactly `zlib.compress(raw)`, checksum verified): a CRC-32 over `raw`, no recompression."""
    header = _header(dtype, rows, cols, scale)
    payload = bytes(zlib_payload or b"")
    if not encoding.is_plain_zlib(payload):
        return gzip.compress(header + bytes(raw), compresslevel=1, mtime=0)
    stored_block = _stored_deflate_block(header)
    crc = zlib.crc32(raw, zlib.crc32(header))
    trailer = struct.pack("<II", crc, (len(header) + len(raw)) & 0xFFFFFFFF)
    return _GZIP_MEMBER_HEADER + stored_block + payload[2:-4] + trailer


def decode(body):
    """Parses a /matrix answer into a `WireMatrix`; raises `WireError` when malformed."""
    body = bytes(body)
    if len(body) < HEADER.size:
        raise WireError("answer is %d bytes, shorter than the %d-byte header" % (len(body), HEADER.size))
    magic, version, dtype, _, rows, cols, scale = HEADER.unpack_from(body)
    if magic != MAGIC:
        raise WireError("bad magic %r" % magic)
    if version != WIRE_VERSION:
        raise WireError("unknown wire version %d" % version)
    item = {DTYPE_CODES: 1, DTYPE_FLOAT32: 4, DTYPE_FAITHFUL: 1, DTYPE_OVERVIEW: 1,
            DTYPE_OVERVIEW_FLOAT32: 4}.get(dtype)
    if item is None:
        raise WireError("unknown dtype %d" % dtype)
    stored_rows = rows * PLANES[dtype]
    if dtype in (DTYPE_FAITHFUL, DTYPE_OVERVIEW):
        try:
            data = encoding.unpack_v2(body[HEADER.size:], stored_rows, cols)
        except encoding.FormatError as e:
            raise WireError(str(e)) from None
        return WireMatrix(dtype=dtype, rows=rows, cols=cols, scale=float(scale), data=data)
    if len(body) != HEADER.size + stored_rows * cols * item:
        raise WireError(
            "payload is %d bytes, expected %d for %dx%d"
            % (len(body) - HEADER.size, stored_rows * cols * item, stored_rows, cols)
        )
    numpy_dtype = np.uint8 if dtype == DTYPE_CODES else np.dtype("<f4")
    data = np.frombuffer(body, numpy_dtype, offset=HEADER.size).reshape(stored_rows, cols)
    return WireMatrix(dtype=dtype, rows=rows, cols=cols, scale=float(scale), data=data)


def gzip_codes_from_zlib(codes, scale, zlib_payload, planes=1):
    """Returns `encode_codes(codes, scale)` as a gzip member, reusing the stored compression.

    The stored payload is `zlib.compress(codes)`: a 2-byte zlib header, a raw deflate stream and
    an Adler-32 trailer. A gzip member is a 10-byte header, a raw deflate stream, CRC-32 and
    length. So the answer is our 20-byte wire header as one uncompressed ("stored") deflate block
    followed by the payload's own deflate blocks: no recompression, only a CRC-32 over the codes.
    Falls back to compressing afresh when the payload is not a plain zlib stream of `codes`.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint16:
        codes = codes.astype(np.uint8, copy=False)
    raw_codes = encoding.pack_codes(codes)
    payload = bytes(zlib_payload)
    # The trailer must be the Adler-32 of exactly these codes: nothing follows the stream.
    whole = (encoding.is_plain_zlib(payload)
             and struct.unpack(">I", payload[-4:])[0] == zlib.adler32(raw_codes))
    return gzip_stored(raw_codes, _rows(codes, planes), codes.shape[1], scale,
                       codes_dtype(codes, planes), payload if whole else None)


def deflate_stored_codes(codes, scale, zlib_payload, planes=1):
    """`deflate_codes_from_zlib` for a head's decoded codes (v1 uint8 or v2 uint16) and the
    stored payload they were inflated from (`encoding.inflate_codes` said it is whole).

    >>> import numpy as np
    >>> codes, scale = encoding.quantize(np.array([[1.0, 0.5], [1e-4, 0.0]], np.float32))
    >>> stored = zlib.compress(encoding.pack_codes(codes))
    >>> zlib.decompress(deflate_stored_codes(codes, scale, stored)) == encode_codes(codes, scale)
    True
    """
    codes = np.asarray(codes)
    length = codes.size
    if codes.dtype == np.uint16:  # v2: one extension byte per escaped value
        length += int(np.count_nonzero((codes >= encoding.ESCAPE) & (codes != encoding.V2_MASKED)))
    return deflate_codes_from_zlib(
        _rows(codes, planes), codes.shape[1], scale, zlib_payload, codes_dtype(codes, planes),
        length,
    )


def deflate_codes_from_zlib(rows, cols, scale, zlib_payload, dtype=DTYPE_CODES, length=None):
    """Returns the body for `Content-Encoding: deflate` (RFC 1950 zlib) of a stored head's codes.

    `length` is the payload's inflated length (default `rows * cols`, v1 codes); `dtype` the
    wire dtype of those bytes. `zlib_payload` must be exactly `zlib.compress(codes)` of `rows x
    cols` codes (and a v2 payload's extension bytes), nothing after
    it, its checksum already verified (`encoding.inflate_codes` says so). The answer is the
    payload's own zlib header, our 20-byte wire header as one uncompressed ("stored") deflate
    block, the payload's deflate blocks as they are, and the Adler-32 of header + codes combined
    arithmetically from the header's and the stored one: no pass over the codes at all.

    >>> import numpy as np
    >>> codes = np.array([[254, 0], [127, 255]], np.uint8)
    >>> body = deflate_codes_from_zlib(2, 2, 0.5, zlib.compress(codes.tobytes()))
    >>> zlib.decompress(body) == encode_codes(codes, 0.5)
    True
    """
    payload = zlib_payload
    if not encoding.is_plain_zlib(payload):
        raise WireError("payload is not a plain zlib stream")
    header = _header(dtype, rows, cols, scale)
    stored_block = _stored_deflate_block(header)
    checksum = _adler32_combine(
        zlib.adler32(header), struct.unpack(">I", payload[-4:])[0],
        rows * cols if length is None else length,
    )
    # One copy of the deflate blocks (a slice and a concatenation would make two).
    return b"".join((payload[:2], stored_block, memoryview(payload)[2:-4],
                     struct.pack(">I", checksum)))


def _stored_deflate_block(data):
    """A non-final uncompressed ("stored") deflate block holding `data` (RFC 1951, 3.2.4), to
    go first in a deflate stream (where it starts byte-aligned) before the stored payload's own
    blocks: how the answers above put the wire header in front without recompressing."""
    return b"\x00" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data


_ADLER_BASE = 65521


def _adler32_combine(first, second, second_length):
    """Adler-32 of A + B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine).

    With a = 1 + sum of bytes and b = sum of the running a's: a(AB) = a(A) + a(B) - 1 and
    b(AB) = b(A) + b(B) + len(B) * (a(A) - 1), all modulo 65521.
    """
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % _ADLER_BASE
    b = (b1 + b2 + second_length * (a1 - 1)) % _ADLER_BASE
    return b << 16 | a
