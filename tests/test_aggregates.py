"""Statistics and rollout over a logdir written by AttentionWriter and read back through a real
MultiplexerDataProvider with the size guidance `tensorboard` itself uses (10 steps kept per tag)."""

import numpy as np
import pytest
from tensorboard import context as tb_context
from tensorboard import errors
from tensorboard.backend.event_processing import data_ingester
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer

from tb_attention_plugin import encoding
from tb_attention_plugin.server import aggregates
from tb_attention_plugin.server import reader as reader_lib
from tb_attention_plugin.stats import attention_rollout
from tb_attention_plugin.stats import example_statistics
from tb_attention_plugin.stats import head_statistics
from tb_attention_plugin.writer import AttentionWriter

ENCODER = ["encoder/layer_0/self_attention", "encoder/layer_1/self_attention"]
VIT = "vit/layer_0"
CROSS = "decoder/cross_attention"
STEPS = list(range(0, 120, 10))  # 12 steps: the reader keeps 10 of them
RETAINED = data_ingester.DEFAULT_SIZE_GUIDANCE[plugin_event_multiplexer.event_accumulator.TENSORS]
TOKENS = [["a", "b", "c", "d", "e", "f"], ["g", "h", "i", "j", "<pad>", "<pad>"]]
GRID, PREFIX = (2, 2), 1


def softmax_with_mask(rng, shape, mask):
    """Softmax of logits in [-1, 1] over unmasked keys; NaN where masked; all-masked rows NaN."""
    logits = rng.uniform(-1, 1, shape).astype(np.float64)
    exp = np.where(mask, np.exp(logits), 0.0)
    total = exp.sum(axis=-1, keepdims=True)
    weights = np.divide(exp, total, out=np.zeros_like(exp), where=total > 0)
    return np.where(mask, weights, np.nan).astype(np.float32)


def write_step(writer, tag, weights, step, **kwargs):
    mask = ~np.isnan(weights)
    writer.attention(tag, np.nan_to_num(weights), step, mask=mask, **kwargs)


def dequantised(weights):
    """What the reader should decode: the writer's own quantisation of each head."""
    result = np.empty_like(weights)
    for index in np.ndindex(weights.shape[:2]):
        mask = ~np.isnan(weights[index])
        codes, scale = encoding.quantize(np.nan_to_num(weights[index]), mask)
        result[index] = encoding.codes_to_weights(codes, scale)
    return result


def provider_for(logdir):
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE,
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return multiplexer, data_provider.MultiplexerDataProvider(multiplexer, str(logdir))


def quantisation_bounds(weights, grid=None, prefix=0):
    """Most each statistic can move when every weight moves by at most MAX_ERROR * scale.

    `weights` are softmax rows (sum 1) `[B, H, Tq, Tk]`, NaN = masked. Per row, then the worst
    row (a mean over rows and examples moves no more than its worst row).
    """
    attended = ~np.isnan(weights)
    w = np.where(attended, weights, 0.0).astype(np.float64)
    scale = w.max(axis=(2, 3), keepdims=True)
    delta = encoding.MAX_ERROR * scale  # per weight, per head blob
    keys = attended.sum(axis=-1, keepdims=True)
    valid = keys[..., 0] > 0
    # Entropy: renormalised p'_j differs from p_j by eps_j <= delta (1 + K p_j) / (1 - K delta);
    # |d(p ln p)/dp| = |ln p + 1| is largest at an end of [p - eps, p + eps].
    eps = delta * (1 + keys * w) / (1 - keys * delta)
    assert (w - eps)[attended].min() > 0, "weights too small for a first-order bound"
    low, high = np.clip(w - eps, 1e-12, None), w + eps
    slope = np.maximum(np.abs(np.log(low) + 1), np.abs(np.log(high) + 1))
    row_entropy = np.where(attended, slope * eps, 0).sum(-1) / np.log(np.maximum(keys[..., 0], 2))
    bounds = {
        "entropy": row_entropy[valid & (keys[..., 0] > 1)].max(),
        "max_weight": delta.max(),
        "first_token_share": delta.max(),
    }
    tq, tk = weights.shape[2:]
    if grid is None:
        distance = np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :]).astype(np.float64)
        row_distance = (np.where(attended, distance, 0) * delta).sum(-1)
        bounds["mean_distance"] = row_distance[valid].max()
    else:
        patch = np.arange(tk) - prefix
        row, col = patch // grid[1], patch % grid[1]
        distance = np.hypot(row[:, None] - row, col[:, None] - col)
        is_patch = attended & (patch >= 0)
        mass = np.where(is_patch, w, 0).sum(-1)  # P
        moment = (np.where(is_patch, w, 0) * distance).sum(-1)  # D
        d_mass = (is_patch * delta).sum(-1)
        d_moment = (np.where(is_patch, distance, 0) * delta).sum(-1)
        # |D'/P' - D/P| <= (|dD| + (D/P) |dP|) / (P - |dP|), over patch query rows
        ratio_error = (d_moment + moment / mass * d_mass) / (mass - d_mass)
        bounds["mean_distance"] = ratio_error[..., PREFIX:][valid[..., PREFIX:]].max()
    return {name: float(value) + 1e-6 for name, value in bounds.items()}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A run with two padded encoder layers, one ViT layer and one cross-attention layer."""
    logdir = tmp_path_factory.mktemp("aggregates")
    rng = np.random.default_rng(5)
    text_mask = np.ones((2, 3, 6, 6), bool)
    text_mask[1, :, :, 4:] = False  # example 1: two padding keys ...
    text_mask[1, :, 4:, :] = False  # ... and two padded query rows
    originals = {}
    with AttentionWriter(logdir / "train") as writer:
        for step in STEPS:
            for tag in ENCODER:
                weights = softmax_with_mask(rng, (2, 3, 6, 6), text_mask)
                write_step(writer, tag, weights, step, query_tokens=TOKENS, key_tokens=TOKENS)
                originals[tag, step] = weights
            vit = softmax_with_mask(rng, (1, 2, 5, 5), np.ones((1, 2, 5, 5), bool))
            image = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
            write_step(writer, VIT, vit, step, images=image, image_grid=GRID, prefix_tokens=PREFIX)
            originals[VIT, step] = vit
            cross = softmax_with_mask(rng, (2, 3, 4, 6), np.ones((2, 3, 4, 6), bool))
            write_step(writer, CROSS, cross, step)
            originals[CROSS, step] = cross
    _, provider = provider_for(logdir)
    return provider, originals


def call(function, provider, *args, **kwargs):
    """`function(reader, ctx, experiment_id, "train", ...)`, read through the plugin's reader."""
    reader = reader_lib.AttentionReader(provider)
    return function(reader, tb_context.RequestContext(), "", "train", *args, **kwargs)


