"""Hostile tokens, tags, run names and descriptions are shown as text in a real headless Chromium.

The logdir is written by the real `AttentionWriter` and served by a real `tensorboard`; the
strings carry HTML, script, event-handler attributes, quotes, template syntax, HTML entities,
control characters, right-to-left marks and a 3000-character token. Each markup string would set
`window.__pwned` and open a dialog if it ever became HTML. The tab must show every string exactly
(option text, tooltip, pinned-row chips, info line), open no dialog, add no element and raise no
script error; a crafted link (URL hash) must not inject anything either.
"""

import re
import shutil
import time
import urllib.parse

import numpy as np
import pytest

from attention_logdirs import write_unguarded
from tb_attention_plugin import AttentionWriter, encoding
from tensorboard_process import get_json, tensorboard
from test_browser_tab import Tab

MARKUP = [
    '<img src=x onerror="window.__pwned=1;alert(1)">',
    "<script>window.__pwned=2;alert(2)</script>",
    '"><svg onload="window.__pwned=3;alert(3)">',
    "';window.__pwned=4;alert(4);//",
    '</option></select><iframe src="javascript:window.__pwned=5;alert(5)"></iframe>',
    '{{constructor.constructor("window.__pwned=6;alert(6)")()}}',
    "&lt;b&gt;entity&amp; &#60;i&#62;",
]
CONTROL = "bell\x07 esc\x1b[31m tab\t nl\n cr\r del\x7f nul\x00 end"
RTL = "\u202eexe.evil\u202c \u200fשלום\u200e مرحبا"
LONG = "long" + "x" * 3000 + "end"

QUERY_TOKENS = [MARKUP[0], MARKUP[1], CONTROL, RTL, LONG, MARKUP[6]]
KEY_TOKENS = [MARKUP[2], MARKUP[3], MARKUP[4], MARKUP[5], RTL + "\x1b", "<b>plain</b>"]
TAGS = [
    "<img src=x onerror=window.__pwned=7;alert(7)>/attention",
    "\u202egat <script>window.__pwned=8</script>",
    "tag/" + "t" * 1000,
]
RUNS = [
    "<img src=x onerror=window.__pwned=9;alert(9)> \u202eRTL",
    "run_" + "r" * 200,
]
# TensorBoard's Rust data server cannot read blobs of runs or tags whose names hold characters
# JSON escapes (quotes, backslashes, control characters): the tab lists them as unreadable, with
# the reason as text.
ESCAPED_TAG = "'single' \"double\" bell\x07 <b>bold</b>"
ESCAPED_RUN = 'zz"><svg onload="window.__pwned=10;alert(10)"> \x07'
DESCRIPTION = '<img src=x onerror="window.__pwned=11;alert(11)"> "quoted" \u202e'
# Elements the page would gain if any string became HTML.
INJECTABLE = "img, script, svg, iframe, object, embed, b, i"


# What frontend/lib/tokens.js isolateBidi() wraps in FSI ... PDI: right-to-left letters, direction controls.
BIDI = re.compile("[\u0590-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFF\u200E\u200F\u202A-\u202E\u2066-\u2069"
                  "\U00010800-\U00010FFF\U0001E800-\U0001EFFF]")


def shown(token):
    """A token as the tab writes it next to other text."""
    return "\u2068%s\u2069" % token if BIDI.search(token) else token


def weights():
    """[1, 2, 6, 6]: query i puts 0.7 on key i (so its pinned row leads with key token i)."""
    w = np.full((1, 2, 6, 6), 0.3 / 5, np.float32)
    for i in range(6):
        w[0, :, i, i] = 0.7
    return w


def stored_head0():
    """Head 0 of example 0 as stored (quantised), what the tooltip prints."""
    blobs = encoding.encode_step(weights())
    header = encoding.decode_header(blobs[0])
    return encoding.codes_to_weights(encoding.decode_codes(blobs[1], header), header["scales"][0])


