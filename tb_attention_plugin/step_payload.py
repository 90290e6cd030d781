"""One payload blob: the zlib stream of one head's stored codes (numpy only).

Writers compress the packed codes (`codes_v1`, `codes_v2.pack_codes`) with `compress`;
readers inflate and check a blob against its header (`inflate_raw`, `inflate_codes`,
`decode_codes`) and turn codes into weights (`codes_to_weights`). `payload_bound` is the most
bytes a payload takes, known before encoding (docs/format.md, "Size").

Example:

>>> import numpy as np
>>> from tb_attention_plugin import codes_v2
>>> header = {"version": 2, "shape": [1, 1, 1, 3]}
>>> blob = compress(codes_v2.pack_codes(np.array([[0, 313, 440]], np.uint16)))
>>> codes_to_weights(decode_codes(blob, header), 0.5).tolist()
[[0.0, 0.25, 0.5]]
"""

import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tb_attention_plugin.codes_v1 import weights_v1
from tb_attention_plugin.codes_v2 import ESCAPE, V2_LEVELS, unpack_v2, weights_v2
from tb_attention_plugin.step_header import FormatError

# A head of up to 64 values takes at most 2 bytes per value before zlib: this slack keeps
# small heads version 2 within `payload_bound`.
PAYLOAD_SLACK = 64
ZLIB_LEVEL = 6  # docs/format.md, "zlib settings"
# A step of at least this many values is packed and compressed on several threads, one head at
# a time per thread (below it, starting threads costs more than it saves).
THREADED_VALUES = 1 << 16


def compress(raw):
    """The payload blob of stored bytes `raw`: one zlib stream, as every writer makes it."""
    return zlib.compress(raw, ZLIB_LEVEL)


def compressed_payloads(pack, parts, values=0):
    """`(payload blobs, scales, inflated lengths)` of `parts`, in order: `pack(part)` returns
    a part's `(stored bytes, scale)`, compressed here. Parts are packed and compressed on
    several threads when there are `values` enough to pay for them (numpy and zlib release the
    GIL); the blobs are the same either way.

    >>> compressed_payloads(lambda part: (bytes(part), 1.0), [[0, 0], [254, 186]])[1:]
    ([1.0, 1.0], [2, 2])
    """
    parts = list(parts)
    workers = min(len(parts), _cpu_count()) if values >= THREADED_VALUES else 1
    results = _threaded(pack, parts, workers) if workers > 1 else None
    if results is None:
        results = [_payload(pack, part) for part in parts]
    return tuple(list(column) for column in zip(*results)) if results else ([], [], [])


def _threaded(pack, parts, workers):
    """`_payload` of every part on `workers` threads, in order; None when no thread can be
    started (a process at its thread limit, or shutting down): then the caller does the work."""
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="tb-attention-encode") as pool:
            futures = [pool.submit(_payload, pack, part) for part in parts]
    except RuntimeError:
        return None
    return [future.result() for future in futures]


def _payload(pack, part):
    raw, scale = pack(part)
    return compress(raw), scale, len(raw)


def _cpu_count():
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def payload_bound(values):
    """The most bytes a payload of `values` weights takes, in either version, known before
    encoding (size budgets count on it): zlib's compressBound of one byte per value, plus
    `PAYLOAD_SLACK` for the extension bytes of small version 2 heads. `encode_step` keeps
    every version 2 payload within it.

    >>> payload_bound(16), payload_bound(1 << 20)
    (93, 1048973)
    """
    return values + (values >> 12) + (values >> 14) + (values >> 25) + 13 + PAYLOAD_SLACK


def full_bytes_bound(shape, header_bytes=0, image_bytes=0):
    """The most bytes a full step of `shape` takes (see `payload_bound`)."""
    batch, heads, tq, tk = shape
    return batch * heads * payload_bound(tq * tk) + header_bytes + image_bytes


def vouched_length(blob, header, index, shape=None):
    """The inflated length of payload blob `index` when the header's checksum vouches for it,
    else None (an older header without checksums, or a blob that differs from what was
    written). A vouched blob is exactly one plain zlib stream of the right length, as the
    writer made it: it can be handed on without inflating it (`inflate_raw` checks the rest).

    >>> blob = compress(bytes([254, 254, 254, 254, 186, 186, 186, 186]))  # 4 codes of 1.0
    >>> header = {"version": 2, "shape": [1, 1, 2, 2], "payload_crc32": [zlib.crc32(blob)],
    ...           "payload_lengths": [8]}
    >>> vouched_length(blob, header, 1)  # 4 codes, each with an extension byte
    8
    >>> vouched_length(blob + b"x", header, 1) is None
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

    >>> blob = compress(bytes([254, 254, 254, 254]))  # version 1 codes of 4 weights of 1.0
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
        return weights_v2(codes, scale)
    return weights_v1(codes, scale)
