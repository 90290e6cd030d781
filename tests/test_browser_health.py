"""The head-health view, token selection and the exports in a real headless Chromium, inside a
real `tensorboard` process, on a run whose health is known (tests/health_logdirs.py): a
previous-token head emerges at step 300, a head becomes a first-token head at step 400 (its entropy
at the floor, read as its role: no alarm), a logged layer's max logit passes 100 at step 400 and
that head collapses onto a position no role names at step 500 (an alarm).
"""

import io
import json
import struct

import numpy as np
import pytest

from health_logdirs import (
    COLLAPSE_STEP,
    EMERGE_STEP,
    L1_COLLAPSE_STEP,
    LOGIT_STEP,
    LONG_STEPS,
    STEPS,
    TOKENS,
    layer0_weights,
    write_health_logdir,
)
from tensorboard_process import tensorboard
from test_browser_tab import Tab

RUN = "health"
L0 = "lm/layer_0"
L1 = "lm/layer_1"
PREVIOUS_TOKEN_BLUE = (0x1E, 0x88, 0xE5)  # frontend/lib/health.js ROLES


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = write_health_logdir(tmp_path_factory.mktemp("health-logdir"))
    with tensorboard(logdir, tensorflow=False) as base:
        yield base


@pytest.fixture(scope="module")
def tab(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1,
                                  accept_downloads=True)
    page = context.new_page()
    yield Tab(page, server)
    context.close()


def grid_info(tab):
    return json.loads(tab.eval("document.querySelector('#view canvas.health-canvas').dataset.grid"))


def cell_of(info, tag, head):
    return next(c for c in info["cells"] if c["tag"] == tag and c["head"] == head)


def click_canvas(tab, selector, x, y, shift=False):
    frame_box = tab.page.locator("iframe").bounding_box()
    rect = tab.eval("s => { const r = document.querySelector(s).getBoundingClientRect(); return [r.left, r.top]; }",
                    selector)
    if shift:
        tab.page.keyboard.down("Shift")
    try:
        tab.page.mouse.click(frame_box["x"] + rect[0] + x, frame_box["y"] + rect[1] + y)
    finally:
        if shift:
            tab.page.keyboard.up("Shift")


SHOWN = [0]


def show(tab, **state):
    """tab.show with a throw-away hash entry, so that showing the view already shown (the same
    hash, which fires no hashchange) draws it again too."""
    SHOWN[0] += 1
    rendered = tab.show(**state, shown=SHOWN[0])
    return rendered


def show_health(tab, step=600, measure=None):
    state = dict(run=RUN, tag=L0, step=step, view="health", healthPending=0)  # complete, not partial
    if measure:
        state["measure"] = measure
    return show(tab, **state)


def test_grid_draws_every_head_with_its_role_and_markers_at_their_steps(tab, artifacts_dir):
    rendered = show_health(tab)
    assert rendered["healthLayers"] == 2 and rendered["healthSteps"] == len(STEPS)
    info = grid_info(tab)
    assert info["steps"] == STEPS and info["current"] == 600 and info["measure"] == "entropy"
    assert [(c["tag"], c["head"]) for c in info["cells"]] == [(L0, 0), (L0, 1), (L0, 2), (L1, 0), (L1, 1)]
    assert [cell_of(info, L0, h)["role"] for h in range(3)] == ["diffuse", "previous-token", "first-token"]

    def marker(tag, head, kind):
        found = [m for m in info["markers"] if m["tag"] == tag and m["head"] == head and m["kind"] == kind]
        assert len(found) == 1, (tag, head, kind, info["markers"])
        return found[0]

    def x_of(cell, step):
        return cell["x"] + info["pad"] + (step - STEPS[0]) / (STEPS[-1] - STEPS[0]) * (cell["width"] - 2 * info["pad"])

    emerged = marker(L0, 1, "emergence")
    assert emerged["step"] == EMERGE_STEP and emerged["role"] == "previous-token"
    assert emerged["x"] == pytest.approx(x_of(cell_of(info, L0, 1), EMERGE_STEP))
    # The first-token head reached the entropy floor with its role: marked as the role it
    # became, with no collapse alarm (the server's judgement, drawn as is).
    first_token = marker(L0, 2, "emergence")
    assert first_token["step"] == COLLAPSE_STEP and first_token["role"] == "first-token"
    assert not [m for m in info["markers"] if m["type"] == "alarm" and m["tag"] == L0], info["markers"]
    collapse = marker(L1, 0, "entropy_collapse")  # one-hot on no role's position: an alarm
    assert collapse["step"] == L1_COLLAPSE_STEP
    logit = marker(L1, 0, "logit_growth")
    assert logit["step"] == LOGIT_STEP
    assert logit["x"] == pytest.approx(x_of(cell_of(info, L1, 0), LOGIT_STEP))
    # The emergence diamond is drawn in the previous-token colour where the layout says.
    rgb = tab.pixel(emerged["x"], emerged["y"])
    assert all(abs(a - b) <= 3 for a, b in zip(rgb, PREVIOUS_TOKEN_BLUE)), rgb
    # The cell of a previous-token head is tinted with its role's colour (its left bar).
    cell = cell_of(info, L0, 1)
    rgb = tab.pixel(cell["x"] + 1, cell["y"] + 2)
    assert all(abs(a - b) <= 3 for a, b in zip(rgb, PREVIOUS_TOKEN_BLUE)), rgb
    legend = tab.eval("document.querySelector('#health-legend').textContent")
    assert "previous-token" in legend and "entropy collapse" in legend and "logit growth" in legend
    tab.screenshot(artifacts_dir / "health_view.png")


