"""Shared fixtures: artifacts folder, a headless Debian Chromium driven by playwright, and the
demos trained once by the README's main-job command.

The suite runs in two pytest-xdist workers (scripts/test.sh: `-n 2 --dist loadfile`), each test
file in one worker. Two things are shared between the workers and guarded here by file locks:

- the demos: `demo_logs` trains them once into a directory both workers see; the second worker
  to ask waits for the first and reads the same logs;
- the virtualenv: the main job (`scripts/demo.sh`) reinstalls the package into `.venv`, and for
  a moment it is not installed there (a `tensorboard` or `python` started then would not find
  it). demo.sh installs holding `.venv/tb-attention-install.lock` exclusively; every test here
  runs holding it shared (`pytest_runtest_protocol` below), so no test runs during an install.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import subprocess

import pytest

from chromium import CHROMIUM, CHROMIUM_ARGS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent


# Test files in the order they are handed to the workers (xdist's loadfile hands files out in
# collection order with --no-loadscope-reorder): the demo training first, then the longest files,
# so that no long file starts last while the other worker has nothing left. Files not named here
# follow in their usual order.
FIRST_FILES = [
    "test_demos.py",  # starts `demo_logs` (the main job's training, about 4 minutes)
    "test_callback_long.py",
    "test_keras_hub_jax_softmax.py",
    "test_keras_hub_jax_fused.py",
    "test_keras_hub_families.py",
    "test_bench.py",
    "test_keras_hub_workflow.py",
    "test_callback_text_probe.py",
    "test_size_budget.py",
    "test_pooled_layers.py",
    "test_distributed.py",
    "test_demo_roles.py",
    "test_main_job.py",
    "test_browser_compare.py",
    "test_browser_tab.py",
    "test_callback_models.py",
    "test_callback_health.py",
    "test_e2e_install.py",
    "test_browser_runs.py",
    "test_background_writer.py",
]


def pytest_collection_modifyitems(items):
    order = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: keeps the rest


class VenvLock:
    """`.venv/tb-attention-install.lock`, the lock scripts/demo.sh holds exclusively while it
    installs into `.venv`. Tests hold it shared; `released()` lets go while this process itself
    runs the main job. A no-op when there is no `.venv` (tests run from another environment)."""

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.held = False

    def acquire(self):
        if self.fd is None and self.path.parent.is_dir():
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if self.fd is not None and not self.held:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            self.held = True

    def release(self):
        if self.fd is not None and self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False

    @contextlib.contextmanager
    def released(self):
        was_held = self.held
        self.release()
        try:
            yield
        finally:
            if was_held:
                self.acquire()


VENV_LOCK = VenvLock(REPO / ".venv" / "tb-attention-install.lock")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test (its fixtures' set-up and tear-down included) runs holding the virtualenv lock
    shared: never while scripts/demo.sh, run by the other worker, reinstalls the package."""
    VENV_LOCK.acquire()
    try:
        yield
    finally:
        VENV_LOCK.release()


def shared_tmp(tmp_path_factory):
    """A temporary directory every xdist worker of this session sees (the workers' basetemps are
    folders of it); the session's basetemp without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


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
    tests/test_main_job.py checks the script itself, so the demos are trained once.

    Once per session, not once per xdist worker: the first worker to ask runs it into a folder
    both see, holding `demo_logs.lock`, and records its output in `main_job.json`; the other
    waits on the lock and returns the same logdir and output. Read-only for the tests (copy the
    runs to add to them)."""
    root = shared_tmp(tmp_path_factory)
    logdir = root / "main_job" / "logs"
    record = root / "main_job.json"
    command = ["bash", "scripts/demo.sh", "--small", "--probe-examples", str(DEMO_PROBE_EXAMPLES)]
    # While waiting or training, this worker holds no virtualenv lock: demo.sh installs.
    with VENV_LOCK.released(), open(root / "demo_logs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.exists():
            result = subprocess.CompletedProcess(**json.loads(record.read_text()))
        else:
            env = dict(os.environ, LOGDIR=str(logdir), TB_ATTENTION_NO_SERVER="1")
            result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                    stdin=subprocess.DEVNULL, timeout=1200)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            record.write_text(json.dumps({"args": command, "returncode": result.returncode,
                                          "stdout": result.stdout, "stderr": result.stderr}))
    return logdir, result
