"""Head-health measures on hand-built heads whose answers are worked out in the comments
(natural logarithms for entropy, bits for Jensen-Shannon), alarms and emergence on hand-built
series, clustering on heads built to be alike, and streaming against one-shot."""

import math
import subprocess
import sys

import numpy as np
import pytest

from tb_attention_plugin import health
from tb_attention_plugin.health import HeadHealth
from tb_attention_plugin.health import cluster_heads
from tb_attention_plugin.health import changes
from tb_attention_plugin.health import emergence_step
from tb_attention_plugin.health import entropy_alarms
from tb_attention_plugin.health import head_health
from tb_attention_plugin.health import induction_probe
from tb_attention_plugin.health import js_divergence
from tb_attention_plugin.health import logit_alarms
from tb_attention_plugin.health import role_of

NAN = np.nan


def causal(matrix):
    """Marks the future (k > i) of a square matrix as masked (NaN)."""
    matrix = np.array(matrix, np.float32)
    matrix[np.triu_indices(matrix.shape[0], k=1)] = NAN
    return matrix


def one_head(matrix, **options):
    """`head_health` of a single head `[Tq, Tk]`, as floats (arrays for sink_alpha)."""
    result = head_health(np.asarray(matrix, np.float32)[None, None], **options)
    for name in health.MEASURES:
        assert result[name].dtype == np.float32 and result[name].shape == (1,)
    out = {name: float(result[name][0]) for name in health.MEASURES}
    out.update(sinks=result["sinks"][0], role=result["roles"][0],
               sink_alpha=result["sink_alpha"][0])
    return out


def previous_token_head(t):
    matrix = np.eye(t, k=-1, dtype=np.float32)
    matrix[0, 0] = 1.0
    return causal(matrix)


# ------------------------------------------------------------------------------------------
# Roles on hand-built heads


