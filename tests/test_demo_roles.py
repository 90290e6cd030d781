"""Head roles the demos are known to grow, found in their event files.

The main-job command trains the demos once per session in their reduced (CI) sizes
(`conftest.demo_logs`); here: the causal language model on repeated spans (`demo/induction_lm.py`)
and the English->Chinese translator at learning rate 1e-3 (`demo/translation.py`). The tests read
the logged attention back through TensorBoard's data provider (`readback.read_back`):

- the language model's displayed probe is 1536 tokens long, so every step of both layers is
  stored POOLED (overview + exact windows) at the default budget; its layer 0 grows a
  previous-token head and its layer 1 an induction head, absent at step 0, with the emergence
  step strictly inside the logged range. Measured twice: on the exact `last_queries` window of the displayed probe
  (the weight of each of its 64 rows on the previous token, and on the token after the
  earlier copy of the current one), and by the callback's own head-health records, computed
  from the pooled layers' query chunks over 2 such 1536-token sequences (`health_probe=`);
- on the way there those heads lose most of their entropy (the bare detectors of
  `health.entropy_alarms` fire on them), and the `/health` answer, read through TensorBoard's
  data provider, reports them as the roles they became, not as alarms;
- the translator's cross-attention becomes monotonic-with-reordering (the mass on one
  left-to-right path, local swaps allowed) above the role's threshold (`health.py` on its
  full steps).

The figures are printed (`pytest -s`).
"""

import json
import pathlib
import sys

import numpy as np
import pytest

from plugin_client import get_json, production_plugin, wsgi_client
from readback import read_back
from tb_attention_plugin import encoding
from tb_attention_plugin import health

# The demos are a package at the repository root, next to tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from demo import induction_lm, translation  # noqa: E402

LM_RUN, TRANSLATION_RUN = "induction_lm", "translation_lr1e-3"
LM_LAYERS = "layer_0/self_attention", "layer_1/self_attention"


@pytest.fixture(scope="module")
def logged(demo_logs):
    """`(logdir, {run: {tag: [(step, header, weights)]}})` of the demos, trained small by the
    main-job command (`conftest.demo_logs`)."""
    path, _ = demo_logs
    return path, read_back(path)


@pytest.fixture(scope="module")
def lm_health(logged):
    """The language model's head-health records: `{layer tag: {step: record}}`."""
    from callback_helpers import read_health

    path, _ = logged
    return read_health(path)[LM_RUN + "/train"]


def series(entries, **options):
    """Steps and `health.head_health` of each logged step of one tag."""
    steps = [step for step, _, _ in entries]
    results = [health.head_health(weights, similarity=False, **options)
               for _, _, weights in entries]
    return steps, results


def describe(steps, scores):
    return ", ".join("%d: %.2f" % (step, value) for step, value in zip(steps, scores))


def lm_result(path):
    return json.loads((path / LM_RUN / "result.json").read_text())


def window_scores(entries, offset):
    """Per logged step, from the exact `last_queries` window of the pooled displayed probe:
    `(steps, previous [steps, H], induction [steps, H])`: the mean weight of the window's rows
    `i` on key `i - 1`, and on key `i - offset + 1` (the token after the earlier copy of token
    `i`), over examples and rows."""
    steps, previous, induction = [], [], []
    for step, header, (_, _, windows) in entries:
        (window,) = [w for w in header["windows"] if w["name"] == "last_queries"]
        (q0, q1), (k0, _) = window["query"], window["key"]
        rows = np.arange(q1 - q0)
        weights = windows["last_queries"]  # [B, H, q1 - q0, k1 - k0]
        steps.append(step)
        previous.append(weights[:, :, rows, q0 + rows - 1 - k0].mean(axis=(0, 2)))
        induction.append(weights[:, :, rows, q0 + rows - offset + 1 - k0].mean(axis=(0, 2)))
    return steps, np.array(previous), np.array(induction)


def test_language_model_logs_a_long_probe_pooled(logged):
    """The displayed probe is long enough for the pooled layout at the default budget: every
    logged step of both layers is an overview plus exact windows, every position kept."""
    path, runs = logged
    result = lm_result(path)
    length = 2 * result["repeat_offset"]
    assert length >= 1024
    for layer in LM_LAYERS:
        entries = runs[LM_RUN + "/train"][layer]
        assert len(entries) >= 5
        for step, header, _ in entries:
            assert encoding.is_pooled(header), (layer, step)
            assert header["shape"][1:] == [result["heads"], length, length]  # every position
            assert "last_queries" in [w["name"] for w in header["windows"]]


def test_language_model_attention_is_computed_in_chunks_when_pooled():
    """`RotaryAttention` overrides `call` only and keeps Keras' `_compute_attention`, so the
    logger computes its pooled steps in query chunks (`blocked.supports`), never the full
    `[B, H, T, T]` scores; its output is Keras' attention of the rotated queries and keys."""
    from tb_attention_plugin.logger import blocked

    model = induction_lm.build_model(64, 64, 2)
    layer = model.get_layer("layer_1").self_attention
    x = np.random.default_rng(0).normal(size=(1, 48, 64)).astype("float32")
    query, key, value = (dense(x) for dense in (layer._query_dense, layer._key_dense,
                                                  layer._value_dense))
    assert blocked.supports(layer, query, key, value)
    output, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    scores = np.asarray(scores)
    assert np.allclose(np.triu(scores[0, 0], 1), 0) and np.allclose(scores.sum(-1), 1, atol=1e-5)


