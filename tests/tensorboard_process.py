"""Starts a real `tensorboard` process on 127.0.0.1 for end-to-end and browser tests."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url, timeout=30):
    """Returns `(status, headers, body bytes)`; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url, timeout=30):
    status, _, body = http_get(url, timeout)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


_BIND_ATTEMPTS = 5


def _wait_until_ready(proc, log, base, ready_timeout, wait_for_plugin):
    """True once the plugin is listed; False if tensorboard could not bind its port."""
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            output = open(log.name).read()
            if "could not bind to port" in output:
                return False
            raise RuntimeError("tensorboard exited with %s:\n%s" % (proc.returncode, output))
        try:
            listing = json.loads(http_get(base + "/data/plugins_listing", timeout=5)[2])
            entry = listing.get(wait_for_plugin) if wait_for_plugin else {}
            if entry is not None and (not wait_for_plugin or entry.get("enabled")):
                return True
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                "tensorboard did not list plugin %r in time:\n%s"
                % (wait_for_plugin, open(log.name).read())
            )
        time.sleep(0.3)


def _stop(proc, log):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
    os.unlink(log.name)


def _without_tensorflow():
    """A folder whose `tensorflow` package fails to import, made once per process: first on a
    tensorboard's PYTHONPATH, it starts that tensorboard as one installed without TensorFlow."""
    global _NO_TENSORFLOW
    if _NO_TENSORFLOW is None:
        folder = tempfile.mkdtemp(prefix="no-tensorflow-")
        os.mkdir(os.path.join(folder, "tensorflow"))
        with open(os.path.join(folder, "tensorflow", "__init__.py"), "w") as f:
            f.write('raise ImportError("this tensorboard runs without TensorFlow")\n')
        _NO_TENSORFLOW = folder
    return _NO_TENSORFLOW


_NO_TENSORFLOW = None
WITHOUT_TENSORFLOW = "TENSORBOARD_WITHOUT_TENSORFLOW"  # set (non-empty): `tensorflow=False`


@contextlib.contextmanager
def tensorboard(logdir, *flags, python=None, ready_timeout=120, wait_for_plugin="attention",
                tensorflow=None):
    """Runs `tensorboard --logdir=logdir` and yields its base URL (no trailing slash).

    Waits until the data is loaded: the plugin is listed as enabled in `/data/plugins_listing`.
    `tensorflow=False` starts it as a TensorBoard installed without TensorFlow (its own file
    layer; the plugin never imports TensorFlow): 1.5 s instead of 9 s of CPU on 2 cores, for
    tests of the tab in the browser, where nothing depends on it. The default is
    `TENSORBOARD_WITHOUT_TENSORFLOW` in the environment (`bench/run.py --smoke` in the tests),
    else with TensorFlow, as a user's tensorboard beside this package runs.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if tensorflow is None:
        tensorflow = not os.environ.get(WITHOUT_TENSORFLOW)
    if not tensorflow:
        env["PYTHONPATH"] = os.pathsep.join(
            [_without_tensorflow()] + [p for p in [env.get("PYTHONPATH")] if p])
    # free_port() releases the port before tensorboard binds it; on a busy machine another
    # process can take it in between: then tensorboard exits saying so and we try another port.
    for attempt in range(_BIND_ATTEMPTS):
        port = free_port()
        log = tempfile.NamedTemporaryFile(prefix="tensorboard-", suffix=".log", delete=False)
        cmd = [
            python or sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir=%s" % logdir,
            "--host=127.0.0.1",
            "--port=%d" % port,
            "--reload_interval=1",
            *flags,
        ]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        base = "http://127.0.0.1:%d" % port
        try:
            ready = _wait_until_ready(proc, log, base, ready_timeout, wait_for_plugin)
        except BaseException:
            _stop(proc, log)
            raise
        if ready:
            break
        _stop(proc, log)
        if attempt == _BIND_ATTEMPTS - 1:
            raise RuntimeError("tensorboard found no free port in %d attempts" % _BIND_ATTEMPTS)
    try:
        yield base
    finally:
        _stop(proc, log)
