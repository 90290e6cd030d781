"""The Attention tab in a real headless Chromium, inside TensorBoard's own page and iframe.

One `tensorboard` process and one browser page serve the whole module; each test sets the view
it needs through the tab's URL hash (the same way a shared link reopens a view) and waits until
the tab reports that view drawn. Expected colours come from the logged weights and reference
entries of matplotlib's viridis table, not from the frontend's own lookup table.
"""

import json
import struct
import time
import urllib.parse
import zlib

import numpy as np
import pytest

from attention_logdirs import (
    FUTURE_TAG,
    GQA_KV_HEADS,
    HOSTILE,
    SOURCE,
    TARGET,
    VISION_GRID,
    VISION_PREFIX,
    VISION_REDUCED,
    text_mask,
    text_weights,
    write_demo_logdir,
)
from tb_attention_plugin import AttentionWriter
from tensorboard_process import tensorboard

# matplotlib viridis entries (index -> 8-bit RGB), for checking drawn pixels independently.
VIRIDIS = {0: (68, 1, 84), 22: (72, 32, 113), 128: (33, 145, 140), 255: (253, 231, 37)}
MASKED = (200, 200, 200)
TOLERANCE = 3


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return write_demo_logdir(tmp_path_factory.mktemp("browser-logdir"))


@pytest.fixture(scope="module")
def server(logdir):
    with tensorboard(logdir, tensorflow=False) as base:
        yield base


class Tab:
    """TensorBoard's page with the Attention tab's iframe, and helpers to drive the tab."""

    def __init__(self, page, base):
        self.page = page
        self.base = base
        self.dialogs = []
        self.errors = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.open()

    def open(self):
        self.page.goto(self.base + "/#attention")
        self.page.wait_for_selector("iframe", timeout=60000)
        self.frame = self.page.locator("iframe").element_handle().content_frame()
        self.frame.wait_for_selector("#view canvas", timeout=60000)
        self.wait_idle()

    def eval(self, script, arg=None):
        return self.frame.evaluate(script, arg)

    def wait_idle(self, timeout=30):
        deadline = time.monotonic() + timeout
        while self.eval("document.documentElement.dataset.busy") != "0":
            assert time.monotonic() < deadline, "the tab stayed busy"
            time.sleep(0.05)

    def rendered(self):
        text = self.eval("(document.querySelector('#view')?.dataset.rendered) || 'null'")
        return json.loads(text)

    def show(self, timeout=30, **state):
        """Sets the view through the iframe's URL hash and waits until it is drawn."""
        state.setdefault("query", None)
        hash_state = {k: v for k, v in state.items() if v is not None}
        self.eval("h => { delete document.querySelector('#view').dataset.rendered; location.hash = h; }",
                  "#" + urllib.parse.urlencode(hash_state))
        return self.wait_for(state, timeout)

    def wait_for(self, state, timeout=30):
        """Waits until the tab is idle with `state` drawn; fails on an error that stays shown."""
        deadline = time.monotonic() + timeout
        error_since = None
        while True:
            rendered = self.rendered()
            idle = self.eval("document.documentElement.dataset.busy") == "0"
            if idle and rendered and all(rendered.get(k) == v or str(rendered.get(k)) == str(v)
                                         for k, v in state.items() if k in rendered):
                return rendered
            # An error of the previous view may show until the new one is drawn (the hash
            # change is handled a moment later): only an error that persists fails.
            error = self.eval("document.querySelector('#error').textContent")
            if error and idle:
                error_since = error_since or time.monotonic()
                assert time.monotonic() - error_since < 2, error
            else:
                error_since = None
            assert time.monotonic() < deadline, "view %s not drawn; last %s" % (state, rendered)
            time.sleep(0.05)

    def canvas_info(self):
        return self.eval(
            """() => { const c = document.querySelector('#view canvas');
                       return {layout: c.dataset.layout ? JSON.parse(c.dataset.layout) : null,
                               tiles: c.dataset.tiles ? JSON.parse(c.dataset.tiles) : null,
                               overlay: c.dataset.overlay ? JSON.parse(c.dataset.overlay) : null,
                               dpr: window.devicePixelRatio, width: c.width, height: c.height,
                               cssWidth: c.getBoundingClientRect().width}; }"""
        )

    def pixel(self, x, y):
        """RGB of the view canvas at CSS point (x, y) of the canvas."""
        return tuple(
            self.eval(
                """([x, y]) => { const c = document.querySelector('#view canvas');
                                 const d = window.devicePixelRatio;
                                 return Array.from(c.getContext('2d').getImageData(
                                     Math.floor(x * d), Math.floor(y * d), 1, 1).data.slice(0, 3)); }""",
                [x, y],
            )
        )

    def cell_pixel(self, row, col):
        layout = self.canvas_info()["layout"]
        return self.pixel(layout["x"] + (col + 0.5) * layout["cell"], layout["y"] + (row + 0.5) * layout["cell"])

    def page_point(self, x, y):
        """Page coordinates of CSS point (x, y) of the view canvas."""
        frame_box = self.page.locator("iframe").bounding_box()
        rect = self.eval("() => { const r = document.querySelector('#view canvas').getBoundingClientRect();"
                         " return [r.left, r.top]; }")
        return frame_box["x"] + rect[0] + x, frame_box["y"] + rect[1] + y

    def hover_cell(self, row, col):
        layout = self.canvas_info()["layout"]
        x, y = self.page_point(layout["x"] + (col + 0.5) * layout["cell"], layout["y"] + (row + 0.5) * layout["cell"])
        self.page.mouse.move(x, y)
        return self.tooltip()

    def tooltip(self):
        return self.eval("() => { const t = document.querySelector('.tooltip'); return t.hidden ? null : t.textContent; }")

    def screenshot(self, path):
        self.frame.locator("#view").screenshot(path=str(path))


