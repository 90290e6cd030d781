"""Run and step comparison, head statistics and rollout in the Attention tab, on the real demos.

The module reads the demos the main job trained for the session (`conftest.demo_logs`:
`scripts/demo.sh --small`; two learning rates of the translation model and the ViT), copied into
its own logdir, adds one run that logged the same layer at other steps, serves them with one
real `tensorboard` and drives the tab in headless Chromium. Expected values come
from the backend (`/matrix`, `/stats`, `/rollout`) and from the logged weights, never from the
frontend's own code.
"""

import json
import shutil
import time
import urllib.parse

import numpy as np
import pytest

from readback import read_back
from tb_attention_plugin import AttentionWriter
from tb_attention_plugin.server import wire_format
from tensorboard_process import http_get, tensorboard
from test_browser_tab import VIRIDIS, Tab, close

FAST = "translation_lr1e-3/train"
SLOW = "translation_lr3e-4/train"
SHIFTED = "shifted/train"  # the slow run's cross-attention logged 7 steps later
SHIFT = 7
VISION = "vision/train"
CROSS = "decoder_0/cross_attention"
ENCODER = "encoder_0/self_attention"
VISION_TAG = "block_0/attention"
STACKED = "stacked/train"  # two layers of one stack with a hand-computable rollout
STACK = ["encoder/layer_0/self_attention", "encoder/layer_1/self_attention"]
LINE_BLUE = (26, 115, 232)
CURRENT_ORANGE = (232, 113, 10)


@pytest.fixture(scope="module")
def logdir(demo_logs, tmp_path_factory):
    path = tmp_path_factory.mktemp("compare-demos")
    trained, _ = demo_logs
    for run in ("translation_lr1e-3", "translation_lr3e-4", "vision"):  # copied: runs are added
        shutil.copytree(trained / run / "train", path / run / "train")
    slow = read_back(path)[SLOW][CROSS]
    with AttentionWriter(path / SHIFTED) as writer:
        for step, header, weights in slow:
            writer.attention(CROSS, np.nan_to_num(weights), step + SHIFT, mask=~np.isnan(weights),
                             query_tokens=header["query_tokens"], key_tokens=header["key_tokens"])
    tokens = ["<cls>", "a", "b"]
    with AttentionWriter(path / STACKED) as writer:
        writer.attention(STACK[0], np.full((2, 3, 3), 1 / 3, np.float32), 5, query_tokens=tokens, key_tokens=tokens)
        writer.attention(STACK[1], np.stack([np.eye(3, dtype=np.float32)] * 2), 5, query_tokens=tokens,
                         key_tokens=tokens)
    return path


@pytest.fixture(scope="module")
def server(logdir):
    with tensorboard(logdir, tensorflow=False) as base:
        yield base


class CompareTab(Tab):
    def show(self, timeout=60, compare=(), **state):
        """Sets the view (with repeated `compare` runs) through the hash; waits until drawn."""
        state.setdefault("query", None)
        pairs = [(k, v) for k, v in state.items() if v is not None]
        pairs += [("compare", run) for run in compare]
        self.eval("h => { delete document.querySelector('#view').dataset.rendered; location.hash = h; }",
                  "#" + urllib.parse.urlencode(pairs))
        return self.wait_for(state, timeout)

    def dataset(self, name):
        return json.loads(self.eval("n => document.querySelector('#view canvas').dataset[n]", name))

    def click(self, x, y):
        self.page.mouse.click(*self.page_point(x, y))


