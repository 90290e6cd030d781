"""Format version 2 ("faithful codes", docs/format.md): the error bounds through the real writer
and TensorBoard's real data provider, row entropy up to 8192 tokens, storage size, and version 1
data (written by the v1 encoder kept in `encoding`) still served next to version 2.

The heads are `synthetic.attention_head`: a causal head with a first-token sink, a
bidirectional head and a ViT head, softmax of N(0, 1) logits.
"""

import zlib

import numpy as np
import pytest

import tb_attention_plugin as tba
from tb_attention_plugin import encoding, metadata, stats
from tb_attention_plugin.server import wire_format
from plugin_client import get, get_json, production_plugin, wsgi_client
from synthetic import HEAD_KINDS, attention_head, row_entropy

RELATIVE = 0.028  # the issue asks 3%; the code guarantees exp(LOG_STEP / 2) - 1 = 2.79%
ENTROPY = 0.01


def check_faithful(decoded, weights, mask, scale):
    """Asserts the v2 bounds of one decoded head against its float32 weights."""
    attended = np.ones(weights.shape, bool) if mask is None else mask
    np.testing.assert_array_equal(np.isnan(decoded), ~attended)  # masked stays distinguishable
    error = np.abs(decoded[attended].astype(np.float64) - weights[attended])
    assert error.max() <= scale / 508 * (1 + 1e-5), error.max() * 508 / scale
    assert error.max() <= 1 / 508
    large = weights[attended] >= 1e-6 * scale
    assert large.sum() >= 10 * weights.shape[0]  # checked on many weights per row, not a few
    relative = error[large] / weights[attended][large]
    assert relative.max() <= RELATIVE, relative.max()
    # Row entropy (what /stats averages): within 1% on every row of at least 16 keys (rows of
    # 2..15 keys have so little entropy that one weight's 2.8% shows), and on the mean.
    want = row_entropy(np.where(attended, weights, np.nan))
    got = row_entropy(decoded)
    keys = attended.sum(axis=1)
    rows = (keys >= 16) & (want > 0)
    assert rows.sum() >= 0.8 * len(rows)
    worst = (np.abs(got - want)[rows] / want[rows]).max()
    assert worst <= ENTROPY, worst
    assert abs(got.mean() - want.mean()) <= ENTROPY * want.mean()


def test_every_writer_writes_version_2():
    blobs = encoding.encode_step(np.full((3, 3), 1 / 3, np.float32))
    header = encoding.decode_header(blobs[0])
    assert metadata.FORMAT_VERSION == 2 and header["version"] == 2
    assert header["encoding"] == encoding.ENCODING_V2 == "u8-loglin-zlib"
    assert metadata.SUPPORTED_VERSIONS == {1, 2}


def test_every_step_records_each_payloads_checksum_and_length():
    # What lets the server answer a head without inflating its payload (docs/format.md).
    weights, mask = attention_head("causal", 128, seed=2)
    full = encoding.encode_step(np.stack([weights, weights.T])[np.newaxis], version=2)
    old_codes = encoding.encode_step(weights, mask=mask, version=1)
    means, maxes = encoding.pool(weights[np.newaxis, np.newaxis], 16, mask)
    window = np.where(mask, weights, np.nan)[np.newaxis, np.newaxis, 112:, :]
    pooled = encoding.encode_pooled_step((1, 1, 128, 128), 16, means, maxes,
                                         [("last_queries", (112, 128), (0, 128), window)])
    for blobs in (full, old_codes, pooled):
        header = encoding.decode_header(blobs[0])
        payloads = blobs[1:1 + len(header["scales"])]
        assert header["payload_crc32"] == [zlib.crc32(p) for p in payloads]
        assert header["payload_lengths"] == [len(zlib.decompress(p)) for p in payloads]
    header = encoding.decode_header(full[0])
    assert [encoding.vouched_length(p, header, i) for i, p in enumerate(full[1:], 1)] == \
        header["payload_lengths"]
    flipped = full[1][:30] + bytes([full[1][30] ^ 1]) + full[1][31:]
    assert encoding.vouched_length(flipped, header, 1) is None  # then it is inflated to check
    assert encoding.vouched_length(full[1], header, 2) is None  # another head's checksum
    unchecked = {k: v for k, v in header.items() if not k.startswith("payload_")}
    assert encoding.vouched_length(full[1], unchecked, 1) is None  # an older writer's step


