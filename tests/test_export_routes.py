"""`/export` (.npy, and .npz of a pooled step) and `/filmstrip` (PNG) against weights written by
the real AttentionWriter, through the real data provider; the server's viridis table against the
frontend's."""

import io
import json
import pathlib
import subprocess

import numpy as np
import pytest

import tb_attention_plugin as tba
from tb_attention_plugin import png
from tb_attention_plugin.server import colormap
from tb_attention_plugin.server import wire_format
from long_logdirs import TOKENS, long_mask, long_weights, write_long_logdir
from plugin_client import get, get_json, production_plugin, wsgi_client

REPO = pathlib.Path(__file__).resolve().parent.parent
STEPS = [0, 5, 10, 15]
TAG = "enc/layer_0"


def weights_at(step):
    """[2, 3, 5, 6] distinct per step, example and head; key 5 masked (padding), a tiny weight."""
    rng = np.random.default_rng(step)
    w = rng.random((2, 3, 5, 6)).astype(np.float32) ** 3
    w[..., 5] = 0
    w /= w.sum(axis=-1, keepdims=True)
    w[0, 0, 0, :5] = [0.999, 1e-4, 2e-4, 3e-4, 4e-4]
    return w


def mask():
    m = np.ones((2, 3, 5, 6), bool)
    m[..., 5] = False
    return m


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    with tba.AttentionWriter(root / "train") as writer:
        for step in STEPS:
            writer.attention(TAG, weights_at(step), step=step, mask=mask())
        writer.attention("other_shape", np.full((1, 1, 2, 2), 0.5, np.float32), step=0)
        writer.attention("other_shape", np.full((1, 1, 3, 3), 1 / 3, np.float32), step=1)
    return wsgi_client(production_plugin(root))


def export(client, **params):
    response = get(client, "/export", run="train", tag=TAG, **params)
    assert response.status_code == 200, response.get_data()[:300]
    return response, np.load(io.BytesIO(response.get_data()), allow_pickle=False)


@pytest.mark.parametrize("step", STEPS)
def test_export_npy_equals_the_logged_weights_within_the_format_bounds(client, step):
    truth = weights_at(step)
    for example in range(2):
        for head in range(3):
            response, matrix = export(client, step=step, example=example, head=head)
            assert matrix.dtype == np.dtype("<f4") and matrix.shape == (5, 6)
            assert np.isnan(matrix[:, 5]).all() and not np.isnan(matrix[:, :5]).any()
            expected = truth[example, head, :, :5]
            scale = expected.max()
            error = np.abs(matrix[:, :5] - expected)
            assert error.max() <= scale / 508 + 1e-7
            big = expected >= 1e-6 * scale
            assert (error[big] / expected[big]).max() <= 0.0279
    disposition = response.headers["Content-Disposition"]
    assert disposition == 'attachment; filename="train_enc_layer_0_step%d_example1_head2.npy"' % step


def test_export_mean_over_heads_and_etag(client):
    response, mean = export(client, step=10, example=0, head="mean")
    heads = np.stack([export(client, step=10, example=0, head=h)[1] for h in range(3)])
    np.testing.assert_allclose(mean[:, :5], heads[:, :, :5].astype(np.float64).mean(axis=0), atol=1e-6)
    assert np.isnan(mean[:, 5]).all()
    again = get(client, "/export", headers={"If-None-Match": response.headers["ETag"]},
                run="train", tag=TAG, step=10, example=0, head="mean")
    assert again.status_code == 304


@pytest.mark.parametrize(
    "params, status",
    [
        ({"step": "0", "example": "0", "head": "0", "format": "csv"}, 400),
        ({"step": "0", "example": "0"}, 400),
        ({"step": "0", "example": "0", "head": "3"}, 404),
        ({"step": "0", "example": "2", "head": "mean"}, 404),
        ({"step": "1", "example": "0", "head": "0"}, 404),
    ],
)
def test_export_bad_requests(client, params, status):
    response = get(client, "/export", run="train", tag=TAG, **params)
    assert response.status_code == status
    assert isinstance(json.loads(response.get_data())["error"], str)


def expected_tile(matrix, vmax, cell):
    """The frontend's painting, written out: index round(v * 255 / vmax) clamped, NaN grey."""
    lut = colormap.viridis()
    index = np.clip(np.floor(np.nan_to_num(matrix.astype(np.float64) * (255.0 / vmax)) + 0.5), 0, 255)
    rgb = lut[index.astype(int)]
    rgb[np.isnan(matrix)] = (200, 200, 200)
    return np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)