def test_a_pooled_layer_is_in_the_grid_like_any_other_and_opens_its_overview(tab):
    # Run "long": one layer stored pooled, with the health records the callback writes for it.
    rendered = show(tab, run="long", tag="lm/long", step=100, view="health", healthPending=0)
    assert rendered["healthLayers"] == 1 and rendered["healthSteps"] == len(LONG_STEPS)
    info = grid_info(tab)
    assert [(c["tag"], c["head"], c["role"]) for c in info["cells"]] == [
        ("lm/long", 0, "diffuse"), ("lm/long", 1, "previous-token")]
    emerged = [m for m in info["markers"] if m["kind"] == "emergence"]
    assert [(m["head"], m["step"]) for m in emerged] == [(1, 100)]
    cell = cell_of(info, "lm/long", 1)
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    click_canvas(tab, "#view canvas", cell["x"] + cell["width"] * 0.15, cell["y"] + cell["height"] / 2)
    rendered = tab.wait_for({"view": "head", "tag": "lm/long", "head": 1, "step": 100})
    assert rendered["layout"] == "pooled"
    assert tab.errors == []


def test_groups_change_over_training(tab):
    show_health(tab, step=0)
    info = grid_info(tab)
    assert {cell_of(info, L0, h)["group"] for h in range(3)} == {"A"}  # all three alike at step 0
    show_health(tab, step=300)
    info = grid_info(tab)
    assert [cell_of(info, L0, h)["group"] for h in range(3)] == ["A", None, "A"]
    show_health(tab, step=600)
    info = grid_info(tab)
    assert [cell_of(info, L0, h)["group"] for h in range(3)] == [None, None, None]


def test_changes_list_names_the_head_and_step_and_opens_it(tab):
    show_health(tab)
    sentences = tab.eval("Array.from(document.querySelectorAll('#health-changes li')).map(li => li.textContent)")
    expected = "%s head 1 became a previous-token head at step %d" % (L0, EMERGE_STEP)
    assert expected in sentences
    assert any("max logit passed 100 at step %d" % LOGIT_STEP in s for s in sentences)
    index = sentences.index(expected)
    tab.eval("i => { delete document.querySelector('#view').dataset.rendered;"
             " document.querySelectorAll('#health-changes li button')[i].click(); }", index)
    rendered = tab.wait_for({"view": "head", "tag": L0, "head": 1, "step": EMERGE_STEP})
    assert rendered["view"] == "head"


def test_clicking_a_head_opens_its_heatmap_at_the_current_step(tab):
    show_health(tab, step=500)
    cell = cell_of(grid_info(tab), L0, 2)
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    # Middle of the cell, away from the markers at its top and bottom edges.
    click_canvas(tab, "#view canvas", cell["x"] + cell["width"] * 0.15, cell["y"] + cell["height"] / 2)
    tab.wait_for({"view": "head", "tag": L0, "head": 2, "step": 500})


def test_clicking_a_marker_opens_the_head_at_the_markers_step(tab):
    show_health(tab, step=600)
    info = grid_info(tab)
    marker = next(m for m in info["markers"] if m["tag"] == L1 and m["kind"] == "logit_growth")
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    click_canvas(tab, "#view canvas", marker["x"], marker["y"])
    tab.wait_for({"view": "head", "tag": L1, "head": 0, "step": LOGIT_STEP})