@pytest.fixture(scope="module")
def tab(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1,
                                  accept_downloads=True)
    page = context.new_page()
    yield Tab(page, server)
    context.close()


def close(rgb, expected, tolerance=TOLERANCE):
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected))


def peak_col(step, head, example, row):
    """Column of the 0.7 weight of text_weights (see attention_logdirs.text_weights)."""
    return (row + head + example + step // 10) % (len(SOURCE) - 1)


TEXT = {"run": "translate", "tag": "decoder/cross_attention"}


def test_heatmap_colours_match_logged_weights(tab, artifacts_dir):
    tab.show(**TEXT, step=10, head=0, view="head")
    weights = text_weights(10)[0, 0]
    mask = text_mask()[0, 0]
    for row in range(len(TARGET)):
        for col in range(len(SOURCE)):
            rgb = tab.cell_pixel(row, col)
            if not mask[row, col]:
                expected = MASKED
            elif weights[row, col] == weights.max():
                expected = VIRIDIS[255]  # the per-head scale's top
            else:
                # 0.06 of a 0.7 maximum: code round(0.06/0.7*254) = 22, colour index 22.
                expected = VIRIDIS[22]
            assert close(rgb, expected), (row, col, rgb, expected)
    assert tab.cell_pixel(1, peak_col(10, 0, 0, 1)) != tab.cell_pixel(1, 0)
    tab.screenshot(artifacts_dir / "tab_head.png")


def test_hover_shows_tokens_and_exact_weight(tab):
    tab.show(**TEXT, step=10, head=0, view="head")
    # Row 1 ("我") puts 0.7 on column 2, the hostile token.
    assert peak_col(10, 0, 0, 1) == 2 and SOURCE[2] == HOSTILE
    assert tab.hover_cell(1, 2) == "我 → %s  0.7000" % HOSTILE
    assert tab.hover_cell(3, 0) == "三本 → i  %.4f" % (22 * np.float32(0.7) / 254)
    assert tab.hover_cell(0, 6) == "<s> → <pad>  masked"
    # The hostile key label is truncated on the canvas; hovering it shows the whole token.
    layout = tab.canvas_info()["layout"]
    tab.page.mouse.move(*tab.page_point(layout["x"] + 2.5 * layout["cell"], layout["y"] - 4))
    assert tab.tooltip() == "key 2: " + HOSTILE
    tab.page.mouse.move(*tab.page_point(layout["x"] - 8, layout["y"] + 1.5 * layout["cell"]))
    assert tab.tooltip() == "query 1: 我"


def test_hostile_token_is_text_not_markup(tab):
    tab.show(**TEXT, step=10, head=0, view="head", query=1)
    chips = tab.eval("Array.from(document.querySelectorAll('.pinned-summary .chip')).map(c => c.textContent)")
    assert chips[0] == "%s 0.7000" % HOSTILE
    assert tab.eval("document.querySelectorAll('img').length") == 0
    assert tab.eval("document.querySelectorAll('.pinned-summary *:not(bdi)').length") == len(chips) + 1
    assert tab.dialogs == []
    assert tab.errors == []


def test_clicking_a_query_label_pins_its_row(tab):
    tab.show(**TEXT, step=10, head=0, view="head")
    layout = tab.canvas_info()["layout"]
    x, y = tab.page_point(layout["x"] - 10, layout["y"] + 3.5 * layout["cell"])
    tab.page.mouse.click(x, y)
    rendered = tab.wait_for({"step": 10, "query": 3})
    assert "query=3" in tab.eval("location.hash")
    assert tab.eval("document.querySelector('.pinned-summary strong').textContent").startswith("Query 3 “三本”")
    # Other rows are dimmed; the pinned row keeps its colours.
    assert close(tab.cell_pixel(3, peak_col(10, 0, 0, 3)), VIRIDIS[255])
    assert not close(tab.cell_pixel(2, peak_col(10, 0, 0, 2)), VIRIDIS[255])
    assert rendered["head"] == 0


def test_arrow_keys_and_slider_change_the_step(tab):
    tab.show(**TEXT, step=10, head=1, view="head")
    before = tab.cell_pixel(0, peak_col(20, 1, 0, 0))
    tab.frame.focus("#step-slider")
    tab.page.keyboard.press("ArrowRight")
    tab.wait_for({"step": 20})
    assert tab.eval("document.querySelector('#step-label').textContent").startswith("step 20")
    assert close(tab.cell_pixel(0, peak_col(20, 1, 0, 0)), VIRIDIS[255])
    assert not close(before, VIRIDIS[255])
    assert close(tab.cell_pixel(0, peak_col(10, 1, 0, 0)), VIRIDIS[22])
    # Arrow keys anywhere on the page (not in a picker) step too.
    tab.frame.locator("#info").click()
    tab.page.keyboard.press("ArrowLeft")
    tab.wait_for({"step": 10})
    assert close(tab.cell_pixel(0, peak_col(10, 1, 0, 0)), VIRIDIS[255])


def test_play_button_walks_through_the_steps(tab):
    tab.show(**TEXT, step=0, head=0, view="head")
    tab.frame.click("#play-button")
    tab.wait_for({"step": 20}, timeout=20)
    deadline = time.monotonic() + 10
    while tab.eval("document.querySelector('#play-button').textContent") != "▶ Play":
        assert time.monotonic() < deadline, "play did not stop at the last step"
        time.sleep(0.1)


def test_small_multiples_and_mean(tab, artifacts_dir):
    tab.show(**TEXT, step=20, head=0, view="heads")
    info = tab.canvas_info()
    tiles = info["tiles"]
    assert len(tiles) == 4  # 3 heads + mean
    weights = text_weights(20)[0]
    for head in range(3):
        t = tiles[head]
        row = 2
        col = peak_col(20, head, 0, row)
        rgb = tab.pixel(t["x"] + (col + 0.5) * t["cell"], t["y"] + (row + 0.5) * t["cell"])
        assert close(rgb, VIRIDIS[255]), (head, rgb)
    # The mean tile: mean over heads of row 0, drawn against its own maximum.
    mean = np.where(text_mask()[0], weights, np.nan).mean(axis=0)
    t = tiles[3]
    col = int(np.nanargmax(mean[0]))
    assert close(tab.pixel(t["x"] + (col + 0.5) * t["cell"], t["y"] + 0.5 * t["cell"]), VIRIDIS[255])
    assert close(tab.pixel(t["x"] + 6.5 * t["cell"], t["y"] + 0.5 * t["cell"]), MASKED)
    tab.screenshot(artifacts_dir / "tab_heads.png")
    # With one scale shared across heads, the mean (whose peak is below 0.7) no longer reaches
    # the top colour; the heads still do.
    tab.show(**TEXT, step=20, head=0, view="heads", scale="shared")
    shared = tab.canvas_info()["tiles"]
    assert json.loads(tab.eval("document.querySelector('#view canvas').dataset.vmax")) == [
        pytest.approx(0.7, abs=0.002)] * 4
    mean_peak = tab.pixel(shared[3]["x"] + (col + 0.5) * shared[3]["cell"], shared[3]["y"] + 0.5 * shared[3]["cell"])
    assert not close(mean_peak, VIRIDIS[255], tolerance=20), mean_peak
    head_peak = peak_col(20, 0, 0, 0)
    assert close(tab.pixel(shared[0]["x"] + (head_peak + 0.5) * shared[0]["cell"], shared[0]["y"] + 0.5 * shared[0]["cell"]),
                 VIRIDIS[255])
    tab.show(**TEXT, step=20, head=0, view="heads")
    # Clicking a tile opens that head large.
    x, y = tab.page_point(tiles[2]["x"] + 3, tiles[2]["y"] + 3)
    tab.page.mouse.click(x, y)
    assert tab.wait_for({"view": "head", "head": 2})["head"] == 2


def test_mean_head_view(tab):
    tab.show(**TEXT, step=20, head="mean", view="head")
    weights = np.where(text_mask()[0], text_weights(20)[0], np.nan)
    mean = weights.mean(axis=0)
    text = tab.hover_cell(4, 1)
    assert text.startswith("书 → have  ")
    assert abs(float(text.split()[-1]) - mean[4, 1]) < 0.003


def test_model_overview(tab, artifacts_dir):
    tab.show(**TEXT, step=20, head=0, view="model")
    tiles = tab.canvas_info()["tiles"]
    # Rows: decoder/cross_attention (3 heads) and decoder/self_attention (2 heads, padded).
    assert len(tiles) == 6
    assert [t is None for t in tiles] == [False, False, False, False, False, True]
    # Causal self-attention: the future (upper triangle) is masked grey.
    t = tiles[3]
    assert close(tab.pixel(t["x"] + 4.5 * t["cell"], t["y"] + 0.5 * t["cell"]), MASKED)
    assert not close(tab.pixel(t["x"] + 0.5 * t["cell"], t["y"] + 4.5 * t["cell"]), MASKED)
    tab.screenshot(artifacts_dir / "tab_model.png")


def test_token_lines(tab, artifacts_dir):
    tab.show(**TEXT, step=20, head=0, view="lines", query=1)
    layout = tab.canvas_info()["layout"]
    col = peak_col(20, 0, 0, 1)
    y0 = layout["top"] + 1.5 * layout["rowHeight"]
    y1 = layout["top"] + (col + 0.5) * layout["rowHeight"]
    x0, x1 = layout["leftX"] + 6, layout["rightX"] - 6
    assert close(tab.pixel((x0 + x1) / 2, (y0 + y1) / 2), VIRIDIS[255], tolerance=40)
    # A pair with a small weight is a faint line: nearly background.
    other = (col + 3) % 6
    y2 = layout["top"] + (other + 0.5) * layout["rowHeight"]
    faint = tab.pixel((x0 + x1) / 2, (y0 + y2) / 2)
    assert min(faint) > 180, faint
    tab.screenshot(artifacts_dir / "tab_lines.png")


def test_vision_overlay(tab, artifacts_dir):
    tab.show(run="vit", tag="encoder/layer_0/attention", step=20, head=0, view="image")
    overlay = tab.canvas_info()["overlay"]
    assert overlay["grid"] == list(VISION_GRID) and overlay["prefix"] == VISION_PREFIX
    assert overlay["query"] == 0
    rows, cols = VISION_GRID
    pw, ph = overlay["width"] / cols, overlay["height"] / rows

    def patch(r, c, rect=overlay):
        return tab.pixel(rect["x"] + (c + 0.5) * pw, rect["y"] + (r + 0.5) * ph)

    # The class token looks at patch (2, 1) at step 20 (attention_logdirs.vision_weights); it
    # lies in the grey part of the probe: 70% viridis top over grey 128.
    blend = tuple(round(0.7 * v + 0.3 * 128) for v in VIRIDIS[255])
    assert close(patch(2, 1), blend, tolerance=4), patch(2, 1)
    # The plain probe image on the left shows the red quadrant.
    plain = {"x": overlay["x"] - overlay["width"] - 24, "y": overlay["y"]}
    assert close(patch(0, 0, plain), (220, 40, 40))
    assert close(patch(3, 3, plain), (40, 40, 220))
    tab.screenshot(artifacts_dir / "tab_image.png")
    # Hovering a patch names it with the query and its exact weight.
    tab.page.mouse.move(*tab.page_point(overlay["x"] + 1.5 * pw, overlay["y"] + 2.5 * ph))
    text = tab.tooltip()
    assert text.startswith("[cls] → patch (2,1)  ") and float(text.split()[-1]) == pytest.approx(overlay["vmax"], abs=0.002)
    # Choosing another query redraws for it.
    tab.frame.select_option("#query-select", "5")
    tab.wait_for({"view": "image", "query": 5})
    assert tab.canvas_info()["overlay"]["query"] == 5
    assert "query=5" in tab.eval("location.hash")


def test_a_reduced_capture_says_what_the_writer_dropped(tab):
    tab.show(run="vit", tag="encoder/layer_0/attention", step=10, head=0, view="head")
    info = tab.eval("document.querySelector('#info').textContent")
    assert info.endswith("reduced by the writer: " + VISION_REDUCED["note"]), info
    tab.show(**TEXT, step=10, head=0, view="head")
    assert "reduced" not in tab.eval("document.querySelector('#info').textContent")


def test_unreadable_tag_shows_its_error_and_the_rest_still_works(tab):
    tab.eval("h => { location.hash = h }", "#" + urllib.parse.urlencode({"run": "translate", "tag": FUTURE_TAG}))
    deadline = time.monotonic() + 30
    while not tab.eval("document.querySelector('#error').textContent"):
        assert time.monotonic() < deadline, "no error shown for a future-version tag"
        time.sleep(0.05)
    error = tab.eval("document.querySelector('#error').textContent")
    assert FUTURE_TAG in error and "format version 99" in error and "upgrade tb-attention" in error
    labels = tab.eval("Array.from(document.querySelectorAll('#tag-select option')).map(o => o.textContent)")
    assert labels == ["decoder/cross_attention", "decoder/self_attention", FUTURE_TAG + " (unreadable)"]
    tab.show(**TEXT, step=10, head=0, view="head")
    assert tab.eval("document.querySelector('#error').hidden") is True
    assert close(tab.cell_pixel(0, peak_col(10, 0, 0, 0)), VIRIDIS[255])


def test_state_survives_reload_and_lives_in_the_hash(tab):
    tab.show(**TEXT, step=10, head=2, view="heads", example=1, cmap="magma")
    # Mark the old document: right after reload() the old canvas may still be found.
    tab.frame.evaluate("window.__beforeReload = true; location.reload()")
    tab.frame.wait_for_function("() => !window.__beforeReload && document.querySelector('#view canvas')",
                                timeout=30000)
    state = tab.wait_for({"step": 10})
    assert state == {"run": "translate", "tag": "decoder/cross_attention", "step": 10, "example": 1,
                     "head": 2, "view": "heads", "query": None}
    assert tab.eval("document.querySelector('#cmap-select').value") == "magma"
    # TensorBoard's own URL holds no iframe hash: a fresh tab restores from localStorage.
    tab.open()
    assert tab.rendered()["view"] == "heads" and tab.rendered()["example"] == 1
    link = tab.eval("document.querySelector('#permalink').href")
    assert "plugin_entry.html?name=attention#" in link and "view=heads" in link


def test_save_png_downloads_the_view(tab, tmp_path):
    tab.show(**TEXT, step=10, head=0, view="head")
    size = tab.eval("[document.querySelector('#view canvas').width, document.querySelector('#view canvas').height]")
    with tab.page.expect_download() as info:
        tab.frame.click("#save-button")
    download = info.value
    assert download.suggested_filename == "attention_translate_decoder_cross_attention_step10_head-0_head.png"
    path = tmp_path / download.suggested_filename
    download.save_as(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(struct.unpack(">II", data[16:24])) == size


def test_new_steps_appear_when_the_run_grows(tab, logdir):
    tab.show(**TEXT, step=20, head=0, view="head")
    with AttentionWriter(logdir / "translate", filename_suffix=".more") as writer:
        writer.attention("decoder/cross_attention", text_weights(30), 30, query_tokens=[TARGET, TARGET],
                         key_tokens=[SOURCE, SOURCE], mask=text_mask())
    deadline = time.monotonic() + 60
    while True:
        tab.frame.click("#reload-button")
        tab.wait_idle()
        if tab.rendered()["step"] == 30:
            break
        assert time.monotonic() < deadline, "step 30 never appeared"
        time.sleep(1)
    assert tab.eval("document.querySelector('#step-label').textContent") == "step 30 (4 of 4)"
    assert close(tab.cell_pixel(0, peak_col(30, 0, 0, 0)), VIRIDIS[255])


def test_grouped_query_heads_and_special_tokens(tab, artifacts_dir):
    gqa = {"run": "gqa", "tag": "decoder/self_attention"}
    tab.show(**gqa, step=10, head=0, view="heads")
    canvas = "document.querySelector('#view canvas')"
    labels = json.loads(tab.eval(canvas + ".dataset.labels"))
    # 4 query heads over 2 key/value heads: a row of heads (a line between the groups), the
    # mean on a row of its own.
    assert labels == ["head 0 · kv 0", "head 1 · kv 0", "head 2 · kv 1", "head 3 · kv 1",
                      "mean of heads"]
    tiles = tab.canvas_info()["tiles"]
    assert len({t["y"] for t in tiles[:4]}) == 1 and tiles[4]["y"] > tiles[0]["y"]
    white = (255, 255, 255)

    def gap_is_white(tile):  # the 10 px gap left of a tile, halfway down
        y = tile["y"] + tile["rows"] * tile["cell"] / 2
        return all(close(tab.pixel(tile["x"] - dx, y), white) for dx in range(2, 9))

    assert gap_is_white(tiles[1]) and gap_is_white(tiles[3])  # within a group
    assert not gap_is_white(tiles[2])  # the line between key/value groups 0 and 1
    assert gap_is_white({**tiles[2], "y": tiles[4]["y"]})  # none beside the mean's row
    tab.screenshot(artifacts_dir / "tab_gqa_heads.png")
    options = tab.eval("Array.from(document.querySelectorAll('#head-select option')).map(o => o.textContent)")
    assert options == ["mean of heads"] + ["head %d · kv %d" % (h, h // GQA_KV_HEADS) for h in range(4)]
    assert "grouped-query: 2 query heads per key/value head" in tab.eval(
        "document.querySelector('#info').textContent")
    # One head, its first query pinned: <s> and </s> are written as special tokens.
    tab.show(**gqa, step=10, head=3, view="head", query=0)
    assert json.loads(tab.eval(canvas + ".dataset.special")) == {"query": [0, 5], "key": [0, 5]}
    title = tab.eval("document.querySelector('.pinned-summary strong bdi').className")
    chips = tab.eval("Array.from(document.querySelectorAll('.pinned-summary .chip bdi'))"
                     ".map(b => [b.textContent, b.className])")
    assert title == "token-special"
    assert chips == [["<s>", "token-special"]]  # the first query sees only the first key
    tab.show(**gqa, step=10, head=3, view="head", query=4)
    chips = dict(tab.eval("Array.from(document.querySelectorAll('.pinned-summary .chip bdi'))"
                          ".map(b => [b.textContent, b.className])"))
    assert chips["<s>"] == "token-special" and chips["我"] == ""
    tab.screenshot(artifacts_dir / "tab_gqa_head.png")
    assert tab.errors == []


def test_crisp_cells_at_device_pixel_ratio_2(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, device_scale_factor=2)
    try:
        hi = Tab(context.new_page(), server)
        hi.show(**TEXT, step=10, head=0, view="head")
        info = hi.canvas_info()
        assert info["dpr"] == 2 and info["width"] == 2 * info["cssWidth"]
        layout = info["layout"]
        assert (layout["cell"] * 2) == int(layout["cell"] * 2)
        # Both device pixels next to a cell border belong to one cell each: no blending.
        col = peak_col(10, 0, 0, 0)
        edge_x = layout["x"] + col * layout["cell"]
        y = layout["y"] + 0.5 * layout["cell"]
        assert close(hi.pixel(edge_x + 0.25, y), VIRIDIS[255], tolerance=0)
        assert close(hi.pixel(edge_x - 0.25, y), VIRIDIS[22], tolerance=1)
    finally:
        context.close()
