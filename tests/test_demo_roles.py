"""Head roles the demos are known to grow, found by tb_attention_plugin.health in their event files.

The module fixture trains two demos in their reduced (CI) sizes: the causal language model on
repeated spans (`demo/induction_lm.py`) and the English->Chinese translator at learning rate 1e-3
(`demo/translation.py`). The tests read the logged attention back through TensorBoard's data
provider (`readback.read_back`) and measure every head of every logged step with `health.py`:

- the language model grows a previous-token head in layer 0 and an induction head in layer 1,
  absent at step 0, with an emergence step strictly inside the logged range;
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
def logged(tmp_path_factory):
    """`(logdir, {run: {tag: [(step, header, weights)]}})` of the two demos, trained small."""
    path = tmp_path_factory.mktemp("roles")
    induction_lm.train(str(path), LM_RUN, small=True, verbose=0)
    translation.train(str(path), TRANSLATION_RUN, small=True, learning_rate=1e-3,
                      probe_examples=16, verbose=0)
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


@pytest.mark.parametrize("layer, role, score", [
    ("layer_0/self_attention", "previous-token", "previous_token"),
    ("layer_1/self_attention", "induction", "induction"),
])
def test_language_model_grows_its_head(logged, layer, role, score):
    path, runs = logged
    result = json.loads((path / LM_RUN / "result.json").read_text())
    entries = runs[LM_RUN + "/train"][layer]
    _, header, weights = entries[-1]
    assert header["shape"][2:] == [2 * result["repeat_offset"]] * 2  # every position logged
    steps, results = series(entries, causal=True, repeat_offset=result["repeat_offset"])
    found = emerged_heads(steps, results, role, score)
    for head, step, scores in found:
        print("\n%s head %d became a%s %s head at step %s (%s %s)"
              % (layer, head, "n" if role[0] in "aeiou" else "", role, step, score,
                 describe(steps, scores)))
    print("probe loss %.2f (first half) / %.2f (repeated half)"
          % (result["probe_first_half_loss"], result["probe_second_half_loss"]))
    assert found, "no %s head in %s at step %d: roles %s" % (
        role, layer, steps[-1], results[-1]["roles"])
    for head, step, scores in found:
        assert results[0]["roles"][head] != role  # not there before training
        assert step is not None and steps[0] < step < steps[-1], (step, steps)
    # The induction head is what makes the repeated half predictable.
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