@pytest.mark.parametrize("layer, role, score, column", [
    ("layer_0/self_attention", "previous-token", "previous_token", 1),
    ("layer_1/self_attention", "induction", "induction", 2),
])
def test_language_model_grows_its_roles_on_the_pooled_probe(logged, lm_health, layer, role,
                                                            score, column):
    """Layer 0 turns to the previous token, layer 1 into an induction head, on the 1536-token
    probe: absent at step 0, emerged strictly inside the logged range, seen both in the exact
    `last_queries` window of the logged steps and in the callback's health records."""
    path, runs = logged
    result = lm_result(path)
    entries = runs[LM_RUN + "/train"][layer]
    measured = window_scores(entries, result["repeat_offset"])
    steps, window = measured[0], measured[column]
    records = lm_health[layer]
    assert sorted(records) == steps
    recorded = np.array([records[step]["measures"][score] for step in steps])  # [steps, H]
    threshold = health.ROLE_THRESHOLDS[score]
    heads = [h for h, name in enumerate(records[steps[-1]]["role"]) if name == role]
    for head in range(recorded.shape[1]):
        print("\n%s head %d %s score, last_queries window: %s\n    health records: %s"
              % (layer, head, score, describe(steps, window[:, head]),
                 describe(steps, recorded[:, head])))
    assert heads, "no %s head in %s at step %d: roles %s" % (
        role, layer, steps[-1], records[steps[-1]]["role"])
    assert records[steps[-1]]["examples"] == induction_lm.HEALTH_PROBE_SIZE
    for head in heads:
        assert records[steps[0]]["role"][head] != role  # not there before training
        step = health.emergence_step(steps, recorded[:, head], threshold)
        print("%s head %d became a %s head at step %s" % (layer, head, role, step))
        assert step is not None and steps[0] < step < steps[-1], (step, steps)
        # The displayed probe's exact window shows the same head: above the role's threshold at
        # the end, below it at step 0, risen at a step strictly inside the logged range.
        assert window[-1, head] >= threshold > window[0, head], window[:, head]
        rise = health.emergence_step(steps, window[:, head], threshold)
        assert rise is not None and steps[0] < rise < steps[-1], (rise, steps)


def test_language_model_role_heads_raise_no_alarm(logged):
    """The previous-token and induction heads fall in entropy while they form (at the full
    size the main job showed "entropy dropped to 0.317 at step 200" on an induction head before
    the alarms were read with roles): `/health` names the role each became and raises no
    entropy alarm on them (docs/health.md, "Alarms read with the head's role")."""
    path, _ = logged
    body = get_json(wsgi_client(production_plugin(path / LM_RUN)), "/health", run="train")
    steps = body["steps"]
    role_heads = {(tag, head) for tag in LM_LAYERS
                  for head, role in enumerate(body["roles"][tag][-1])
                  if role in ("previous-token", "induction")}
    assert {tag for tag, _ in role_heads} == set(LM_LAYERS), body["roles"]
    detected = {}
    for tag, head in sorted(role_heads):
        entropy = [np.nan if v[head] is None else v[head] for v in body["series"][tag]["entropy"]]
        detected[tag, head] = health.entropy_alarms(steps, entropy)
        print("\n%s head %d entropy: %s\n    bare detectors: %s" % (
            tag, head, describe(steps, entropy), detected[tag, head]))
    print("\n".join(body["changes"]))
    assert any(detected.values()), "the role heads' entropy never fell: nothing was judged"
    alarmed = {(a["tag"], a["head"]) for a in body["alarms"] if a["kind"] == "entropy_collapse"}
    assert not alarmed & role_heads, body["alarms"]
    emerged = {(e["tag"], e["head"]): e["role"] for e in body["emergence"]}
    for tag, head in role_heads:
        assert emerged.get((tag, head)) == body["roles"][tag][-1][head], body["emergence"]


def test_language_model_predicts_the_repeats(logged):
    """The induction head is what makes the repeated half of a 1536-token probe predictable."""
    path, _ = logged
    result = lm_result(path)
    print("\nprobe loss %.2f (first half) / %.2f (repeated half)"
          % (result["probe_first_half_loss"], result["probe_second_half_loss"]))
    assert result["probe_second_half_loss"] < 0.5 * result["probe_first_half_loss"]


def test_translation_cross_attention_becomes_monotonic(logged):
    _, runs = logged
    tags = runs[TRANSLATION_RUN + "/train"]
    tag = sorted(t for t in tags if t.endswith(translation.CROSS_ATTENTION_TAG_SUFFIX))[-1]
    steps, results = series(tags[tag], cross=True)
    first = results[0]["monotonic"]
    last = results[-1]["monotonic"]
    print("\n%s monotonicity per head: %s at step %d, %s at step %d; roles %s"
          % (tag, np.round(first, 2).tolist(), steps[0], np.round(last, 2).tolist(), steps[-1],
             results[-1]["roles"]))
    threshold = health.ROLE_THRESHOLDS["monotonic"]
    best = int(np.argmax(last))
    assert last[best] >= threshold
    assert results[-1]["roles"][best] == "monotonic"
    assert last[best] > first[best]
