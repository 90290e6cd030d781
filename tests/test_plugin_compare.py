"""The aggregate routes `/stats` and `/rollout`, over TensorBoard's real data provider.

Same set-up as test_plugin_backend.py: logdirs written by `AttentionWriter`, read by a
`MultiplexerDataProvider` with production sampling, served by TensorBoard's WSGI app.
Expected statistics come from the matrices `/matrix` serves (what the tab draws) and from
hand-computed rollouts; nothing is compared with the route's own code path.
"""

import json
import math
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tb_attention_plugin as tba
from tb_attention_plugin.server import wire_format
from plugin_client import PREFIX, get, get_json, production_plugin, wsgi_client

TOKENS = ["<cls>", "a", "b"]
UNIFORM = np.full((2, 3, 3), 1 / 3, np.float32)  # 2 heads
IDENTITY = np.broadcast_to(np.eye(3, dtype=np.float32), (2, 3, 3)).copy()
STEPS = (0, 10, 20)


def sharpening(step):
    """`[2 examples, 2 heads, 4, 4]`: head 0 moves from uniform to the first key as steps grow;
    head 1 puts everything on the diagonal. Example 1 pads its last position (query and key)."""
    weights = np.empty((2, 2, 4, 4), np.float32)
    t = step / 20
    weights[:, 0] = (1 - t) * 0.25
    weights[:, 0, :, 0] += t
    weights[:, 1] = np.eye(4)
    mask = np.ones((2, 1, 4, 4), bool)
    mask[1, :, 3, :] = mask[1, :, :, 3] = False
    weights = np.where(mask, weights, 0)
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return weights, mask


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-logs")
    with tba.AttentionWriter(root / "run_a") as writer:
        for step in STEPS:
            weights, mask = sharpening(step)
            writer.attention("enc/layer_0/self_attention", weights, step, mask=mask)
            writer.attention("stack/layer_0", UNIFORM, step, query_tokens=TOKENS, key_tokens=TOKENS)
            writer.attention("stack/layer_1", IDENTITY, step, query_tokens=TOKENS, key_tokens=TOKENS)
            writer.attention("cross", np.full((1, 3, 5), 0.2, np.float32), step)
            writer.attention("wide/layer_0", np.full((1, 5, 5), 0.2, np.float32), step)
    with tba.AttentionWriter(root / "run_b") as writer:
        for step in (5, 15):
            weights, _ = sharpening(step)
            writer.attention("enc/layer_0/self_attention", weights[:1], step)
    return root


@pytest.fixture(scope="module")
def plugin(logdir):
    return production_plugin(logdir)


@pytest.fixture(scope="module")
def client(plugin):
    return wsgi_client(plugin)


def matrix(client, **params):
    response = get(client, "/matrix", **params)
    assert response.status_code == 200, response.get_data()[:300]
    return wire_format.decode(response.get_data()).weights()


def rollout(client, tags, **params):
    response = client.get(
        PREFIX + "/rollout", query_string=[("tag", t) for t in tags] + list(params.items())
    )
    return response


def assert_error(response, status, *words):
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/json"
    message = json.loads(response.get_data())["error"]
    for word in words:
        assert word in message, message


def served_statistics(client, run, tag, step, example):
    """Per-head statistics of what /matrix serves, computed here (masked = NaN)."""
    values = {"entropy": [], "max_weight": [], "mean_distance": [], "first_token_share": []}
    for head in range(2):
        w = matrix(client, run=run, tag=tag, step=step, example=example, head=head)
        attended = ~np.isnan(w)
        rows = [r for r in range(w.shape[0]) if attended[r].any()]
        entropy, peak, distance, first = [], [], [], []
        for r in rows:
            p = w[r][attended[r]].astype(np.float64)
            n = attended[r].sum()
            h = -(p[p > 0] * np.log(p[p > 0])).sum()
            entropy.append(h / math.log(n) if n > 1 else 0.0)
            peak.append(p.max())
            keys = np.nonzero(attended[r])[0]
            distance.append((p * np.abs(keys - r)).sum())
            first.append(w[r, 0] if attended[r, 0] else 0.0)
        values["entropy"].append(np.mean(entropy))
        values["max_weight"].append(np.mean(peak))
        values["mean_distance"].append(np.mean(distance))
        values["first_token_share"].append(np.mean(first))
    return values