def test_measure_picker_draws_another_measure(tab):
    show_health(tab)
    tab.eval("() => { delete document.querySelector('#view').dataset.rendered;"
             " const s = document.querySelector('#health-measure'); s.value = 'max_logit';"
             " s.dispatchEvent(new Event('change')); }")
    rendered = tab.wait_for({"view": "health", "measure": "max_logit"})
    assert rendered["measure"] == "max_logit"
    info = grid_info(tab)
    assert info["domain"] == [0, 170]  # the logged max logits of lm/layer_1


def test_token_selection_gives_the_mass_of_every_head(tab, artifacts_dir):
    show(tab, run=RUN, tag=L0, step=600, view="head", head=2)
    layout = tab.canvas_info()["layout"]
    assert layout["keys"] == []
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    # Shift-click the cell (row 4, key 0): selects key 0 ("The").
    click_canvas(tab, "#view canvas", layout["x"] + 0.5 * layout["cell"], layout["y"] + 4.5 * layout["cell"],
                 shift=True)
    rendered = tab.wait_for({"view": "head", "keys": [0], "massPending": 0})
    assert rendered["keys"] == [0]
    weights = layer0_weights(600)[0]
    expected = weights[:, :, 0].mean(axis=1)  # mean over queries of the weight on key 0
    mass = rendered["mass"]
    assert np.allclose(mass[0], expected, atol=0.01), (mass[0], expected)
    assert mass[0][2] == pytest.approx(1.0, abs=1e-3)  # the first-token head
    assert tab.canvas_info()["layout"]["keys"] == [0]
    chips = tab.eval("Array.from(document.querySelectorAll('#mass-panel .chip bdi')).map(b => b.textContent)")
    assert chips == [TOKENS[0]]  # the hostile token, as text
    assert tab.eval("document.querySelectorAll('#mass-panel img').length") == 0
    assert tab.dialogs == []
    tab.screenshot(artifacts_dir / "health_token_mass.png")
    # Clicking key 3's label adds it; the mass is then that of keys 0 and 3.
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    click_canvas(tab, "#view canvas", layout["x"] + 3.5 * layout["cell"], layout["y"] - 8)
    rendered = tab.wait_for({"view": "head", "keys": [0, 3], "massPending": 0})
    assert np.allclose(rendered["mass"][0], weights[:, :, [0, 3]].sum(axis=2).mean(axis=1), atol=0.01)
    # A click on a cell of the mass grid opens that head.
    cell = next(c for c in json.loads(tab.eval("document.querySelector('.mass-canvas').dataset.mass"))["cells"]
                if c["tag"] == L0 and c["head"] == 1)
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    click_canvas(tab, ".mass-canvas", cell["x"] + 5, cell["y"] + cell["height"] / 2)
    tab.wait_for({"view": "head", "tag": L0, "head": 1, "keys": [0, 3]})
    tab.eval("delete document.querySelector('#view').dataset.rendered; document.querySelector('#mass-clear').click()")
    rendered = tab.wait_for({"view": "head", "head": 1})
    assert rendered["keys"] == []


def test_exports_download_npy_and_filmstrip(tab, tmp_path):
    show(tab, run=RUN, tag=L0, step=600, view="head", head=1)
    with tab.page.expect_download() as download:
        tab.frame.click("#export-npy")
    path = tmp_path / "matrix.npy"
    download.value.save_as(path)
    assert download.value.suggested_filename.endswith(".npy")
    matrix = np.load(path)
    assert matrix.shape == (len(TOKENS), len(TOKENS)) and matrix.dtype == np.float32
    expected = layer0_weights(600)[0, 1]
    visible = np.tril(np.ones_like(expected, dtype=bool))
    assert np.isnan(matrix[~visible]).all()
    assert np.allclose(matrix[visible], expected[visible], atol=0.01)

    with tab.page.expect_download() as download:
        tab.frame.click("#filmstrip-button")
    data = open(download.value.path(), "rb").read()
    assert download.value.suggested_filename.endswith(".png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    cell = max(1, min(8, 96 // len(TOKENS)))  # docs/http_api.md: the default cell
    assert (width, height) == (len(STEPS) * len(TOKENS) * cell + (len(STEPS) - 1) * 2, len(TOKENS) * cell)
    # The health view shows no single head: the exports are off there.
    show_health(tab)
    assert tab.eval("document.querySelector('#export-npy').disabled") is True
    assert tab.errors == []
