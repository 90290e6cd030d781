"""Head roles the demos are known to grow, found by tb_attention_plugin.health in their event files.

The main-job command trains the demos once per session in their reduced (CI) sizes
(`conftest.demo_logs`); here: the causal language model on repeated spans (`demo/induction_lm.py`)
and the English->Chinese translator at learning rate 1e-3 (`demo/translation.py`). The tests read the logged attention back through TensorBoard's data
provider (`readback.read_back`) and measure every head of every logged step with `health.py`:

- the language model grows an induction head in layer 1, absent at step 0, with an emergence
  step strictly inside the logged range, and its layer 0 turns to the previous token;
- the translator's cross-attention becomes monotonic-with-reordering (the mass on one
  left-to-right path, local swaps allowed) above the role's threshold.

The figures are printed (`pytest -s`).
"""

import json
import pathlib
import sys

import numpy as np
import pytest

from readback import read_back
from tb_attention_plugin import health

# The demos are a package at the repository root, next to tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from demo import induction_lm, translation  # noqa: E402

LM_RUN, TRANSLATION_RUN = "induction_lm", "translation_lr1e-3"


@pytest.fixture(scope="module")
def logged(demo_logs):
    """`(logdir, {run: {tag: [(step, header, weights)]}})` of the demos, trained small by the
    main-job command (`conftest.demo_logs`)."""
    path, _ = demo_logs
    return path, read_back(path)


def series(entries, **options):
    """Steps and `health.head_health` of each logged step of one tag."""
    steps = [step for step, _, _ in entries]
    results = [health.head_health(weights, similarity=False, **options)
               for _, _, weights in entries]
    return steps, results


def emerged_heads(steps, results, role, score):
    """`[(head, emergence step, scores)]` of the heads whose role at the last step is `role`."""
    found = []
    for head, last_role in enumerate(results[-1]["roles"]):
        if last_role != role:
            continue
        scores = [float(r[score][head]) for r in results]
        found.append((head, health.emergence_step(steps, scores, health.ROLE_THRESHOLDS[score]),
                      scores))
    return found


def describe(steps, scores):
    return ", ".join("%d: %.2f" % (step, value) for step, value in zip(steps, scores))


def lm_series(runs, path, layer):
    result = json.loads((path / LM_RUN / "result.json").read_text())
    entries = runs[LM_RUN + "/train"][layer]
    _, header, _ = entries[-1]
    assert header["shape"][2:] == [2 * result["repeat_offset"]] * 2  # every position logged
    steps, results = series(entries, causal=True, repeat_offset=result["repeat_offset"])
    return result, steps, results


def test_language_model_grows_an_induction_head(logged):
    path, runs = logged
    layer = "layer_1/self_attention"
    result, steps, results = lm_series(runs, path, layer)
    found = emerged_heads(steps, results, "induction", "induction")
    for head, step, scores in found:
        print("\n%s head %d became an induction head at step %s (induction score %s)"
              % (layer, head, step, describe(steps, scores)))
    print("probe loss %.2f (first half) / %.2f (repeated half)"
          % (result["probe_first_half_loss"], result["probe_second_half_loss"]))
    assert found, "no induction head in %s at step %d: roles %s" % (
        layer, steps[-1], results[-1]["roles"])
    for head, step, scores in found:
        assert results[0]["roles"][head] != "induction"  # not there before training
        assert step is not None and steps[0] < step < steps[-1], (step, steps)
    # The induction head is what makes the repeated half predictable.
    assert result["probe_second_half_loss"] < 0.5 * result["probe_first_half_loss"]


def test_language_model_layer_0_turns_to_the_previous_token(logged):
    """Layer 0 feeds the induction head the previous token. In this small model both heads
    share the work: each ends below the previous-token role's threshold (0.5), about 0.3 each
    (0.09 at step 0), together above it; the test checks that rise, not the role."""
    path, runs = logged
    layer = "layer_0/self_attention"
    _, steps, results = lm_series(runs, path, layer)
    scores = np.array([r["previous_token"] for r in results])  # [steps, heads]
    for head in range(scores.shape[1]):
        print("\n%s head %d previous-token score %s"
              % (layer, head, describe(steps, scores[:, head])))
    best = int(np.argmax(scores[-1]))
    assert scores[-1, best] >= 0.25 and scores[-1, best] >= 2 * scores[0, best]
    assert scores[-1].sum() >= health.ROLE_THRESHOLDS["previous_token"] > scores[0].sum()
    rise = health.emergence_step(steps, scores[:, best], 0.25)
    assert rise is not None and steps[0] < rise < steps[-1], (rise, steps)


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


def test_language_model_health_records_name_the_induction_heads(logged):
    """The callback's own measures (`health_probe=`: 64 induction-probe sequences, full
    precision) find the same induction heads and emergence step range as the logged steps."""
    from callback_helpers import read_health

    path, runs = logged
    records = read_health(path)[LM_RUN + "/train"]["layer_1/self_attention"]
    steps = sorted(records)
    assert steps == [step for step, _, _ in runs[LM_RUN + "/train"]["layer_1/self_attention"]]
    last = records[steps[-1]]
    assert last["examples"] == induction_lm.HEALTH_PROBE_SIZE
    heads = [h for h, role in enumerate(last["role"]) if role == "induction"]
    assert heads, last["role"]
    for head in heads:
        scores = [records[step]["measures"]["induction"][head] for step in steps]
        step = health.emergence_step(steps, scores, health.ROLE_THRESHOLDS["induction"])
        print("\nhealth record: layer_1 head %d induction %.2f -> %.2f, emerged at step %s"
              % (head, scores[0], scores[-1], step))
        assert records[steps[0]]["role"][head] != "induction"
        assert step is not None and steps[0] < step < steps[-1]