def test_levels_meet_both_bounds_everywhere():
    """Every x in [1e-6, 1] of the scale rounds to a level within 2.79% and 1/508."""
    x = np.geomspace(1e-6, 1, 400_000).astype(np.float32)
    x = np.concatenate([x, np.linspace(0, 1, 400_001, dtype=np.float32)])
    codes, scale = encoding.quantize(x[np.newaxis])
    assert scale == 1.0
    decoded = encoding.codes_to_weights(codes, scale)[0].astype(np.float64)
    error = np.abs(decoded - x)
    assert error.max() <= 1 / 508 * (1 + 1e-5)
    large = x >= 1e-6
    assert (error[large] / x[large]).max() <= encoding.MAX_RELATIVE_ERROR * (1 + 1e-4)
    assert encoding.MAX_RELATIVE_ERROR < RELATIVE
    assert decoded[x == 0].max() == 0 and decoded[x == 1].min() == 1  # zero and the max exact
    assert np.all(np.diff(encoding.v2_levels()) > 0)
    assert codes.max() == encoding.V2_LEVELS - 1


def test_pack_and_unpack_are_inverse_and_reject_bad_lengths():
    codes = np.arange(encoding.V2_LEVELS + 1, dtype=np.uint16).reshape(2, -1)  # every index
    raw = encoding.pack_codes(codes)
    assert len(raw) == codes.size + (encoding.V2_LEVELS - encoding.ESCAPE)
    assert np.array_equal(encoding.unpack_v2(raw, *codes.shape), codes)
    with pytest.raises(encoding.FormatError, match="extension bytes"):
        encoding.unpack_v2(raw[:-1], *codes.shape)
    with pytest.raises(encoding.FormatError, match="beyond the last level"):
        encoding.unpack_v2(raw[:-1] + bytes([255]), *codes.shape)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A logdir written by the real TF-free writer: each head kind at 128, 1024 and 4096
    tokens (steps 128, 1024, 4096 of tag `<kind>`), and a tag with version 1 and 2 steps."""
    root = tmp_path_factory.mktemp("faithful")
    heads = {}
    with tba.AttentionWriter(root / "run") as writer:
        for kind in HEAD_KINDS:
            for tokens in (128, 1024, 4096):
                weights, mask = attention_head(kind, tokens, seed=tokens)
                writer.attention(kind, weights, tokens, mask=mask)
                heads[kind, tokens] = weights, mask
        weights, mask = attention_head("causal", 128, seed=1)
        writer.write_blobs("mixed", encoding.encode_step(weights, mask=mask, version=1), 1)
        writer.attention("mixed", weights, 2, mask=mask)
        heads["mixed"] = weights, mask
    return root, heads


@pytest.fixture(scope="module")
def client(written):
    return wsgi_client(production_plugin(written[0]))


@pytest.mark.parametrize("tokens", [128, 1024, 4096])
@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_served_heads_are_faithful(client, written, kind, tokens):
    weights, mask = written[1][kind, tokens]
    # The deflate fast path: the stored stream with the wire header in front.
    response = get(client, "/matrix", headers={"Accept-Encoding": "deflate"}, run="run",
                   tag=kind, step=tokens, example=0, head=0)
    assert response.status_code == 200 and response.headers["Content-Encoding"] == "deflate"
    body = zlib.decompress(response.get_data())
    matrix = wire_format.decode(body)
    assert matrix.dtype == wire_format.DTYPE_FAITHFUL and matrix.data.shape == weights.shape
    # Compact on the wire: one byte per value plus the rare extension bytes.
    assert len(body) <= 20 + 1.05 * weights.size
    scale = float(np.max(weights if mask is None else weights[mask]))
    assert matrix.scale == pytest.approx(scale, rel=1e-7)
    check_faithful(matrix.weights(), weights, mask, scale)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_stored_bytes_per_value_at_most_one(written, kind):
    for tokens in (128, 1024, 4096):
        weights, mask = written[1][kind, tokens]
        blobs = encoding.encode_step(weights, mask=mask)
        assert len(blobs[1]) / weights.size <= 1.0, (kind, tokens, len(blobs[1]) / weights.size)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_stats_are_computed_from_the_faithful_codes(client, written, kind):
    answer = get_json(client, "/stats", run="run", tag=kind)
    assert answer["steps"] == [128, 1024, 4096] and not answer["errors"]
    for i, tokens in enumerate(answer["steps"]):
        weights, mask = written[1][kind, tokens]
        exact = np.where(np.ones(weights.shape, bool) if mask is None else mask, weights, np.nan)
        grid = {}
        if kind == "vit":
            side = int(round((weights.shape[0] - 1) ** 0.5))
            grid = {"image_grid": (side, side), "prefix_tokens": 1}
        want = stats.head_statistics(exact[np.newaxis], **grid)
        assert answer["stats"]["entropy"][i][0] == pytest.approx(float(want["entropy"][0]), rel=ENTROPY)
        assert answer["stats"]["max_weight"][i][0] == pytest.approx(float(want["max_weight"][0]), rel=0.03)


def test_version_1_steps_still_serve_next_to_version_2(client, written):
    weights, mask = written[1]["mixed"]
    scale = float(weights[mask].max())
    old = wire_format.decode(get(client, "/matrix", run="run", tag="mixed", step=1, example=0,
                          head=0).get_data())
    new = wire_format.decode(get(client, "/matrix", run="run", tag="mixed", step=2, example=0,
                          head=0).get_data())
    assert old.dtype == wire_format.DTYPE_CODES and new.dtype == wire_format.DTYPE_FAITHFUL
    for matrix in (old, new):
        values = matrix.weights()
        np.testing.assert_array_equal(np.isnan(values), ~mask)
        assert np.nanmax(np.abs(values - weights)) <= scale / 508 * (1 + 1e-5)
    # Version 1 loses the small weights (linear codes), version 2 keeps them.
    small = mask & (weights < scale / 508)
    assert small.sum() > 100
    assert np.all(old.weights()[small] == 0) and np.all(new.weights()[small] > 0)
    answer = get_json(client, "/stats", run="run", tag="mixed")
    assert answer["steps"] == [1, 2] and not answer["errors"]
    header = get_json(client, "/step", run="run", tag="mixed", step=1)
    assert header["shape"] == [1, 1, 128, 128]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_row_entropy_within_one_percent_at_8192_tokens(kind):
    # The ViT head at 1 + 90 * 90 = 8101 tokens (1 + 91 * 91 is more than a step may hold).
    weights, mask = attention_head(kind, 8101 if kind == "vit" else 8192, seed=3)
    blobs = encoding.encode_step(weights, mask=mask)
    header = encoding.decode_header(blobs[0])
    decoded = encoding.codes_to_weights(encoding.decode_codes(blobs[1], header), header["scales"][0])
    assert len(blobs[1]) / weights.size <= 1.0
    check_faithful(decoded, weights, mask, header["scales"][0])


def test_no_payload_exceeds_one_byte_per_value_at_worst():
    """Size budgets count on `payload_bound`: weights spread evenly over [0, scale] (uniform
    random numbers) would take about 1.1 bytes per value as faithful codes, so that step is
    written as version 1; a softmax step of the same size stays version 2."""
    rng = np.random.default_rng(5)
    spread = rng.random((2, 256, 256)).astype(np.float32)
    blobs = encoding.encode_step(spread)
    header = encoding.decode_header(blobs[0])
    assert header["version"] == 1 and header["encoding"] == "u8-zlib"
    for i, blob in enumerate(blobs[1:]):
        assert len(blob) <= encoding.payload_bound(256 * 256)
        decoded = encoding.codes_to_weights(encoding.decode_codes(blob, header), header["scales"][i])
        assert np.abs(decoded - spread[i]).max() <= encoding.MAX_ERROR
    faithful = zlib.compress(encoding.pack_codes(encoding.quantize(spread[0])[0]), 6)
    assert len(faithful) > encoding.payload_bound(256 * 256)  # the case is real
    softmax, _ = attention_head("bidirectional", 256)
    assert encoding.decode_header(encoding.encode_step(softmax)[0])["version"] == 2


def test_the_tensorflow_summary_op_writes_faithful_codes(tmp_path):
    """The TF op (as AttentionLogger and model code call it) goes through the same encoder."""
    import tensorflow as tf

    from readback import read_back

    weights, mask = attention_head("causal", 1024, seed=7)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(step=3):
        tba.attention("layer", tf.constant(weights), mask=tf.constant(mask))
    writer.close()
    (step, header, stored), = read_back(tmp_path)["."]["layer"]
    assert step == 3 and header["version"] == 2 and header["encoding"] == "u8-loglin-zlib"
    check_faithful(stored[0, 0], weights, mask, header["scales"][0])
