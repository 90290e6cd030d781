"""The HTTP API of a real `tensorboard` process (127.0.0.1) under hostile requests and load.

Every route of the plugin (as `get_plugin_apps()` lists them, so routes added later are covered
too) answers bad parameters with 400/404 JSON; the static route refuses path traversal however
it is encoded; random query strings never get a 500; 200 concurrent requests from 8 threads all
succeed with the right data, and the server still answers afterwards.
"""

import concurrent.futures
import http.client
import json
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.plugins import base_plugin

from tb_attention_plugin import AttentionWriter, encoding, png
from tb_attention_plugin.server import matrices
from tb_attention_plugin.server import plugin as attention_plugin, static_files, wire_format
from tensorboard_process import get_json, http_get, tensorboard

PREFIX = "/data/plugin/attention"
RUNS = ("train", "eval")
TAGS = ("encoder/layer_0", "encoder/layer_1", "decoder/cross")
STEPS = (0, 5, 10, 15)
SHAPES = {"encoder/layer_0": (2, 3, 6, 6), "encoder/layer_1": (2, 3, 6, 6), "decoder/cross": (1, 2, 4, 6)}
IMAGE = np.random.default_rng(7).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)


def weights(run, tag, step):
    shape = SHAPES[tag]
    w = np.random.default_rng([RUNS.index(run), TAGS.index(tag), step]).random(shape)
    return (w / w.sum(-1, keepdims=True)).astype(np.float32)


def vit_weights(step):
    w = np.random.default_rng(step).random((1, 2, 5, 5))
    return (w / w.sum(-1, keepdims=True)).astype(np.float32)


def plugin_routes():
    """Every route the plugin serves, straight from the plugin (new routes join automatically)."""
    plugin = attention_plugin.AttentionPlugin(base_plugin.TBContext(data_provider=None))
    return sorted(plugin.get_plugin_apps())


