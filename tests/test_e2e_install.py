"""End to end: the built wheel, installed in a fresh virtualenv WITHOUT TensorFlow, is found by a
real `tensorboard` process, over the Rust data server (the default) and the Python reader.

One wheel build and one virtualenv for the module; the logdir is written with this (main)
environment's `AttentionWriter`, as a training job would.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile

import numpy as np
import pytest

import callback_helpers
import tb_attention_plugin as tba
from tb_attention_plugin import encoding
from tb_attention_plugin.server import loader
from tb_attention_plugin.server import wire_format
from tensorboard_process import get_json, http_get, tensorboard

REPO = pathlib.Path(__file__).resolve().parent.parent
PLUGIN = "/data/plugin/attention"
TAG = "decoder/cross_attention"
STEPS = 50
SOURCE = ["i", "like", "green", "tea", "."]
TARGET = ["<s>", "我", "喜欢", "绿茶", "。", "</s>"]
READERS = {"rust_data_server": (), "python_reader": ("--load_fast=false",)}


def weights_at(step):
    logits = np.random.default_rng(step).normal(size=(1, 2, 6, 5)).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, "%s failed:\n%s\n%s" % (cmd, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Builds the wheel from a copy of the sources (no build/ or egg-info in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.py", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    shutil.copytree(REPO / "tb_attention_plugin", source / "tb_attention_plugin", ignore=ignore)
    shutil.copytree(REPO / "frontend", source / "frontend", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)])
    (built,) = out.glob("tb_attention-*.whl")
    return built


def test_wheel_carries_every_python_module_and_frontend_file(wheel):
    """find_packages picks up every package (server/, logger/, ...) and package_data every
    frontend file, also in the frontend's subfolders (lib/, views/)."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = REPO / "tb_attention_plugin"
    modules = {p.relative_to(REPO).as_posix() for p in package.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert "tb_attention_plugin/server/loader.py" in modules
    assert modules <= names, sorted(modules - names)
    front = REPO / "frontend"
    frontend = {"tb_attention_plugin/frontend/" + p.relative_to(front).as_posix()
                for p in front.rglob("*") if p.is_file() and "node_modules" not in p.parts
                and p.suffix in (".js", ".css", ".html", ".md")}
    assert "tb_attention_plugin/frontend/index.js" in frontend
    assert frontend <= names, sorted(frontend - names)


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory):
    """A new virtualenv with the wheel and its dependencies, installed as a user would: the
    base install (no extra) must not bring TensorFlow or Keras."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)])
    return python


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    with tba.AttentionWriter(root / "train") as writer:
        for step in range(STEPS):
            writer.attention(TAG, weights_at(step), step, query_tokens=TARGET, key_tokens=SOURCE)
    return root


@pytest.fixture
def outside_checkout(tmp_path, monkeypatch):
    """`python -m` puts the working directory first on sys.path: leave the checkout, so that the
    fresh environment imports its installed copy of tb_attention_plugin and nothing else."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)


def test_fresh_environment_has_the_wheel_and_no_tensorflow(fresh_python, outside_checkout,
                                                           tmp_path):
    code = (
        "import importlib.util, json, sys, numpy, tb_attention_plugin.server.loader as l,"
        " tb_attention_plugin as t;"
        "w = t.AttentionWriter(sys.argv[1]);"
        "w.attention('mha', numpy.full((2, 3, 3), 1 / 3, 'float32'), 1); w.close();"
        "print(json.dumps([t.__file__, importlib.util.find_spec('tensorflow') is None,"
        " importlib.util.find_spec('keras') is None,"
        " sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')),"
        " sorted(p.name for p in __import__('pathlib').Path(t.__file__).parent.joinpath("
        "'frontend').glob('*.js'))]))"
    )
    package_file, no_tensorflow, no_keras, imported, frontend_files = json.loads(
        run([fresh_python, "-c", code, str(tmp_path / "run")]))
    assert package_file.startswith(str(pathlib.Path(fresh_python).parent.parent))
    assert no_tensorflow and no_keras and imported == []
    assert "index.js" in frontend_files
    # What it wrote reads back here (the suite's environment has TensorBoard's reader).
    attention, _ = callback_helpers.read_logs(tmp_path)
    assert sorted(attention["run"]["mha"]) == [1]


def data_server_commands(logdir):
    """Command lines of the Rust data servers reading `logdir` (Linux /proc)."""
    commands = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode("utf-8", "replace") for a in args]
        if any(a.startswith("--samples-per-plugin") for a in text) and any(
            str(logdir) in a for a in text
        ):
            commands.append(text)
    return commands


