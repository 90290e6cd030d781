"""Pooled steps (issue 11, point 2): the overview and exact windows of heads too large to store
in full, through the real writers, the real data provider, the plugin's routes and a real
`tensorboard` process on both readers."""

import json
import math
import urllib.parse
import zlib

import numpy as np
import pytest

from tb_attention_plugin import encoding
from tb_attention_plugin import stats
from tb_attention_plugin.server import wire_format
from tb_attention_plugin.writer import AttentionWriter

import plugin_client
from tensorboard_process import http_get, tensorboard

MiB = 1 << 20
NAN = float("nan")


def causal_sink_heads(heads, length, seed=0, sink=4.0, mask_future=True):
    """Softmax of N(0, 1) logits with +`sink` on key 0, causal: `[1, heads, T, T]`, NaN above
    the diagonal when `mask_future` (else 0 there)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(1, heads, length, length)).astype(np.float32)
    logits[..., 0] += sink
    future = np.triu(np.ones((length, length), bool), 1)
    logits[..., future] = -np.inf
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    if mask_future:
        weights[..., future] = np.nan
    return weights


def within_format_bounds(decoded, exact, scale):
    """Faithful codes' bounds (docs/format.md): absolute <= scale/508 everywhere, relative
    <= 2.79% for values >= 1e-6 * scale; NaN exactly where the reference is NaN."""
    assert np.array_equal(np.isnan(decoded), np.isnan(exact))
    attended = ~np.isnan(exact)
    error = np.abs(decoded[attended] - exact[attended])
    assert error.max(initial=0) <= scale / 508 * (1 + 1e-5) + 1e-7
    large = exact[attended] >= 1e-6 * scale
    relative = error[large] / exact[attended][large]
    assert relative.max(initial=0) <= encoding.MAX_RELATIVE_ERROR + 1e-4


# --- the numpy reference -----------------------------------------------------------------------


def test_pool_equals_block_loops_with_masks_and_short_edge_blocks():
    rng = np.random.default_rng(3)
    weights = rng.random((2, 3, 11, 13)).astype(np.float32)
    mask = rng.random((2, 3, 11, 13)) > 0.3
    mask[0, 0, :4, :5] = False  # a whole block masked
    means, maxes = encoding.pool(weights, (4, 5), mask=mask)
    assert means.shape == maxes.shape == (2, 3, 3, 3)
    for b in range(2):
        for h in range(3):
            for i in range(3):
                for j in range(3):
                    block = weights[b, h, 4 * i:4 * i + 4, 5 * j:5 * j + 5]
                    kept = block[mask[b, h, 4 * i:4 * i + 4, 5 * j:5 * j + 5]]
                    if kept.size == 0:
                        assert math.isnan(means[b, h, i, j]) and math.isnan(maxes[b, h, i, j])
                    else:
                        assert means[b, h, i, j] == pytest.approx(kept.mean(), rel=1e-5)
                        assert maxes[b, h, i, j] == kept.max()
    assert math.isnan(means[0, 0, 0, 0])


# --- the format --------------------------------------------------------------------------------


def test_encode_pooled_step_round_trip_within_bounds():
    weights = causal_sink_heads(2, 100, seed=1)
    means, maxes = encoding.pool(weights, 8)
    window = weights[:, :, 90:, :]
    blobs = encoding.encode_pooled_step(
        [1, 2, 100, 100], 8, means, maxes, [("tail", (90, 100), (0, 100), window)],
        query_tokens=["t%d" % i for i in range(100)],
    )
    header = encoding.decode_header(blobs[0])
    assert header["layout"] == "pooled" and header["shape"] == [1, 2, 100, 100]
    assert header["pooled"] == {"block": [8, 8], "grid": [13, 13]}
    assert header["windows"] == [{"name": "tail", "query": [90, 100], "key": [0, 100]}]
    assert header["blobs"] == {"overview": 1, "windows": [3], "images": None}
    assert encoding.blob_count(header) == len(blobs) == 5
    for h in range(2):
        index = encoding.overview_index(header, 0, h)
        scale = header["scales"][index - 1]
        got_means, got_maxes = encoding.decode_overview(blobs[index], header, scale)
        within_format_bounds(got_means, means[0, h], scale)
        within_format_bounds(got_maxes, maxes[0, h], scale)
        index = encoding.window_index(header, "tail", 0, h)
        scale = header["scales"][index - 1]
        within_format_bounds(
            encoding.decode_window(blobs[index], header, "tail", scale), window[0, h], scale
        )
    with pytest.raises(KeyError, match="its windows are: 'tail'"):
        encoding.window_index(header, "head", 0, 0)
    with pytest.raises(IndexError, match="pooled"):
        encoding.payload_index(header, 0, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h["pooled"].update(grid=[12, 13]), "do not match the shape"),
        (lambda h: h["blobs"].update(windows=[4]), "blob indexes"),
        (lambda h: h["windows"][0].update(query=[90, 101]), "not within"),
        (lambda h: h.update(layout="tiled"), "unknown step layout"),
        (lambda h: h.update(scales=h["scales"][:2]), "scales"),
        (lambda h: h.update(version=1), "version 2"),
    ],
)
def test_malformed_pooled_headers_are_refused(change, message):
    weights = causal_sink_heads(2, 100, seed=1)
    means, maxes = encoding.pool(weights, 8)
    blobs = encoding.encode_pooled_step(
        [1, 2, 100, 100], 8, means, maxes, [("tail", (90, 100), (0, 100), weights[:, :, 90:])]
    )
    header = json.loads(blobs[0])
    change(header)
    if header.get("version") == 1:
        header["encoding"] = "u8-zlib"
    with pytest.raises(encoding.FormatError, match=message):
        encoding.decode_header(json.dumps(header).encode())


def test_encode_pooled_step_refuses_inconsistent_input():
    means, maxes = encoding.pool(np.full((1, 1, 8, 8), 0.125, np.float32), 4)
    with pytest.raises(ValueError, match=r"means must have shape \[1, 1, 4, 4\].*got \[1, 1, 2, 2\]"):
        encoding.encode_pooled_step([1, 1, 8, 8], 2, means, maxes, [])
    with pytest.raises(ValueError, match="0 <= start < stop <= 8"):
        encoding.encode_pooled_step([1, 1, 8, 8], 4, means, maxes,
                                    [("w", (4, 9), (0, 8), np.zeros((1, 1, 5, 8)))])
    with pytest.raises(ValueError, match="used twice"):
        window = ("w", (0, 1), (0, 8), np.zeros((1, 1, 1, 8), np.float32))
        encoding.encode_pooled_step([1, 1, 8, 8], 4, means, maxes, [window, window])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        encoding.encode_pooled_step([1, 1, 8, 8], 4, means * 20, maxes, [])


def test_budget_too_small_is_a_clear_error():
    weights = causal_sink_heads(1, 64, mask_future=False)[0, 0]
    with pytest.raises(ValueError, match="max_bytes=100 is too small"):
        encoding.encode_attention(weights, max_bytes=100)
    with pytest.raises(ValueError, match="needs max_bytes"):
        encoding.encode_attention(weights, windows=[("a", (0, 1), (0, 64))])


def test_small_steps_stay_full_under_a_budget():
    weights = causal_sink_heads(2, 32, mask_future=False)
    blobs = encoding.encode_attention(weights, max_bytes=MiB)
    assert encoding.decode_header(blobs[0]).get("layout", "full") == "full"


def test_a_budget_keeps_the_mask_of_a_single_head_given_as_a_matrix():
    weights = causal_sink_heads(1, 32, mask_future=False)[0, 0]  # [Tq, Tk], no batch or heads
    mask = np.tril(np.ones((32, 32), bool))
    full = encoding.encode_attention(weights, mask=mask, max_bytes=MiB)
    assert full == encoding.encode_step(weights, mask=mask)
    header = encoding.decode_header(full[0])
    codes = encoding.decode_codes(full[1], header)
    assert (codes[~mask] == encoding.V2_MASKED).all() and (codes[mask] != encoding.V2_MASKED).all()
    pooled = encoding.encode_attention(weights, mask=mask, max_bytes=2000)
    assert encoding.decode_header(pooled[0])["layout"] == "pooled"


# --- the budget for the shapes of issue 11 ------------------------------------------------------


def test_gpt2_small_shape_at_1024_tokens_fits_4_mib_per_step():
    """12 layers x 12 heads x 1024 tokens, 1 example, every layer pooled within 4 MiB / 12
    (three distinct layers' weights, repeated over the 12 layers)."""
    tokens = ["tok%d" % i for i in range(1024)]
    per_layer = 4 * MiB // 12
    sizes = []
    for seed in range(3):
        weights = causal_sink_heads(12, 1024, seed=seed, mask_future=False)
        blobs = encoding.encode_attention(
            weights, query_tokens=tokens, key_tokens=tokens, max_bytes=per_layer
        )
        header = encoding.decode_header(blobs[0])
        assert header["layout"] == "pooled"
        assert header["pooled"]["block"] == [16, 16]
        nq, nk = header["pooled"]["grid"]
        assert nq * 16 >= 1024 and nk * 16 >= 1024  # every position is in the overview
        assert [w["name"] for w in header["windows"]] == [
            "last_queries", "first_queries", "first_key"
        ]
        assert header["windows"][0]["query"] == [1008, 1024]
        sizes.append(sum(len(b) for b in blobs))
    assert max(sizes) <= per_layer
    assert 4 * sum(sizes) <= 4 * MiB


def test_one_32_head_layer_at_8192_tokens_fits_4_mib():
    """The overview and windows of a causal sink head at 8192 tokens, computed 64 query rows at
    a time (never [T, T] at once); two distinct heads repeated over the 32 heads."""
    length, heads, budget = 8192, 32, 4 * MiB
    tokens = ["tok%d" % i for i in range(length)]
    fixed = len(json.dumps([[tokens], [tokens]]).encode()) + 1024
    block, windows = encoding.choose_pooling(
        [1, heads, length, length], budget, causal=True, fixed_bytes=fixed
    )
    assert block == 64
    assert windows[0] == ("last_queries", (length - 8, length), (0, length))
    rows = windows[0][1][1] - windows[0][1][0]
    distinct = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        means, maxes, column, last = [], [], [], None
        for start in range(0, length, block):
            logits = rng.normal(size=(block, length)).astype(np.float32)
            logits[:, 0] += 4
            query = np.arange(start, start + block)[:, None]
            logits[np.arange(length)[None, :] > query] = -np.inf
            w = np.exp(logits - logits.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            w[np.arange(length)[None, :] > query] = np.nan
            m, x = encoding.pool(w, block)
            means.append(m)
            maxes.append(x)
            column.append(w[:, :1])
            if start == 0:
                first = w[:rows, :rows]
            last = w
        distinct.append((np.concatenate(means), np.concatenate(maxes), first, last[-rows:],
                         np.concatenate(column)))
    pick = [distinct[h % 2] for h in range(heads)]
    means = np.stack([p[0] for p in pick])[None]
    maxes = np.stack([p[1] for p in pick])[None]
    parts = {"first_queries": 2, "last_queries": 3, "first_key": 4}
    blobs = encoding.encode_pooled_step(
        [1, heads, length, length], block, means, maxes,
        [(name, q, k, np.stack([p[parts[name]] for p in pick])[None]) for name, q, k in windows],
        query_tokens=tokens, key_tokens=tokens,
    )
    total = sum(len(b) for b in blobs)
    assert total <= budget, total
    header = encoding.decode_header(blobs[0])
    assert header["pooled"] == {"block": [64, 64], "grid": [128, 128]}


# --- the real writer, the real data provider and the plugin's routes -----------------------------


@pytest.fixture(scope="module")
def pooled_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("pooled")
    weights = causal_sink_heads(3, 300, seed=5)  # NaN above the diagonal: masked
    zeros = np.nan_to_num(weights, nan=0.0)
    mask = np.tril(np.ones((300, 300), bool))
    full = causal_sink_heads(1, 20, seed=6, mask_future=False)
    tokens = ["w%d" % i for i in range(300)]
    with AttentionWriter(str(logdir / "run")) as writer:
        writer.attention("causal", zeros, 7, query_tokens=tokens, key_tokens=tokens, mask=mask,
                         max_bytes=60000)
        writer.attention("named", zeros, 7, mask=mask, max_bytes=60000,
                         windows=[("answer", (250, 300), (0, 300)), ("prompt", (0, 300), (0, 10))])
        writer.attention("full", full, 7)
    return logdir, weights


@pytest.fixture(scope="module")
def client(pooled_logdir):
    return plugin_client.wsgi_client(plugin_client.production_plugin(pooled_logdir[0]))


def matrix(client, **params):
    response = plugin_client.get(
        client, "/matrix", headers={"Accept-Encoding": "deflate"}, run="run", step=7, example=0,
        **params
    )
    assert response.status_code == 200, response.get_data()[:300]
    body = response.get_data()
    if response.headers.get("Content-Encoding") == "deflate":
        body = zlib.decompress(body)
    return wire_format.decode(body)


def test_step_route_describes_the_pooled_layout(client):
    step = plugin_client.get_json(client, "/step", run="run", tag="causal", step=7)
    assert step["layout"] == "pooled"
    assert step["shape"] == [1, 3, 300, 300]
    block = step["pooled"]["block"]
    assert step["pooled"]["grid"] == [math.ceil(300 / block[0]), math.ceil(300 / block[1])]
    names = [w["name"] for w in step["windows"]]
    assert names == ["last_queries", "first_queries", "first_key"]
    assert "blobs" not in step and "scales" not in step
    assert step["query_tokens"][0][299] == "w299"
    full = plugin_client.get_json(client, "/step", run="run", tag="full", step=7)
    assert full["layout"] == "full" and "pooled" not in full


def test_overview_of_every_head_is_numpy_pooling_within_bounds(client, pooled_logdir):
    _, weights = pooled_logdir
    step = plugin_client.get_json(client, "/step", run="run", tag="causal", step=7)
    block = step["pooled"]["block"]
    expected_means, expected_maxes = encoding.pool(weights[0], block)
    for head in range(3):
        answer = matrix(client, tag="causal", head=head)
        assert answer.dtype == wire_format.DTYPE_OVERVIEW
        assert (answer.rows, answer.cols) == tuple(step["pooled"]["grid"])
        means, maxes = answer.planes()
        within_format_bounds(means, expected_means[head], answer.scale)
        within_format_bounds(maxes, expected_maxes[head], answer.scale)
        # Every position is in the overview: a block is masked only where all of it is.
        covered = ~np.isnan(np.pad(weights[0, head], ((0, 4), (0, 4)), constant_values=np.nan))
        nq, nk = step["pooled"]["grid"]
        any_attended = covered[:nq * block[0], :nk * block[1]].reshape(
            nq, block[0], nk, block[1]).any(axis=(1, 3))
        assert np.array_equal(~np.isnan(means), any_attended)


def test_windows_are_the_exact_weights_within_bounds(client, pooled_logdir):
    _, weights = pooled_logdir
    for tag in ("causal", "named"):
        step = plugin_client.get_json(client, "/step", run="run", tag=tag, step=7)
        for window in step["windows"]:
            (q0, q1), (k0, k1) = window["query"], window["key"]
            for head in range(3):
                answer = matrix(client, tag=tag, head=head, window=window["name"])
                assert answer.dtype == wire_format.DTYPE_FAITHFUL
                assert (answer.rows, answer.cols) == (q1 - q0, k1 - k0)
                within_format_bounds(answer.weights(), weights[0, head, q0:q1, k0:k1],
                                     answer.scale)
    named = plugin_client.get_json(client, "/step", run="run", tag="named", step=7)
    assert [w["name"] for w in named["windows"]] == ["answer", "prompt"]


def test_mean_over_heads_of_a_pooled_step(client, pooled_logdir):
    _, weights = pooled_logdir
    answer = matrix(client, tag="causal", head="mean")
    assert answer.dtype == wire_format.DTYPE_OVERVIEW_FLOAT32
    block = plugin_client.get_json(client, "/step", run="run", tag="causal", step=7)["pooled"]["block"]
    means, maxes = encoding.pool(weights[0], block)
    got_means, got_maxes = answer.planes()
    assert np.array_equal(np.isnan(got_means), np.isnan(means[0]))
    np.testing.assert_allclose(got_means, means.mean(axis=0), atol=2 / 508)
    np.testing.assert_allclose(got_maxes, maxes.mean(axis=0), atol=2 / 508)
    window = matrix(client, tag="causal", head="mean", window="last_queries")
    assert window.dtype == wire_format.DTYPE_FLOAT32
    np.testing.assert_allclose(window.weights(), weights[0, :, -window.rows:].mean(axis=0),
                               atol=2 / 508)


def test_window_errors_name_what_there_is(client):
    response = plugin_client.get(client, "/matrix", run="run", tag="causal", step=7, example=0,
                                 head=0, window="middle")
    assert response.status_code == 404
    message = json.loads(response.get_data())["error"]
    assert "no window 'middle'" in message and "'last_queries', 'first_queries'" in message
    response = plugin_client.get(client, "/matrix", run="run", tag="full", step=7, example=0,
                                 head=0, window="last_queries")
    assert response.status_code == 404
    assert "stored in full" in json.loads(response.get_data())["error"]
    response = plugin_client.get(client, "/matrix", run="run", tag="causal", step=7, example=0,
                                 head=3)
    assert response.status_code == 404
    response = plugin_client.get(client, "/matrix", run="run", tag="causal", step=7, example=0,
                                 head=0, window="")
    assert response.status_code == 400


def test_rollout_refuses_pooled_layers(client):
    response = plugin_client.get(client, "/rollout", run="run", tag="causal", step=7, example=0)
    assert response.status_code == 400
    assert "stored pooled" in json.loads(response.get_data())["error"]


def test_stats_of_a_pooled_step(client, pooled_logdir):
    _, weights = pooled_logdir
    answer = plugin_client.get_json(client, "/stats", run="run", tag="causal")
    assert answer["steps"] == [7] and answer["errors"] == []
    exact = stats.head_statistics(weights[0])
    # Key 0 is stored exactly (the first_key window): the sink's share is the float one.
    np.testing.assert_allclose(answer["stats"]["first_token_share"][0],
                               exact["first_token_share"], atol=2e-3)
    # The largest block max bounds every row's largest weight from above.
    assert all(a >= e - 2e-3 for a, e in zip(answer["stats"]["max_weight"][0], exact["max_weight"]))
    # Uniform within blocks at most adds entropy.
    assert all(a >= e - 2e-3 for a, e in zip(answer["stats"]["entropy"][0], exact["entropy"]))


def test_pooled_statistics_equal_exact_ones_for_weights_uniform_within_blocks():
    rng = np.random.default_rng(2)
    coarse = rng.random((1, 2, 4, 4)).astype(np.float32)
    weights = np.kron(coarse, np.ones((8, 8), np.float32))  # 32 x 32, uniform in 8x8 blocks
    weights /= weights.sum(-1, keepdims=True)
    means, maxes = encoding.pool(weights, 8)
    pooled = stats.pooled_statistics(means, maxes, (8, 8), weights.shape)
    exact = stats.example_statistics(weights)
    np.testing.assert_allclose(pooled["entropy"], exact["entropy"], rtol=1e-5)
    np.testing.assert_allclose(pooled["max_weight"], exact["max_weight"], rtol=1e-5)
    np.testing.assert_allclose(pooled["first_token_share"], exact["first_token_share"], rtol=1e-5)


def test_summary_op_stores_pooled_under_a_budget(tmp_path):
    tf = pytest.importorskip("tensorflow")
    import tb_attention_plugin as tba

    weights = causal_sink_heads(2, 200, seed=9, mask_future=False)
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))
    with writer.as_default():
        assert tba.attention("eager", weights, step=1, max_bytes=30000)

        @tf.function
        def log(w):
            return tba.attention("graph", w, step=2, max_bytes=30000,
                                 windows=[("tail", (190, 200), (0, 200))])

        assert log(tf.constant(weights))
    writer.close()
    client = plugin_client.wsgi_client(plugin_client.production_plugin(tmp_path))
    eager = plugin_client.get_json(client, "/step", run="run", tag="eager", step=1)
    graph = plugin_client.get_json(client, "/step", run="run", tag="graph", step=2)
    assert eager["layout"] == graph["layout"] == "pooled"
    assert [w["name"] for w in graph["windows"]] == ["tail"]