@pytest.fixture(scope="module")
def tab(browser, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-logdir")
    for run in RUNS:
        with AttentionWriter(root / run) as writer:
            for tag in TAGS:
                writer.attention(tag, weights(), 0, query_tokens=QUERY_TOKENS, key_tokens=KEY_TOKENS,
                                 description=DESCRIPTION)
    # AttentionWriter refuses names the data server cannot read; other writers may leave them.
    tokens = dict(query_tokens=QUERY_TOKENS, key_tokens=KEY_TOKENS, description=DESCRIPTION)
    for run in RUNS:
        write_unguarded(root / run, [(ESCAPED_TAG, weights(), 0)], **tokens)
    write_unguarded(root / ESCAPED_RUN, [(tag, weights(), 0) for tag in TAGS + [ESCAPED_TAG]], **tokens)
    with tensorboard(root, tensorflow=False) as base:
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        tab = Tab(page, base)
        tab.root, tab.base = root, base
        yield tab
        context.close()


def assert_nothing_injected(tab, baseline):
    assert tab.dialogs == []
    assert tab.errors == []
    assert tab.eval("window.__pwned === undefined") is True
    assert tab.page.evaluate("window.__pwned === undefined") is True
    assert tab.eval("n => document.querySelectorAll(n).length", INJECTABLE) == baseline
    handlers = tab.eval("""() => Array.from(document.querySelectorAll('*')).flatMap(
        e => Array.from(e.attributes).filter(a => a.name.startsWith('on')).map(a => a.name))""")
    assert handlers == []


def option_texts(tab, select):
    return tab.eval("s => Array.from(document.querySelectorAll(s + ' option')).map(o => o.textContent)", select)


def test_hostile_runs_tags_and_tokens_are_text(tab, artifacts_dir):
    baseline = tab.eval("n => document.querySelectorAll(n).length", INJECTABLE)
    assert option_texts(tab, "#run-select") == sorted(RUNS + [ESCAPED_RUN])
    for run in RUNS:
        for tag in TAGS:
            tab.show(run=run, tag=tag, step=0, head=0, view="head", query=3)
            assert option_texts(tab, "#tag-select") == sorted(TAGS + [ESCAPED_TAG + " (unreadable)"])
            titles = tab.eval("Array.from(document.querySelectorAll('#tag-select option')).map(o => o.title)")
            assert titles.count(DESCRIPTION) == len(TAGS)
            assert tab.eval("document.querySelector('#run-select').value") == run
            assert tab.eval("document.querySelector('#tag-select').value") == tag
            info = tab.eval("document.querySelector('#info').textContent")
            # Names holding right-to-left text are isolated so they cannot reorder the line.
            assert info.startswith("%s / %s · step 0" % (shown(run), shown(tag))), info[:200]
            chips = tab.eval("Array.from(document.querySelectorAll('.pinned-summary .chip')).map(c => c.textContent)")
            assert chips[0] == shown(KEY_TOKENS[3]) + " 0.7000"
            # Each token sits in its own <bdi>, so right-to-left text cannot move the weights.
            isolated = tab.eval("""Array.from(document.querySelectorAll('.pinned-summary .chip')).map(
                c => [c.children.length, c.firstElementChild.tagName, c.firstElementChild.textContent])""")
            assert [entry[:2] for entry in isolated] == [[1, "BDI"]] * len(chips)
            assert sorted(entry[2] for entry in isolated) == sorted(map(shown, KEY_TOKENS))
            assert tab.eval("document.querySelector('.pinned-summary strong bdi').textContent") == shown(QUERY_TOKENS[3])
            assert_nothing_injected(tab, baseline)
    stored = stored_head0()
    for row, col in [(0, 0), (1, 2), (2, 2), (3, 4), (4, 1), (5, 5)]:
        # Right-to-left tokens come isolated, so they cannot move the weight after them.
        # Tokens are stored cut to encoding.MAX_TOKEN_CHARS (LONG, row 4, ends in "…").
        query_token = encoding.truncate_token(QUERY_TOKENS[row])
        expected = "%s → %s  %.4f" % (shown(query_token), shown(KEY_TOKENS[col]), stored[row, col])
        assert tab.hover_cell(row, col) == expected, (row, col)
    examples = option_texts(tab, "#example-select")
    assert examples == ["0: %s…" % QUERY_TOKENS[0]]
    assert shown(QUERY_TOKENS[3]) != QUERY_TOKENS[3] and shown(KEY_TOKENS[4]) != KEY_TOKENS[4]
    tab.hover_cell(3, 4)  # right-to-left query and key: the weight stays at the end
    tab.page.screenshot(path=str(artifacts_dir / "hostile_tooltip.png"))
    tab.page.mouse.move(1, 1)
    tab.page.screenshot(path=str(artifacts_dir / "hostile_strings.png"))
    assert_nothing_injected(tab, baseline)


def wait_for_error(tab, timeout=30):
    deadline = time.monotonic() + timeout
    while not tab.eval("document.querySelector('#error').textContent"):
        assert time.monotonic() < deadline, "no error shown"
        time.sleep(0.05)
    tab.wait_idle()
    return tab.eval("document.querySelector('#error').textContent")


@pytest.mark.parametrize("run, tag", [(RUNS[0], ESCAPED_TAG), (ESCAPED_RUN, TAGS[0]), (ESCAPED_RUN, ESCAPED_TAG)])
def test_names_the_data_server_cannot_read_are_named_as_text(tab, run, tag):
    baseline = tab.eval("n => document.querySelectorAll(n).length", INJECTABLE)
    tab.eval("h => { location.hash = h }", "#" + urllib.parse.urlencode({"run": run, "tag": tag}))
    error = wait_for_error(tab)
    assert error.startswith(tag + ": ") and "--load_fast=false" in error, error[:300]
    assert tab.eval("document.querySelector('#run-select').value") == run
    assert tab.eval("document.querySelector('#tag-select').value") == tag
    assert tab.eval("document.querySelector('#tag-select').selectedOptions[0].textContent") == tag + " (unreadable)"
    assert_nothing_injected(tab, baseline)


@pytest.mark.parametrize("view", ["heads", "lines"])
def test_other_views_draw_hostile_tokens_without_markup(tab, view):
    baseline = tab.eval("n => document.querySelectorAll(n).length", INJECTABLE)
    tab.show(run=RUNS[1], tag=TAGS[0], step=0, head=0, view=view)
    assert_nothing_injected(tab, baseline)


def test_crafted_link_injects_nothing(tab):
    baseline = tab.eval("n => document.querySelectorAll(n).length", INJECTABLE)
    for hostile in (MARKUP[0], MARKUP[4], CONTROL):
        state = {"run": hostile, "tag": hostile, "step": hostile, "head": hostile, "view": hostile,
                 "cmap": hostile, "example": hostile, "query": hostile}
        tab.eval("h => { location.hash = h }", "#" + urllib.parse.urlencode(state))
        tab.page.wait_for_timeout(300)
        tab.wait_idle()
        assert_nothing_injected(tab, baseline)
    # The tab recovers: a valid view is drawn afterwards.
    tab.show(run=RUNS[0], tag=TAGS[1], step=0, head=1, view="head")
    assert_nothing_injected(tab, baseline)


def test_run_deleted_while_shown_gives_way_to_the_remaining_runs(tab):
    """Runs last: it deletes a run of the module's logdir."""
    tab.show(run=RUNS[1], tag=TAGS[1], step=0, head=0, view="head")
    shutil.rmtree(tab.root / RUNS[1])
    deadline = time.monotonic() + 30
    while RUNS[1] in [r["run"] for r in get_json(tab.base + "/data/plugin/attention/runs")["runs"]]:
        assert time.monotonic() < deadline, "TensorBoard still lists the deleted run"
        time.sleep(0.3)
    tab.eval("delete document.querySelector('#view').dataset.rendered")
    tab.frame.click("#reload-button")
    rendered = tab.wait_for({"run": RUNS[0]})
    assert rendered["tag"] in TAGS
    assert option_texts(tab, "#run-select") == sorted([RUNS[0], ESCAPED_RUN])
    assert tab.eval("document.querySelector('#error').hidden") is True
    assert tab.errors == [] and tab.dialogs == []