DATA_ROUTES = [route for route in plugin_routes() if not route.endswith("/*")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("load-logdir")
    for run in RUNS:
        with AttentionWriter(root / run) as writer:
            for step in STEPS:
                for tag in TAGS:
                    writer.attention(tag, weights(run, tag, step), step,
                                     query_tokens=["q%d" % i for i in range(SHAPES[tag][2])],
                                     key_tokens=["k%d" % i for i in range(SHAPES[tag][3])])
                writer.attention("vit", vit_weights(step), step, images=IMAGE, image_grid=(2, 2),
                                 prefix_tokens=1)
    with tensorboard(root, tensorflow=False) as base:
        yield base


def raw_get(base, path):
    """GET of `path` exactly as given (no client-side normalisation): `(status, body)`."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_json_error(status, body, *statuses):
    assert status in statuses, (status, body[:300])
    assert isinstance(json.loads(body)["error"], str)


TRAVERSALS = [
    "../setup.py", "..%2Fsetup.py", "%2e%2e/setup.py", "%2E%2E%2Fsetup.py", "%2e%2e%2f%2e%2e%2fsetup.py",
    "%252e%252e%252fsetup.py", "..%252fsetup.py", "....//setup.py", "..;/setup.py",
    "%c0%ae%c0%ae/setup.py", "%uff0e%uff0e/setup.py", "%e2%80%a5/setup.py",
    "/etc/passwd", "//etc/passwd", "%2Fetc%2Fpasswd", "%2F%2Fetc%2Fpasswd", "file:///etc/passwd",
    "..\\setup.py", "..%5csetup.py", "%5c..%5c..%5csetup.py", "C:%5cWindows%5cwin.ini",
    "index.js%00", "index.js%00.png", "%00../setup.py", "..%00/setup.py",
    "./index.js", "sub/../index.js", "index.js/", "index.js/.", ".", "..", "%2e", "",
    "../../../../../../../../etc/passwd", "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "../tb_attention_plugin/reader.py", "..%2Ftb_attention_plugin%2Freader.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_route_refuses_traversal_in_any_encoding(server, path):
    status, body = raw_get(server, PREFIX + "/static/" + path)
    assert status in (400, 404), (path, status, body[:200])
    assert b"root:" not in body and b"setup(" not in body and b"import" not in body
    if body != b"Not found" and status == 404:  # TensorBoard's own 404 when its router refuses
        assert_json_error(status, body, 404)


def test_static_route_still_serves_the_frontend(server):
    status, body = raw_get(server, PREFIX + "/static/index.js")
    assert status == 200
    assert body == (static_files.frontend_root() / "index.js").read_bytes()


def assert_answer(status, headers, body, *errors):
    """200 with a body of its declared type, or one of `errors` with a JSON error; never 500."""
    assert status in (200,) + errors, (status, body[:300])
    if status != 200:
        return assert_json_error(status, body, *errors)
    content_type = headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        assert isinstance(json.loads(body), dict)
    elif content_type.startswith("application/octet-stream"):
        wire_format.decode(body)
    else:
        assert content_type.startswith("image/png"), content_type
        png.decode_png(body)


ROUTE_PARAMS = ["run", "tag", "step", "example", "head"]


@pytest.mark.parametrize("route", [r for r in DATA_ROUTES if r != "/runs"])
@pytest.mark.parametrize("params, errors, must_fail", [
    ({}, (400,), True),
    (dict.fromkeys(ROUTE_PARAMS, ""), (400,), True),
    ({"run": "x" * 5000, "tag": "encoder/layer_0", "step": "0", "example": "0", "head": "0"}, (400,), True),
    ({"run": "nope\x00", "tag": "encoder/layer_0", "step": "5", "example": "0", "head": "0"}, (400, 404), True),
    ({"run": "\udcff", "tag": "\u202e<script>", "step": "5", "example": "0", "head": "0"}, (400, 404), True),
    ({"run": "train", "tag": "encoder/layer_0", "step": "1e3", "example": "0", "head": "0"}, (400, 404), False),
    ({"run": "train", "tag": "encoder/layer_0", "step": "0x10", "example": "0x1", "head": "0"}, (400, 404), False),
    ({"run": "train", "tag": "encoder/layer_0", "step": "9" * 40, "example": "0", "head": "0"}, (400, 404), False),
    ({"run": "train", "tag": "encoder/layer_0", "step": "5", "example": "-1", "head": "-1"}, (400, 404), False),
    ({"run": "train", "tag": "encoder/layer_0", "step": "5", "example": "99", "head": "99"}, (400, 404), False),
    ({"run": "train", "tag": "encoder/layer_0", "step": "5", "example": " 0", "head": "0 "}, (400, 404), False),
])
def test_every_route_answers_bad_parameters_with_json_errors(server, route, params, errors, must_fail):
    query = urllib.parse.urlencode(params, errors="surrogatepass")
    status, headers, body = http_get(server + PREFIX + route + "?" + query)
    assert_answer(status, headers, body, *errors)
    # Parameters a route does not read may leave it a valid request; the others never are.
    assert status != 200 or not must_fail, (route, params, body[:200])


def test_a_64_kib_query_string_is_refused_without_harm(server):
    status, _, body = http_get(server + PREFIX + "/steps?run=train&tag=" + "a" * 65536)
    assert status in (400, 404, 414, 431), status
    assert get_json(server + PREFIX + "/runs")["runs"]


QUERY_NAMES = st.sampled_from(["run", "tag", "step", "example", "head", "steps", "step_a", "x"])
QUERY_VALUES = st.one_of(
    st.sampled_from(["train", "eval", "vit", *TAGS, "0", "5", "15", "-1", "mean", "", "1e3", "99999999999999999999"]),
    st.text(max_size=30),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(DATA_ROUTES),
       pairs=st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=6),
       raw=st.one_of(st.none(), st.text(max_size=40)))
def test_random_query_strings_never_get_a_server_error(server, route, pairs, raw):
    query = urllib.parse.quote(raw, safe="=&;%+") if raw is not None else urllib.parse.urlencode(pairs)
    status, headers, body = http_get(server + PREFIX + route + "?" + query)
    assert_answer(status, headers, body, 400, 404)


def expected_requests():
    """`[(url path with query, check(body))]`: a mix of every data route, 200 in all."""
    def query(route, **params):
        return PREFIX + route + "?" + urllib.parse.urlencode(params)

    def matrix_check(expected):
        return lambda body: np.testing.assert_allclose(
            wire_format.decode(body).weights(), expected, atol=encoding.MAX_ERROR + 1e-6)

    def step_check(run, tag, step):
        def check(body):
            header = json.loads(body)
            assert header["step"] == step and header["shape"] == list(SHAPES[tag])
            assert header["key_tokens"][0][-1] == "k%d" % (SHAPES[tag][3] - 1)
        return check

    def steps_check(body):
        assert [s["step"] for s in json.loads(body)["steps"]] == list(STEPS)

    def runs_check(body):
        listed = {r["run"]: sorted(t["tag"] for t in r["tags"]) for r in json.loads(body)["runs"]}
        assert listed == {run: sorted(TAGS + ("vit",)) for run in RUNS}

    def image_check(body):
        assert np.array_equal(png.decode_png(body), IMAGE[0])

    rng = np.random.default_rng(0)
    requests = []
    for i in range(200):
        run, tag = RUNS[i % 2], TAGS[rng.integers(len(TAGS))]
        step = int(STEPS[rng.integers(len(STEPS))])
        kind = i % 10
        w = weights(run, tag, step)
        example = int(rng.integers(SHAPES[tag][0]))
        if kind < 5:
            head = int(rng.integers(SHAPES[tag][1]))
            requests.append((query("/matrix", run=run, tag=tag, step=step, example=example, head=head),
                             matrix_check(w[example, head])))
        elif kind < 7:
            requests.append((query("/matrix", run=run, tag=tag, step=step, example=example, head="mean"),
                             matrix_check(matrices.mean_over_heads(w[example]))))
        elif kind == 7:
            requests.append((query("/step", run=run, tag=tag, step=step), step_check(run, tag, step)))
        elif kind == 8:
            requests.append((query("/steps", run=run, tag=tag), steps_check))
        elif i % 20 == 9:
            requests.append((query("/runs"), runs_check))
        else:
            requests.append((query("/image", run=run, tag="vit", step=step, example=0), image_check))
    return requests


def test_200_concurrent_requests_all_succeed_with_the_right_data(server):
    requests = expected_requests()

    def fetch(item):
        path, check = item
        status, _, body = http_get(server + path, timeout=60)
        assert status == 200, (path, status, body[:300])
        check(body)
        return path

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(fetch, item) for item in requests]
        done = [future.result(timeout=300) for future in futures]
    assert len(done) == 200
    assert {path.split("?")[0] for path in done} == {PREFIX + r for r in
                                                    ("/matrix", "/step", "/steps", "/runs", "/image")}
    # The server is still healthy and consistent afterwards.
    assert get_json(server + PREFIX + "/runs")["runs"]


def test_idle_and_garbage_connections_do_not_block_other_clients(server):
    """Half-sent requests held open and raw garbage must not stop the server answering."""
    import socket

    host, port = urllib.parse.urlsplit(server).netloc.split(":")
    idle = []
    try:
        for i in range(16):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET " + PREFIX.encode() + b"/runs HTTP/1.1\r\nHost: x\r\n")  # no blank line
            idle.append(sock)
        for garbage in (b"\x00\xff\x16\x03\x01 not http\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                        b"GET " + PREFIX.encode() + b"/runs HTTP/9.9\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(garbage)
                sock.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                assert not answer.startswith(b"HTTP/1.1 5") and not answer.startswith(b"HTTP/1.0 5"), answer[:200]
        status, _, body = http_get(server + PREFIX + "/matrix?run=train&tag=decoder/cross&step=5&example=0&head=1",
                                   timeout=20)
        assert status == 200
        np.testing.assert_allclose(wire_format.decode(body).weights(), weights("train", "decoder/cross", 5)[0, 1],
                                   atol=encoding.MAX_ERROR + 1e-6)
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_other_http_methods_never_get_a_server_error(server, method):
    host, port = urllib.parse.urlsplit(server).netloc.split(":")
    query = "?run=train&tag=encoder/layer_0&step=5&example=0&head=0"
    for route in plugin_routes():
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request(method, PREFIX + route.replace("*", "index.js") + query,
                               body=b"run=eval" if method in ("POST", "PUT", "PATCH") else None)
            response = connection.getresponse()
            response.read()
            assert response.status < 500, (method, route, response.status)
        finally:
            connection.close()
    assert get_json(server + PREFIX + "/runs")["runs"]
