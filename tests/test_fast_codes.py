"""The table-driven version 2 encoder (`encoding.quantize`, `pack_codes`, `unpack_v2`, the
writers' payloads) gives exactly the bytes of the encoder first written (`v2_reference`): on
every float32 near every rounding boundary, on synthetic and random heads, with masks, NaN-masked
pooled parts and edge values. The format is on disk, so a changed byte would be a changed file.
"""

import zlib

import numpy as np
import pytest

from tb_attention_plugin import encoding
from tb_attention_plugin.step_payload import THREADED_VALUES
from synthetic import HEAD_KINDS, attention_head, softmax_weights
import v2_reference as reference

NEIGHBOURHOOD = 256  # float32 steps either side of a boundary (a few ulps of log's error are ~64)


def float32_bits(values):
    return np.asarray(values, np.float32).view(np.int32).astype(np.int64)


def ideal_boundaries():
    """The rounding boundaries of docs/format.md computed in float64 (independent of any
    float32 implementation): half the log floor, the log levels' geometric means, the linear
    edge, the linear levels' midpoints."""
    levels = encoding.v2_levels()
    log_part = np.sqrt(levels[1:encoding.LOG_LEVELS] * levels[2:encoding.LOG_LEVELS + 1])
    edge = np.sqrt(levels[encoding.LOG_LEVELS] * levels[encoding.LOG_LEVELS + 1])
    linear_part = (levels[encoding.LOG_LEVELS + 1:-1] + levels[encoding.LOG_LEVELS + 2:]) / 2
    return np.concatenate([[encoding.LOG_FLOOR / 2], log_part, [edge], linear_part])


def fractions_near_boundaries():
    """Every float32 within NEIGHBOURHOOD steps of each ideal boundary and of each boundary the
    encoder's table uses, in [0, 1]."""
    centres = np.concatenate([float32_bits(ideal_boundaries()), encoding._rule_boundaries()])
    offsets = np.arange(-NEIGHBOURHOOD, NEIGHBOURHOOD + 1)
    bits = np.unique((centres[:, None] + offsets).ravel())
    bits = bits[(bits >= 0) & (bits <= float32_bits(1.0))]
    return bits.astype(np.int32).view(np.float32)


def assert_same_quantization(matrix, mask=None):
    want_codes, want_scale = reference.quantize(matrix, mask)
    codes, scale = encoding.quantize(matrix, mask)
    assert scale == want_scale
    assert codes.dtype == np.uint16 and codes.shape == want_codes.shape
    different = np.flatnonzero(codes.ravel() != want_codes.ravel())
    assert different.size == 0, (
        "%d values differ, first at fraction %r: %d instead of %d"
        % (different.size, float(matrix.ravel()[different[0]]) / scale,
           codes.ravel()[different[0]], want_codes.ravel()[different[0]]))
    assert encoding.pack_codes(codes) == reference.pack_codes(want_codes)


def test_the_table_rounds_like_the_rule_around_every_boundary():
    x = fractions_near_boundaries()
    assert x.size > 400 * NEIGHBOURHOOD  # hundreds of boundaries, both sides of each
    matrix = np.append(x, np.float32(1.0))[np.newaxis]  # scale 1: the fractions as they are
    assert_same_quantization(matrix)
    codes, _ = encoding.quantize(matrix)
    assert set(np.unique(codes)) == set(range(encoding.V2_LEVELS))  # every level reached


def test_the_table_rounds_like_the_rule_at_other_scales():
    x = fractions_near_boundaries()
    for scale in (0.37, 1e-3, 0.999, 2.0 ** -20):
        matrix = np.append(x * np.float32(scale), np.float32(scale))[np.newaxis]
        assert_same_quantization(matrix)


def test_boundaries_of_the_table_are_the_rules_own():
    boundaries = encoding._rule_boundaries()
    assert np.all(np.diff(boundaries) > 0) and len(boundaries) == encoding.V2_LEVELS - 1
    at = boundaries.astype(np.int32).view(np.float32)
    below = (boundaries - 1).astype(np.int32).view(np.float32)
    wanted = np.arange(1, encoding.V2_LEVELS)
    np.testing.assert_array_equal(reference.levels(at), wanted)
    np.testing.assert_array_equal(reference.levels(below), wanted - 1)
    # And within a fraction of a level of where docs/format.md puts them.
    np.testing.assert_allclose(at, ideal_boundaries(), rtol=1e-5)


