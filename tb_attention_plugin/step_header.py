"""The header of one step (blob 0) and where its other blobs are (numpy-free: JSON only).

`step_header` builds (`header_blob`, `payload_checks`) and checks (`decode_header`) the JSON
header of docs/format.md ("Header", "Pooled steps"), and maps examples, heads, windows and
images to blob indexes. `FormatError` and the limits every part of the format shares live here.

Example:

>>> blob = header_blob({"version": 2, "shape": [1, 2, 3, 3], "encoding": ENCODINGS[2],
...                     "scales": [1.0, 0.5]})
>>> header = decode_header(blob)
>>> blob_count(header), payload_index(header, 0, 1), is_pooled(header)
(3, 2, False)
"""

import json
import zlib

from tb_attention_plugin import metadata

ENCODING_V1 = "u8-zlib"
ENCODING_V2 = "u8-loglin-zlib"
ENCODING = ENCODING_V2  # what writers write now
ENCODINGS = {1: ENCODING_V1, 2: ENCODING_V2}  # format version -> payload encoding
# Weights a little outside [0, 1] are float rounding (fp16 softmax); further out is a user error.
RANGE_TOLERANCE = 1e-3
# One step's tensor must stay far below TensorBoard's 256 MiB gRPC response limit.
MAX_VALUES_PER_STEP = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024 * 1024
# The full shape a pooled step's overview may describe (its stored values obey the limit above).
MAX_POOLED_VALUES = MAX_VALUES_PER_STEP * 1024
LAYOUT_FULL = "full"
LAYOUT_POOLED = "pooled"
MAX_WINDOW_NAME = 100


class FormatError(ValueError):
    """Stored data that does not follow docs/format.md (corrupt, truncated or from the future)."""



def pool_grid(length, block):
    """Number of blocks of `block` positions covering `length` positions (the last may be short).

    >>> pool_grid(1024, 16), pool_grid(1000, 16)
    (64, 63)
    """
    return -(-length // block)


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


def header_blob(header):
    """Blob 0 of a step: the header as compact UTF-8 JSON (tokens kept as written)."""
    return json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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


def _check_special(header, key, length):
    """`null` or, per example, the ascending positions (in `[0, length)`) of special tokens."""
    lists = header.get(key)
    if lists is None:
        return
    if not isinstance(lists, list) or len(lists) != header["shape"][0]:
        raise FormatError("header %s must hold %d position lists" % (key, header["shape"][0]))
    for positions in lists:
        if not isinstance(positions, list) or not all(_is_int(p) for p in positions):
            raise FormatError("header %s lists must hold positions" % key)
        if any(not 0 <= p < length for p in positions[:1] + positions[-1:]) or any(
                a >= b for a, b in zip(positions, positions[1:])):
            raise FormatError("header %s positions must ascend within [0, %d)" % (key, length))


def _check_kv_group(header):
    """`kv_group_size`: absent, `null` or a positive count of query heads per key/value head."""
    size = header.get("kv_group_size")
    if size is not None and not (_is_int(size) and 1 <= size <= MAX_VALUES_PER_STEP):
        raise FormatError("header kv_group_size must be a positive integer, got %r" % (size,))


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
    version = _check_version(header)
    batch, heads, tq, tk = _check_shape(header)
    parts = 1
    if is_pooled(header):
        if version < 2:
            raise FormatError("a pooled step must be format version 2 or later")
        parts = 1 + _check_pooled(header, batch, heads, tq, tk)
    _check_scales(header, batch * heads * parts)
    _check_payload_checks(header, batch * heads * parts)
    _check_tokens(header, "query_tokens", tq)
    _check_tokens(header, "key_tokens", tk)
    _check_special(header, "query_special", tq)
    _check_special(header, "key_special", tk)
    _check_kv_group(header)
    _check_image(header, tk)
    for key in ("reduced", "kv_group_size", "query_special", "key_special"):
        header.setdefault(key, None)  # absent in older steps: nothing dropped, no groups, none
    if is_pooled(header) and header["blobs"] != pooled_blob_indexes(
        batch * heads, len(header["windows"]), header.get("image") is not None
    ):
        raise FormatError("step header blob indexes do not match its shape, windows and images")
    return header


def _check_version(header):
    """The header's format version, one this reader reads, with its payload encoding."""
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
    return version


def _check_shape(header):
    """The header's `[B, H, Tq, Tk]`, within what writers write for its layout."""
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
    if header.get("layout", LAYOUT_FULL) not in (LAYOUT_FULL, LAYOUT_POOLED):
        raise FormatError("unknown step layout %r" % (header.get("layout"),))
    return shape


def _check_scales(header, payloads):
    """One scale in [0, 1] (with `RANGE_TOLERANCE`) per payload blob."""
    scales = header.get("scales")
    if (
        not isinstance(scales, list)
        or len(scales) != payloads
        or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 + RANGE_TOLERANCE
            for s in scales
        )
    ):
        raise FormatError("step header must hold %d scales in [0, 1]" % payloads)


def _check_image(header, tk):
    """The optional `image` object: its patch grid and prefix tokens cover the key axis."""
    image = header.get("image")
    if image is None:
        return
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


def _check_pooled(header, batch, heads, tq, tk):
    """Validates `pooled`, `windows` and `blobs` of a pooled header; returns the number of
    windows."""
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
    if batch * heads * _check_windows(windows, tq, tk) > MAX_VALUES_PER_STEP:
        raise FormatError("pooled windows are larger than any writer produces")
    if not isinstance(header.get("blobs"), dict):
        raise FormatError("a pooled step header needs a 'blobs' object")
    return len(windows)


def _check_windows(windows, tq, tk):
    """Validates the window objects of a pooled header; returns the values of one head's
    windows."""
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
    return values


def pooled_blob_indexes(per_part, windows, images):
    """The `blobs` object of a pooled header: index of the first blob of each part."""
    return {
        "overview": 1,
        "windows": [1 + per_part * (1 + w) for w in range(windows)],
        "images": 1 + per_part * (1 + windows) if images else None,
    }


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
