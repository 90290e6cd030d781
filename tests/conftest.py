"""Shared fixtures: artifacts folder, a headless Debian Chromium driven by playwright, and the
demos trained once by the README's main-job command."""

import os
import pathlib
import subprocess

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def artifacts_dir():
    """Where browser tests save screenshots for a person to look at (test-artifacts/)."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium (never a downloaded browser), headless, through playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    yield pg
    context.close()


# Examples the demos log: the demo tests measure alignment over 32 held-out sentences.
DEMO_PROBE_EXAMPLES = 32


@pytest.fixture(scope="session")
def demo_logs(tmp_path_factory):
    """The README's main job run once for the whole session, as a script would run it:
    `scripts/demo.sh --small --probe-examples 32` with TB_ATTENTION_NO_SERVER=1 (train, then
    exit). Returns `(logdir, completed process)`. The demo tests read its event files, and
    tests/test_main_job.py checks the script itself, so the demos are trained once."""
    logdir = tmp_path_factory.mktemp("main_job") / "logs"
    env = dict(os.environ, LOGDIR=str(logdir), TB_ATTENTION_NO_SERVER="1")
    result = subprocess.run(
        ["bash", "scripts/demo.sh", "--small", "--probe-examples", str(DEMO_PROBE_EXAMPLES)],
        cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return logdir, result