def test_stats_lists_every_step_with_per_head_values_of_the_served_matrices(client):
    body = get_json(client, "/stats", run="run_a", tag="enc/layer_0/self_attention", example=1)
    assert body["run"] == "run_a" and body["tag"] == "enc/layer_0/self_attention"
    assert body["steps"] == list(STEPS) and body["heads"] == 2 and body["errors"] == []
    assert body["example"] == 1
    for index, step in enumerate(STEPS):
        expected = served_statistics(client, "run_a", "enc/layer_0/self_attention", step, 1)
        for name, per_head in expected.items():
            # 8-bit storage: each weight within 0.002 of the logged one.
            assert body["stats"][name][index] == pytest.approx(per_head, abs=0.01), (name, step)
    # By hand: head 1 looks only at the diagonal (entropy 0, peak 1, distance 0); head 0 goes
    # from uniform over the 3 unpadded keys (entropy 1) to all weight on the first key.
    assert body["stats"]["entropy"][0] == pytest.approx([1.0, 0.0], abs=0.01)
    assert body["stats"]["max_weight"][0][1] == pytest.approx(1.0, abs=0.01)
    assert body["stats"]["first_token_share"][-1][0] == pytest.approx(1.0, abs=0.01)
    assert body["stats"]["mean_distance"][-1] == pytest.approx([1.0, 0.0], abs=0.01)


def test_stats_default_averages_the_examples(client):
    mean = get_json(client, "/stats", run="run_a", tag="enc/layer_0/self_attention")
    one = [get_json(client, "/stats", run="run_a", tag="enc/layer_0/self_attention", example=e)
           for e in (0, 1)]
    assert mean["example"] is None
    for name in mean["stats"]:
        expected = (np.array(one[0]["stats"][name]) + np.array(one[1]["stats"][name])) / 2
        assert np.allclose(mean["stats"][name], expected, atol=1e-5), name
    # Example 0 has 4 keys, example 1 three: uniform head 0 at step 0 has first share 1/4, 1/3.
    assert one[0]["stats"]["first_token_share"][0][0] == pytest.approx(0.25, abs=0.01)
    assert one[1]["stats"]["first_token_share"][0][0] == pytest.approx(1 / 3, abs=0.01)


def test_repeated_stats_request_is_answered_from_the_cache(client, plugin):
    cache = plugin._aggregates.statistics_cache
    first = get_json(client, "/stats", run="run_b", tag="enc/layer_0/self_attention")
    misses, hits = cache.misses, cache.hits
    again = get_json(client, "/stats", run="run_b", tag="enc/layer_0/self_attention")
    assert again == first and first["steps"] == [5, 15]
    assert cache.misses == misses and cache.hits == hits + 2


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"tag": "enc/layer_0/self_attention"}, 400, ["run"]),
        ({"run": "run_a"}, 400, ["tag"]),
        ({"run": "nope", "tag": "enc/layer_0/self_attention"}, 404, ["nope"]),
        ({"run": "run_a", "tag": "nope"}, 404, ["nope"]),
        ({"run": "run_a", "tag": "enc/layer_0/self_attention", "example": "-1"}, 400, ["example"]),
        ({"run": "run_a", "tag": "enc/layer_0/self_attention", "example": "x"}, 400, ["example"]),
        ({"run": "run_a", "tag": "enc/layer_0/self_attention", "example": "2"}, 404, ["example 2"]),
    ],
)
def test_stats_errors(client, params, status, words):
    assert_error(get(client, "/stats", **params), status, *words)


