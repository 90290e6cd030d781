"""The README's main-job command, as a user runs it: install, train every demo, serve TensorBoard.

The training itself runs once per session (`conftest.demo_logs`: `scripts/demo.sh --small` with
TB_ATTENTION_NO_SERVER=1); the demo tests read the same logs. Here: that run exits after
training with every run written, and the same command run again on those logs trains nothing
and serves the Attention tab.
"""

import json
import os
import signal
import subprocess
import time

from conftest import VENV_LOCK
from tensorboard_process import free_port, http_get

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = {"seed_attention", "translation_lr1e-3/train", "translation_lr3e-4/train", "vision/train",
        "induction_lm/train", "keras_hub_lora/train"}


def test_demo_script_without_server_exits_after_training(demo_logs):
    logdir, result = demo_logs
    assert "Start TensorBoard with" in result.stdout
    for run in ("translation_lr1e-3", "translation_lr3e-4", "vision", "seed_attention",
                "induction_lm", "keras_hub_lora"):
        assert "== %s\n" % run in result.stdout, result.stdout[-2000:]  # trained, not skipped
    written = {os.path.relpath(root, logdir) for root, _, files in os.walk(logdir)
               if any(f.startswith("events.out.tfevents") for f in files)}
    assert RUNS <= written, written


def test_demo_script_run_again_serves_the_attention_tab_without_retraining(demo_logs, tmp_path):
    logdir, _ = demo_logs
    port = free_port()
    env = dict(os.environ, LOGDIR=str(logdir), PORT=str(port))
    env.pop("TB_ATTENTION_NO_SERVER", None)
    log = open(tmp_path / "demo.log", "w")
    # demo.sh reinstalls into .venv holding its lock exclusively: this test runs without the
    # shared hold the other tests have (conftest.VENV_LOCK; taken again for the next test).
    VENV_LOCK.release()
    proc = subprocess.Popen(["bash", "scripts/demo.sh", "--small", "--probe-examples", "32"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
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
        output = open(tmp_path / "demo.log").read()
        assert output.count("already trained") == len(RUNS), output[-3000:]
        tags = {t["tag"]: t for t in runs["translation_lr1e-3/train"]}
        assert tags["decoder_0/cross_attention"]["has_tokens"]
        assert {t["tag"]: t for t in runs["vision/train"]}["block_0/attention"]["has_image"]
        status, headers, _ = http_get(base + "/static/index.js")
        assert status == 200 and "javascript" in headers["Content-Type"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_a_run_is_skipped_only_when_finished_with_the_same_options(tmp_path):
    import sys

    sys.path.insert(0, REPO)
    from demo import run_all

    small = {"small": True, "probe_examples": 4}
    run = tmp_path / "vision"
    assert run_all._prepare(run, small, retrain=False) is False  # new: trained
    (run / "events.out.tfevents.1").write_text("half a run")
    # Interrupted before it finished: its old events are removed, never logged twice.
    assert run_all._prepare(run, small, retrain=False) is False
    assert not (run / "events.out.tfevents.1").exists()
    run_all._finish(run, small, 12.5)
    assert run_all._prepare(run, small, retrain=False) is True
    assert run_all._prepare(run, {"small": False, "probe_examples": 4}, retrain=False) is False
    run_all._finish(run, small, 12.5)
    assert run_all._prepare(run, small, retrain=True) is False
    # A directory run_all did not write is the user's: never removed.
    mine = tmp_path / "seed_attention"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    try:
        run_all._prepare(mine, small, retrain=True)
        raise AssertionError("a foreign directory was accepted")
    except FileExistsError as error:
        assert "choose another --logdir" in str(error)
    assert (mine / "notes.txt").read_text() == "keep"