@pytest.mark.parametrize("tag", ENCODER + [VIT, CROSS])
def test_statistics_per_step_match_head_statistics_of_the_written_weights(logged, tag):
    provider, originals = logged
    result = call(aggregates.tag_statistics, provider, tag, cache=aggregates.StepStatisticsCache())
    assert result["errors"] == [] and result["example"] is None
    # Production sampling: the newest step is always kept, at most RETAINED steps in all.
    assert len(result["steps"]) == RETAINED and result["steps"][-1] == STEPS[-1]
    assert set(result["steps"]) <= set(STEPS) and result["steps"] == sorted(result["steps"])
    grid, prefix = (GRID, PREFIX) if tag == VIT else (None, 0)
    for position, step in enumerate(result["steps"]):
        original = originals[tag, step]
        assert result["heads"] == original.shape[1]
        served = {
            name: np.array(values[position], float) for name, values in result["stats"].items()
        }
        exact = head_statistics(dequantised(original), grid, prefix)
        from_original = head_statistics(original, grid, prefix)
        bounds = quantisation_bounds(original, grid, prefix)
        for name in served:
            # The read path decodes exactly what was written ...
            np.testing.assert_allclose(served[name], exact[name], atol=1e-5, err_msg=name)
            # ... and quantisation moves a statistic no more than MAX_ERROR allows.
            np.testing.assert_allclose(
                served[name], from_original[name], rtol=0, atol=bounds[name], err_msg=name
            )


def test_quantisation_bounds_are_tight_enough_to_mean_something(logged):
    _, originals = logged
    bounds = quantisation_bounds(originals[ENCODER[0], 0])
    assert bounds["max_weight"] <= encoding.MAX_ERROR + 1e-6
    assert bounds["entropy"] < 0.05 and bounds["mean_distance"] < 0.05


def test_one_example_instead_of_the_mean(logged):
    provider, originals = logged
    tag = ENCODER[0]
    result = call(aggregates.tag_statistics, provider, tag, example=1)
    assert result["example"] == 1
    step = result["steps"][0]
    expected = example_statistics(dequantised(originals[tag, step]))
    for name, values in result["stats"].items():
        np.testing.assert_allclose(values[0], expected[name][1], atol=1e-5, err_msg=name)
    with pytest.raises(errors.NotFoundError, match="no example 2"):
        call(aggregates.tag_statistics, provider, tag, example=2)
    with pytest.raises(errors.InvalidArgumentError, match="non-negative integer"):
        call(aggregates.tag_statistics, provider, tag, example=-1)
    with pytest.raises(errors.NotFoundError, match="no attention data"):
        call(aggregates.tag_statistics, provider, "no/such/tag")


