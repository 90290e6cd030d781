"""Screenshots of every view of the Attention tab, for the README (docs/screenshots/*.png).

Trains the demo logs (`python -m demo.run_all --small`, about a minute on 2 cores) unless
`--logdir` names existing ones (the `long` view writes a synthetic 2048-token run into a logdir
of its own, tests/long_logdirs.py), starts a real `tensorboard` on 127.0.0.1, opens the tab in
headless Chromium (Debian's /usr/bin/chromium, 1280x800) and saves a full-page screenshot of
the tab's iframe page per view.

Usage:

    .venv/bin/python scripts/screenshots.py [--logdir DIR] [--out docs/screenshots]
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tensorboard_process import tensorboard  # noqa: E402

TRANSLATION = "translation_lr1e-3/train"
SLOW_TRANSLATION = "translation_lr3e-4/train"
VISION = "vision/train"
CROSS = "decoder_0/cross_attention"
DECODER = "decoder_0/self_attention"
VISION_TAG = "block_0/attention"
INDUCTION = "induction_lm/train"

# name -> view state (the tab's URL hash); "step": "last" is the newest logged step.
VIEWS = {
    "head": {"run": TRANSLATION, "tag": CROSS, "view": "head", "head": 0},
    "heads": {"run": TRANSLATION, "tag": CROSS, "view": "heads", "scale": "shared"},
    "model": {"run": TRANSLATION, "tag": CROSS, "view": "model", "scale": "shared"},
    "lines": {"run": TRANSLATION, "tag": CROSS, "view": "lines", "head": "mean"},
    "image": {"run": VISION, "tag": VISION_TAG, "view": "image", "head": "mean"},
    "compare": {"run": TRANSLATION, "tag": CROSS, "view": "compare", "head": "mean",
                "compare": [TRANSLATION, SLOW_TRANSLATION]},
    "diff": {"run": TRANSLATION, "tag": CROSS, "view": "diff", "head": "mean"},
    "stats": {"run": TRANSLATION, "tag": CROSS, "view": "stats"},
    "rollout": {"run": TRANSLATION, "tag": DECODER, "view": "rollout"},
    "rollout_image": {"run": VISION, "tag": VISION_TAG, "view": "rollout"},
    # A long sequence (tests/long_logdirs.py: 2048 tokens stored pooled), log colour scale.
    "long": {"run": "long", "tag": "lm/pooled", "view": "head", "head": 1, "log": 1},
    "health": {"run": TRANSLATION, "tag": CROSS, "view": "health"},
    "tokens": {"run": TRANSLATION, "tag": CROSS, "view": "head", "head": 0, "keys": "1,2"},
    # The causal language model's 1536-token probe, pooled: an induction head, its roles.
    "induction": {"run": INDUCTION, "tag": "layer_1/self_attention", "view": "head", "head": 0,
                  "log": 1},
    "induction_health": {"run": INDUCTION, "tag": "layer_1/self_attention", "view": "health"},
}
# Views of the synthetic long run, served from a logdir of their own.
LONG_VIEWS = ("long",)


def train(logdir):
    from demo import run_all

    run_all.main(["--logdir", str(logdir), "--small"])


def wait_drawn(frame, view, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = frame.evaluate(
            "() => ({busy: document.documentElement.dataset.busy,"
            " rendered: document.querySelector('#view').dataset.rendered || null,"
            " error: document.querySelector('#error').textContent})"
        )
        rendered = json.loads(state["rendered"]) if state["rendered"] else None
        if state["busy"] == "0" and rendered and rendered.get("view") == view:
            if state["error"]:
                raise RuntimeError("view %s shows an error: %s" % (view, state["error"]))
            return rendered
        time.sleep(0.1)
    raise RuntimeError("view %s was not drawn in %d s" % (view, timeout))


def take(base, out, names):
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
        page.goto(base + "/#attention")
        page.wait_for_selector("iframe", timeout=60000)
        frame = page.locator("iframe").element_handle().content_frame()
        frame.wait_for_selector("#view", timeout=60000)
        steps = {}
        for name in names:
            state = dict(VIEWS[name])
            key = (state["run"], state["tag"])
            if key not in steps:
                body = frame.evaluate(
                    "([r, t]) => fetch('./steps?run=' + encodeURIComponent(r) + '&tag=' +"
                    " encodeURIComponent(t)).then(x => x.json())", list(key))
                steps[key] = [s["step"] for s in body["steps"]]
            state.setdefault("step", steps[key][-1])
            pairs = [(k, v) for k, v in state.items() if k != "compare"]
            pairs += [("compare", run) for run in state.get("compare", [])]
            frame.evaluate("h => { delete document.querySelector('#view').dataset.rendered;"
                           " location.hash = h; }", "#" + urllib.parse.urlencode(pairs))
            wait_drawn(frame, state["view"])
            time.sleep(0.3)
            # The iframe page is the tab: its full height, not TensorBoard's fixed frame.
            height = frame.evaluate("() => document.documentElement.scrollHeight")
            page.set_viewport_size({"width": 1280, "height": max(800, min(height + 80, 2400))})
            time.sleep(0.2)
            path = out / ("%s.png" % name)
            frame.locator("body").screenshot(path=str(path))
            page.set_viewport_size({"width": 1280, "height": 800})
            print("%-14s %s (%d KB)" % (name, path, path.stat().st_size // 1024))
        browser.close()


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", help="existing demo logs (default: train them into a temp dir)")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument("--views", nargs="*", default=list(VIEWS), choices=list(VIEWS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tb-attention-shots-") as scratch:
        demo_views = [v for v in args.views if v not in LONG_VIEWS]
        long_views = [v for v in args.views if v in LONG_VIEWS]
        if demo_views:
            logdir = args.logdir
            if not logdir:
                logdir = os.path.join(scratch, "logs")
                train(logdir)
            with tensorboard(logdir) as base:
                take(base, pathlib.Path(args.out), demo_views)
        if long_views:
            from long_logdirs import write_long_logdir

            long_logdir = pathlib.Path(scratch) / "long-logs"
            write_long_logdir(long_logdir, full=False)
            with tensorboard(long_logdir) as base:
                take(base, pathlib.Path(args.out), long_views)


if __name__ == "__main__":
    main()
