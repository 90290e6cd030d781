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


@contextlib.contextmanager
def tensorboard(logdir, *flags, python=None, ready_timeout=120, wait_for_plugin="attention"):
    """Runs `tensorboard --logdir=logdir` and yields its base URL (no trailing slash).

    Waits until the data is loaded: the plugin is listed as enabled in `/data/plugins_listing`.
    """
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
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    "tensorboard exited with %s:\n%s" % (proc.returncode, open(log.name).read())
                )
            try:
                listing = json.loads(http_get(base + "/data/plugins_listing", timeout=5)[2])
                entry = listing.get(wait_for_plugin) if wait_for_plugin else {}
                if entry is not None and (not wait_for_plugin or entry.get("enabled")):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "tensorboard did not list plugin %r in time:\n%s"
                    % (wait_for_plugin, open(log.name).read())
                )
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)
