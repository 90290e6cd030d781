"""Per-head statistics and rollout on small matrices whose answers are worked out
by hand in the comments (natural logarithms; ln 2 = 0.693147, ln 3 = 1.098612)."""

import math

import numpy as np
import pytest

from tb_attention_plugin.stats import attention_rollout
from tb_attention_plugin.stats import example_statistics
from tb_attention_plugin.stats import head_statistics

NAN = np.nan


def stats_of(matrix, **kwargs):
    """Statistics of a single head given as a nested list `[Tq][Tk]`, as Python floats."""
    result = head_statistics(np.array([matrix], np.float32), **kwargs)
    for values in result.values():
        assert values.dtype == np.float32 and values.shape == (1,)
    return {name: float(values[0]) for name, values in result.items()}


def test_uniform_head():
    stats = stats_of([[0.25] * 4] * 4)
    assert stats["entropy"] == pytest.approx(1.0, abs=1e-6)
    assert stats["max_weight"] == pytest.approx(0.25)
    # row i: 0.25 * sum_j |i - j| = 0.25 * (6, 4, 4, 6) = 1.5, 1, 1, 1.5 -> mean 1.25
    assert stats["mean_distance"] == pytest.approx(1.25)
    assert stats["first_token_share"] == pytest.approx(0.25)


def test_one_hot_on_first_token():
    stats = stats_of([[1, 0, 0, 0]] * 4)
    assert stats["entropy"] == pytest.approx(0.0, abs=1e-7)
    assert stats["max_weight"] == pytest.approx(1.0)
    # row i looks at key 0 only: distance i -> (0 + 1 + 2 + 3) / 4 = 1.5
    assert stats["mean_distance"] == pytest.approx(1.5)
    assert stats["first_token_share"] == pytest.approx(1.0)


def test_diagonal_head():
    stats = stats_of(np.eye(4).tolist())
    assert stats["entropy"] == pytest.approx(0.0, abs=1e-7)
    assert stats["max_weight"] == pytest.approx(1.0)
    assert stats["mean_distance"] == pytest.approx(0.0, abs=1e-7)
    assert stats["first_token_share"] == pytest.approx(0.25)  # only row 0 hits key 0


def test_causal_rows_are_normalised_by_their_own_key_count():
    stats = stats_of(
        [
            [1.0, NAN, NAN],
            [0.5, 0.5, NAN],
            [0.5, 0.25, 0.25],
        ]
    )
    # row 0: one visible key -> skipped for entropy.
    # row 1: ln 2 / ln 2 = 1 (by ln 3 it would be 0.631).
    # row 2: -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2 = 1.039721; / ln 3 = 0.946395.
    assert stats["entropy"] == pytest.approx((1.0 + 0.946395) / 2, abs=1e-5)
    # max: 1, 0.5, 0.5 -> 2/3
    assert stats["max_weight"] == pytest.approx(2 / 3)
    # distance: row 0: 0; row 1: 0.5 * 1 = 0.5; row 2: 0.5 * 2 + 0.25 * 1 = 1.25 -> 1.75 / 3
    assert stats["mean_distance"] == pytest.approx(1.75 / 3)
    # key 0: 1, 0.5, 0.5 -> 2/3
    assert stats["first_token_share"] == pytest.approx(2 / 3)


def test_padding_masked_keys_and_rows_are_ignored():
    stats = stats_of(
        [
            [0.5, 0.25, 0.25, NAN],  # key 3 is padding
            [0.1, 0.2, 0.7, NAN],
            [0.0, 0.0, 0.0, 0.0],  # padded query as Keras >= 3.10 leaves it: all zeros
            [NAN, NAN, NAN, NAN],  # padded query, masked
        ]
    )
    # entropy row 0: 1.5 ln 2 / ln 3 = 0.946395
    # entropy row 1: -(0.1 ln 0.1 + 0.2 ln 0.2 + 0.7 ln 0.7) = 0.230259 + 0.321888 + 0.249672
    #                = 0.801819; / ln 3 = 0.729847
    assert stats["entropy"] == pytest.approx((0.946395 + 0.729847) / 2, abs=1e-5)
    assert stats["max_weight"] == pytest.approx((0.5 + 0.7) / 2)
    # distance row 0 (i=0): 0.25 * 1 + 0.25 * 2 = 0.75; row 1 (i=1): 0.1 + 0.7 = 0.8
    assert stats["mean_distance"] == pytest.approx((0.75 + 0.8) / 2)
    assert stats["first_token_share"] == pytest.approx((0.5 + 0.1) / 2)


def test_first_token_share_per_head():
    weights = np.array(
        [
            [[0.7, 0.1, 0.1, 0.1]] * 4,  # an attention sink on key 0
            [[NAN, 0.5, 0.25, 0.25]] * 4,  # key 0 masked: no share
        ],
        np.float32,
    )
    share = head_statistics(weights)["first_token_share"]
    np.testing.assert_allclose(share, [0.7, 0.0], atol=1e-7)


def test_examples_count_once_each_whatever_their_length():
    weights = np.array(
        [
            [[[1.0, 0.0], [NAN, NAN]]],  # example 0: one valid row, max 1
            [[[0.5, 0.5], [0.5, 0.5]]],  # example 1: two valid rows, max 0.5
        ],
        np.float32,
    )
    per_example = example_statistics(weights)["max_weight"]
    np.testing.assert_allclose(per_example, [[1.0], [0.5]])
    # mean over examples (1 + 0.5) / 2, not over pooled rows (1 + 0.5 + 0.5) / 3
    np.testing.assert_allclose(head_statistics(weights)["max_weight"], [0.75])


