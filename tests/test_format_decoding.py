"""The payload decoder rejects malformed headers and short or oversized blobs with FormatError."""

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tb_attention_plugin import encoding
from tb_attention_plugin import png

WEIGHTS = np.random.default_rng(0).dirichlet(np.ones(6), size=(2, 3, 5)).astype(np.float32)


def good_step():
    return encoding.encode_step(WEIGHTS, query_tokens=list("abcde"), key_tokens=list("uvwxyz"))


def header_with(**changes):
    header = json.loads(good_step()[0])
    header.update(changes)
    return json.dumps(header).encode()


@pytest.mark.parametrize(
    "blob,words",
    [
        (b"", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (header_with(version=3), "format version 3"),
        (header_with(version=1), "unknown payload encoding 'u8-loglin-zlib' for format version 1"),
        (header_with(version=None), "format version None"),
        (header_with(encoding="f16"), "unknown payload encoding"),
        (header_with(shape=[2, 3, 5]), "4 positive integers"),
        (header_with(shape=[2, 3, 5, -6]), "4 positive integers"),
        (header_with(shape=[2, 3, 5, True]), "4 positive integers"),
        (header_with(shape=[1 << 20, 1 << 20, 8, 8]), "larger than"),
        (header_with(scales=[0.5]), "6 scales"),
        (header_with(scales=["x"] * 6), "6 scales"),
        (header_with(scales=[7.0] * 6), "6 scales"),
        (header_with(query_tokens=[["a"]] * 2), "query_tokens lists must have 5"),
        (header_with(key_tokens=[list("uvwxyz")]), "key_tokens must hold 2"),
        (header_with(key_tokens=[[1, 2, 3, 4, 5, 6]] * 2), "key_tokens must hold strings"),
        (header_with(image={"grid": [2, 2], "prefix_tokens": 1}), "image grid"),
        (header_with(image="yes"), "image must be an object"),
        (header_with(payload_crc32=[1] * 5), "payload_crc32 must hold 6 integers"),
        (header_with(payload_crc32=[-1] * 6), "payload_crc32 must hold 6 integers"),
        (header_with(payload_crc32=[1 << 32] * 6), "payload_crc32 must hold 6 integers"),
        (header_with(payload_lengths=[True] * 6), "payload_lengths must hold 6 integers"),
        (header_with(payload_lengths=None), "payload_lengths must hold 6 integers"),
    ],
)
def test_malformed_headers_are_rejected(blob, words):
    with pytest.raises(encoding.FormatError, match=words.replace("[", r"\[")):
        encoding.decode_header(blob)


@pytest.mark.parametrize("version,limit", [(1, 30), (2, 60)])
def test_short_oversized_and_corrupt_payloads_are_rejected(version, limit):
    blobs = encoding.encode_step(WEIGHTS, version=version)
    header = encoding.decode_header(blobs[0])
    assert header["version"] == version
    good = encoding.decode_codes(blobs[1], header)
    assert good.shape == (5, 6)
    with pytest.raises(encoding.FormatError, match="expected 30"):
        encoding.decode_codes(zlib.compress(bytes(29)), header)
    with pytest.raises(encoding.FormatError, match="more than %d" % limit):
        encoding.decode_codes(zlib.compress(bytes(10_000_000)), header)  # a zip bomb stops early
    with pytest.raises(encoding.FormatError, match="zlib"):
        encoding.decode_codes(b"not zlib at all", header)
    with pytest.raises(encoding.FormatError):
        encoding.decode_codes(blobs[1][:-3], header)  # truncated stream


def test_indices_out_of_range_raise_index_error():
    header = encoding.decode_header(good_step()[0])
    assert encoding.payload_index(header, 1, 2) == 1 + 1 * 3 + 2
    for example, head in [(2, 0), (0, 3), (-1, 0)]:
        with pytest.raises(IndexError):
            encoding.payload_index(header, example, head)
    with pytest.raises(IndexError, match="no probe images"):
        encoding.image_index(header, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_header_bytes_never_escape_format_error(blob):
    try:
        header = encoding.decode_header(blob)
    except encoding.FormatError:
        return
    assert header["version"] in (1, 2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_payload_bytes_never_escape_format_error(blob):
    header = encoding.decode_header(good_step()[0])
    try:
        codes = encoding.decode_codes(blob, header)
    except encoding.FormatError:
        return
    assert codes.shape == (5, 6)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
    st.floats(0.0, 1.0), st.integers(0, 2**32 - 1),
)
def test_quantisation_error_bound_holds_for_any_weights(b, h, tq, tk, peak, seed):
    weights = np.random.default_rng(seed).random((b, h, tq, tk)).astype(np.float32) * peak
    blobs = encoding.encode_step(weights)
    header = encoding.decode_header(blobs[0])
    for i in range(b * h):
        values = encoding.codes_to_weights(encoding.decode_codes(blobs[1 + i], header), header["scales"][i])
        assert np.abs(values - weights.reshape(-1, tq, tk)[i]).max() <= encoding.MAX_ERROR


def test_png_round_trip_and_rejects_garbage():
    image = (np.random.default_rng(2).random((5, 7, 3)) * 255).astype(np.uint8)
    assert np.array_equal(png.decode_png(png.encode_png(image)), image)
    with pytest.raises(ValueError):
        png.decode_png(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ValueError):
        png.encode_png(np.zeros((2, 2, 5), np.uint8))


@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4])
def test_png_decoder_undoes_every_filter_type(filter_type):
    """Rows filtered with each PNG filter (None, Sub, Up, Average, Paeth), as libpng writes
    them, decode to the original pixels."""
    rng = np.random.default_rng(filter_type)
    image = rng.integers(0, 256, (4, 6, 2)).astype(np.uint8)
    stride, channels = 12, 2
    rows, prev = [], np.zeros(stride, np.int32)
    for line in image.reshape(4, stride).astype(np.int32):
        filtered = np.zeros(stride, np.int32)
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            upleft = prev[x - channels] if x >= channels else 0
            up = prev[x]
            p = left + up - upleft
            paeth = min((abs(p - left), 0, left), (abs(p - up), 1, up),
                        (abs(p - upleft), 2, upleft))[2]
            pred = [0, left, up, (left + up) // 2, paeth][filter_type]
            filtered[x] = (line[x] - pred) & 0xFF
        rows.append(bytes([filter_type]) + filtered.astype(np.uint8).tobytes())
        prev = line
    ihdr = struct.pack(">IIBBBBB", 6, 4, 8, 4, 0, 0, 0)  # colour type 4: grey + alpha

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + b"\0\0\0\0"  # CRC not read

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    assert np.array_equal(png.decode_png(data), image)
