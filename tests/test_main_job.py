"""The README's main-job command, as a user runs it: install, train every demo, serve TensorBoard."""

import json
import os
import signal
import subprocess
import time

from tensorboard_process import free_port, http_get

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {"seed_attention", "translation_lr1e-3/train", "translation_lr3e-4/train", "vision/train",
        "induction_lm/train"}


def test_demo_script_trains_every_demo_and_serves_the_attention_tab(tmp_path):
    port = free_port()
    env = dict(os.environ, LOGDIR=str(tmp_path / "logs"), PORT=str(port))
    env.pop("TB_ATTENTION_NO_SERVER", None)
    log = open(tmp_path / "demo.log", "w")
    # --small: the reduced demo sizes (the full ones take about two minutes more).
    proc = subprocess.Popen(["bash", "scripts/demo.sh", "--small"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = "http://127.0.0.1:%d/data/plugin/attention" % port
    try:
        deadline = time.monotonic() + 600
        runs = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, open(tmp_path / "demo.log").read()[-3000:]
            try:
                status, _, body = http_get(base + "/runs", timeout=5)
                if status == 200:
                    runs = {r["run"]: r["tags"] for r in json.loads(body)["runs"]}
                    if set(runs) >= RUNS:
                        break
            except OSError:
                pass
            time.sleep(1)
        assert set(runs) == RUNS, (sorted(runs), open(tmp_path / "demo.log").read()[-3000:])
        tags = {t["tag"]: t for t in runs["translation_lr1e-3/train"]}
        assert tags["decoder_0/cross_attention"]["has_tokens"]
        assert {t["tag"]: t for t in runs["vision/train"]}["block_0/attention"]["has_image"]
        status, headers, _ = http_get(base + "/static/index.js")
        assert status == 200 and "javascript" in headers["Content-Type"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_demo_script_without_server_exits_after_training(tmp_path):
    env = dict(os.environ, LOGDIR=str(tmp_path / "logs"), TB_ATTENTION_NO_SERVER="1")
    # Only the seed demo's size matters here: run_all trains all four, so keep it to --small.
    result = subprocess.run(["bash", "scripts/demo.sh", "--small"], cwd=REPO, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Start TensorBoard with" in result.stdout
    written = {os.path.relpath(root, tmp_path / "logs") for root, _, files in os.walk(tmp_path / "logs")
               if any(f.startswith("events.out.tfevents") for f in files)}
    assert RUNS <= written, written