@pytest.mark.parametrize("tokens", [128, 1024])
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_synthetic_heads_encode_identically(kind, tokens):
    weights, mask = attention_head(kind, tokens, seed=tokens + 7)
    assert_same_quantization(weights, mask)
    assert_same_quantization(weights * np.float32(0.3), mask)  # a scale that is not 1
    blobs = encoding.encode_step(weights, mask=mask)
    want, scale = reference.payload(weights, mask)
    assert blobs[1] == want and encoding.decode_header(blobs[0])["scales"] == [scale]


def test_a_long_causal_head_with_a_sink_encodes_identically():
    weights, mask = attention_head("causal", 2048, seed=3)
    assert_same_quantization(weights, mask)


def test_random_heads_encode_identically():
    rng = np.random.default_rng(11)
    cases = [
        rng.random((64, 300), dtype=np.float32),  # uniform: many escaped (linear) levels
        rng.random((50, 70), dtype=np.float32) ** 8,  # spread over many decades
        np.exp(rng.normal(-9, 4, (40, 90))).clip(0, 1).astype(np.float32),  # log-normal
        rng.dirichlet(np.full(500, 0.05), size=33).astype(np.float32),  # sparse rows
    ]
    for matrix in cases:
        assert_same_quantization(matrix)
        mask = rng.random(matrix.shape) < 0.7
        assert_same_quantization(matrix, mask)
    batch = rng.dirichlet(np.ones(20), size=(2, 3, 10)).astype(np.float32)
    mask = rng.random(batch.shape) < 0.8
    mask[..., 0] = True
    blobs = encoding.encode_step(batch, mask=mask)
    header = encoding.decode_header(blobs[0])
    for b in range(2):
        for h in range(3):
            want, scale = reference.payload(batch[b, h], mask[b, h])
            index = encoding.payload_index(header, b, h)
            assert blobs[index] == want and header["scales"][index - 1] == scale


def test_edge_values_encode_identically():
    tiny = [0.0, -0.0, 1e-45, 1e-38, 1e-7, 4.9e-7, 5e-7, 5.1e-7, 9.99e-7, 1e-6, 1.0001e-6]
    row = np.array(tiny + [0.0689, 0.07, 0.5, 0.99999994, 1.0], np.float32)
    assert_same_quantization(row[np.newaxis])  # scale exactly 1: the max is level 440
    assert_same_quantization(row[np.newaxis] * np.float32(0.25))
    assert encoding.quantize(row[np.newaxis])[0][0, -1] == encoding.V2_LEVELS - 1
    # Masked positions may hold anything (larger than the scale, NaN): they are 441 either way.
    matrix = np.array([[0.2, 0.9, np.nan, 0.1], [0.05, 1e-9, 0.3, np.inf]], np.float32)
    mask = np.array([[True, False, False, True], [True, True, True, False]])
    assert_same_quantization(matrix, mask)
    assert_same_quantization(np.zeros((3, 4), np.float32))  # scale 0: all level 0
    assert_same_quantization(np.zeros((3, 4), np.float32), np.eye(3, 4, dtype=bool))
    assert_same_quantization(np.full((2, 2), 0.5, np.float32), np.zeros((2, 2), bool))  # none attended
    assert_same_quantization(np.full((1, 1), 1e-30, np.float32))  # a head of one tiny weight


