"""How fast the Attention tab draws, in headless Chromium inside TensorBoard's real iframe.

Writes a logdir with `AttentionWriter` (one 512x512 head per step for 20 steps; a 12-layer x
12-head model at 128 tokens), starts a real `tensorboard` on 127.0.0.1, opens TensorBoard's
page with Debian's Chromium and measures inside the Attention tab's iframe:

- `draw 512x512 head`: the one-head view (heatmap, token labels, layout) from a decoded matrix;
- `draw 12x12 head grid, 128 tokens`: the model overview's 144 tiles from decoded matrices;
- `step change, 512x512 head (cold)`: moving the step slider to a step that is not adjacent
  to the shown one, until the new step is drawn: over HTTP, nothing cached or prefetched;
- `step change, 512x512 head (next)`: moving to the next step, as arrow keys and play do (the
  tab prefetches the neighbours of the shown step);
- `draw health view, 100 steps x 144 heads`: the head-health view (sparklines, role tints,
  markers, similarity groups, change list) of a `/health` answer of 12 layers x 12 heads over
  100 logged steps (made up in the page with every measure, role, group, alarm and emergence);
- for information: decoding one 512x512 answer, and a step change of the whole 12x12 overview;
- long sequences (tests/long_logdirs.py: a causal head at 2048 tokens written POOLED by a
  budget): `draw pooled overview, 2048 tokens` (the one-head view of the block overview, with
  its range labels, from the decoded answer) and `zoom into a stored window, 2048 tokens`:
  from the zoom's state change (what a drag sets) until the window's region is drawn at full
  resolution, its `/matrix?window=` answer fetched over HTTP the first time; and, for
  information, drawing the same head stored in full (2048x2048) and with the log colour scale.

Prints the median (and max) of each and its ratio to the target (below 1 is within target).

Usage:

    .venv/bin/python bench/bench_frontend.py [--repeats 30] [--only-health]
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from attention_logdirs import write_bench_logdir  # noqa: E402
from long_logdirs import write_long_logdir  # noqa: E402
from chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tensorboard_process import tensorboard  # noqa: E402

TARGETS_MS = {
    "draw 512x512 head": 16,
    "draw 12x12 head grid, 128 tokens": 100,
    "step change, 512x512 head (cold)": 100,
    "step change, 512x512 head (next)": 100,
    "draw pooled overview, 2048 tokens": 16,
    "zoom into a stored window, 2048 tokens": 100,
    "draw health view, 100 steps x 144 heads": 100,
}

# Runs in the tab's iframe: imports the tab's own modules (same URLs as the running tab).
DRAW_SCRIPT = """
async ({repeats}) => {
  const {AttentionApi} = await import("./static/ui/api.js");
  const {decodeMatrix, maxValue} = await import("./static/lib/decode.js");
  const {colormap} = await import("./static/lib/colormap.js");
  const {renderHeadView} = await import("./static/views/head.js");
  const {renderTiles} = await import("./static/views/heads.js");
  const api = new AttentionApi("./");
  const lut = colormap("viridis");
  const hooks = {tooltip: {show() {}, hide() {}}, pinRow() {}, pick() {}};
  const host = document.createElement("div");
  document.body.append(host);
  const timeIt = (fn) => {
    const times = [];
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      const canvas = fn();
      canvas.getContext("2d").getImageData(0, 0, 1, 1);  // waits for the drawing to finish
      times.push(performance.now() - t0);
    }
    return times;
  };
  const params = {run: "bench", tag: "long/attention", step: 0, example: 0, head: 0};
  const buffer = await (await api.request("matrix", params)).arrayBuffer();
  const decodeTimes = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    decodeMatrix(buffer);
    decodeTimes.push(performance.now() - t0);
  }
  const matrix = decodeMatrix(buffer);
  const header = await api.step("bench", "long/attention", 0);
  const vmax = maxValue(matrix.values);
  const head = timeIt(() => renderHeadView(host, {matrix, header, example: 0, lut, vmax, pinned: null,
                                                  width: 1200}, hooks).canvas);
  const tiles = [];
  for (let layer = 0; layer < 12; layer++) {
    const tag = "model/layer_" + String(layer).padStart(2, "0");
    for (let h = 0; h < 12; h++) {
      tiles.push({label: "h" + h, matrix: await api.matrix({run: "bench", tag, step: 0, example: 0, head: h})});
    }
  }
  const rowLabels = Array.from({length: 12}, (_, l) => "model/layer_" + l);
  const grid = timeIt(() => renderTiles(host, {tiles, lut, scale: "head", width: 1300, columns: 12, rowLabels,
                                               minTile: 24, maxTile: 96}, hooks).canvas);
  // Long sequences: the pooled overview of a 2048-token head, and the same head in full.
  const {pooledInfo} = await import("./static/lib/pooled.js");
  const {logDecades} = await import("./static/lib/colormap.js");
  const longHeader = await api.step("long", "lm/pooled", 0);
  const info = pooledInfo(longHeader);
  const overview = await api.matrix({run: "long", tag: "lm/pooled", step: 0, example: 0, head: 0});
  const overviewVmax = maxValue(overview.values);
  const pooled = timeIt(() => renderHeadView(host, {matrix: overview, header: longHeader, example: 0, lut,
                                                    vmax: overviewVmax, pinned: null, width: 1200, pooled: info},
                                             hooks).canvas);
  const fullHeader = await api.step("long", "lm/full", 0);
  const full = await api.matrix({run: "long", tag: "lm/full", step: 0, example: 0, head: 0});
  const fullVmax = maxValue(full.values);
  const fullTimes = timeIt(() => renderHeadView(host, {matrix: full, header: fullHeader, example: 0, lut,
                                                       vmax: fullVmax, pinned: null, width: 1200}, hooks).canvas);
  const logTimes = timeIt(() => renderHeadView(host, {matrix: full, header: fullHeader, example: 0, lut, vmax: fullVmax,
                                                      pinned: null, width: 1200, log: logDecades(fullVmax, 2048)},
                                               hooks).canvas);
  host.remove();
  return {"decode 512x512 answer": decodeTimes, "draw 512x512 head": head,
          "draw 12x12 head grid, 128 tokens": grid, "draw pooled overview, 2048 tokens": pooled,
          "draw full 2048x2048 head (info)": fullTimes, "draw full 2048x2048 head, log scale (info)": logTimes};
}
"""

# Sets the zoom of the shown pooled head through the hash (as a drag does through the state) and
# resolves with the milliseconds until the zoomed region is drawn.
ZOOM_SCRIPT = """
async (hash) => {
  const view = document.querySelector("#view");
  const t0 = performance.now();
  const drawn = new Promise((resolve) => {
    const check = () => {
      const rendered = JSON.parse(view.dataset.rendered || "null");
      if (rendered && rendered.layout === "zoom" && document.documentElement.dataset.busy === "0") {
        observer.disconnect();
        resolve();
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(view, {attributes: true});
    observer.observe(document.documentElement, {attributes: true});
  });
  delete view.dataset.rendered;
  location.hash = hash;
  await drawn;
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return performance.now() - t0;
}
"""

# Draws the health view of a made-up /health answer (12 layers x 12 heads x 100 steps).
HEALTH_SCRIPT = """
async ({repeats}) => {
  const {renderHealth} = await import("./static/views/health.js");
  const host = document.createElement("div");
  document.body.append(host);
  const body = healthAnswer(12, 12, 100);
  const tooltip = {show() {}, hide() {}};
  const draw = () => renderHealth(host, body, {step: 5000, measure: "entropy", width: 1300, tooltip, open() {}}).canvas;
  for (let i = 0; i < 3; i++) draw();  // warm up (fonts, JIT)
  const times = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    draw().getContext("2d").getImageData(0, 0, 1, 1);  // waits for the drawing to finish
    times.push(performance.now() - t0);
  }
  host.remove();
  return {"draw health view, 100 steps x 144 heads": times};

// A /health answer (docs/http_api.md) of `layers` x `heads` over `count` steps, every field filled.
function healthAnswer(layers, heads, count) {
  const steps = Array.from({length: count}, (_, i) => i * 100);
  const roles = ["induction", "previous-token", "diagonal", "first-token", "diffuse", "none"];
  const measures = ["entropy", "entropy_nats", "max_logit", "previous_token", "diagonal", "first_token",
                    "induction", "monotonicity"];
  const body = {layers: [], heads: {}, steps, series: {}, roles: {}, groups: {}, alarms: [], emergence: [], changes: []};
  for (let l = 0; l < layers; l++) {
    const tag = "model/layer_" + String(l).padStart(2, "0");
    body.layers.push(tag);
    body.heads[tag] = heads;
    body.series[tag] = {};
    for (const [m, name] of measures.entries()) {
      body.series[tag][name] = steps.map((_, i) => Array.from({length: heads}, (_, h) =>
        name === "max_logit" ? 5 + i * (h + 1) * 0.2 : 0.5 + 0.45 * Math.sin(i / 9 + h + l + m)));
    }
    body.roles[tag] = steps.map((_, i) => Array.from({length: heads}, (_, h) => roles[(h + l + (i > 50 ? 1 : 0)) % roles.length]));
    body.groups[tag] = steps.map((_, i) => [[0, 1 + (i % 3)], [4, 5, 6], ...Array.from({length: heads - 5}, (_, k) => [k + 7])]);
    for (let h = 0; h < heads; h++) {
      const step = steps[(h * 7 + l * 3) % count];
      body.alarms.push({tag, head: h, step, kind: h % 2 ? "entropy_collapse" : "logit_growth", value: 0.01,
                        message: tag + " head " + h + ": alarm at step " + step});
      body.emergence.push({tag, head: h, role: roles[h % 4], step: steps[(h * 5 + l) % count],
                           message: tag + " head " + h + " became a " + roles[h % 4] + " head"});
    }
  }
  body.changes = body.emergence.slice(0, 40).map((e) => e.message);
  return body;
}
}
"""

# Moves the slider to `index` and resolves with the milliseconds until `step` is drawn.
STEP_SCRIPT = """
async ({index, step}) => {
  const view = document.querySelector("#view");
  const slider = document.querySelector("#step-slider");
  const t0 = performance.now();
  const drawn = new Promise((resolve) => {
    const check = () => {
      const rendered = JSON.parse(view.dataset.rendered || "null");
      if (rendered && rendered.step === step && document.documentElement.dataset.busy === "0") {
        observer.disconnect();
        resolve();
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(view, {attributes: true});
    observer.observe(document.documentElement, {attributes: true});
  });
  slider.value = String(index);
  slider.dispatchEvent(new Event("input"));
  await drawn;
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return performance.now() - t0;
}
"""


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def wait_drawn(frame, view):
    deadline = time.monotonic() + 120
    while True:
        rendered = json.loads(frame.evaluate("document.querySelector('#view').dataset.rendered || 'null'"))
        if rendered and rendered["view"] == view and frame.evaluate("document.documentElement.dataset.busy") == "0":
            return rendered
        if time.monotonic() > deadline:
            raise RuntimeError("the tab did not draw %s: %s" % (view, frame.evaluate(
                "document.querySelector('#error').textContent")))
        time.sleep(0.05)


def step_changes(frame, tag, view, visits, all_steps):
    """Shows step visits[0], then moves the slider to each later visit; returns the times."""
    frame.evaluate("h => { location.hash = h }", "#run=bench&tag=%s&step=%d&view=%s" % (tag, visits[0], view))
    time.sleep(0.2)
    wait_drawn(frame, view)
    time.sleep(0.5)  # let the neighbour prefetch finish so it does not compete
    times = []
    for step in visits[1:]:
        times.append(frame.evaluate(STEP_SCRIPT, {"index": all_steps.index(step), "step": step}))
        time.sleep(0.3)
    return times


def zooms(frame, count=8):
    """Zooms the pooled head into `count` regions of its window of the last queries, each from
    the overview; the first fetches the window over HTTP."""
    header = frame.evaluate("() => fetch('./step?run=long&tag=lm%2Fpooled&step=0').then((r) => r.json())")
    window = next(w for w in header["windows"] if w["name"] == "last_queries")
    q0, q1 = window["query"]
    base = "#run=long&tag=lm%2Fpooled&step=0&view=head&head=0"
    times = []
    for i in range(count):
        frame.evaluate("h => { location.hash = h }", base)
        wait_drawn(frame, "head")
        time.sleep(0.2)
        k1 = 256 * (i + 1)
        times.append(frame.evaluate(ZOOM_SCRIPT, base + "&zoom=%d-%d%%2C0-%d" % (q0, q1, min(k1, 2048))))
    return times


def main(argv=None):
    """Runs the benchmark with command-line `argv`; prints and returns `{measure: [ms, ...]}`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only-health", action="store_true",
                        help="only the health view's drawing (a small logdir, no 512x512 heads)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        if args.only_health:
            from health_logdirs import write_health_logdir

            logdir = write_health_logdir(pathlib.Path(tmp))
        else:
            logdir = write_bench_logdir(pathlib.Path(tmp))
            write_long_logdir(logdir, full=True)
        with tensorboard(logdir) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
            page.goto(base + "/#attention")
            page.wait_for_selector("iframe", timeout=60000)
            frame = page.locator("iframe").element_handle().content_frame()
            frame.wait_for_selector("#view canvas", timeout=120000)
            results = frame.evaluate(HEALTH_SCRIPT, {"repeats": args.repeats})
            if args.only_health:
                browser.close()
                return report(results)
            results.update(frame.evaluate(DRAW_SCRIPT, {"repeats": args.repeats}))
            steps = list(range(20))
            # Each jump lands on a step neither shown nor prefetched (a neighbour of one shown).
            results["step change, 512x512 head (cold)"] = step_changes(
                frame, "long/attention", "head", [0, 10, 3, 16, 6, 13, 19], steps)
            results["step change, 512x512 head (next)"] = step_changes(frame, "long/attention", "head", steps, steps)
            results["step change, 12x12 overview (info)"] = step_changes(
                frame, "model/layer_00", "model", [0, 1], [0, 1])
            results["zoom into a stored window, 2048 tokens"] = zooms(frame)
            browser.close()
    return report(results)


def report(results):
    print("Attention tab frontend, headless Chromium (%s), times in ms" % CHROMIUM)
    print("(min: the least disturbed draw, when other jobs share the cores)")
    print("%-40s %9s %9s %9s %8s %7s" % ("measure", "median", "min", "max", "target", "ratio"))
    for name, times in results.items():
        target = TARGETS_MS.get(name)
        m = median(times)
        print("%-40s %9.2f %9.2f %9.2f %8s %7s" % (name, m, min(times), max(times), target or "-",
                                                     "%.2f" % (m / target) if target else "-"))
    return results


if __name__ == "__main__":
    main()