def test_rollout_matches_hand_computed_values(client):
    # Uniform 1/3 then identity: with the residual term layer 0 gives 2/3 on the diagonal and
    # 1/6 elsewhere, the identity layer keeps it. Without it, uniform 1/3 everywhere.
    response = rollout(client, ["stack/layer_0", "stack/layer_1"], run="run_a", step=10, example=0)
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    decoded = wire_format.decode(response.get_data())
    assert decoded.dtype == wire_format.DTYPE_FLOAT32 and (decoded.rows, decoded.cols) == (3, 3)
    expected = np.full((3, 3), 1 / 6) + np.eye(3) / 2
    assert np.allclose(decoded.weights(), expected, atol=0.005)
    plain = wire_format.decode(rollout(client, ["stack/layer_0", "stack/layer_1"], run="run_a", step=10,
                                example=0, residual="0").get_data())
    assert np.allclose(plain.weights(), 1 / 3, atol=0.005)
    # Order matters only through the product: identity first, uniform on top gives the same here.
    reverse = wire_format.decode(rollout(client, ["stack/layer_1", "stack/layer_0"], run="run_a", step=10,
                                  example=0).get_data())
    assert np.allclose(reverse.weights(), expected, atol=0.005)


def test_rollout_is_cached_and_revalidates(client):
    params = dict(run="run_a", step=20, example=0)
    first = rollout(client, ["stack/layer_0", "stack/layer_1"], **params)
    etag = first.headers["ETag"]
    again = rollout(client, ["stack/layer_0", "stack/layer_1"], **params)
    assert again.get_data() == first.get_data() and again.headers["ETag"] == etag
    assert "max-age=300" in first.headers["Cache-Control"]
    revalidated = client.get(
        PREFIX + "/rollout",
        query_string=[("tag", "stack/layer_0"), ("tag", "stack/layer_1"), ("run", "run_a"),
                      ("step", "20"), ("example", "0")],
        headers={"If-None-Match": etag},
    )
    assert revalidated.status_code == 304 and revalidated.get_data() == b""
    other = rollout(client, ["stack/layer_0", "stack/layer_1"], residual="0", **params)
    assert other.headers["ETag"] != etag


@pytest.mark.parametrize(
    "tags, params, status, words",
    [
        ([], {"run": "run_a", "step": "0", "example": "0"}, 400, ["tag"]),
        (["stack/layer_0", "stack/layer_0"], {"run": "run_a", "step": "0", "example": "0"}, 400,
         ["twice"]),
        (["stack/layer_0"], {"run": "run_a", "example": "0"}, 400, ["step"]),
        (["stack/layer_0"], {"run": "run_a", "step": "x", "example": "0"}, 400, ["step"]),
        (["stack/layer_0"], {"run": "run_a", "step": "0"}, 400, ["example"]),
        (["stack/layer_0"], {"run": "run_a", "step": "0", "example": "0", "residual": "yes"}, 400,
         ["residual"]),
        (["stack/layer_0"], {"run": "run_a", "step": "5", "example": "0"}, 404, ["step 5"]),
        (["stack/layer_0"], {"run": "run_a", "step": "0", "example": "3"}, 404, ["example 3"]),
        (["stack/layer_0", "nope"], {"run": "run_a", "step": "0", "example": "0"}, 404, ["nope"]),
        (["stack/layer_0"], {"run": "nope", "step": "0", "example": "0"}, 404, ["nope"]),
        (["cross"], {"run": "run_a", "step": "0", "example": "0"}, 400, ["square"]),
        (["stack/layer_0", "wide/layer_0"], {"run": "run_a", "step": "0", "example": "0"}, 400,
         ["tokens"]),
        (["layer_%d" % i for i in range(257)], {"run": "run_a", "step": "0", "example": "0"}, 400,
         ["at most 256"]),
    ],
)
def test_rollout_errors(client, tags, params, status, words):
    assert_error(rollout(client, tags, **params), status, *words)


NAMES = st.sampled_from(["run", "tag", "step", "example", "residual", "head", ""])
VALUES = st.one_of(
    st.sampled_from(["run_a", "run_b", "stack/layer_0", "stack/layer_1", "cross",
                     "enc/layer_0/self_attention", "0", "10", "1", "-1", "", "9" * 25, "1e3", "nan"]),
    st.text(max_size=20),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["/stats", "/rollout"]),
       pairs=st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_random_queries_get_200_400_or_404_never_500(client, route, pairs):
    response = client.get(PREFIX + route + "?" + urllib.parse.urlencode(pairs))
    assert response.status_code in (200, 400, 404), (pairs, response.status_code, response.get_data()[:300])
    if response.status_code != 200:
        assert json.loads(response.get_data())["error"]
