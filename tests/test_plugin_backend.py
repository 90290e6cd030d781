"""The plugin's HTTP API, served by TensorBoard's WSGI app over TensorBoard's real data provider.

Logdirs are written by `AttentionWriter` and by the TensorFlow summary op; the provider is a
`MultiplexerDataProvider` built the way `tensorboard` builds it (production size guidance plus
the flags our loader fixes), not the test-friendly default that keeps 500 of everything.
"""

import argparse
import concurrent.futures
import gzip
import json
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard import context as tb_context
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins import base_plugin
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from werkzeug import test as werkzeug_test

import tb_attention_plugin as tba
from tb_attention_plugin import encoding
from tb_attention_plugin import metadata
from tb_attention_plugin import png
from tb_attention_plugin.server import loader
from tb_attention_plugin.server import matrices
from tb_attention_plugin.server import plugin as attention_plugin
from tb_attention_plugin.server import static_files
from tb_attention_plugin.server import wire_format
from plugin_client import PREFIX, get, get_json, production_plugin, wsgi_client
from synthetic import as_rank4, softmax_weights

CJK_QUERY = ["<s>", "我", "看见", "三", "辆", "红色", "汽车", "</s>"]
CJK_KEY = ["i", "see", "three", "red", "cars", ".", "<pad>"]


def softmax(shape, seed):
    return softmax_weights(shape, seed, sharpness=2.0)


# What the logdirs hold: (run, tag) -> {step: (weights [B, H, Tq, Tk] with NaN where masked)}.
ENCODER = softmax((2, 3, 8, 7), seed=1)
ENCODER_MASK = np.ones((2, 1, 1, 7), bool)
ENCODER_MASK[1, ..., 5:] = False  # example 1 has two padded keys
VIT = softmax((2, 4, 5), seed=2)  # rank 3: one example, 2x2 patches + class token
VIT_IMAGE = np.random.default_rng(3).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
SAMPLED_STEPS = loader.DEFAULT_SAMPLES + 20
# Large enough to be compressed on the wire (GZIP_MIN_BYTES): 2 heads of 40x40, causal.
LARGE = np.where(np.tril(np.ones((40, 40), bool)), softmax((2, 40, 40), seed=4), np.nan)


def masked(weights, mask):
    return np.where(np.broadcast_to(mask, weights.shape), weights, np.nan)