def test_filmstrip_png_tiles_match_the_colour_map(client):
    response = get(client, "/filmstrip", run="train", tag=TAG, example=1, head=2)
    assert response.status_code == 200 and response.mimetype == "image/png"
    steps = [int(s) for s in response.headers["X-Steps"].split(",")]
    cell, gap = int(response.headers["X-Cell"]), int(response.headers["X-Gap"])
    assert steps == STEPS and cell == max(1, min(8, 96 // 6)) == 8
    image = png.decode_png(response.get_data())
    assert image.shape == (5 * cell, len(STEPS) * 6 * cell + (len(STEPS) - 1) * gap, 3)
    for index, step in enumerate(steps):
        _, matrix = export(client, step=step, example=1, head=2)
        left = index * (6 * cell + gap)
        tile = image[:, left : left + 6 * cell]
        np.testing.assert_array_equal(tile, expected_tile(matrix, np.nanmax(matrix), cell))
        if index:
            assert (image[:, left - gap : left] == 255).all()  # white gap


def test_filmstrip_steps_scale_and_cell(client):
    response = get(client, "/filmstrip", run="train", tag=TAG, example=0, head="mean",
                   steps="15,0", scale="unit", cell=1)
    assert response.status_code == 200 and response.headers["X-Steps"] == "15,0"
    image = png.decode_png(response.get_data())
    assert image.shape == (5, 2 * 6 + 2, 3)
    _, matrix = export(client, step=15, example=0, head="mean")
    np.testing.assert_array_equal(image[:, :6], expected_tile(matrix, 1.0, 1))
    shared = get(client, "/filmstrip", run="train", tag=TAG, example=0, head=0, steps="0,5",
                 scale="shared", cell=1)
    image = png.decode_png(shared.get_data())
    tiles = [export(client, step=s, example=0, head=0)[1] for s in (0, 5)]
    top = max(np.nanmax(t) for t in tiles)
    np.testing.assert_array_equal(image[:, 8:14], expected_tile(tiles[1], top, 1))


@pytest.mark.parametrize(
    "params, status",
    [
        ({"tag": TAG, "example": "0", "head": "0", "steps": "0,0"}, 400),
        ({"tag": TAG, "example": "0", "head": "0", "steps": "0,x"}, 400),
        ({"tag": TAG, "example": "0", "head": "0", "steps": ",".join(map(str, range(65)))}, 400),
        ({"tag": TAG, "example": "0", "head": "0", "scale": "log"}, 400),
        ({"tag": TAG, "example": "0", "head": "0", "cell": "17"}, 400),
        ({"tag": TAG, "example": "0", "head": "0", "cell": "0"}, 400),
        ({"tag": TAG, "example": "0", "head": "0", "steps": "3"}, 404),
        ({"tag": TAG, "example": "5", "head": "0"}, 404),
        ({"tag": TAG, "example": "0", "head": "7"}, 404),
        ({"tag": "other_shape", "example": "0", "head": "0"}, 400),
        ({"tag": "nope", "example": "0", "head": "0"}, 404),
    ],
)
def test_filmstrip_bad_requests(client, params, status):
    response = get(client, "/filmstrip", run="train", **params)
    assert response.status_code == status, response.get_data()[:200]
    assert isinstance(json.loads(response.get_data())["error"], str)


def test_python_viridis_equals_the_frontends_table():
    script = (
        "import {colormap, MASKED_RGB} from %s;"
        "console.log(JSON.stringify({lut: Array.from(colormap('viridis')), masked: MASKED_RGB}))"
        % json.dumps((REPO / "frontend/lib/colormap.js").as_uri())
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                         text=True, check=True, timeout=60)
    js = json.loads(out.stdout)
    np.testing.assert_array_equal(colormap.viridis().ravel(), np.array(js["lut"], np.uint8))
    assert list(colormap.MASKED_RGB) == js["masked"]


def test_python_paint_equals_the_frontends_paint_values():
    values = [0.0, 0.1, 0.25, 0.5, 0.50196, 0.7, 1.0, 1.5, -0.2, float("nan"), 1e-9, 0.998]
    script = (
        "import {colormap, paintValues} from %s;"
        "const v = Float32Array.from(%s.map((x) => x === null ? NaN : x));"
        "const out = new Uint8ClampedArray(v.length * 4);"
        "paintValues(v, 0.8, colormap('viridis'), out);"
        "console.log(JSON.stringify(Array.from(out)))"
        % (json.dumps((REPO / "frontend/lib/colormap.js").as_uri()),
           json.dumps([None if v != v else v for v in values]))
    )
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                         text=True, check=True, timeout=60)
    js = np.array(json.loads(out.stdout), np.uint8).reshape(-1, 4)[:, :3]
    ours = colormap.paint(np.array(values, np.float32), 0.8)
    np.testing.assert_array_equal(ours, js)


@pytest.fixture(scope="module")
def long_client(tmp_path_factory):
    """Run "long" of tests/long_logdirs.py: "lm/pooled" (2 heads, 2048 tokens) stored pooled,
    "lm/full" (1 head) stored in full."""
    return wsgi_client(production_plugin(write_long_logdir(tmp_path_factory.mktemp("long"))))


def export_long(client, **params):
    response = get(client, "/export", run="long", step=0, example=0, **params)
    assert response.status_code == 200, response.get_data()[:300]
    return response, np.load(io.BytesIO(response.get_data()), allow_pickle=False)


def served_matrix(client, **params):
    response = get(client, "/matrix", run="long", tag="lm/pooled", step=0, example=0, **params)
    assert response.status_code == 200, response.get_data()[:300]
    return wire_format.decode(response.get_data())


@pytest.mark.parametrize("head", [0, 1, "mean"])
def test_export_of_a_pooled_step_is_an_npz_of_what_matrix_serves(long_client, head):
    response, archive = export_long(long_client, tag="lm/pooled", head=head)
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="long_lm_pooled_step0_example0_head%s.npz"' % head)
    step = get_json(long_client, "/step", run="long", tag="lm/pooled", step=0)
    assert step["layout"] == "pooled"
    names = [w["name"] for w in step["windows"]]
    assert archive["window_names"].tolist() == names and "middle" in names
    assert archive["window_ranges"].tolist() == [w["query"] + w["key"] for w in step["windows"]]
    for index, name in enumerate(names):
        window = archive["window%d" % index]
        assert window.dtype == np.float32
        np.testing.assert_array_equal(window, served_matrix(long_client, head=head,
                                                            window=name).weights())
    means, maxes = served_matrix(long_client, head=head).planes()
    np.testing.assert_array_equal(archive["means"], means)
    np.testing.assert_array_equal(archive["maxes"], maxes)
    assert archive["block"].tolist() == step["pooled"]["block"]


def test_pooled_export_blocks_and_windows_locate_the_logged_weights(long_client):
    """The block ranges and window ranges in the file say where each value came from: the
    stored maxes and exact windows match the logged weights there, within the format bounds."""
    _, archive = export_long(long_client, tag="lm/pooled", head=1)
    truth = np.where(long_mask(), long_weights()[0, 1], np.nan)
    query_blocks, key_blocks = archive["query_blocks"], archive["key_blocks"]
    assert query_blocks[0].tolist() == [0, archive["block"][0]] and query_blocks[-1][1] == TOKENS
    assert archive["maxes"].shape == (len(query_blocks), len(key_blocks))
    for i, (q0, q1) in enumerate(query_blocks[::9]):
        for j, (k0, k1) in enumerate(key_blocks[::9]):
            block = truth[q0:q1, k0:k1]
            got = archive["maxes"][9 * i, 9 * j]
            if np.isnan(block).all():
                assert np.isnan(got)
            else:
                assert abs(got - np.nanmax(block)) <= 0.0279 * np.nanmax(block) + 1e-6
    for index, (q0, q1, k0, k1) in enumerate(archive["window_ranges"]):
        window, expected = archive["window%d" % index], truth[q0:q1, k0:k1]
        assert np.array_equal(np.isnan(window), np.isnan(expected))
        assert np.nanmax(np.abs(window - expected)) <= np.nanmax(expected) / 508 + 1e-7


def test_export_formats_of_pooled_and_full_steps(long_client):
    response = get(long_client, "/export", run="long", tag="lm/pooled", step=0, example=0,
                   head=0, format="npy")
    assert response.status_code == 404
    assert "format=npz" in json.loads(response.get_data())["error"]
    _, matrix = export_long(long_client, tag="lm/full", head=0)
    response, archive = export_long(long_client, tag="lm/full", head=0, format="npz")
    assert response.headers["Content-Disposition"].endswith('head0.npz"')
    assert archive.files == ["matrix"] and matrix.shape == (TOKENS, TOKENS)
    np.testing.assert_array_equal(archive["matrix"], matrix)
    response = get(long_client, "/export", run="long", tag="lm/pooled", step=0, example=1,
                   head=0)
    assert response.status_code == 404
