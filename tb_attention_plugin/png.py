"""A small PNG encoder and decoder (numpy + zlib), so probe images can be stored and read without
TensorFlow or an imaging library.

Example:

>>> import numpy as np
>>> data = encode_png(np.zeros((2, 3, 3), np.uint8))
>>> decode_png(data).shape
(2, 3, 3)
"""

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode_png(image):
    """Encodes a `uint8` array `[height, width, channels]` (1 to 4 channels) as PNG bytes."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in _COLOR_TYPES:
        raise ValueError(
            "encode_png expects uint8 [height, width, 1|2|3|4], got %s %s"
            % (image.dtype, image.shape)
        )
    height, width, channels = image.shape
    # Filter type 0 (none) on every row: simple, and zlib does the work.
    rows = np.concatenate(
        [np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1
    )
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def _read_chunks(data):
    """`(IHDR fields, concatenated IDAT bytes)` of PNG `data`, its signature checked."""
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG")
    pos, idat, ihdr = len(_SIGNATURE), [], None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if ihdr is None:
        raise ValueError("PNG has no IHDR")
    return ihdr, b"".join(idat)


def _unfilter(kind, line, prev, channels):
    """One row of bytes (`int32 [stride]`) with PNG filter `kind` undone against `prev`."""
    if kind == 0:
        return line
    if kind == 2:
        return (line + prev) & 0xFF
    if kind not in (1, 3, 4):
        raise ValueError("bad PNG filter type %d" % kind)
    cur = np.zeros(len(line), np.int32)
    for x in range(len(line)):
        left = cur[x - channels] if x >= channels else 0
        up = prev[x]
        upleft = prev[x - channels] if x >= channels else 0
        if kind == 1:
            pred = left
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
        cur[x] = (line[x] + pred) & 0xFF
    return cur


def decode_png(data):
    """Decodes an 8-bit, non-interlaced PNG (any filter) into `uint8 [height, width, channels]`.

    Raises `ValueError` for anything else or for corrupt data.
    """
    ihdr, idat = _read_chunks(data)
    width, height, depth, color, _, _, interlace = ihdr
    if depth != 8 or interlace != 0 or color not in _CHANNELS:
        raise ValueError("only 8-bit non-interlaced PNGs are supported")
    channels = _CHANNELS[color]
    stride = width * channels
    raw = zlib.decompress(idat)
    if len(raw) != height * (stride + 1):
        raise ValueError("PNG image data has the wrong size")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        prev = out[y] = _unfilter(rows[y, 0], rows[y, 1:].astype(np.int32), prev, channels)
    return out.astype(np.uint8).reshape(height, width, channels)
