"""The Attention tab at long lengths, in a real headless Chromium inside a real `tensorboard`.

Run "long" (tests/long_logdirs.py) holds a 2048-token causal head written by `AttentionWriter`
with a budget that forces the POOLED layout (an overview of blocks, each block's mean and max,
plus exact windows), and the same head stored in full. The tab must draw the overview with
token-range labels, say a block's positions, mean and max on hover, zoom into a stored window
at full resolution (exact weights on hover) when a region inside one is dragged, say which
argument logs a region no window holds, change its pixels with the log colour scale, and draw
the long full head with strided labels. Expected values come from the logged float weights.
"""

import io
import re
import time
import urllib.parse

import numpy as np
import pytest

from long_logdirs import TOKENS, WINDOW, long_mask, long_tokens, long_weights, write_long_logdir
from tensorboard_process import http_get, tensorboard
from test_browser_tab import VIRIDIS, Tab, close

RUN = "long"
POOLED = {"run": RUN, "tag": "lm/pooled", "step": 0}
FULL = {"run": RUN, "tag": "lm/full", "step": 0}
NAMES = long_tokens()


def faithful(got, want, scale):
    """Within the format's bounds (docs/format.md): 2.8% relative or scale/508 absolute, plus the
    tooltip's 4 decimals."""
    return abs(got - want) <= max(0.028 * want, scale / 508) + 0.00005