def wait_for_steps(base, expected_last, timeout=60):
    """The readers load in the background: poll until the newest step is listed."""
    url = base + PLUGIN + "/steps?" + urllib.parse.urlencode({"run": "train", "tag": TAG})
    deadline = time.monotonic() + timeout
    while True:
        steps = get_json(url)["steps"]
        if steps and steps[-1]["step"] == expected_last or time.monotonic() > deadline:
            return [s["step"] for s in steps]
        time.sleep(0.5)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_installed_plugin_serves_all_steps_by_default(fresh_python, logdir, outside_checkout, reader):
    with tensorboard(logdir, *READERS[reader], python=fresh_python) as base:
        servers = data_server_commands(logdir)
        if reader == "rust_data_server":
            assert len(servers) == 1, servers
            (sampling,) = [a for a in servers[0] if a.startswith("--samples-per-plugin")]
            assert "attention=%d" % loader.DEFAULT_SAMPLES in sampling
        else:
            assert servers == []

        listing = get_json(base + "/data/plugins_listing")["attention"]
        assert listing["enabled"] is True
        assert listing["tab_name"] == "Attention"
        assert listing["loading_mechanism"] == {
            "type": "IFRAME",
            "module_path": PLUGIN + "/static/index.js",
        }

        assert wait_for_steps(base, STEPS - 1) == list(range(STEPS))

        runs = get_json(base + PLUGIN + "/runs")["runs"]
        (train,) = [r for r in runs if r["run"] == "train"]
        (entry,) = train["tags"]
        assert entry["tag"] == TAG and entry["shape"] == [1, 2, 6, 5]
        assert entry["max_step"] == STEPS - 1 and entry["error"] is None and entry["has_tokens"]

        header = get_json(base + PLUGIN + "/step?" + urllib.parse.urlencode(
            {"run": "train", "tag": TAG, "step": 17}))
        assert header["query_tokens"] == [TARGET] and header["key_tokens"] == [SOURCE]
        for step, head in ((0, 0), (17, 1), (STEPS - 1, 1)):
            query = urllib.parse.urlencode(
                {"run": "train", "tag": TAG, "step": step, "example": 0, "head": head})
            status, headers, body = http_get(base + PLUGIN + "/matrix?" + query)
            assert status == 200 and headers["Content-Type"] == "application/octet-stream"
            values = wire_format.decode(body).weights()
            assert np.abs(values - weights_at(step)[0, head]).max() <= encoding.MAX_ERROR + 1e-7

        status, headers, body = http_get(base + PLUGIN + "/static/index.js")
        assert status == 200
        assert re.match(r"(text|application)/javascript", headers["Content-Type"])
        assert body == (REPO / "frontend" / "index.js").read_bytes()

        status, _, body = http_get(base + PLUGIN + "/matrix?run=train&tag=nope&step=0")
        assert status == 400 and "error" in json.loads(body)
        assert_bad_requests_get_json_errors(base)


def assert_bad_requests_get_json_errors(base):
    """Odd requests get 400/404 JSON from the real server, which keeps serving afterwards."""
    long_value = "x" * 20000
    queries = [
        "/steps?run=%ff%fe&tag=%c3%28",  # invalid UTF-8 after percent-decoding
        "/steps?run=train&tag=" + long_value,
        "/step?run=train&tag=%s&step=%s" % (urllib.parse.quote(TAG), "9" * 400),
        "/matrix?" + "&".join("run=r%d" % i for i in range(500)),
        "/matrix?run=train&tag=%s&step=1&example=0&head=%%00" % urllib.parse.quote(TAG),
        "/image?run=train&tag=%s&step=1&example=0" % urllib.parse.quote(TAG),
        "/static/%2e%2e/%2e%2e/setup.py",
        "/static/..%5c..%5csetup.py",
    ]
    for query in queries:
        status, headers, body = http_get(base + PLUGIN + query)
        assert status in (400, 404), (query[:80], status)
        assert headers["Content-Type"].startswith("application/json"), query[:80]
        assert json.loads(body)["error"]
    request = urllib.request.Request(base + PLUGIN + "/runs", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200  # a POST reads like a GET: no state to change
    assert get_json(base + PLUGIN + "/runs")["runs"]


@pytest.mark.parametrize("reader", sorted(READERS))
def test_samples_per_plugin_flag_overrides_the_default(fresh_python, logdir, outside_checkout, reader):
    flags = READERS[reader] + ("--samples_per_plugin=attention=5",)
    with tensorboard(logdir, *flags, python=fresh_python) as base:
        steps = wait_for_steps(base, STEPS - 1)
        assert len(steps) == 5 and steps[-1] == STEPS - 1