@pytest.fixture(scope="module")
def tab(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    yield CompareTab(page, server)
    context.close()


def api_matrix(server, **params):
    status, _, body = http_get(server + "/data/plugin/attention/matrix?" + urllib.parse.urlencode(params))
    assert status == 200, body[:300]
    return wire_format.decode(body).weights()


def api_json(server, route, params):
    status, _, body = http_get(server + "/data/plugin/attention/%s?%s" % (route, urllib.parse.urlencode(params)))
    assert status == 200, body[:300]
    return json.loads(body)


def steps_of(server, run, tag):
    return [s["step"] for s in api_json(server, "steps", {"run": run, "tag": tag})["steps"]]


def luminance(rgb):
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def panel_pixel(tab, panel, row, col):
    return tab.pixel(panel["x"] + (col + 0.5) * panel["cell"], panel["y"] + (row + 0.5) * panel["cell"])


def test_two_learning_rates_side_by_side_on_one_scale(tab, server, artifacts_dir):
    steps = steps_of(server, FAST, CROSS)
    assert steps == steps_of(server, SLOW, CROSS)
    # The step where the slower run is least sharp compared with the faster one.
    maxima = {s: [np.nanmax(api_matrix(server, run=r, tag=CROSS, step=s, example=0, head="mean"))
                  for r in (FAST, SLOW)] for s in steps}
    step = min(steps, key=lambda s: maxima[s][1] / maxima[s][0])
    fast_max, slow_max = maxima[step]
    assert slow_max < 0.9 * fast_max, maxima  # the lower learning rate aligns later (the demo's point)

    rendered = tab.show(run=FAST, tag=CROSS, step=step, head="mean", view="compare", compare=[FAST, SLOW])
    assert rendered["compare"] == [{"run": FAST, "step": step}, {"run": SLOW, "step": step}]
    panels = tab.dataset("panels")
    assert [p["title"] for p in panels] == ["%s · step %d" % (FAST, step), "%s · step %d" % (SLOW, step)]
    assert panels[0]["vmax"] == panels[1]["vmax"] == pytest.approx(fast_max, abs=1e-6)
    fast = api_matrix(server, run=FAST, tag=CROSS, step=step, example=0, head="mean")
    slow = api_matrix(server, run=SLOW, tag=CROSS, step=step, example=0, head="mean")
    # The shared top is the faster run's strongest cell; the slower run's strongest is darker.
    fast_peak = np.unravel_index(np.nanargmax(fast), fast.shape)
    slow_peak = np.unravel_index(np.nanargmax(slow), slow.shape)
    assert close(panel_pixel(tab, panels[0], *fast_peak), VIRIDIS[255])
    assert not close(panel_pixel(tab, panels[1], *slow_peak), VIRIDIS[255], tolerance=10)
    # One scale: across both panels, clearly larger weights are drawn brighter.
    cells = [(value, panel_pixel(tab, panels[p], r, c))
             for p, matrix in enumerate((fast, slow))
             for (r, c), value in np.ndenumerate(matrix) if not np.isnan(value) and (r + c) % 3 == 0]
    for value_a, rgb_a in cells[::4]:
        for value_b, rgb_b in cells[1::4]:
            if value_a > value_b + 0.15 * fast_max:
                assert luminance(rgb_a) > luminance(rgb_b), (value_a, rgb_a, value_b, rgb_b)
    tab.screenshot(artifacts_dir / "compare_runs.png")


def test_a_run_without_the_step_shows_its_nearest_logged_step_labelled(tab, server, artifacts_dir):
    step = steps_of(server, FAST, CROSS)[3]
    shifted_steps = steps_of(server, SHIFTED, CROSS)
    assert step not in shifted_steps and step + SHIFT in shifted_steps
    rendered = tab.show(run=FAST, tag=CROSS, step=step, head=0, view="compare", compare=[FAST, SHIFTED])
    assert rendered["compare"] == [{"run": FAST, "step": step}, {"run": SHIFTED, "step": step + SHIFT}]
    panels = tab.dataset("panels")
    assert panels[1]["title"] == "%s · step %d (nearest logged to %d)" % (SHIFTED, step + SHIFT, step)
    shown = api_matrix(server, run=SHIFTED, tag=CROSS, step=step + SHIFT, example=0, head=0)
    own = api_matrix(server, run=FAST, tag=CROSS, step=step, example=0, head=0)
    assert panels[1]["vmax"] == pytest.approx(max(np.nanmax(shown), np.nanmax(own)), abs=1e-6)
    tab.screenshot(artifacts_dir / "compare_runs_nearest.png")
    # Unticking a run leaves the other; the choice lives in the hash.
    tab.frame.locator("#compare-runs input[value='%s']" % SHIFTED).uncheck()
    deadline = time.monotonic() + 30
    while tab.rendered().get("compare") != [{"run": FAST, "step": step}]:
        assert time.monotonic() < deadline, tab.rendered()
        time.sleep(0.05)
    assert "compare=" + urllib.parse.quote(FAST, safe="") in tab.eval("location.hash")


def test_step_difference_map_signs_at_known_cells(tab, server, artifacts_dir):
    steps = steps_of(server, FAST, CROSS)
    ref, step = steps[0], steps[-1]
    later = api_matrix(server, run=FAST, tag=CROSS, step=step, example=0, head=0)
    earlier = api_matrix(server, run=FAST, tag=CROSS, step=ref, example=0, head=0)
    diff = later - earlier
    limit = np.nanmax(np.abs(diff))
    gained = [tuple(i) for i in np.argwhere(diff > 0.3 * limit)]
    lost = [tuple(i) for i in np.argwhere(diff < -0.3 * limit)]
    masked = [tuple(i) for i in np.argwhere(np.isnan(diff))]
    assert gained and lost and masked, (gained, lost, masked)

    rendered = tab.show(run=FAST, tag=CROSS, step=step, head=0, view="diff", ref=ref)
    assert rendered["ref"] == ref
    panels = tab.dataset("panels")
    assert [p["diverging"] for p in panels] == [False, False, True]
    assert panels[2]["vmax"] == pytest.approx(limit, abs=1e-5)
    for cell in gained:
        r, g, b = panel_pixel(tab, panels[2], *cell)
        assert r > b + 40, ("gained weight must be red", cell, diff[cell], (r, g, b))
    for cell in lost:
        r, g, b = panel_pixel(tab, panels[2], *cell)
        assert b > r + 20, ("lost weight must be blue", cell, diff[cell], (r, g, b))
    for cell in masked[:5]:
        assert close(panel_pixel(tab, panels[2], *cell), (200, 200, 200))
    # The hover names the change with its sign and both weights.
    cell = max(gained, key=lambda c: diff[c])
    x, y = tab.page_point(panels[2]["x"] + (cell[1] + 0.5) * panels[2]["cell"],
                          panels[2]["y"] + (cell[0] + 0.5) * panels[2]["cell"])
    tab.page.mouse.move(x, y)
    text = tab.tooltip()
    assert "+%.4f" % diff[cell] in text and "step %d: %.4f" % (step, later[cell]) in text, text
    tab.screenshot(artifacts_dir / "compare_steps.png")
    # Another reference step from the picker.
    tab.frame.select_option("#ref-select", str(steps[2]))
    tab.wait_for({"view": "diff", "ref": steps[2]})
    assert "ref=%d" % steps[2] in tab.eval("location.hash")


def test_statistics_charts_follow_the_backend_and_a_click_moves_the_step(tab, server, artifacts_dir):
    body = api_json(server, "stats", {"run": FAST, "tag": CROSS})
    steps = body["steps"]
    assert steps == steps_of(server, FAST, CROSS) and body["heads"] == 2
    tab.show(run=FAST, tag=CROSS, step=steps[-1], view="stats")
    info = tab.dataset("charts")
    assert info["steps"] == steps
    assert [(c["name"], c["head"]) for c in info["charts"]] == [
        (name, head) for name in ("entropy", "max_weight", "mean_distance", "first_token_share")
        for head in range(2)]
    pad = info["pad"]

    def point(name, head, index):
        chart = next(c for c in info["charts"] if c["name"] == name and c["head"] == head)
        lo, hi = chart["domain"]
        x = chart["x"] + pad + (steps[index] - steps[0]) / (steps[-1] - steps[0]) * (chart["width"] - 2 * pad)
        value = body["stats"][name][index][head]
        y = chart["y"] + chart["height"] - pad - (value - lo) / (hi - lo) * (chart["height"] - 2 * pad)
        return x, y

    # Entropy falls as the cross-attention aligns: the drawn line goes down.
    assert body["stats"]["entropy"][-1][0] < body["stats"]["entropy"][0][0] - 0.2
    assert close(tab.pixel(*point("entropy", 0, 2)), LINE_BLUE, tolerance=40)
    assert close(tab.pixel(*point("max_weight", 1, 4)), LINE_BLUE, tolerance=40)
    assert close(tab.pixel(*point("entropy", 0, len(steps) - 1)), CURRENT_ORANGE, tolerance=40)
    tab.screenshot(artifacts_dir / "stats.png")
    # Clicking the point of step 2 shows that step, marked in every chart.
    tab.click(*point("max_weight", 0, 2))
    tab.wait_for({"view": "stats", "step": steps[2]})
    assert tab.eval("document.querySelector('#step-label').textContent").startswith("step %d " % steps[2])
    assert close(tab.pixel(*point("first_token_share", 1, 2)), CURRENT_ORANGE, tolerance=40)
    assert close(tab.pixel(*point("entropy", 0, len(steps) - 1)), LINE_BLUE, tolerance=40)


def api_rollout(server, tags, **params):
    query = [("tag", t) for t in tags] + list(params.items())
    status, _, body = http_get(server + "/data/plugin/attention/rollout?" + urllib.parse.urlencode(query))
    assert status == 200, body[:300]
    return wire_format.decode(body).weights()


def test_rollout_map_for_text(tab, server, artifacts_dir):
    step = steps_of(server, FAST, ENCODER)[-1]
    rendered = tab.show(run=FAST, tag=ENCODER, step=step, view="rollout")
    assert rendered["stack"] == [ENCODER] and rendered["residual"] is True
    # Positions the layer masks (the probe's padding) are drawn masked, the rest on 0..max.
    bottom = api_matrix(server, run=FAST, tag=ENCODER, step=step, example=0, head="mean")
    matrix = np.where(np.isnan(bottom), np.nan,
                      api_rollout(server, [ENCODER], run=FAST, step=step, example=0))
    masked = np.argwhere(np.isnan(matrix))
    assert len(masked), "example 0 of the probe is padded"
    layout = tab.canvas_info()["layout"]
    assert (layout["rows"], layout["cols"]) == matrix.shape
    for cell in masked[:5]:
        assert close(tab.cell_pixel(*cell), (200, 200, 200))
    peak = np.unravel_index(np.nanargmax(matrix), matrix.shape)
    assert close(tab.cell_pixel(*peak), VIRIDIS[255])
    low = np.unravel_index(np.nanargmin(matrix), matrix.shape)
    assert luminance(tab.cell_pixel(*low)) < luminance(VIRIDIS[128])
    tab.screenshot(artifacts_dir / "rollout_text.png")


def test_rollout_over_the_vision_probe_and_without_the_residual(tab, server, artifacts_dir):
    step = steps_of(server, VISION, VISION_TAG)[-1]
    rendered = tab.show(run=VISION, tag=VISION_TAG, step=step, view="rollout")
    assert rendered["stack"] == [VISION_TAG]
    header = api_json(server, "step", {"run": VISION, "tag": VISION_TAG, "step": step})
    prefix = header["image"]["prefix_tokens"]
    overlay = tab.canvas_info()["overlay"]
    assert overlay["grid"] == header["image"]["grid"] and overlay["query"] == 0
    with_residual = api_rollout(server, [VISION_TAG], run=VISION, step=step, example=0)
    assert overlay["vmax"] == pytest.approx(with_residual[0, prefix:].max(), abs=1e-6)
    tab.screenshot(artifacts_dir / "rollout_vision.png")
    tab.frame.locator("#residual-toggle").uncheck()
    tab.wait_for({"view": "rollout", "residual": False})
    without = api_rollout(server, [VISION_TAG], run=VISION, step=step, example=0, residual=0)
    assert tab.canvas_info()["overlay"]["vmax"] == pytest.approx(without[0, prefix:].max(), abs=1e-6)
    assert "residual=0" in tab.eval("location.hash")


def test_rollout_through_a_stack_of_two_layers(tab, artifacts_dir):
    # Uniform 1/3, then identity: with the residual term 2/3 on the diagonal and 1/6 elsewhere;
    # without it 1/3 everywhere (by hand, see tests/test_stats.py).
    rendered = tab.show(run=STACKED, tag=STACK[1], step=5, view="rollout")
    assert rendered["stack"] == STACK
    assert "encoder/layer_0/self_attention → encoder/layer_1/self_attention" in tab.eval(
        "document.querySelector('#rollout-controls').textContent")
    for row in range(3):
        for col in range(3):
            rgb = tab.cell_pixel(row, col)
            if row == col:
                assert close(rgb, VIRIDIS[255]), (row, col, rgb)  # 2/3, the top of the scale
            else:
                assert luminance(rgb) < luminance(VIRIDIS[128]), (row, col, rgb)  # 1/6 of 2/3
    tab.screenshot(artifacts_dir / "rollout_stack.png")
    tab.frame.locator("#residual-toggle").uncheck()
    tab.wait_for({"view": "rollout", "residual": False})
    for row, col in [(0, 0), (0, 2), (2, 1)]:
        assert close(tab.cell_pixel(row, col), VIRIDIS[255])  # uniform: every cell is the maximum
