"""`health_stream.ChunkedHeadHealth` (query chunks, as a pooled layer's blocked pass hands them
over) against `health.HeadHealth` on the full matrices: every measure, the sinks, the
similarity and the roles, for causal self-attention with an induction probe, bidirectional
self-attention with key padding and cross-attention with padded queries and keys (the
monotonic path), in uneven chunks over several batches with padding examples dropped."""

import numpy as np
import pytest

from tb_attention_plugin import health
from tb_attention_plugin.health_stream import ChunkedHeadHealth

RESULT_ARRAYS = ("entropy", "entropy_nats", "previous_token", "diagonal", "first_token",
                 "induction", "monotonic", "max_logit", "sink_alpha", "divergence")


def softmax_weights(rng, shape, mask, sharp=()):
    """Keras-like attention: softmax of random logits over the unmasked keys, 0 where masked,
    all-zero rows where a query sees nothing. Heads in `sharp` get a peaked, structured head
    (a previous-token spike, a first-token sink) so that roles and sinks are not all "none"."""
    b, h, tq, tk = shape
    logits = rng.normal(size=shape).astype(np.float32)
    for head, kind in sharp:
        if kind == "previous":
            rows = np.arange(1, tq)
            logits[:, head, rows, np.minimum(rows - 1, tk - 1)] += 8.0
        elif kind == "sink":
            logits[:, head, :, 0] += 6.0
        elif kind == "diagonal":
            rows = np.arange(min(tq, tk))
            logits[:, head, rows, rows] += 8.0
    mask = np.broadcast_to(mask, shape)
    logits = np.where(mask, logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    exp = np.where(mask, np.exp(logits - top), 0)
    total = exp.sum(axis=-1, keepdims=True)
    return np.where(total > 0, exp / np.where(total > 0, total, 1), 0).astype(np.float32)


def streamed(weights_blocks, masks, chunks, examples, **options):
    """ChunkedHeadHealth fed each block in chunks of the sizes `chunks` (cycled)."""
    tq = weights_blocks[0].shape[2]
    stream = ChunkedHeadHealth(queries=tq, **options)
    for weights, mask, keep in zip(weights_blocks, masks, examples):
        start, index = 0, 0
        while start < tq:
            stop = min(start + chunks[index % len(chunks)], tq)
            part = None if mask is None else mask[..., start:stop, :]
            stream.add_chunk(start, weights[:, :, start:stop], part)
            start, index = stop, index + 1
        stream.end_batch(keep)
    return stream.result()


def assert_same_result(got, expected):
    for name in RESULT_ARRAYS:
        if name not in expected:
            assert name not in got
            continue
        np.testing.assert_allclose(got[name], expected[name], rtol=2e-5, atol=2e-6,
                                   equal_nan=True, err_msg=name)
    assert got["roles"] == expected["roles"]
    assert [[k for k, _ in head] for head in got["sinks"]] == [
        [k for k, _ in head] for head in expected["sinks"]]
    assert got["examples"] == expected["examples"]


def test_causal_induction_probe_in_uneven_chunks_over_padded_batches():
    rng = np.random.default_rng(0)
    b, h, t, offset = 3, 4, 24, 12
    shape = (b, h, t, t)
    causal = np.tril(np.ones((t, t), bool))[None, None]
    sharp = [(0, "previous"), (1, "sink"), (2, "diagonal")]
    blocks = [softmax_weights(rng, shape, causal, sharp) for _ in range(3)]
    keep = [3, 3, 2]  # the last block's third example pads the block: dropped
    options = dict(causal=True, repeat_offset=offset)
    got = streamed(blocks, [None] * 3, [5, 1, 7, 3], keep, **options)
    expected = health.HeadHealth(**options)
    for weights, examples in zip(blocks, keep):
        expected.update(weights[:examples])
    expected = expected.result()
    assert_same_result(got, expected)
    assert expected["roles"][:3] == ["previous-token", "first-token", "diagonal"]
    assert expected["sinks"][1] and expected["sinks"][1][0][0] == 0
    assert not np.isnan(expected["divergence"]).any()


def test_bidirectional_self_attention_with_key_padding():
    rng = np.random.default_rng(1)
    b, h, t = 4, 3, 20
    lengths = np.array([20, 14, 9, 1])  # the last example sees one key: no informative row
    keys = np.arange(t)[None, :] < lengths[:, None]
    mask = np.broadcast_to(keys[:, None, :], (b, t, t)) & (np.arange(t)[None, :, None]
                                                           < lengths[:, None, None])
    weights = softmax_weights(rng, (b, h, t, t), mask[:, None], [(0, "sink")])
    got = streamed([weights], [mask], [6], [b])
    assert_same_result(got, health.head_health(weights, mask=mask))
    # A key-padding mask of one row per example (Keras' `[B, 1, Tk]`) broadcasts over chunks.
    row_mask = keys[:, None, :]
    weights = softmax_weights(rng, (b, h, t, t), row_mask[:, None], [(1, "diagonal")])
    stream = ChunkedHeadHealth(queries=t)
    for start in range(0, t, 8):
        stream.add_chunk(start, weights[:, :, start:start + 8], row_mask)
    stream.end_batch()
    assert_same_result(stream.result(), health.head_health(weights, mask=row_mask))


def test_cross_attention_monotonic_path_is_streamed_exactly():
    rng = np.random.default_rng(2)
    b, h, tq, tk = 2, 3, 17, 11
    source = np.arange(tk)[None, :] < np.array([11, 8])[:, None]
    target = np.arange(tq)[None, :] < np.array([17, 12])[:, None]
    mask = target[:, :, None] & source[:, None, :]  # padded queries see nothing: all-zero rows
    logits_shape = (b, h, tq, tk)
    weights = softmax_weights(rng, logits_shape, mask[:, None])
    # Head 0: a sharp monotonic alignment with a local swap; head 2: the reverse order.
    path = np.minimum(np.arange(tq) * tk // tq, tk - 1)
    path[[4, 5]] = path[[5, 4]]
    weights[:, 0] = 0.02 * weights[:, 0]
    weights[:, 0, np.arange(tq), path] += 0.98
    weights[:, 2] = 0.0
    weights[:, 2, np.arange(tq), tk - 1 - path] = 1.0
    weights = np.where(mask[:, None], weights, 0).astype(np.float32)
    for chunks in ([1], [4, 2], [tq]):
        got = streamed([weights], [mask], chunks, [b], cross=True)
        expected = health.head_health(weights, mask=mask, cross=True)
        assert_same_result(got, expected)
    assert expected["monotonic"][0] > 0.9 and expected["roles"][0] == "monotonic"
    assert expected["monotonic"][2] < 0.6 and expected["roles"][2] != "monotonic"


def test_similarity_off_and_max_logit_from_the_blocked_pass():
    rng = np.random.default_rng(3)
    weights = softmax_weights(rng, (2, 2, 8, 8), np.ones((8, 8), bool))
    stream = ChunkedHeadHealth(queries=8, similarity=False)
    stream.add_chunk(0, weights[:, :, :5])
    stream.add_chunk(5, weights[:, :, 5:])
    stream.end_batch()
    stream.add_max_logit(np.array([3.0, np.nan], np.float32))
    result = stream.result()
    assert "divergence" not in result
    np.testing.assert_array_equal(result["max_logit"], [3.0, np.nan])


def test_chunks_out_of_order_or_a_short_batch_are_clear_errors():
    weights = np.full((1, 1, 8, 8), 1 / 8, np.float32)
    stream = ChunkedHeadHealth(queries=8)
    with pytest.raises(ValueError, match="starts at query 0"):
        stream.add_chunk(4, weights[:, :, 4:])
    stream.add_chunk(0, weights[:, :, :4])
    with pytest.raises(ValueError, match="does not continue"):
        stream.add_chunk(5, weights[:, :, 5:])
    with pytest.raises(ValueError, match="after 4 of 8 query rows"):
        stream.end_batch()
    with pytest.raises(ValueError, match="without a chunk"):
        stream.end_batch()
    with pytest.raises(ValueError, match="pass the layer's 8 queries"):
        ChunkedHeadHealth(queries=8).add_chunk(0, np.full((1, 1, 9, 8), 1 / 8, np.float32))
    with pytest.raises(ValueError, match="Tq == Tk"):
        ChunkedHeadHealth(queries=6).add_chunk(0, weights[:, :, :6])


def test_long_causal_layer_sliced_and_similarity_on_a_row_sample():
    """Chunks longer than a causal slice are measured slice by slice over the keys each slice
    sees; the similarity compares `SIMILARITY_ROWS` rows spread over the layer, the same rows
    fed whole or in chunks, and estimates the every-row divergence closely."""
    rng = np.random.default_rng(5)
    b, h, t = 2, 4, 400
    causal = np.tril(np.ones((t, t), bool))[None, None]
    keys_kept = np.ones((b, 1, 1, t), bool)
    keys_kept[1, ..., 390:] = False  # the second example's last keys are padding
    mask = causal & keys_kept
    weights = softmax_weights(rng, (b, h, t, t), mask, [(0, "previous"), (1, "sink")])
    got = streamed([weights], [mask], [150, 260], [b], causal=True)
    expected = health.head_health(weights, mask=mask, causal=True)
    assert_same_result(got, expected)

    sample = health.similarity_rows(t, health.SIMILARITY_ROWS)
    assert len(sample) == health.SIMILARITY_ROWS == 128 and sample[-1] == t - 1
    np.testing.assert_allclose(
        expected["divergence"], health.js_divergence(weights[:, :, sample], mask[..., sample, :]),
        rtol=1e-5, atol=1e-6)
    every_row = health.head_health(weights, mask=mask, causal=True, similarity_rows=None)
    np.testing.assert_allclose(every_row["divergence"], health.js_divergence(weights, mask),
                               rtol=1e-5, atol=1e-6)
    off_diagonal = ~np.eye(h, dtype=bool)
    assert np.abs(expected["divergence"] - every_row["divergence"])[off_diagonal].max() < 0.02
    assert not np.allclose(expected["divergence"], every_row["divergence"], rtol=0, atol=1e-7)
