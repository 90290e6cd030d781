"""The run filter on a sweep, in a real headless Chromium inside a real `tensorboard`.

A logdir of 251 runs (a learning-rate x seed sweep of one small layer, written by
`AttentionWriter`, plus a baseline) is served by one `tensorboard`. Typing a regular expression
into the tab's run filter, key by key, narrows the run picker and the comparison's checkboxes to
the runs it matches (case-insensitive, as TensorBoard's run selector); an invalid expression is
marked as such, matches no run and breaks nothing; the filter and the compared runs survive in
the link and in a reopened tab.
"""

import re
import time
import urllib.parse

import numpy as np
import pytest

from tb_attention_plugin import AttentionWriter
from tensorboard_process import get_json, tensorboard
from test_browser_tab import Tab

TAG = "enc/layer_0"
RATES = ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0"]
SEEDS = range(25)
SWEEP = ["lr_%s_seed%02d" % (rate, seed) for rate in RATES for seed in SEEDS]
BASELINE = "baseline"
RUNS = sorted(SWEEP + [BASELINE])
# Typed key by key: on the way it passes through invalid expressions ("lr_0\", "...[12").
FILTER = r"LR_0\.00[12]_seed1[0-2]$"
MATCHING = ["lr_0.001_seed10", "lr_0.001_seed11", "lr_0.001_seed12",
            "lr_0.002_seed10", "lr_0.002_seed11", "lr_0.002_seed12"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("sweep")
    for index, run in enumerate(RUNS):  # one step of a 1-head 2x2 layer: a tiny file per run
        weights = np.array([[[[0.5, 0.5], [0.2 + index / 1000, 0.8 - index / 1000]]]], np.float32)
        with AttentionWriter(logdir / run) as writer:
            writer.attention(TAG, weights, step=0)
    with tensorboard(logdir, tensorflow=False) as base:
        deadline = time.monotonic() + 120
        while len(get_json(base + "/data/plugin/attention/runs")["runs"]) < len(RUNS):
            assert time.monotonic() < deadline, "tensorboard did not load every run"
            time.sleep(0.5)
        yield base


@pytest.fixture(scope="module")
def tab(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    yield Tab(context.new_page(), server)
    context.close()


def checkbox_runs(tab):
    return tab.eval("[...document.querySelectorAll('#compare-runs input[type=checkbox]')]"
                    ".map((i) => i.value)")


def checked_runs(tab):
    return tab.eval("[...document.querySelectorAll('#compare-runs input[type=checkbox]')]"
                    ".filter((i) => i.checked).map((i) => i.value)")


def picker_runs(tab):
    return tab.eval("[...document.querySelectorAll('#run-select option')].map((o) => o.value)")


def compared(tab):
    return [entry["run"] for entry in tab.rendered()["compare"]]


def type_filter(tab, text):
    box = tab.frame.locator("#run-filter")
    box.fill("")
    box.press_sequentially(text)
    tab.wait_idle()


def test_a_regex_narrows_the_run_picker_and_the_compared_runs(tab):
    tab.show(run=BASELINE, tag=TAG, step=0, view="compare")
    assert checkbox_runs(tab) == RUNS and len(picker_runs(tab)) == len(RUNS)
    type_filter(tab, FILTER)
    assert [run for run in RUNS if re.search(FILTER, run, re.IGNORECASE)] == MATCHING
    assert checkbox_runs(tab) == MATCHING
    assert tab.frame.locator("#run-filter").get_attribute("aria-invalid") == "false"
    assert tab.frame.locator("#run-filter-status").text_content() == "6 of %d runs match" % len(RUNS)
    # The run picker keeps the current run (a baseline the filter leaves out) next to the matches.
    assert picker_runs(tab) == [BASELINE] + MATCHING
    # No run chosen yet: the first two matching runs are compared.
    assert compared(tab) == MATCHING[:2] and checked_runs(tab) == MATCHING[:2]
    tab.frame.locator("#compare-runs input[value='%s']" % MATCHING[4]).check()
    tab.wait_idle()
    assert compared(tab) == [MATCHING[0], MATCHING[1], MATCHING[4]]
    assert tab.errors == []


def test_an_invalid_regex_is_shown_as_such_and_breaks_nothing(tab):
    type_filter(tab, "lr_(")
    box = tab.frame.locator("#run-filter")
    assert box.get_attribute("aria-invalid") == "true" and "invalid" in box.get_attribute("class")
    status = tab.frame.locator("#run-filter-status").text_content()
    assert "Invalid regular expression" in status and "no run matches" in status
    assert checkbox_runs(tab) == [] and compared(tab) == []
    assert "the run filter is invalid" in tab.frame.locator("#compare-runs").text_content()
    assert picker_runs(tab) == [BASELINE]
    assert tab.eval("document.querySelector('#error').hidden") is True
    # The rest of the tab still works: another view draws the current run.
    assert tab.show(run=BASELINE, tag=TAG, step=0, view="head")["run"] == BASELINE
    assert tab.errors == []


def test_the_filter_and_the_choice_survive_in_the_link_and_a_reopened_tab(tab):
    tab.show(run=BASELINE, tag=TAG, step=0, view="compare")  # a hash with no filter, no choice
    assert checkbox_runs(tab) == RUNS
    type_filter(tab, FILTER)
    for run in (MATCHING[0], MATCHING[4]):
        tab.frame.locator("#compare-runs input[value='%s']" % run).check()
        tab.wait_idle()
    chosen = compared(tab)
    assert MATCHING[4] in chosen and set(chosen) <= set(MATCHING)
    link = tab.eval("document.querySelector('#permalink').href")
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(link).fragment)
    assert state["runFilter"] == [FILTER] and state["compare"] == chosen
    tab.open()  # TensorBoard's own URL has no iframe hash: the tab restores from localStorage
    tab.wait_for({"view": "compare"})
    assert tab.frame.locator("#run-filter").input_value() == FILTER
    assert checkbox_runs(tab) == MATCHING and compared(tab) == chosen
    assert checked_runs(tab) == chosen
    assert tab.errors == []