def write_raw_event(logdir, tag, blobs, step, plugin_content):
    """Writes one blob-sequence value with arbitrary plugin metadata (a 'future' writer)."""
    writer = EventFileWriter(str(logdir), filename_suffix=".raw")
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]
        ),
        string_val=blobs,
    )
    md = metadata.create_summary_metadata()
    md.plugin_data.content = plugin_content
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=md)
    writer.add_event(event_pb2.Event(step=step, wall_time=1.0, summary=summary_pb2.Summary(value=[value])))
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Runs `train` (writer: encoder, ViT, broken tags), `tf_op` (summary op), `sampled`."""
    root = tmp_path_factory.mktemp("logs")
    with tba.AttentionWriter(root / "train") as writer:
        for step in (0, 10, 20):
            writer.attention(
                "encoder/self_attention",
                ENCODER * (1 - step / 100),
                step,
                query_tokens=CJK_QUERY,
                key_tokens=CJK_KEY,
                mask=ENCODER_MASK,
                description="encoder layer 0",
            )
        writer.attention("vit/block_0", VIT, 20, images=VIT_IMAGE)
        writer.write_blobs("broken/corrupt_header", [b"\xff{ not json", b"x"], 20)
        future = encoding.encode_step(ENCODER)
        header = json.loads(future[0])
        header["version"] = 99
        writer.write_blobs("broken/future_step", [json.dumps(header).encode()] + future[1:], 20)
        bad_payload = encoding.encode_step(ENCODER[0])  # 3 heads, head 1 corrupted
        bad_payload[2] = b"not zlib at all"
        writer.write_blobs("broken/bad_payload", bad_payload, 20)
        large = encoding.encode_step(np.nan_to_num(LARGE), mask=~np.isnan(LARGE))
        writer.write_blobs("large/causal", large, 20)
        unchecked = json.loads(large[0])  # as tb-attention wrote it before payload checksums
        del unchecked["payload_crc32"], unchecked["payload_lengths"]
        writer.write_blobs("large/no_checksums", [json.dumps(unchecked).encode()] + large[1:], 20)
        trailing = list(large)
        trailing[2] += b"junk"  # head 1: valid zlib followed by bytes that are not part of it
        writer.write_blobs("large/trailing_bytes", trailing, 20)
        flipped = list(large)
        flipped[2] = flipped[2][:40] + bytes([flipped[2][40] ^ 0x10]) + flipped[2][41:]
        writer.write_blobs("broken/large_flipped_byte", flipped, 20)
    write_raw_event(root / "train", "broken/future_metadata", encoding.encode_step(VIT), 20,
                    b'{"version": 3}')
    with tba.AttentionWriter(root / "sampled") as writer:
        for step in range(SAMPLED_STEPS):
            writer.attention("tiny", np.full((2, 2), 0.5, np.float32), step)
    write_with_tf_op(root / "tf_op")
    return root


def write_with_tf_op(path):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(path))

    @tf.function
    def log_in_graph(weights, step):
        return tba.attention("graph/rank4", weights, step=step, query_tokens=CJK_QUERY,
                             key_tokens=CJK_KEY)

    with writer.as_default():
        for step in (1, 2):
            tba.attention("eager/rank2", softmax((8, 7), step), step=step,
                          query_tokens=CJK_QUERY, key_tokens=CJK_KEY)
            tba.attention("eager/rank3", softmax((2, 8, 7), step), step=step,
                          query_tokens=CJK_QUERY, key_tokens=CJK_KEY)
            assert bool(log_in_graph(tf.constant(softmax((2, 3, 8, 7), step)),
                                     tf.constant(step, tf.int64)))
    writer.close()


TF_OP_WEIGHTS = {
    "eager/rank2": lambda step: as_rank4(softmax((8, 7), step)),
    "eager/rank3": lambda step: as_rank4(softmax((2, 8, 7), step)),
    "graph/rank4": lambda step: softmax((2, 3, 8, 7), step),
}


@pytest.fixture(scope="module")
def client(logdir):
    return wsgi_client(production_plugin(logdir))


def get_matrix(client, **params):
    response = get(client, "/matrix", **params)
    assert response.status_code == 200, response.get_data()[:300]
    assert response.mimetype == "application/octet-stream"
    return wire_format.decode(response.get_data())


def assert_error(response, status, *words):
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/json"
    message = json.loads(response.get_data())["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message, message
    return message


def tags_of(client):
    runs = get_json(client, "/runs")["runs"]
    return {(run["run"], tag["tag"]): tag for run in runs for tag in run["tags"]}


def test_loader_is_import_light_and_sets_a_default_the_user_can_override():
    code = (
        "import sys, tb_attention_plugin.server.loader;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'tensorflow', 'keras')"
        " or m == 'tb_attention_plugin.server.plugin'))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120).stdout
    assert imported.strip() == "[]"
    assert loader.PLUGIN_NAME == metadata.PLUGIN_NAME
    flags = argparse.Namespace(samples_per_plugin={"images": 3})
    loader.AttentionLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": 3, "attention": loader.DEFAULT_SAMPLES}
    flags = argparse.Namespace(samples_per_plugin={"attention": 0})
    loader.AttentionLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"attention": 0}


def test_plugin_metadata_for_tensorboard(client, logdir):
    context = base_plugin.TBContext(data_provider=None, logdir=str(logdir))
    plugin = loader.AttentionLoader().load(context)
    assert plugin.plugin_name == "attention"
    assert plugin.is_active() is False
    assert "attention" in plugin.data_plugin_names()
    frontend = plugin.frontend_metadata()
    assert frontend.es_module_path == "/static/index.js"
    assert frontend.tab_name == "Attention"
    assert frontend.es_module_path.replace("index.js", "*") in plugin.get_plugin_apps()


def test_runs_lists_every_tag_with_shape_tokens_and_errors(client):
    tags = tags_of(client)
    encoder = tags[("train", "encoder/self_attention")]
    assert encoder == {
        "tag": "encoder/self_attention",
        "description": "encoder layer 0",
        "max_step": 20,
        "shape": [2, 3, 8, 7],
        "has_tokens": True,
        "has_image": False,
        "error": None,
    }
    vit = tags[("train", "vit/block_0")]
    assert (vit["shape"], vit["has_tokens"], vit["has_image"]) == ([1, 2, 4, 5], False, True)
    assert tags[("tf_op", "graph/rank4")]["shape"] == [2, 3, 8, 7]
    assert tags[("tf_op", "eager/rank2")]["shape"] == [1, 1, 8, 7]
    assert tags[("train", "broken/bad_payload")]["error"] is None  # its header is fine
    for broken in ("corrupt_header", "future_step", "future_metadata"):
        entry = tags[("train", "broken/" + broken)]
        assert entry["error"] and entry["shape"] is None, entry
    assert "upgrade tb-attention" in tags[("train", "broken/future_step")]["error"]
    assert "upgrade tb-attention" in tags[("train", "broken/future_metadata")]["error"]
    assert "not UTF-8 JSON" in tags[("train", "broken/corrupt_header")]["error"]


def test_steps_are_ascending_with_wall_times(client):
    steps = get_json(client, "/steps", run="train", tag="encoder/self_attention")["steps"]
    assert [s["step"] for s in steps] == [0, 10, 20]
    assert all(isinstance(s["wall_time"], float) for s in steps)
    assert steps[0]["wall_time"] <= steps[1]["wall_time"] <= steps[2]["wall_time"]


def test_default_sampling_keeps_the_loader_default_and_the_newest_step(client):
    steps = [s["step"] for s in get_json(client, "/steps", run="sampled", tag="tiny")["steps"]]
    assert len(steps) == loader.DEFAULT_SAMPLES < SAMPLED_STEPS
    assert steps[-1] == SAMPLED_STEPS - 1 and steps == sorted(steps)


def test_step_header_round_trips_cjk_tokens(client):
    header = get_json(client, "/step", run="train", tag="encoder/self_attention", step=10)
    assert header["step"] == 10
    assert header["shape"] == [2, 3, 8, 7]
    assert header["query_tokens"] == [CJK_QUERY, CJK_QUERY]
    assert header["key_tokens"] == [CJK_KEY, CJK_KEY]
    assert (header["image"], header["reduced"]) == (None, None)
    assert (header["source_rank"], header["source_dtype"]) == (4, "float32")
    assert "scales" not in header
    vit = get_json(client, "/step", run="train", tag="vit/block_0", step=20)
    assert vit["image"] == {"grid": [2, 2], "prefix_tokens": 1, "width": 16, "height": 16}
    assert vit["query_tokens"] is None and vit["source_rank"] == 3


def test_matrix_serves_every_head_within_the_encoding_error(client):
    for step in (0, 10, 20):
        expected = masked(ENCODER * (1 - step / 100), ENCODER_MASK)
        for example in range(2):
            for head in range(3):
                matrix = get_matrix(client, run="train", tag="encoder/self_attention",
                                    step=step, example=example, head=head)
                assert matrix.dtype == wire_format.DTYPE_FAITHFUL  # format v2 codes, as stored
                assert (matrix.rows, matrix.cols) == (8, 7)
                values = matrix.weights()
                want = expected[example, head]
                np.testing.assert_array_equal(np.isnan(values), np.isnan(want))
                assert np.nanmax(np.abs(values - want)) <= encoding.MAX_ERROR + 1e-7
                assert np.nanmax(np.abs(values - want) / want) <= encoding.MAX_RELATIVE_ERROR


@pytest.mark.parametrize("tag", sorted(TF_OP_WEIGHTS))
def test_matrix_serves_what_the_tf_op_wrote(client, tag):
    for step in (1, 2):
        written = TF_OP_WEIGHTS[tag](step)
        batch, heads = written.shape[:2]
        for example in range(batch):
            for head in range(heads):
                values = get_matrix(client, run="tf_op", tag=tag, step=step, example=example,
                                    head=head).weights()
                assert np.abs(values - written[example, head]).max() <= encoding.MAX_ERROR + 1e-7
        header = get_json(client, "/step", run="tf_op", tag=tag, step=step)
        assert header["query_tokens"] == [CJK_QUERY] * batch
        assert header["key_tokens"] == [CJK_KEY] * batch


def test_mean_over_heads_is_float32_and_masked_like_the_heads(client):
    matrix = get_matrix(client, run="train", tag="encoder/self_attention", step=20, example=1,
                        head="mean")
    assert matrix.dtype == wire_format.DTYPE_FLOAT32 and matrix.scale == 1.0
    expected = masked(ENCODER * 0.8, ENCODER_MASK)[1].mean(axis=0)  # NaN stays NaN
    values = matrix.weights()
    np.testing.assert_array_equal(np.isnan(values), np.isnan(expected))
    assert np.isnan(values[:, 5:]).all() and not np.isnan(values[:, :5]).any()
    assert np.nanmax(np.abs(values - expected)) <= encoding.MAX_ERROR


def test_mean_over_heads_of_a_list_of_heads_equals_the_stacked_float64_mean():
    weights = softmax((5, 30, 30), seed=7)
    weights[:3][:, np.triu_indices(30, 1)[0], np.triu_indices(30, 1)[1]] = np.nan
    weights[:, 4, 9] = np.nan  # masked in every head
    attended = ~np.isnan(weights)
    total = np.where(attended, weights, 0.0).sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (total / attended.sum(axis=0)).astype(np.float32)
    for heads in (weights, list(weights)):
        np.testing.assert_array_equal(matrices.mean_over_heads(heads), expected)
    assert np.isnan(expected[4, 9]) and not np.isnan(expected[0, 5])


def test_mean_over_heads_ignores_heads_that_mask_a_position():
    weights = np.array([[[0.2, np.nan]], [[0.4, np.nan]], [[np.nan, np.nan]]], np.float32)
    mean = matrices.mean_over_heads(weights)
    assert mean[0, 0] == pytest.approx(0.3) and np.isnan(mean[0, 1])


class CountingProvider:
    """TensorBoard's real provider, recording which blobs are read (instrumentation only).

    `latency` makes each `read_blob` take that long, as the Rust data server's reads of small
    blobs do (~40 ms), so that concurrent requests really overlap.
    """

    def __init__(self, inner, latency=0.0):
        self._inner = inner
        self._latency = latency
        self.blob_keys_read = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def read_blob(self, ctx=None, *, blob_key):
        self.blob_keys_read.append(blob_key)
        time.sleep(self._latency)
        return self._inner.read_blob(ctx, blob_key=blob_key)


def test_one_head_reads_only_the_header_and_its_payload(logdir):
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    real = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    counting = CountingProvider(real)
    plugin = loader.AttentionLoader().load(base_plugin.TBContext(data_provider=counting))
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin]))
    datum = real.read_blob_sequences(
        tb_context.RequestContext(), experiment_id="", plugin_name="attention", downsample=100
    )["train"]["encoder/self_attention"][1]
    assert datum.step == 10
    def keys(datum, *indexes):
        return sorted(datum.values[i].blob_key for i in indexes)

    get_matrix(client, run="train", tag="encoder/self_attention", step=10, example=1, head=2)
    assert sorted(counting.blob_keys_read) == keys(datum, 0, 1 + 3 + 2)
    get_matrix(client, run="train", tag="encoder/self_attention", step=10, example=1, head=1)
    assert counting.blob_keys_read[2:] == keys(datum, 1 + 3 + 1)  # header cached
    get_matrix(client, run="train", tag="encoder/self_attention", step=10, example=1, head=1)
    assert len(counting.blob_keys_read) == 3  # the answer itself is cached
    # A new step: header and payload are read together, the index guessed from step 10's shape.
    newest = real.read_blob_sequences(
        tb_context.RequestContext(), experiment_id="", plugin_name="attention", downsample=100
    )["train"]["encoder/self_attention"][2]
    values = get_matrix(client, run="train", tag="encoder/self_attention", step=20, example=0,
                        head=1).weights()
    assert sorted(counting.blob_keys_read[3:]) == keys(newest, 0, 1 + 1)
    assert np.abs(values - ENCODER[0, 1] * 0.8).max() <= encoding.MAX_ERROR + 1e-7


def test_concurrent_requests_for_one_step_share_one_header_read(logdir):
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    counting = CountingProvider(
        data_provider.MultiplexerDataProvider(multiplexer, str(logdir)), latency=0.05
    )
    plugin = loader.AttentionLoader().load(base_plugin.TBContext(data_provider=counting))
    app = application.TensorBoardWSGI([plugin])
    params = [dict(run="tf_op", tag="graph/rank4", step=2, example=e, head=h)
              for e in range(2) for h in range(3)]

    def fetch(query):
        return werkzeug_test.Client(app).get(PREFIX + "/matrix", query_string=query)

    with concurrent.futures.ThreadPoolExecutor(len(params)) as pool:
        responses = list(pool.map(fetch, params))
    for query, response in zip(params, responses):
        values = wire_format.decode(response.get_data()).weights()
        written = TF_OP_WEIGHTS["graph/rank4"](2)[query["example"], query["head"]]
        assert np.abs(values - written).max() <= encoding.MAX_ERROR + 1e-7
    assert len(counting.blob_keys_read) == len(set(counting.blob_keys_read)) == 1 + len(params)


def test_image_route_returns_the_probe_png(client):
    response = get(client, "/image", run="train", tag="vit/block_0", step=20, example=0)
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    np.testing.assert_array_equal(png.decode_png(response.get_data()), VIT_IMAGE[0])
    assert_error(get(client, "/image", run="train", tag="vit/block_0", step=20, example=1),
                 404, "out of range")
    assert_error(get(client, "/image", run="train", tag="encoder/self_attention", step=20,
                     example=0), 404, "no probe images")


def test_small_matrix_is_sent_uncompressed_and_revalidates_with_etag(client):
    # Large answers are compressed (test_deflate_and_gzip_answers_...); a small one is not
    # worth it even when the client accepts gzip.
    params = dict(run="train", tag="encoder/self_attention", step=10, example=0, head=2)
    plain = get(client, "/matrix", **params)
    assert "Content-Encoding" not in plain.headers
    assert plain.content_length < attention_plugin.GZIP_MIN_BYTES
    zipped = get(client, "/matrix", headers={"Accept-Encoding": "gzip"}, **params)
    assert "Content-Encoding" not in zipped.headers
    assert zipped.get_data() == plain.get_data()
    assert "max-age=%d" % attention_plugin.CACHE_SECONDS in plain.headers["Cache-Control"]
    etag = plain.headers["ETag"]
    again = get(client, "/matrix", headers={"If-None-Match": etag}, **params)
    assert again.status_code == 304 and again.get_data() == b""
    other_head = get(client, "/matrix", headers={"If-None-Match": etag}, **dict(params, head=1))
    assert other_head.status_code == 200 and other_head.headers["ETag"] != etag


@pytest.mark.parametrize("head", ["0", "1", "mean"])
@pytest.mark.parametrize("tag", ["large/causal", "large/trailing_bytes", "large/no_checksums"])
def test_deflate_and_gzip_answers_decode_to_exactly_the_identity_answer(client, tag, head):
    import zlib

    params = dict(run="train", tag=tag, step=20, example=0, head=head)
    plain = get(client, "/matrix", **params)
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    expected = LARGE[int(head)] if head != "mean" else matrices.mean_over_heads(LARGE)
    np.testing.assert_allclose(wire_format.decode(plain.get_data()).weights(), expected, atol=0.002)
    browser = get(client, "/matrix", headers={"Accept-Encoding": "gzip, deflate, br, zstd"},
                  **params)
    assert browser.headers["Content-Encoding"] == "deflate"
    assert browser.headers["Vary"] == "Accept-Encoding"
    assert zlib.decompress(browser.get_data()) == plain.get_data()  # zlib format, RFC 1950
    zipped = get(client, "/matrix", headers={"Accept-Encoding": "gzip"}, **params)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.get_data()) == plain.get_data()
    preferred = get(client, "/matrix", headers={"Accept-Encoding": "deflate;q=0.5, gzip"}, **params)
    assert preferred.headers["Content-Encoding"] == "gzip"
    refused = get(client, "/matrix", headers={"Accept-Encoding": "deflate;q=0, gzip;q=0"}, **params)
    assert "Content-Encoding" not in refused.headers and refused.get_data() == plain.get_data()


@pytest.mark.parametrize("encodings", ["", "gzip", "gzip, deflate, br, zstd"])
def test_corrupt_large_payload_is_404_whatever_the_client_accepts(client, encodings):
    params = dict(run="train", tag="broken/large_flipped_byte", step=20, example=0)
    for head in (1, "mean"):
        response = get(client, "/matrix", headers={"Accept-Encoding": encodings},
                       **dict(params, head=head))
        assert response.status_code == 404 and response.mimetype == "application/json"
        body = response.get_data()
        if response.headers.get("Content-Encoding") == "gzip":  # JSON is gzipped when accepted
            body = gzip.decompress(body)
        assert "head 1 cannot be read" in json.loads(body)["error"]
    intact = get(client, "/matrix", headers={"Accept-Encoding": encodings}, **dict(params, head=0))
    assert intact.status_code == 200


def test_deflate_answer_reuses_stored_compression():
    import zlib

    codes = np.full((300, 300), 7, np.uint8)  # 90000 codes: past Adler-32's modulus 65521
    codes[:, 150:] = wire_format.MASKED
    codes[::7, ::3] = 200
    for level in range(10):
        body = wire_format.deflate_codes_from_zlib(300, 300, 0.5, zlib.compress(codes.tobytes(), level))
        assert zlib.decompress(body) == wire_format.encode_codes(codes, 0.5), level
    assert len(body) < 4000
    with pytest.raises(wire_format.WireError):
        wire_format.deflate_codes_from_zlib(300, 300, 0.5, b"\x1f\x8b not zlib")
    # Format v2 codes: primary bytes plus extension bytes, dtype 3, the same reuse.
    faithful = np.full((300, 300), 150, np.uint16)
    faithful[:, 150:] = encoding.V2_MASKED
    faithful[::7, ::3] = 300  # escaped: an extension byte each
    faithful[::5, 1::3] = 254  # escaped with extension byte 0
    stored = encoding.pack_codes(faithful)
    assert len(stored) > faithful.size
    for level in range(10):
        body = wire_format.deflate_stored_codes(faithful, 0.5, zlib.compress(stored, level))
        assert zlib.decompress(body) == wire_format.encode_codes(faithful, 0.5), level
    decoded = wire_format.decode(zlib.decompress(body))
    assert decoded.dtype == wire_format.DTYPE_FAITHFUL and np.array_equal(decoded.data, faithful)


def test_large_matrix_gzip_reuses_stored_compression(tmp_path):
    codes = np.full((300, 300), 7, np.uint8)
    codes[:, 150:] = wire_format.MASKED
    import zlib

    zipped = wire_format.gzip_codes_from_zlib(codes, 0.5, zlib.compress(codes.tobytes(), 6))
    assert gzip.decompress(zipped) == wire_format.encode_codes(codes, 0.5)
    assert len(zipped) < 2000
    refused = wire_format.gzip_codes_from_zlib(codes, 0.5, zlib.compress(codes.tobytes()) + b"junk")
    assert gzip.decompress(refused) == wire_format.encode_codes(codes, 0.5)
    faithful, scale = encoding.quantize(np.linspace(0, 0.5, 90000, dtype=np.float32).reshape(300, 300))
    zipped = wire_format.gzip_codes_from_zlib(faithful, scale, zlib.compress(encoding.pack_codes(faithful)))
    assert gzip.decompress(zipped) == wire_format.encode_codes(faithful, scale)
    assert np.array_equal(wire_format.decode(gzip.decompress(zipped)).data, faithful)


@pytest.mark.parametrize(
    "route, params, status, words",
    [
        ("/steps", {"tag": "t"}, 400, ["missing", "run"]),
        ("/steps", {"run": "", "tag": "t"}, 400, ["empty"]),
        ("/steps", {"run": "nope", "tag": "encoder/self_attention"}, 404, ["nope"]),
        ("/steps", {"run": "train", "tag": "nope"}, 404, ["nope"]),
        ("/step", {"run": "train", "tag": "encoder/self_attention"}, 400, ["step"]),
        ("/step", {"run": "train", "tag": "encoder/self_attention", "step": "1.5"}, 400, ["integer"]),
        ("/step", {"run": "train", "tag": "encoder/self_attention", "step": "9" * 30}, 400, ["integer"]),
        ("/step", {"run": "train", "tag": "encoder/self_attention", "step": "5"}, 404, ["no step 5"]),
        ("/step", {"run": "train", "tag": "encoder/self_attention", "step": ["0", "10"]}, 400, ["2 times"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "head": "0"}, 400, ["example"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "0"}, 400, ["head"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "-1", "head": "0"}, 400, ["example"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "2", "head": "0"}, 404, ["out of range"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "0", "head": "3"}, 404, ["out of range"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "2", "head": "mean"}, 404, ["out of range"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "0", "head": "max"}, 400, ["'mean' or an integer"]),
        ("/matrix", {"run": "train", "tag": "encoder/self_attention", "step": "0", "example": "0", "head": "-2"}, 400, ["head"]),
        ("/image", {"run": "train", "tag": "vit/block_0", "step": "20"}, 400, ["example"]),
        ("/image", {"run": "train", "tag": "vit/block_0", "step": "x", "example": "0"}, 400, ["step"]),
    ],
)
def test_every_bad_parameter_gets_a_json_error(client, route, params, status, words):
    assert_error(get(client, route, **params), status, *words)


def test_broken_tags_give_errors_while_their_neighbours_serve(client):
    params = dict(run="train", step=20, example=0, head=0)
    assert_error(get(client, "/matrix", tag="broken/corrupt_header", **params), 404, "cannot be read")
    assert_error(get(client, "/step", run="train", tag="broken/future_step", step=20), 404,
                 "upgrade tb-attention")
    assert_error(get(client, "/matrix", tag="broken/future_step", **params), 404, "upgrade")
    assert_error(get(client, "/steps", run="train", tag="broken/future_metadata"), 404, "upgrade")
    assert_error(get(client, "/matrix", tag="broken/future_metadata", **params), 404, "upgrade")
    assert_error(get(client, "/matrix", tag="broken/bad_payload", **dict(params, head=1)), 404,
                 "not valid zlib")
    assert_error(get(client, "/matrix", tag="broken/bad_payload", **dict(params, head="mean")),
                 404, "not valid zlib")
    good_head = get_matrix(client, tag="broken/bad_payload", **dict(params, head=2)).weights()
    assert np.abs(good_head - ENCODER[0, 2]).max() <= encoding.MAX_ERROR + 1e-7
    assert get_matrix(client, tag="encoder/self_attention", **params).rows == 8


def test_static_route_serves_the_frontend_module_as_javascript(client):
    root = static_files.frontend_root()
    response = get(client, "/static/index.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.get_data() == (root / "index.js").read_bytes()
    etag = response.headers["ETag"]
    assert get(client, "/static/index.js", headers={"If-None-Match": etag}).status_code == 304


def test_static_and_data_routes_work_under_path_prefix_and_experiment(logdir):
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    plugin = loader.AttentionLoader().load(base_plugin.TBContext(data_provider=provider))
    app = application.TensorBoardWSGI([plugin], path_prefix="/tb", data_provider=provider)
    client = werkzeug_test.Client(app)
    index = (static_files.frontend_root() / "index.js").read_bytes()
    for base in ("/tb", "/tb/experiment/some_id"):
        response = client.get(base + PREFIX + "/static/index.js")
        assert response.status_code == 200 and response.get_data() == index
        runs = json.loads(client.get(base + PREFIX + "/runs").get_data())["runs"]
        assert "train" in [r["run"] for r in runs]


@pytest.mark.parametrize(
    "path",
    ["../setup.py", "..%2Fsetup.py", "%2e%2e/setup.py", "./index.js", ".hidden.js",
     "nope.js", "index.py", "/etc/passwd", "a\\..\\setup.py", "%00.js", "sub/"],
)
def test_static_route_refuses_traversal_and_unknown_files(client, path):
    assert_error(client.get(PREFIX + "/static/" + path), 404, "no frontend file")


def test_static_resolve_stays_inside_its_root(tmp_path):
    (tmp_path / "front").mkdir()
    (tmp_path / "front" / "app.js").write_text("export {};")
    (tmp_path / "front" / "style.css").write_text("body{}")
    (tmp_path / "secret.js").write_text("secret")
    (tmp_path / "front" / "link.js").symlink_to(tmp_path / "secret.js")
    root = tmp_path / "front"
    assert static_files.resolve(root, "app.js") == ((root / "app.js").resolve(), "text/javascript")
    assert static_files.resolve(root, "style.css")[1] == "text/css"
    for bad in ("../secret.js", "link.js", "sub/../app.js", "", "app.js/", "/app.js"):
        assert static_files.resolve(root, bad) is None, bad


def test_static_route_serves_nested_frontend_files_and_refuses_escapes(
    logdir, tmp_path, monkeypatch
):
    """`/static/lib/decode.js`, `/static/views/head.js`: the frontend's subfolders are served by
    their path, and a nested path cannot climb out of the frontend folder."""
    front = tmp_path / "front"
    (front / "lib").mkdir(parents=True)
    (front / "views").mkdir()
    (front / "index.js").write_text("export {};")
    (front / "lib" / "decode.js").write_text("export const decode = 1;")
    (front / "views" / "head.js").write_text("export const head = 2;")
    (front / "lib" / ".hidden.js").write_text("hidden")
    (tmp_path / "secret.js").write_text("secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.js").write_text("outside")
    (front / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    monkeypatch.setattr(static_files, "frontend_root", lambda: front)
    client = wsgi_client(production_plugin(logdir))
    for path in ("lib/decode.js", "views/head.js"):
        response = get(client, "/static/" + path)
        assert response.status_code == 200, (path, response.get_data()[:300])
        assert response.mimetype == "text/javascript"
        assert response.get_data() == (front / path).read_bytes()
        etag = response.headers["ETag"]
        revalidated = get(client, "/static/" + path, headers={"If-None-Match": etag})
        assert revalidated.status_code == 304
    for bad in ("lib/../../secret.js", "lib/%2e%2e/%2e%2e/secret.js", "lib/..%2F..%2Fsecret.js",
                "lib//decode.js", "lib/./decode.js", "lib/.hidden.js", "lib/", "lib",
                "escape/x.js", "views/../lib/decode.js"):
        assert_error(client.get(PREFIX + "/static/" + bad), 404, "no frontend file")


def test_static_route_serves_every_file_of_the_real_frontend(client):
    root = static_files.frontend_root()
    files = [p for p in root.rglob("*") if p.is_file() and static_files.resolve(
        root, p.relative_to(root).as_posix())]
    assert any(p.name == "index.js" for p in files)
    for path in files:
        relative = path.relative_to(root).as_posix()
        response = get(client, "/static/" + relative)
        assert response.status_code == 200, relative
        assert response.get_data() == path.read_bytes(), relative


QUERY_NAMES = st.sampled_from(["run", "tag", "step", "example", "head", "residual", "x"])
QUERY_VALUES = st.one_of(
    st.sampled_from(["train", "tf_op", "encoder/self_attention", "vit/block_0",
                     "broken/corrupt_header", "broken/future_metadata", "broken/bad_payload",
                     "0", "1", "2", "10", "20", "-1", "mean", "", "1e3", "0x10", " 1", "0.5",
                     "99999999999999999999999"]),
    st.text(max_size=40),
)
ROUTES = ["/runs", "/steps", "/step", "/matrix", "/image", "/stats", "/rollout"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    pairs=st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=7),
    raw=st.one_of(st.none(), st.text(max_size=60)),
)
def test_random_query_strings_only_ever_get_200_400_or_404(client, route, pairs, raw):
    query = raw if raw is not None else urllib.parse.urlencode(pairs)
    response = client.get(PREFIX + route, query_string=query)
    assert response.status_code in (200, 400, 404), (route, query, response.get_data()[:200])
    if response.status_code != 200:
        assert isinstance(json.loads(response.get_data())["error"], str)
    elif route in ("/matrix", "/rollout"):
        wire_format.decode(response.get_data())
    elif route == "/image":
        assert response.mimetype == "image/png"
    else:
        assert isinstance(json.loads(response.get_data()), dict)


VALID_QUERIES = {
    "/steps": {"run": "train", "tag": "encoder/self_attention"},
    "/step": {"run": "train", "tag": "vit/block_0", "step": "20"},
    "/matrix": {"run": "train", "tag": "encoder/self_attention", "step": "10", "example": "1",
                "head": "2"},
    "/image": {"run": "train", "tag": "vit/block_0", "step": "20", "example": "0"},
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(sorted(VALID_QUERIES)),
    name=st.sampled_from(["run", "tag", "step", "example", "head"]),
    action=st.sampled_from(["replace", "drop", "repeat"]),
    value=QUERY_VALUES,
)
def test_valid_queries_with_one_parameter_changed_get_200_400_or_404(client, route, name, action,
                                                                      value):
    params = [(k, v) for k, v in VALID_QUERIES[route].items() if not (k == name and action != "repeat")]
    if action != "drop":
        params.append((name, value))
    response = client.get(PREFIX + route, query_string=urllib.parse.urlencode(params))
    assert response.status_code in (200, 400, 404), (route, params, response.get_data()[:200])
    if response.status_code != 200:
        assert isinstance(json.loads(response.get_data())["error"], str)
    elif route == "/matrix":
        assert wire_format.decode(response.get_data()).rows == 8
    elif route == "/image":
        assert response.get_data().startswith(b"\x89PNG")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(min_size=1, max_size=40))
def test_random_static_paths_only_ever_get_200_or_404(client, path):
    response = client.get(PREFIX + "/static/" + urllib.parse.quote(path, safe=""))
    assert response.status_code in (200, 404), (path, response.status_code)
    if response.status_code == 404 and response.mimetype != "application/json":
        # TensorBoard's router cut the path before ours (e.g. at ";"): its own plain 404.
        assert response.get_data() == b"Not found"
    elif response.status_code == 404:
        assert isinstance(json.loads(response.get_data())["error"], str)


def test_a_step_written_after_a_head_was_served_is_served_at_once(tmp_path):
    # Heads are looked up in a listing of the tag up to a second old (the tab's requests come
    # in bursts); a step that listing lacks is looked up afresh, not answered 404.
    from plugin_client import production_plugin_and_multiplexer

    weights = np.random.default_rng(0).dirichlet(np.ones(6), size=(1, 2, 4)).astype(np.float32)
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("layer", weights, 0)
    plugin, multiplexer = production_plugin_and_multiplexer(tmp_path)
    client = wsgi_client(plugin)
    params = dict(run="run", tag="layer", example=0, head=1)
    assert get(client, "/matrix", step=0, **params).status_code == 200
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("layer", weights[:, ::-1], 1)
    multiplexer.Reload()
    answer = get(client, "/matrix", step=1, **params)
    assert answer.status_code == 200, answer.get_data()[:300]
    np.testing.assert_allclose(wire_format.decode(answer.get_data()).weights(), weights[0, 0],
                               atol=1 / 508)
    assert get(client, "/matrix", step=2, **params).status_code == 404  # never written