def test_repeated_request_is_served_from_the_cache(logged):
    provider, _ = logged
    cache = aggregates.StepStatisticsCache()
    first = call(aggregates.tag_statistics, provider, ENCODER[1], cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, RETAINED, RETAINED)
    key = ("", "train", ENCODER[1], first["steps"][0])
    cached_entry = cache._entries[key][1]
    second = call(aggregates.tag_statistics, provider, ENCODER[1], cache=cache)
    assert (cache.hits, cache.misses) == (RETAINED, RETAINED)
    assert second == first
    assert cache._entries[key][1] is cached_entry  # the very same arrays, not recomputed


def test_grown_run_computes_only_new_steps_and_reports_unreadable_ones(tmp_path):
    rng = np.random.default_rng(7)
    mask = np.ones((1, 2, 4, 4), bool)
    writer = AttentionWriter(tmp_path / "train")
    head_1_masked = mask.copy()
    head_1_masked[:, 1] = False
    for step in (1, 2, 3):
        step_mask = head_1_masked if step == 1 else mask
        write_step(writer, "layer", softmax_with_mask(rng, (1, 2, 4, 4), step_mask), step)
    writer.flush()
    multiplexer, provider = provider_for(tmp_path)
    cache = aggregates.StepStatisticsCache()
    first = call(aggregates.tag_statistics, provider, "layer", cache=cache)
    assert first["steps"] == [1, 2, 3] and cache.misses == 3
    for values in first["stats"].values():  # a head with nothing to measure is null in JSON
        assert values[0][1] is None and values[0][0] is not None and values[1][1] is not None

    write_step(writer, "layer", softmax_with_mask(rng, (1, 2, 4, 4), mask), 4)
    future = encoding.encode_step(softmax_with_mask(rng, (1, 2, 4, 4), mask))
    future[0] = future[0].replace(b'"version":2', b'"version":99')
    writer.write_blobs("layer", future, 5)
    writer.close()
    multiplexer.Reload()
    grown = call(aggregates.tag_statistics, provider, "layer", cache=cache)
    assert grown["steps"] == [1, 2, 3, 4]
    assert [e["step"] for e in grown["errors"]] == [5]
    assert "version 99" in grown["errors"][0]["error"]
    assert (cache.hits, cache.misses) == (3, 5)  # steps 4 and 5 computed, 1-3 reused


def test_rollout_equals_the_direct_computation(logged):
    provider, originals = logged
    step = STEPS[-1]
    for residual in (True, False):
        result = call(aggregates.rollout, provider, ENCODER, step, 1, residual=residual)
        layers = [
            np.nan_to_num(dequantised(originals[tag, step])[1]).mean(axis=0) for tag in ENCODER
        ]
        expected = attention_rollout(layers, residual=residual)
        assert result["matrix"].dtype == np.float32 and result["shape"] == [6, 6]
        np.testing.assert_allclose(result["matrix"], expected, atol=1e-6)
        assert result["tokens"] == TOKENS[1] and result["tags"] == ENCODER
        assert result["residual"] is residual and result["image"] is None
    # padded query rows get only the residual path, padded keys nothing beyond it
    assert np.all(result["matrix"][:4, 4:] == 0)


def test_rollout_refuses_what_is_not_one_stack(logged):
    provider, _ = logged
    step = STEPS[-1]
    with pytest.raises(errors.InvalidArgumentError, match="not self-attention"):
        call(aggregates.rollout, provider, [ENCODER[0], CROSS], step, 0)
    with pytest.raises(errors.InvalidArgumentError, match="shares one token axis"):
        call(aggregates.rollout, provider, [ENCODER[0], VIT], step, 0)
    with pytest.raises(errors.InvalidArgumentError, match="must not repeat"):
        call(aggregates.rollout, provider, [ENCODER[0], ENCODER[0]], step, 0)
    with pytest.raises(errors.InvalidArgumentError, match="one or more tags"):
        call(aggregates.rollout, provider, [], step, 0)
    with pytest.raises(errors.NotFoundError, match="no attention data"):
        call(aggregates.rollout, provider, [ENCODER[0], "missing"], step, 0)
    with pytest.raises(errors.NotFoundError, match="has no step 7"):
        call(aggregates.rollout, provider, ENCODER, 7, 0)
    with pytest.raises(errors.NotFoundError, match="no example 2"):
        call(aggregates.rollout, provider, ENCODER, step, 2)
    vit = call(aggregates.rollout, provider, [VIT], step, 0)
    assert vit["image"]["grid"] == list(GRID) and vit["tokens"] is None