@pytest.fixture(scope="module")
def weights():
    return long_weights(TOKENS, 2, seed=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = write_long_logdir(tmp_path_factory.mktemp("long-logdir"))
    with tensorboard(logdir, tensorflow=False) as base:
        yield base


@pytest.fixture(scope="module")
def tab(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, device_scale_factor=1,
                                  accept_downloads=True)
    yield Tab(context.new_page(), server)
    context.close()


@pytest.fixture(scope="module")
def header(tab):
    return tab.eval("() => fetch('./step?run=long&tag=lm%2Fpooled&step=0').then((r) => r.json())")


def block_planes(weights, header, head):
    """Block means over attended positions and block maxes of the logged head: [nq, nk] each,
    NaN where a block is all masked."""
    bq, bk = header["pooled"]["block"]
    nq, nk = header["pooled"]["grid"]
    w = np.zeros((nq * bq, nk * bk), np.float64)
    m = np.zeros((nq * bq, nk * bk), bool)
    w[:TOKENS, :TOKENS] = weights[0, head]
    m[:TOKENS, :TOKENS] = long_mask()
    w = w.reshape(nq, bq, nk, bk)
    m = m.reshape(nq, bq, nk, bk)
    counts = m.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(m, w, 0).sum(axis=(1, 3)) / counts
    maxes = np.where(m, w, -np.inf).max(axis=(1, 3))
    return np.where(counts > 0, means, np.nan), np.where(counts > 0, maxes, np.nan)


def drag(tab, a, b):
    """Drags with the mouse from CSS point a to b of the view canvas."""
    tab.page.mouse.move(*tab.page_point(*a))
    tab.page.mouse.down()
    tab.page.mouse.move(*tab.page_point((a[0] + b[0]) / 2, (a[1] + b[1]) / 2), steps=3)
    tab.page.mouse.move(*tab.page_point(*b), steps=3)
    tab.page.mouse.up()


def cell_point(layout, row, col):
    return layout["x"] + (col + 0.5) * layout["cell"], layout["y"] + (row + 0.5) * layout["cell"]


def test_pooled_overview_draws_with_range_labels_and_block_hover(tab, header, weights, artifacts_dir):
    assert header["layout"] == "pooled" and header["shape"] == [1, 2, TOKENS, TOKENS]
    nq, nk = header["pooled"]["grid"]
    bq, bk = header["pooled"]["block"]
    assert nq < TOKENS and nq == -(-TOKENS // bq)
    rendered = tab.show(**POOLED, head=0, view="head")
    assert rendered["layout"] == "pooled"
    layout = tab.canvas_info()["layout"]
    assert (layout["rows"], layout["cols"]) == (nq, nk)
    # The block with the largest mean (the sink column) is the top colour; the masked future grey.
    means, maxes = block_planes(weights, header, 0)
    top = np.unravel_index(np.nanargmax(means), means.shape)
    assert close(tab.cell_pixel(*top), VIRIDIS[255]), top
    assert close(tab.cell_pixel(0, nk - 1), (200, 200, 200))
    # Hover: the block's position range, its first and last token, its mean and max.
    row, col = nq - 1, 3
    text = tab.hover_cell(row, col)
    mean, peak = means[row, col], maxes[row, col]
    q0, k0 = row * bq, col * bk
    prefix = "queries %d–%d (%s … %s) → keys %d–%d (%s … %s)  mean " % (
        q0, TOKENS - 1, NAMES[q0], NAMES[TOKENS - 1], k0, k0 + bk - 1, NAMES[k0], NAMES[k0 + bk - 1])
    assert text.startswith(prefix), text
    got_mean, got_max = map(float, re.match(r".*mean (\S+)  max (\S+)$", text).groups())
    assert faithful(got_mean, mean, means[top]) and faithful(got_max, peak, 1.0), (text, mean, peak)
    # Token-range labels: hovering a query label names the block's positions and tokens.
    tab.page.mouse.move(*tab.page_point(layout["x"] - 8, layout["y"] + 0.5 * layout["cell"]))
    assert tab.tooltip() == "queries 0–%d: %s … %s" % (bq - 1, NAMES[0], NAMES[bq - 1])
    hint = tab.eval("document.querySelector('#pooled-hint').textContent")
    assert "last_queries" in hint and WINDOW[0] in hint
    assert "pooled: overview of %d×%d blocks" % (bq, bk) in tab.eval("document.querySelector('#info').textContent")
    tab.screenshot(artifacts_dir / "long_overview.png")


def window_of(header, name):
    return next(w for w in header["windows"] if w["name"] == name)


def test_dragging_over_a_stored_window_zooms_to_exact_weights(tab, header, weights, artifacts_dir):
    tab.show(**POOLED, head=1, view="head")
    layout = tab.canvas_info()["layout"]
    nq, _ = header["pooled"]["grid"]
    bq, bk = header["pooled"]["block"]
    last = window_of(header, "last_queries")
    assert last["query"][1] == TOKENS
    # Drag over the last block row, key blocks 0..3: inside the window of the last queries.
    row = nq - 1
    assert last["query"][0] <= row * bq
    drag(tab, cell_point(layout, row, 0), cell_point(layout, row, 3))
    rendered = tab.wait_for({"view": "head", "layout": "zoom"})
    assert rendered["window"] == "last_queries"
    q0, k1 = row * bq, 4 * bk
    assert "zoom=%d-%d%%2C0-%d" % (q0, TOKENS, k1) in tab.eval("location.hash")
    zoomed = tab.canvas_info()["layout"]
    assert zoomed["rows"] == TOKENS - q0 and zoomed["cols"] == k1
    assert zoomed["offset"] == {"query": q0, "key": 0}
    # Exact weights on hover, with positions: the previous-token head's diagonal and a small weight.
    w = weights[0, 1]
    q = TOKENS - 5
    for k in (0, 5, 7):  # the sink's large weight and small ones
        text = tab.hover_cell(q - q0, k)
        expected = "query %d “%s” → key %d “%s”  " % (q, NAMES[q], k, NAMES[k])
        assert text.startswith(expected), text
        assert faithful(float(text.split()[-1]), float(w[q, k]), float(w[q].max())), (text, w[q, k])
    assert "exact weights from stored window “last_queries”" in tab.eval("document.querySelector('#zoom-bar').textContent")
    tab.screenshot(artifacts_dir / "long_zoom.png")
    # Back to the overview.
    tab.frame.click("#zoom-out")
    assert tab.wait_for({"layout": "pooled"})["layout"] == "pooled"


def test_clicking_a_block_of_the_named_window_zooms_into_it(tab, header, weights):
    tab.show(**POOLED, head=0, view="head")
    layout = tab.canvas_info()["layout"]
    bq, bk = header["pooled"]["block"]
    name, (q0, q1), (k0, k1) = WINDOW
    named = window_of(header, name)
    assert named["query"] == [q0, q1] and named["key"] == [k0, k1]
    # A block fully inside the named window (blocks align with it only if the block size allows).
    row = -(-q0 // bq)
    if (row + 1) * bq > q1:
        pytest.skip("block size %d leaves no whole block inside the window" % bq)
    tab.page.mouse.click(*tab.page_point(*cell_point(layout, row, 0)))
    rendered = tab.wait_for({"layout": "zoom"})
    assert rendered["window"] == name
    text = tab.hover_cell(0, 1)
    q = row * bq
    assert text.startswith("query %d “%s” → key 1 “%s”  " % (q, NAMES[q], NAMES[1]))
    assert faithful(float(text.split()[-1]), float(weights[0, 0, q, 1]), float(weights[0, 0, q].max()))


def test_dragging_where_no_window_is_stored_says_which_argument_logs_it(tab, header, artifacts_dir):
    tab.show(**POOLED, head=0, view="head")
    layout = tab.canvas_info()["layout"]
    bq, _ = header["pooled"]["block"]
    row = 400 // bq  # queries around 400: neither the first nor the last queries, nor "middle"
    drag(tab, cell_point(layout, row, 0), cell_point(layout, row + 1, 2))
    rendered = tab.wait_for({"missing": True})
    assert rendered["layout"] == "pooled"  # the overview stays drawn
    text = tab.eval("document.querySelector('#zoom-missing').textContent")
    assert "is not stored at full resolution" in text
    assert "windows= argument of AttentionLogger or of AttentionWriter.attention" in text
    assert "windows=[(\"q%d_%d\", (%d, %d), " % (row * bq, (row + 2) * bq, row * bq, (row + 2) * bq) in text
    tab.screenshot(artifacts_dir / "long_missing_window.png")
    tab.frame.click("#zoom-out")
    assert not tab.wait_for({"missing": False})["missing"]


def test_log_scale_changes_pixels_and_labels_decades(tab, header):
    tab.show(**POOLED, head=0, view="head")
    nq, nk = header["pooled"]["grid"]
    probe = (nq - 1, nk // 2)  # a block far from the sink: weights near 1/T
    linear = tab.cell_pixel(*probe)
    assert tab.eval("document.querySelector('#legend canvas').dataset.scale") == "linear"
    rendered = tab.show(**POOLED, head=0, view="head", log=1)
    assert rendered["log"] is True
    logged = tab.cell_pixel(*probe)
    assert not close(logged, linear, tolerance=20), (linear, logged)
    # Small weights move up the map: brighter (viridis lightness rises).
    assert sum(logged) > sum(linear)
    ticks = tab.eval("JSON.parse(document.querySelector('#legend canvas').dataset.ticks)")
    assert "1e-4" in ticks and "0.01" in ticks, ticks
    assert tab.eval("document.querySelector('#log-select').value") == "log"
    assert "log=1" in tab.eval("location.hash")
    # The picker switches back.
    tab.frame.select_option("#log-select", "linear")
    assert tab.wait_for({"log": False})["log"] is False


def test_long_full_head_draws_with_strided_labels(tab, weights, artifacts_dir):
    rendered = tab.show(**FULL, head=0, view="head")
    assert rendered["layout"] == "full"
    info = tab.canvas_info()
    layout = info["layout"]
    assert (layout["rows"], layout["cols"]) == (TOKENS, TOKENS)
    # The whole matrix fits the page: less than a pixel per position, a label every n-th.
    assert layout["cell"] < 1 and info["cssWidth"] <= 1400
    assert layout["stride"] > 1 and TOKENS / layout["stride"] < 120
    # Less than a pixel per position: the mouse lands on a position next to the one aimed at.
    text = tab.hover_cell(1500, 0)
    q, token, value = re.match(r"query (\d+) “(.*)” → key 0 “%s”  (\S+)$" % NAMES[0], text).groups()
    q = int(q)
    assert abs(q - 1500) <= 3 and token == NAMES[q], text
    assert faithful(float(value), float(weights[0, 0, q, 0]), float(weights[0, 0, q].max())), text
    tab.screenshot(artifacts_dir / "long_full.png")
    # Dragging zooms into the full matrix (every position is exact there).
    bottom = layout["y"] + TOKENS * layout["cell"]
    drag(tab, (layout["x"] + 2, bottom - 40), (layout["x"] + 60, bottom - 2))
    rendered = tab.wait_for({"layout": "zoom"})
    assert rendered["window"] is None
    zoomed = tab.canvas_info()["layout"]
    q, k = zoomed["offset"]["query"], zoomed["offset"]["key"]
    assert k <= 6 and 1900 < q and zoomed["rows"] < 200 and q + zoomed["rows"] <= TOKENS
    assert zoomed["cell"] >= 1  # the region is drawn at full resolution, a pixel or more per position
    text = tab.hover_cell(0, 0)
    assert text.startswith("query %d “%s” → key %d “%s”  " % (q, NAMES[q], k, NAMES[k])), text
    assert faithful(float(text.split()[-1]), float(weights[0, 0, q, k]), float(weights[0, 0, q].max()))


def test_all_heads_of_a_pooled_step_draw_their_overviews(tab, header, weights):
    tab.show(**POOLED, head=0, view="heads")
    tiles = tab.canvas_info()["tiles"]
    nq, nk = header["pooled"]["grid"]
    bq, bk = header["pooled"]["block"]
    assert [(t["rows"], t["cols"]) for t in tiles[:2]] == [(nq, nk)] * 2
    t = tiles[0]
    tab.page.mouse.move(*tab.page_point(t["x"] + 0.5 * t["cell"], t["y"] + (nq - 0.5) * t["cell"]))
    text = tab.tooltip()
    assert text.startswith("head 0: queries %d–%d (%s … %s) → keys 0–%d " % (
        (nq - 1) * bq, TOKENS - 1, NAMES[(nq - 1) * bq], NAMES[TOKENS - 1], bk - 1)), text
    assert tab.errors == []


def test_token_lines_of_a_pooled_step_say_why_not(tab):
    tab.eval("h => { location.hash = h }", "#run=long&tag=lm%2Fpooled&step=0&head=0&view=lines")
    deadline = time.monotonic() + 30
    while "stored pooled" not in (tab.eval("document.querySelector('#error').textContent") or ""):
        assert time.monotonic() < deadline, "no message for token lines of a pooled step"
        time.sleep(0.05)
    assert "open One head" in tab.eval("document.querySelector('#error').textContent")
    tab.show(**POOLED, head=0, view="head")
    assert tab.eval("document.querySelector('#error').hidden") is True


def test_token_selection_needs_exact_positions_and_uses_them_when_zoomed(tab, header, weights):
    """Token selection (health-view) on a long head: an overview's columns are blocks, so it asks
    to zoom first; in a zoomed region a shift-click selects the key's position in the sequence."""
    tab.show(**POOLED, head=0, view="head")
    hint = tab.eval("document.querySelector('#select-hint').textContent")
    assert "needs exact key positions" in hint and "zoom into a stored window" in hint, hint
    # A region of the last queries' window whose keys start at 100: column c is key 100 + c.
    q0 = TOKENS - 64
    rendered = tab.show(**POOLED, head=0, view="head", zoom="%d-%d,100-200" % (q0, TOKENS))
    assert rendered["layout"] == "zoom" and rendered["keys"] == []
    layout = tab.canvas_info()["layout"]
    assert layout["offset"] == {"query": q0, "key": 100}
    tab.page.keyboard.down("Shift")
    try:
        tab.page.mouse.click(*tab.page_point(*cell_point(layout, 10, 5)))
    finally:
        tab.page.keyboard.up("Shift")
    rendered = tab.wait_for({"layout": "zoom", "keys": [105], "massPending": 0}, timeout=60)
    assert rendered["keys"] == [105] and "keys=105" in tab.eval("location.hash")
    assert tab.canvas_info()["layout"]["keys"] == [5]  # drawn column 5 of the region
    # Mass on key 105: lm/full (the same head stored in full) has a number; lm/pooled says why not.
    rows = rendered["mass"]
    numbers = [r for r in rows if r]
    assert len(rows) == 2 and len(numbers) == 1 and len(numbers[0]) == 1, rows
    w = np.nan_to_num(np.where(long_mask(), weights[0, 0], np.nan))
    want = float(w[:, 105].mean())
    assert abs(numbers[0][0] - want) <= 0.03 * want + 1e-3, (numbers, want)
    assert "105: " in tab.eval("document.querySelector('#mass-panel').textContent")
    # Back on the overview the block holding key 105 is marked and the mass panel stays.
    tab.frame.click("#zoom-out")
    rendered = tab.wait_for({"layout": "pooled", "keys": [105]})
    _, bk = header["pooled"]["block"]
    assert tab.canvas_info()["layout"]["keys"] == [105 // bk]
    assert tab.eval("document.querySelector('#mass-panel') !== null")
    assert "blocks holding the selected keys are marked" in tab.eval("document.querySelector('#select-hint').textContent")
    # A shift-click on the overview zooms (it never selects a block).
    layout = tab.canvas_info()["layout"]
    nq, _ = header["pooled"]["grid"]
    tab.page.keyboard.down("Shift")
    try:
        tab.page.mouse.click(*tab.page_point(*cell_point(layout, nq - 1, 0)))
    finally:
        tab.page.keyboard.up("Shift")
    assert tab.wait_for({"layout": "zoom"})["keys"] == [105]
    tab.frame.click("#mass-clear")
    assert tab.wait_for({"keys": []})["keys"] == []
    assert tab.errors == []


def test_save_on_a_pooled_head_downloads_its_overview_and_windows(tab, server, header, tmp_path):
    """"Save .npy" on a pooled head saves a .npz (no full matrix exists): the overview and every
    exact window, the same arrays `/export` serves, loadable without pickle."""
    tab.show(**POOLED, example=0, head=1, view="head")
    button = tab.frame.locator("#export-npy")
    assert button.text_content() == "Save .npz" and button.is_enabled()
    with tab.page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename == "long_lm_pooled_step0_example0_head1.npz"
    path = tmp_path / download.suggested_filename
    download.save_as(str(path))
    saved = np.load(path, allow_pickle=False)
    query = urllib.parse.urlencode(dict(POOLED, example=0, head=1))
    status, _, body = http_get(server + "/data/plugin/attention/export?" + query)
    assert status == 200
    served = np.load(io.BytesIO(body), allow_pickle=False)
    assert saved.files == served.files
    assert saved["window_names"].tolist() == [w["name"] for w in header["windows"]]
    for name in saved.files:
        np.testing.assert_array_equal(saved[name], served[name])
    assert saved["means"].shape == tuple(header["pooled"]["grid"])
    tab.show(**FULL, head=0, view="head")
    assert button.text_content() == "Save .npy"
    assert tab.errors == []