def test_head_without_valid_rows_is_nan():
    weights = np.array([[[0.5, 0.5], [0.5, 0.5]], [[NAN, NAN], [NAN, NAN]]], np.float32)
    stats = head_statistics(weights)
    for values in stats.values():
        assert not np.isnan(values[0]) and np.isnan(values[1])


def test_patch_distance_on_2x2_grid_with_class_token():
    # Position 0 is [CLS]; patches: 1 = (0, 0), 2 = (0, 1), 3 = (1, 0), 4 = (1, 1).
    weights = [
        [0.2, 0.2, 0.2, 0.2, 0.2],  # [CLS] query: has no place in the image, skipped
        [0.5, 0.25, 0.0, 0.0, 0.25],  # (0,0): 0.25 at d 0, 0.25 at d sqrt2, patch mass 0.5
        [0.0, 0.0, 0.0, 0.5, 0.5],  # (0,1): 0.5 at d sqrt2 (to (1,0)), 0.5 at d 1 (to (1,1))
        [1.0, 0.0, 0.0, 0.0, 0.0],  # (1,0): everything on [CLS]: no patch weight, skipped
        [0.0, 0.25, 0.25, 0.25, 0.25],  # (1,1): d sqrt2, 1, 1, 0
    ]
    stats = stats_of(weights, image_grid=(2, 2), prefix_tokens=1)
    sqrt2 = math.sqrt(2)
    row1 = 0.25 * sqrt2 / 0.5  # renormalised over patches: 0.707107
    row2 = 0.5 * sqrt2 + 0.5 * 1  # 1.207107
    row4 = 0.25 * (sqrt2 + 1 + 1 + 0)  # 0.853553
    assert stats["mean_distance"] == pytest.approx((row1 + row2 + row4) / 3, abs=1e-6)  # 0.922589
    assert stats["first_token_share"] == pytest.approx((0.2 + 0.5 + 0 + 1 + 0) / 5)
    assert stats["max_weight"] == pytest.approx((0.2 + 0.5 + 0.5 + 1 + 0.25) / 5)


def test_patch_grid_must_match_the_key_axis():
    weights = np.full((1, 5, 5), 0.2, np.float32)
    with pytest.raises(ValueError, match="needs 6 key positions"):
        head_statistics(weights, image_grid=(2, 2), prefix_tokens=2)
    with pytest.raises(ValueError, match="only meaningful together with image_grid"):
        head_statistics(weights, prefix_tokens=1)
    with pytest.raises(ValueError, match="Tq == Tk"):
        head_statistics(np.full((1, 3, 5), 0.2, np.float32), image_grid=(2, 2), prefix_tokens=1)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\[heads, Tq, Tk\]"):
        head_statistics(np.full((4, 4), 0.25, np.float32))
    with pytest.raises(ValueError, match="empty axis"):
        head_statistics(np.zeros((1, 0, 4), np.float32))


def test_rollout_of_one_layer_with_and_without_residual():
    layer = [[1.0, 0.0], [0.5, 0.5]]
    # 0.5 A + 0.5 I = [[1, 0], [0.25, 0.75]]; rows already sum to 1
    np.testing.assert_allclose(attention_rollout([layer]), [[1.0, 0.0], [0.25, 0.75]])
    np.testing.assert_allclose(attention_rollout([layer], residual=False), layer)


def test_rollout_of_two_layers_multiplies_from_the_bottom_up():
    bottom = [[1.0, 0.0], [0.5, 0.5]]
    top = [[0.0, 1.0], [0.0, 1.0]]  # everyone attends to token 1
    # A1 = [[1, 0], [0.25, 0.75]], A2 = 0.5 top + 0.5 I = [[0.5, 0.5], [0, 1]]
    # A2 @ A1 = [[0.5 + 0.125, 0.375], [0.25, 0.75]]  (A1 @ A2 would be [[.5, .5], [.125, .875]])
    np.testing.assert_allclose(attention_rollout([bottom, top]), [[0.625, 0.375], [0.25, 0.75]])
    # top @ bottom = [[0.5, 0.5], [0.5, 0.5]]
    np.testing.assert_allclose(attention_rollout([bottom, top], residual=False), [[0.5] * 2] * 2)


def test_rollout_treats_masked_as_zero_and_renormalises_rows():
    layer = [[1.0, NAN], [0.4, 0.4]]  # row 1 sums to 0.8 (a truncated row)
    # 0.5 A + 0.5 I = [[1, 0], [0.2, 0.7]]; row 1 / 0.9 = [0.222222, 0.777778]
    np.testing.assert_allclose(
        attention_rollout([layer]), [[1.0, 0.0], [0.2 / 0.9, 0.7 / 0.9]], rtol=1e-6
    )
    # without residual: row 1 / 0.8 = [0.5, 0.5]
    np.testing.assert_allclose(attention_rollout([layer], residual=False), [[1, 0], [0.5, 0.5]])


def test_rollout_validates_its_layers():
    square = np.full((3, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match="layer 1: rollout needs square"):
        attention_rollout([square, np.full((3, 4), 0.25, np.float32)])
    with pytest.raises(ValueError, match="layer 1 has 2 tokens, layer 0 has 3"):
        attention_rollout([square, np.full((2, 2), 0.5, np.float32)])
    with pytest.raises(ValueError, match="negative or infinite"):
        attention_rollout([-square])