def test_pooled_parts_with_nan_masks_encode_identically():
    rng = np.random.default_rng(5)
    weights, mask = attention_head("causal", 96, seed=2)
    weights = np.where(mask, weights, np.nan)[np.newaxis, np.newaxis]
    means, maxes = encoding.pool(weights, 8)
    window = weights[..., 80:96, :]
    column = weights[..., :, :1]
    blobs = encoding.encode_pooled_step(
        weights.shape, 8, means, maxes,
        [("last_queries", (80, 96), (0, 96), window), ("first_key", (0, 96), (0, 1), column)],
    )
    overview = np.concatenate([means, maxes], axis=2)[0, 0]
    assert blobs[1] == reference.nan_masked_payload(overview, scale_from=maxes[0, 0])[0]
    assert blobs[2] == reference.nan_masked_payload(window[0, 0])[0]
    assert blobs[3] == reference.nan_masked_payload(column[0, 0])[0]
    empty = np.full((4, 4), np.nan, np.float32)
    noisy = np.where(rng.random((30, 40)) < 0.5, np.nan, rng.random((30, 40))).astype(np.float32)
    for matrix in (empty, noisy):
        raw, scale = encoding._nan_masked_codes(matrix)
        assert (zlib.compress(raw, 6), scale) == reference.nan_masked_payload(matrix)


def test_nan_masked_parts_with_any_nan_and_signed_zeros_encode_identically():
    matrix = np.array([[0.5, -0.0, np.nan, 0.25], [0.0, 1e-7, 1.0, np.nan]], np.float32)
    matrix.view(np.uint32)[0, 2] = 0xFFC00000  # a NaN with its sign bit set (0 * inf on x86)
    for part in (matrix, np.full((3, 2), -0.0, np.float32), matrix[:, 2:3]):
        raw, scale = encoding._nan_masked_codes(part)
        assert (zlib.compress(raw, 6), scale) == reference.nan_masked_payload(part)


def test_steps_large_enough_for_several_threads_encode_identically():
    weights = softmax_weights((2, 6, 128, 128), seed=4)
    mask = np.broadcast_to(np.tril(np.ones((128, 128), bool)), weights.shape)
    assert weights.size >= THREADED_VALUES  # so each head's payload is built on its own thread
    blobs = encoding.encode_step(weights, mask=mask)
    header = encoding.decode_header(blobs[0])
    for b in range(2):
        for h in range(6):
            index = encoding.payload_index(header, b, h)
            want, scale = reference.payload(weights[b, h], mask[b, h])
            assert blobs[index] == want and header["scales"][index - 1] == scale
    masked = np.where(mask, weights, np.nan)
    means, maxes = encoding.pool(masked, 4)
    windows = [("last_queries", (96, 128), (0, 128), masked[:, :, 96:]),
               ("first_key", (0, 128), (0, 1), masked[:, :, :, :1])]
    blobs = encoding.encode_pooled_step(masked.shape, 4, means, maxes, windows)
    header = encoding.decode_header(blobs[0])
    overview = np.concatenate([means, maxes], axis=2)
    for b in range(2):
        for h in range(6):
            index = encoding.overview_index(header, b, h)
            assert blobs[index] == reference.nan_masked_payload(overview[b, h], maxes[b, h])[0]
            for name, _, _, part in windows:
                index = encoding.window_index(header, name, b, h)
                assert blobs[index] == reference.nan_masked_payload(part[b, h])[0]


def test_unpacking_equals_the_reference_and_rejects_what_it_rejected():
    rng = np.random.default_rng(9)
    codes = rng.integers(0, encoding.V2_MASKED + 1, (70, 130)).astype(np.uint16)
    raw = encoding.pack_codes(codes)
    assert raw == reference.pack_codes(codes)
    np.testing.assert_array_equal(encoding.unpack_v2(raw, 70, 130), reference.unpack_v2(raw, 70, 130))
    np.testing.assert_array_equal(encoding.unpack_v2(raw, 70, 130), codes)
    no_escapes = np.minimum(codes, 253).astype(np.uint16)
    raw = encoding.pack_codes(no_escapes)
    assert len(raw) == no_escapes.size
    np.testing.assert_array_equal(encoding.unpack_v2(raw, 70, 130), no_escapes)
    for bad in (raw[:-1], raw + b"\x00", bytes([254]) + raw[1:], bytes([254]) + raw[1:] + b"\xbb"):
        with pytest.raises(encoding.FormatError):
            reference.unpack_v2(bad, 70, 130)
        with pytest.raises(encoding.FormatError):
            encoding.unpack_v2(bad, 70, 130)
    with pytest.raises(ValueError, match="beyond the last level"):
        encoding.pack_codes(np.array([[0, encoding.V2_MASKED + 1]], np.uint16))