def test_previous_token_head():
    r = one_head(previous_token_head(8))
    # Row 0 sees one key only and is skipped; rows 1..7 put all their weight on i - 1.
    assert r["previous_token"] == pytest.approx(1.0)
    assert r["diagonal"] == pytest.approx(0.0)
    assert r["first_token"] == pytest.approx(1 / 7)  # only row 1's previous token is key 0
    assert r["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert r["entropy_nats"] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(r["induction"]) and math.isnan(r["monotonic"]) and math.isnan(r["max_logit"])
    # alpha_k = 1 / (8 - k): key k gets weight 1 from query k + 1 only, averaged over the 8 - k
    # queries i >= k (key 0: the 7 informative rows 1..7). Keys 5..7 have < 4 queries: NaN.
    np.testing.assert_allclose(r["sink_alpha"][:5], [1 / 7, 1 / 7, 1 / 6, 1 / 5, 1 / 4], rtol=1e-6)
    assert np.isnan(r["sink_alpha"][5:]).all()
    assert r["sinks"] == []  # 1/4 < 0.3: a local head has no sinks
    assert r["role"] == "previous-token"


def test_diagonal_head():
    r = one_head(np.eye(6))
    assert r["diagonal"] == pytest.approx(1.0)
    assert r["previous_token"] == pytest.approx(0.0)
    assert r["first_token"] == pytest.approx(1 / 6)
    assert r["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert r["sinks"] == []
    assert r["role"] == "diagonal"


def test_first_token_head_is_a_sink_with_its_share():
    t = 8
    matrix = np.zeros((t, t), np.float32)
    matrix[0, 0] = 1.0
    for i in range(1, t):
        matrix[i, 0] = 0.8
        matrix[i, 1 : i + 1] = 0.2 / i
    r = one_head(causal(matrix))
    assert r["first_token"] == pytest.approx(0.8)
    assert r["role"] == "first-token"
    # alpha_0 = mean over rows 1..7 of 0.8; key 1 gets 0.2/i from rows i >= 1, mean < 0.3.
    assert [k for k, _ in r["sinks"]] == [0]
    assert r["sinks"][0][1] == pytest.approx(0.8)
    alpha_1 = np.mean([0.2 / i for i in range(1, 8)])  # = 0.0926
    assert r["sink_alpha"][1] == pytest.approx(alpha_1, rel=1e-5)
    # Row i: -(0.8 ln 0.8 + 0.2 ln(0.2 / i)) nats, normalised by ln(i + 1).
    nats = [-(0.8 * math.log(0.8) + 0.2 * math.log(0.2 / i)) for i in range(1, t)]
    assert r["entropy_nats"] == pytest.approx(np.mean(nats), rel=1e-5)
    normalised = [n / math.log(i + 1) for n, i in zip(nats, range(1, t))]
    assert r["entropy"] == pytest.approx(np.mean(normalised), rel=1e-5)


def test_sink_on_a_later_key_is_found_with_its_share():
    # Bidirectional, 8 tokens: every row puts 0.5 on key 3 and 0.5/7 on each other key.
    matrix = np.full((8, 8), 0.5 / 7, np.float32)
    matrix[:, 3] = 0.5
    r = one_head(matrix)
    assert [k for k, _ in r["sinks"]] == [3]
    assert r["sinks"][0][1] == pytest.approx(0.5)
    assert r["first_token"] == pytest.approx(0.5 / 7)
    assert r["role"] == "none"  # 0.5 on key 3 is none of the scored positions


def test_uniform_head_is_diffuse():
    r = one_head(np.full((4, 4), 0.25))
    assert r["entropy"] == pytest.approx(1.0)
    assert r["entropy_nats"] == pytest.approx(math.log(4))  # 1.386294
    assert r["previous_token"] == pytest.approx(0.25)
    assert r["diagonal"] == pytest.approx(0.25)
    assert r["first_token"] == pytest.approx(0.25)
    assert r["sinks"] == []
    assert r["role"] == "diffuse"


def induction_head(ids):
    """A causal head that, at position i, attends to the token after the previous occurrence
    of token ids[i]; with no previous occurrence, to key 0."""
    b, t = ids.shape
    weights = np.zeros((b, 1, t, t), np.float32)
    for e in range(b):
        for i in range(t):
            earlier = [j for j in range(i) if ids[e, j] == ids[e, i]]
            weights[e, 0, i, earlier[-1] + 1 if earlier else 0] = 1.0
        weights[e, 0][np.triu_indices(t, k=1)] = NAN
    return weights


def test_induction_head_on_a_repeated_sequence():
    ids, offset = induction_probe(vocab_size=50, length=6, batch=4, seed=1)
    heads = np.concatenate(
        [induction_head(ids), np.repeat(previous_token_head(12)[None, None], 4, axis=0)], axis=1
    )
    result = head_health(heads, repeat_offset=offset)
    # Head 0: every query of the second copy (6..11) attends to i - 6 + 1.
    assert result["induction"][0] == pytest.approx(1.0)
    assert result["previous_token"][0] == pytest.approx(1 / 11)  # only row 1 (target key 0)
    assert result["roles"][0] == "induction"
    # Head 1 (previous token) puts nothing on i - L + 1 for L = 6.
    assert result["induction"][1] == pytest.approx(0.0)
    assert result["roles"][1] == "previous-token"


def test_induction_with_a_bos_column_uses_repeat_start():
    ids, offset = induction_probe(vocab_size=50, length=5, batch=2, seed=3, reserved_ids=(0, 1))
    with_bos = np.concatenate([np.ones((2, 1), np.int32), ids], axis=1)  # BOS id 1
    result = head_health(induction_head(with_bos), repeat_offset=offset, repeat_start=offset + 1)
    assert result["induction"][0] == pytest.approx(1.0)
    # Without repeat_start the window is off by one: query 5 (last token of the first copy)
    # has no earlier occurrence and attends key 0, not key 5 - 5 + 1 = 1.
    shifted = head_health(induction_head(with_bos), repeat_offset=offset)
    assert shifted["induction"][0] == pytest.approx(5 / 6)


def test_monotonic_cross_attention():
    # 6 target positions over 8 source positions, each row one-hot on round(i * 8 / 6).
    matrix = np.zeros((6, 8), np.float32)
    for i in range(6):
        matrix[i, round(i * 8 / 6)] = 1.0
    r = one_head(matrix, cross=True)
    assert r["monotonic"] == pytest.approx(1.0)
    assert math.isnan(r["previous_token"]) and math.isnan(r["diagonal"])
    assert r["role"] == "monotonic"


def test_local_reordering_stays_monotonic_long_reordering_does_not():
    t = 12
    swapped = np.eye(t, dtype=np.float32)
    swapped[[4, 5]] = swapped[[5, 4]]  # two adjacent source words swapped: within the band
    assert one_head(swapped, cross=True)["monotonic"] == pytest.approx(1.0)
    # Clause swap: target 0..5 read source 6..11, target 6..11 read source 0..5. A
    # non-decreasing path follows one half: 6 of 12 rows -> 0.5, below the 0.6 threshold.
    clauses = np.roll(np.eye(t, dtype=np.float32), 6, axis=1)
    r = one_head(clauses, cross=True)
    assert r["monotonic"] == pytest.approx(0.5)
    assert r["role"] != "monotonic"
    # Reversed: a path at key j covers the rows whose key is within j +- 1: 3 of 12.
    assert one_head(np.eye(t)[::-1], cross=True)["monotonic"] == pytest.approx(3 / 12)


def test_uniform_cross_attention_is_not_monotonic():
    r = one_head(np.full((6, 8), 1 / 8), cross=True)
    # Every key position j carries 3/8 within +-1 (2/8 at the edges): the best path 3/8 per row.
    assert r["monotonic"] == pytest.approx(3 / 8)
    assert r["role"] == "diffuse"
    # Cross-attention sinks average over all queries: a source token every row reads is one.
    matrix = np.full((6, 8), 0.4 / 7, np.float32)
    matrix[:, 7] = 0.6
    assert [k for k, _ in one_head(matrix, cross=True)["sinks"]] == [7]


def test_padded_cross_attention_gives_the_unpadded_answer():
    # 6 target tokens over 8 source tokens, padded to 9 x 10 (NaN rows and keys).
    matrix = np.zeros((6, 8), np.float32)
    for i in range(6):
        matrix[i, round(i * 8 / 6)] = 0.7
        matrix[i, 7] += 0.3  # every target token also reads the last source token
    padded = np.full((9, 10), NAN, np.float32)
    padded[:6, :8] = matrix
    plain, with_padding = one_head(matrix, cross=True), one_head(padded, cross=True)
    # Path keys round(i * 8 / 6) = 0, 1, 3, 4, 5, 7. Rows 0..3 get 0.7 on the path. The best
    # path moves row 4 from key 5 to key 6, whose band 5..7 holds 0.7 + 0.3; row 5 at key 7
    # holds 1.0: (4 * 0.7 + 1.0 + 1.0) / 6 = 0.8.
    assert plain["monotonic"] == pytest.approx(0.8)
    assert with_padding["monotonic"] == pytest.approx(0.8)
    # Source token 7 is a sink: alpha_7 = (5 * 0.3 + 1.0) / 6 over all 6 real queries.
    assert [k for k, _ in with_padding["sinks"]] == [7]
    assert with_padding["sinks"][0][1] == pytest.approx(2.5 / 6)
    assert np.isnan(with_padding["sink_alpha"][8:]).all()  # padded keys: no alpha


def test_masked_and_padded_rows_give_the_unpadded_answer():
    head = np.eye(4, k=-1, dtype=np.float32)
    head[0, 0] = 1.0
    expected = one_head(head)  # 4 tokens, bidirectional
    padded = np.full((6, 6), NAN, np.float32)
    padded[:4, :4] = head  # keys 4, 5 are padding (NaN) and so are query rows 4, 5
    by_nan = one_head(padded)
    zeros = np.zeros((6, 6), np.float32)  # padded queries as Keras >= 3.10 leaves them
    zeros[:4, :4] = head
    mask = np.zeros((6, 6), bool)
    mask[:4, :4] = True
    by_mask = one_head(zeros, mask=mask[None, None])
    for name in ("previous_token", "diagonal", "first_token", "entropy", "entropy_nats"):
        assert by_nan[name] == pytest.approx(expected[name], abs=1e-7), name
        assert by_mask[name] == pytest.approx(expected[name], abs=1e-7), name
    assert expected["previous_token"] == pytest.approx(1.0)
    assert expected["diagonal"] == pytest.approx(0.25)  # row 0 only


def test_causal_option_masks_a_zero_future():
    head = previous_token_head(6)
    zeros = np.nan_to_num(head)  # how Keras returns causal scores: 0, not NaN, in the future
    as_nan, as_zeros = one_head(head), one_head(zeros, causal=True)
    for name in ("entropy", "entropy_nats", "previous_token", "diagonal", "first_token"):
        assert as_zeros[name] == pytest.approx(as_nan[name], abs=1e-7), name
    np.testing.assert_allclose(as_zeros["sink_alpha"], as_nan["sink_alpha"])
    # Without it, row 0 has 6 "visible" keys and counts: diagonal 1/6 instead of 0.
    assert one_head(zeros)["diagonal"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="causal applies to self-attention"):
        HeadHealth(causal=True, cross=True)


def test_keras_shaped_mask_gets_its_head_axis():
    weights = np.full((2, 3, 4, 4), 0.25, np.float32)
    mask = np.ones((2, 4, 4), bool)  # Keras MultiHeadAttention's [B, Tq, Tk]
    mask[1, :, 2:] = False
    result = head_health(np.where(mask[:, None], weights, 0), mask=mask)
    # Example 0: uniform over 4 keys; example 1: uniform over its 2 visible keys. Both 1.
    np.testing.assert_allclose(result["entropy"], 1.0, rtol=1e-6)
    # Nats: ln 4 and ln 2, one mean per example: (1.386294 + 0.693147) / 2.
    np.testing.assert_allclose(result["entropy_nats"], (math.log(4) + math.log(2)) / 2, rtol=1e-6)


def test_each_example_counts_once_whatever_its_length():
    long_prev = previous_token_head(8)
    short_diag = np.full((8, 8), NAN, np.float32)
    short_diag[:3, :3] = causal(np.eye(3))  # 3 real tokens, diagonal
    result = head_health(np.stack([long_prev, short_diag])[:, None])
    # previous_token: example 0 -> 1 (7 rows), example 1 -> 0 (2 rows): mean 0.5, not 7/9.
    assert result["previous_token"][0] == pytest.approx(0.5)
    assert result["examples"] == 2


def test_max_logit_ignores_masked_and_non_finite_positions():
    logits = np.array(
        [[[[1.0, 5000.0], [2.5, -np.inf]]], [[[4.0, 3.0], [np.nan, 7.0]]]], np.float32
    )  # [2, 1, 2, 2]
    weights = np.array([[[[1.0, NAN], [1.0, 0.0]]], [[[0.6, 0.4], [0.0, 1.0]]]], np.float32)
    result = head_health(weights, logits=logits)
    # 5000 sits on a masked key, -inf and NaN are not numbers to report: the max is 7.
    assert result["max_logit"][0] == pytest.approx(7.0)


def test_role_of_thresholds_and_order():
    assert role_of({"previous_token": 0.5}) == "previous-token"  # at the threshold
    assert role_of({"previous_token": 0.49, "entropy": 0.5}) == "none"
    # Induction before first-token: induction heads also park spare mass on the first token.
    assert role_of({"induction": 0.35, "first_token": 0.6}) == "induction"
    assert role_of({"induction": 0.29, "first_token": 0.6}) == "first-token"
    assert role_of({"monotonic": 0.6, "first_token": 0.5}) == "monotonic"
    assert role_of({"diagonal": NAN, "entropy": 0.9}) == "diffuse"
    assert role_of({"diagonal": 0.3}, thresholds={"diagonal": 0.25}) == "diagonal"
    assert role_of({}) == "none"


# ------------------------------------------------------------------------------------------
# Streaming


def random_block(rng, b, h, t, causal_mask=True):
    logits = rng.normal(size=(b, h, t, t)).astype(np.float32) * 3
    mask = np.ones((b, h, t, t), bool)
    if causal_mask:
        mask &= np.tril(np.ones((t, t), bool))
    lengths = rng.integers(3, t + 1, size=b)
    for e, n in enumerate(lengths):
        mask[e, :, :, n:] = False
        mask[e, :, n:, :] = False
    shifted = np.where(mask, logits, -np.inf)
    exp = np.exp(shifted - np.max(np.where(mask, logits, -1e9), axis=-1, keepdims=True))
    weights = exp / np.maximum(exp.sum(-1, keepdims=True), 1e-30)
    weights = np.where(mask, weights, NAN).astype(np.float32)
    return weights, logits


@pytest.mark.parametrize("cross", [False, True])
def test_streaming_equals_one_shot(cross):
    rng = np.random.default_rng(7)
    weights, logits = random_block(rng, 10, 4, 9, causal_mask=not cross)
    options = dict(cross=cross) if cross else dict(repeat_offset=4)
    whole = head_health(weights, logits=logits, **options)
    streamed = HeadHealth(**options)
    for start, stop in ((0, 3), (3, 6), (6, 10)):
        streamed.update(weights[start:stop], logits=logits[start:stop])
    parts = streamed.result()
    for name in health.MEASURES + ("sink_alpha", "divergence"):
        np.testing.assert_allclose(parts[name], whole[name], rtol=1e-5, atol=1e-7, err_msg=name)
    for ours, theirs in zip(parts["sinks"], whole["sinks"], strict=True):
        assert [k for k, _ in ours] == [k for k, _ in theirs]
        assert [a for _, a in ours] == pytest.approx([a for _, a in theirs], rel=1e-6)
    assert parts["roles"] == whole["roles"] and parts["examples"] == whole["examples"] == 10
    present = [name for name in health.MEASURES if not np.isnan(whole[name]).all()]
    assert "max_logit" in present and "entropy" in present
    assert ("monotonic" if cross else "induction") in present


# ------------------------------------------------------------------------------------------
# Similarity


def test_js_divergence_hand_values():
    one_hot = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    other = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    half = np.full((2, 2), 0.5, np.float32)
    d = js_divergence(np.stack([one_hot, other, half])[None])
    # Identical rows: 0. Disjoint one-hot rows: 1 bit. One-hot vs [0.5, 0.5]:
    # H([0.75, 0.25]) - (0 + 1) / 2 = 0.811278 - 0.5 = 0.311278 bits.
    np.testing.assert_allclose(np.diag(d), 0, atol=1e-6)
    assert d[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert d[0, 2] == pytest.approx(0.311278, abs=1e-5)
    assert d[1, 2] == pytest.approx(0.311278, abs=1e-5)
    np.testing.assert_allclose(d, d.T)


def test_causal_heads_compare_the_same_with_the_future_masked_or_zero():
    rng = np.random.default_rng(3)
    weights, _ = random_block(rng, 3, 4, 7)  # causal, NaN above the diagonal, some padding
    zeros = np.where(np.isnan(weights), 0, weights)
    mask = ~np.isnan(weights)
    mask[..., np.triu_indices(7, k=1)[0], np.triu_indices(7, k=1)[1]] = True  # future attended
    mask[..., 0, 1:] = False  # ... except for query 0, which stays a one-key (skipped) row
    # NaN future: only the lower triangle is compared; zero future: the full rows are.
    np.testing.assert_allclose(js_divergence(weights), js_divergence(zeros, mask=mask),
                               rtol=1e-5, atol=1e-7)


def test_heads_built_alike_cluster_together():
    rng = np.random.default_rng(0)
    t = 10

    def noisy(base):
        noise = rng.uniform(0, 0.05, size=(4, t, t)).astype(np.float32)
        head = base[None] + noise
        return head / head.sum(-1, keepdims=True)

    prev = np.eye(t, k=-1, dtype=np.float32)
    prev[0, 0] = 1
    first = np.zeros((t, t), np.float32)
    first[:, 0] = 1
    heads = [noisy(prev), noisy(np.eye(t, dtype=np.float32)), noisy(prev), noisy(first),
             noisy(np.eye(t, dtype=np.float32)), noisy(prev)]
    weights = np.stack(heads, axis=1)  # [4 examples, 6 heads, t, t]
    divergence = head_health(weights)["divergence"]
    assert divergence.shape == (6, 6)
    assert cluster_heads(divergence).tolist() == [0, 1, 0, 2, 1, 0]
    # Nothing is alike at threshold 0: every head alone.
    assert cluster_heads(divergence, threshold=0.0).tolist() == [0, 1, 2, 3, 4, 5]


def test_average_linkage_does_not_chain():
    # 0-1 and 1-2 are close, 0-2 far: single linkage would put all three together; average
    # linkage merges 0 and 1, then {0, 1} to 2 is (0.3 + 0.05) / 2 = 0.175 > 0.1.
    d = np.array([[0, 0.05, 0.3], [0.05, 0, 0.05], [0.3, 0.05, 0]])
    assert cluster_heads(d, threshold=0.1).tolist() == [0, 0, 1]
    assert cluster_heads(d, threshold=0.2).tolist() == [0, 0, 0]
    with_nan = np.array([[0, NAN], [NAN, 0]])
    assert cluster_heads(with_nan, threshold=1.0).tolist() == [0, 1]
    with pytest.raises(ValueError, match="symmetric"):
        cluster_heads(np.array([[0, 0.1], [0.5, 0]]))
    with pytest.raises(ValueError, match="square"):
        cluster_heads(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------------
# Alarms, emergence and changes over steps


def test_entropy_floor_alarm_fires_at_onset_only():
    alarms = entropy_alarms([0, 1, 2, 3, 4, 5], [0.5, 0.4, 0.01, 0.005, 0.3, 0.01])
    assert [(a.step, a.kind) for a in alarms] == [
        (2, "entropy-floor"), (5, "entropy-floor")]  # leaves at step 4, re-enters at 5
    assert alarms[0].value == pytest.approx(0.01) and alarms[0].reference == pytest.approx(0.02)


def test_entropy_drop_against_recent_median():
    steps = [0, 100, 200, 300, 400, 500]
    # History before step 300: 0.8, 0.82, 0.78 -> median 0.8; 0.39 < 0.5 * 0.8.
    alarms = entropy_alarms(steps, [0.8, 0.82, 0.78, 0.39, 0.38, 0.37])
    assert alarms == [health.Alarm(300, "entropy-drop", 0.39, 0.8)]
    # 0.41 is not a drop of more than half.
    assert entropy_alarms(steps, [0.8, 0.82, 0.78, 0.41, 0.40, 0.39]) == []
    # Too little history: a fall between the first logged steps (early specialisation) is not
    # judged until min_history values precede it.
    assert entropy_alarms(steps[:3], [0.9, 0.3, 0.28]) == []
    # NaN steps (head missing) are skipped, not treated as a drop.
    assert entropy_alarms(steps, [0.8, NAN, 0.8, 0.8, NAN, 0.79]) == []
    # The window looks back `window` logged steps only: a slow decline never alarms.
    slow = [0.9 * 0.85**k for k in range(20)]
    assert [a.kind for a in entropy_alarms(range(20), slow)] == []


def test_logit_alarm_on_each_crossing():
    alarms = logit_alarms([0, 1, 2, 3, 4], [10.0, 101.0, 150.0, 90.0, 120.0], bound=100)
    assert [(a.step, a.value) for a in alarms] == [(1, 101.0), (4, 120.0)]
    assert logit_alarms([0, 1], [NAN, 100.0]) == []  # at the bound is not past it


def test_emergence_step():
    steps = [0, 200, 400, 800, 1600]
    assert emergence_step(steps, [0.0, 0.05, 0.1, 0.6, 0.65], threshold=0.5) == 800
    assert emergence_step(steps, [0.0, 0.05, 0.1, 0.6, 0.45], threshold=0.5) is None
    assert emergence_step(steps, [0.7, NAN, 0.6, 0.9, 0.6], threshold=0.5) == 800
    assert emergence_step(steps, [0.6, 0.6, 0.6, 0.6, 0.6], threshold=0.5) is None  # no rise
    with pytest.raises(ValueError, match="one value per step"):
        emergence_step(steps, [0.1, 0.2], threshold=0.5)
    with pytest.raises(ValueError, match="increase"):
        emergence_step([0, 0], [0.1, 0.2], threshold=0.5)


def test_changes_sentences():
    steps = [0, 600, 1200, 1800]
    heads = {
        (3, 5): {"previous_token": [0.1, 0.12, 0.7, 0.8], "entropy": [0.9, 0.8, 0.5, 0.45]},
        (0, 1): {"induction": [0.0, 0.02, 0.05, 0.4], "entropy": [0.9, 0.85, 0.7, 0.6]},
        ("decoder/cross", 2): {"monotonic": [0.8, 0.85, 0.3, 0.2], "entropy": [0.3] * 4},
        (1, 0): {"entropy": [0.8, 0.8, 0.8, 0.01], "max_logit": [5.0, 20.0, 140.0, 160.0],
                 "previous_token": [0.1] * 4},
        (2, 2): {"diagonal": [0.9, 0.95, 0.97, 0.99]},  # a role from the start: no change
    }
    found = changes(steps, heads)
    assert [c.sentence for c in found] == [
        "layer 1 head 0: max logit passed 100 at step 1200 (140)",
        "layer 3 head 5 became a previous-token head at step 1200",
        "decoder/cross head 2 stopped being a monotonic head at step 1200",
        "layer 0 head 1 became an induction head at step 1800",
        "layer 1 head 0: entropy collapsed below 0.02 at step 1800 (0.01)",
    ]
    assert [c.kind for c in found] == ["max-logit", "emerged", "lost", "emerged", "entropy-floor"]
    assert found[1].layer == 3 and found[1].head == 5 and found[1].step == 1200


STEPS = [0, 100, 200, 300, 400, 500, 600]


def kinds(found, head=(0, 0)):
    return [(c.step, c.kind) for c in found if (c.layer, c.head) == head]


def test_a_fall_on_the_way_to_a_gained_role_is_that_role_not_an_alarm():
    # The induction demo's shape: entropy halves at step 300 while the role's score is still
    # low on the probe; the role forms at step 500 and the head sits at the floor from then.
    head = {"entropy": [0.83, 0.8, 0.75, 0.3, 0.25, 0.004, 0.003],
            "previous_token": [0.0, 0.0, 0.0, 0.16, 0.4, 0.99, 0.99],
            "max_logit": [9.0, 11.0, 8.0, 24.0, 47.0, 68.0, 67.0]}
    raw = [(a.step, a.kind) for a in entropy_alarms(STEPS, head["entropy"])]
    assert raw == [(300, "entropy-drop"), (500, "entropy-floor")]  # what the detectors see
    assert kinds(changes(STEPS, {(0, 0): head})) == [(500, "emerged")]
    # Without stored logits (measures computed by the server) the role explains it alike.
    head["max_logit"] = [NAN] * 7
    assert kinds(changes(STEPS, {(0, 0): head})) == [(500, "emerged")]


def test_a_head_at_the_floor_with_a_one_hot_role_raises_no_collapse():
    for score, role in (("first_token", "first-token"), ("diagonal", "diagonal"),
                        ("induction", "induction")):
        head = {"entropy": [0.9, 0.9, 0.9, 0.9, 0.01, 0.01, 0.01],
                score: [0.1, 0.1, 0.1, 0.1, 0.99, 0.99, 0.99]}
        found = changes(STEPS, {(0, 0): head})
        assert [(c.step, c.kind) for c in found] == [(400, "emerged")], role
        assert found[0].sentence.endswith("became %s %s head at step 400"
                                          % ("an" if role[0] in "aeiou" else "a", role))


def test_collapse_without_a_role_stays_an_alarm():
    head = {"entropy": [0.9, 0.9, 0.9, 0.4, 0.01, 0.01, 0.01],
            "previous_token": [0.1, 0.1, 0.1, 0.2, 0.3, 0.3, 0.3],  # below 0.5: no role
            "first_token": [0.1] * 7, "max_logit": [5.0] * 7}
    assert kinds(changes(STEPS, {(0, 0): head})) == [(300, "entropy-drop"), (400, "entropy-floor")]
    # A role gained before the fall (emerged at step 200), lost again at the fall: the fall is
    # not on its way to a role the head holds, so it alarms.
    head = {"entropy": [0.9, 0.9, 0.8, 0.8, 0.01, 0.01, 0.01],
            "diagonal": [0.1, 0.1, 0.6, 0.6, 0.2, 0.2, 0.2]}
    found = changes(STEPS, {(0, 0): head})
    assert (400, "entropy-floor") in kinds(found)


def test_a_fall_with_growing_logits_stays_an_alarm_even_with_a_role():
    # The max logit grows tenfold over its recent median with the fall (as at learning rate 1.0).
    head = {"entropy": [0.9, 0.9, 0.9, 0.3, 0.01, 0.01, 0.01],
            "previous_token": [0.1, 0.1, 0.1, 0.6, 0.99, 0.99, 0.99],
            "max_logit": [5.0, 5.0, 6.0, 60.0, 70.0, 75.0, 80.0]}
    assert kinds(changes(STEPS, {(0, 0): head})) == [
        (300, "emerged"), (300, "entropy-drop"), (400, "entropy-floor")]
    # A logit 4x its recent median leaves the drop at 300 to the role; one past the bound (100)
    # at the floor keeps the floor alarm, next to the max-logit alarm.
    head["max_logit"] = [5.0, 5.0, 6.0, 20.0, 140.0, 150.0, 150.0]
    assert kinds(changes(STEPS, {(0, 0): head})) == [
        (300, "emerged"), (400, "entropy-floor"), (400, "max-logit")]


def test_logit_grew():
    steps = [0, 1, 2, 3, 4]
    assert health.logit_grew(steps, [5.0, 5.0, 6.0, 60.0, 61.0], 3)  # 10x the median 5
    assert not health.logit_grew(steps, [5.0, 5.0, 6.0, 49.0, 61.0], 3)
    assert health.logit_grew(steps, [90.0, 95.0, 99.0, 101.0, 99.0], 3)  # past the bound
    assert not health.logit_grew(steps, [5.0, 5.0, 6.0, NAN, 61.0], 3)  # not measured
    assert not health.logit_grew(steps, [NAN, NAN, NAN, 60.0, 61.0], 3)  # nothing to compare
    assert health.logit_grew(steps, [5.0, 5.0, 6.0, 35.0, 61.0], 3, growth=5)
    assert not health.logit_grew(steps, [-3.0, -2.0, -2.5, -1.0, 0.0], 3)  # no ratio below 0
    with pytest.raises(ValueError, match="not one of the logged steps"):
        health.logit_grew(steps, [5.0] * 5, 7)


# ------------------------------------------------------------------------------------------
# Induction probe


def test_induction_probe():
    ids, offset = induction_probe(vocab_size=1000, length=32, batch=64, seed=0)
    assert ids.shape == (64, 64) and ids.dtype == np.int32 and offset == 32
    assert (ids[:, :32] == ids[:, 32:]).all()
    assert (ids != 0).all() and (ids < 1000).all()
    assert all(len(set(row[:32])) == 32 for row in ids)  # each token once per copy
    assert len({tuple(row) for row in ids}) == 64  # different sequences
    again, _ = induction_probe(vocab_size=1000, length=32, batch=64, seed=0)
    other, _ = induction_probe(vocab_size=1000, length=32, batch=64, seed=1)
    assert (again == ids).all() and (other != ids).any()


def test_induction_probe_small_vocabulary_and_errors():
    ids, _ = induction_probe(vocab_size=5, length=10, batch=3, reserved_ids=(0, 4))
    assert set(np.unique(ids)) <= {1, 2, 3}  # with repetition: only 3 ids to draw from
    with pytest.raises(ValueError, match="length must be >= 3"):
        induction_probe(100, 2)
    with pytest.raises(ValueError, match="leaves 1 token"):
        induction_probe(2, 5, reserved_ids=(0,))
    with pytest.raises(ValueError, match="batch"):
        induction_probe(100, 5, batch=0)


def test_induction_probe_is_exported_without_keras_or_tensorflow():
    code = (
        "import sys, tb_attention_plugin as tba\n"
        "ids, offset = tba.induction_probe(100, 4, batch=2)\n"
        "assert ids.shape == (2, 8) and offset == 4\n"
        "import tb_attention_plugin.health\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_gets_a_clear_error():
    eye = np.eye(4, dtype=np.float32)[None, None]
    with pytest.raises(ValueError, match="Tq == Tk"):
        head_health(np.full((1, 1, 3, 4), 0.25))
    with pytest.raises(ValueError, match="negative"):
        head_health(-eye)
    with pytest.raises(ValueError, match="Inf"):
        head_health(np.where(eye > 0, np.inf, 0))
    with pytest.raises(ValueError, match="shape"):
        head_health(np.ones((4, 4)))
    with pytest.raises(ValueError, match="empty"):
        head_health(np.ones((0, 1, 4, 4)))
    with pytest.raises(ValueError, match="mask of shape"):
        head_health(eye, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="boolean"):
        head_health(eye, mask=np.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="logits of shape"):
        head_health(eye, logits=np.zeros((1, 1, 4, 3)))
    with pytest.raises(ValueError, match="repeat_offset must be >= 3"):
        HeadHealth(repeat_offset=2)
    with pytest.raises(ValueError, match="no query in its second copy"):
        head_health(eye, repeat_offset=4)
    with pytest.raises(ValueError, match="before any update"):
        HeadHealth().result()
    streamed = HeadHealth().update(eye)
    with pytest.raises(ValueError, match="does not match the first block"):
        streamed.update(np.eye(5, dtype=np.float32)[None, None])


def test_docstring_examples_run():
    import doctest

    outcome = doctest.testmod(health, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted >= 15 and outcome.failed == 0


@pytest.mark.parametrize("seed", range(5))
def test_measures_stay_in_their_ranges_on_random_heads(seed):
    rng = np.random.default_rng(seed)
    b, h, t = 3, 3, int(rng.integers(4, 12))
    weights, logits = random_block(rng, b, h, t, causal_mask=bool(seed % 2))
    weights[0, 0] = NAN  # an example in which head 0 has no row at all
    result = head_health(weights, logits=logits, repeat_offset=3 if t >= 4 else None)
    for name in ("entropy", "previous_token", "diagonal", "first_token", "induction"):
        values = result[name]
        assert not np.isnan(values).any(), name  # the other examples still count
        assert ((values >= -1e-6) & (values <= 1 + 1e-6)).all(), (name, values)
    assert (result["entropy_nats"] <= math.log(t) + 1e-5).all()
    divergence = result["divergence"]
    assert ((divergence >= 0) & (divergence <= 1 + 1e-6)).all()
    np.testing.assert_allclose(divergence, divergence.T)
    alpha = result["sink_alpha"]
    assert ((alpha[~np.isnan(alpha)] >= 0) & (alpha[~np.isnan(alpha)] <= 1 + 1e-6)).all()
    cross = head_health(weights[..., : t - 1, :], cross=True)["monotonic"]
    assert ((cross > 0) & (cross <= 1 + 1e-6)).all()


def test_similarity_rows_spread_evenly_and_keep_the_last_row():
    assert health.similarity_rows(5, most=128).tolist() == [0, 1, 2, 3, 4]
    assert health.similarity_rows(10, most=4).tolist() == [1, 4, 6, 9]
    spread = health.similarity_rows(1024, most=128)
    assert len(spread) == 128 and spread[-1] == 1023 and (np.diff(spread) == 8).all()
    assert health.similarity_rows(1024).tolist() == list(range(1024))
    with pytest.raises(ValueError, match="similarity_rows must be >= 1"):
        health.HeadHealth(similarity_rows=0)