# --- a real tensorboard process, both readers --------------------------------------------------


@pytest.mark.parametrize("flags", [(), ("--load_fast=false",)], ids=["rust", "python"])
def test_tensorboard_serves_a_pooled_step(pooled_logdir, flags):
    logdir, weights = pooled_logdir
    with tensorboard(logdir, *flags) as base:
        route = base + "/data/plugin/attention"
        query = {"run": "run", "tag": "causal"}
        deadline_steps = None
        for _ in range(100):
            status, _, body = http_get(route + "/steps?" + urllib.parse.urlencode(query))
            if status == 200 and json.loads(body)["steps"]:
                deadline_steps = json.loads(body)["steps"]
                break
            import time
            time.sleep(0.3)
        assert deadline_steps == [{"step": 7, "wall_time": deadline_steps[0]["wall_time"]}]
        query.update(step=7)
        status, _, body = http_get(route + "/step?" + urllib.parse.urlencode(query))
        step = json.loads(body)
        assert status == 200 and step["layout"] == "pooled"
        query.update(example=0, head=1)
        status, headers, body = http_get(route + "/matrix?" + urllib.parse.urlencode(query))
        assert status == 200
        answer = wire_format.decode(body)
        means, _ = answer.planes()
        within_format_bounds(means, encoding.pool(weights[0, 1], step["pooled"]["block"])[0],
                             answer.scale)
        query.update(window="last_queries")
        status, _, body = http_get(route + "/matrix?" + urllib.parse.urlencode(query))
        window = wire_format.decode(body)
        q0, q1 = step["windows"][0]["query"]
        within_format_bounds(window.weights(), weights[0, 1, q0:q1], window.scale)
        query.update(window="nope")
        status, _, body = http_get(route + "/matrix?" + urllib.parse.urlencode(query))
        assert status == 404 and b"its windows are" in body


# --- serving: what a cold head reads (point 5) --------------------------------------------------


def test_steps_reads_the_listed_steps_headers_so_a_step_change_reads_only_the_payload(tmp_path):
    import time

    weights = causal_sink_heads(2, 16, mask_future=False)
    with AttentionWriter(str(tmp_path / "run")) as writer:
        for step in range(6):
            writer.attention("layer", weights, step)
    plugin = plugin_client.production_plugin(tmp_path)
    client = plugin_client.wsgi_client(plugin)
    reader = plugin._reader
    from tensorboard.context import RequestContext

    datums = reader.steps(RequestContext(), "", "run", "layer")
    keys = [("", "run", "layer", d.step, d.wall_time) for d in datums]
    assert all(reader._headers.get(key) is None for key in keys)
    listed = plugin_client.get_json(client, "/steps", run="run", tag="layer")["steps"]
    assert [s["step"] for s in listed] == list(range(6))
    deadline = time.monotonic() + 60
    while any(reader._headers.get(key) is None for key in keys):
        assert time.monotonic() < deadline, "headers were not read after /steps"
        time.sleep(0.05)
    # The one read path now reads one blob per cold head: count the reads it makes.
    reads = []
    original = reader._read
    reader._read = lambda ctx, datum, index: reads.append(index) or original(ctx, datum, index)
    try:
        response = plugin_client.get(client, "/matrix", run="run", tag="layer", step=4,
                                     example=0, head=1)
        assert response.status_code == 200
    finally:
        reader._read = original
    assert reads == [2]  # the payload of example 0, head 1; not the header (blob 0)
    within_format_bounds(wire_format.decode(response.get_data()).weights(), weights[0, 1],
                         float(weights[0, 1].max()))


def test_python_reader_reads_one_blob_exactly_as_read_blob_does(pooled_logdir):
    from tensorboard.context import RequestContext

    plugin = plugin_client.production_plugin(pooled_logdir[0])
    reader, provider, ctx = plugin._reader, plugin._data_provider, RequestContext()
    for tag in ("causal", "named", "full"):
        datum = reader.datum(ctx, "", "run", tag, 7)
        for index, value in enumerate(datum.values):
            assert reader._read(ctx, datum, index) == provider.read_blob(ctx, blob_key=value.blob_key)


@pytest.mark.parametrize(
    "raw, message",
    [
        (bytes([0, 254, 1]), "expected 4"),  # an escape without its extension byte
        (bytes([0, 254, 1, 187]), "beyond the last level"),
        (bytes([0, 1]), "expected 3 to 6"),
    ],
)
def test_inflate_raw_refuses_malformed_payloads(raw, message):
    header = {"version": 2, "shape": [1, 1, 1, 3]}
    with pytest.raises(encoding.FormatError, match=message):
        encoding.inflate_raw(zlib.compress(raw), header)
    with pytest.raises(encoding.FormatError):
        encoding.inflate_codes(zlib.compress(raw), header)
