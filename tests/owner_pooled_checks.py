"""Checks of the chunked (POOLED) capture of keras-hub owner layers, against their full capture.

Used by tests/test_capture_owner_pooled.py in the test process (TensorFlow) and, as a script, in
a subprocess on JAX, where Llama-style layers take the fused `ops.dot_product_attention`:

    KERAS_BACKEND=jax python tests/owner_pooled_checks.py llama3     # prints "ok jax llama3"

A family's tiny backbone (tests/keras_hub_families.py) runs on a probe of `LENGTH` tokens (not a
multiple of the block; example 1 padded at the end). Every attention call is planned POOLED in
`BLOCK` blocks with the default windows and one that cuts blocks; the chunked capture must give
the block means, maxes, windows and max logits `capture._pooled_from_full` gives on the full
capture of the same probe (float tolerance), count every unmasked position once and keep the
full capture's cross and causal flags, at chunks of part of a block and of several blocks.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_hub_families as families  # noqa: E402
from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin.logger import blocked, budget, capture  # noqa: E402

LENGTH = 90  # 6 blocks of 16, the last one 10 rows and columns
BLOCK = (16, 16)
PADDED = 7  # example 1's last positions are padding
TOLERANCE = dict(rtol=1e-5, atol=1e-7)


def probe_for(family, length=LENGTH):
    """Two examples of `length` tokens (a seq2seq decoder gets half), example 1 padded."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, families.VOCABULARY, size=(2, length)).astype("int32")
    mask = np.ones((2, length), "int32")
    mask[1, length - PADDED:] = 0
    ids[mask == 0] = 0
    if not family.seq2seq:
        return {"token_ids": ids, "padding_mask": mask}
    half = length // 2
    return {"encoder_token_ids": ids, "encoder_padding_mask": mask,
            "decoder_token_ids": ids[:, :half], "decoder_padding_mask": mask[:, :half]}


def built(name, length=LENGTH):
    """`(model, probe, sites)` of a family's backbone, built on its probe."""
    family = families.FAMILIES[name]
    keras.utils.set_random_seed(0)
    model = family.build()
    probe = probe_for(family, length)
    model(probe, training=False)
    sites, _ = capture.find_attention_layers(model)
    return model, probe, sites


def pooled_plans(model, probe, sites, examples=2):
    """Every attention call POOLED in `BLOCK` blocks, default windows plus one cutting blocks."""
    plans = {}
    for shape in capture.layer_shapes(model, probe, sites):
        windows = tuple(encoding.default_windows(shape.shape, BLOCK[0], shape.causal)) + (
            ("middle", (10, 37), (3, 50)),)
        plans[(shape.path, shape.index)] = budget.LayerPlan(
            "pooled", shape.shape, examples, shape.shape[1], shape.causal, BLOCK, windows)
    return plans


def plan_of(plans, tag):
    path, _, call = tag.partition("/call_")
    return plans[(path, int(call) if call else 0)]


def patched_pass(model, probe, sites, plans):
    """The capture's patched pass: `({tag: record}, {tag: reduced dict})`."""
    patcher = capture._Patcher(sites, plans=plans)
    capture._run_patched(model, probe, patcher)
    problems = dict(patcher.problems)
    records = capture._records_from_calls(patcher.calls, problems, sites, plans)
    assert not problems, problems
    reduced = {}
    for site in sites:
        entries = patcher.calls.get(id(site), [])
        for index, entry in enumerate(entries):
            tag = site.path if len(entries) == 1 else "%s/call_%d" % (site.path, index)
            reduced[tag] = entry.get("reduced")
    return {r.tag: r for r in records}, reduced


def full_records(model, probe, sites):
    """The full capture of the probe (no plans): every call's probabilities and mask."""
    result = capture.capture_attention(model, probe, sites)
    assert not result.problems, result.problems
    return {r.tag: r for r in result.records}


def assert_pooled_like_full(record, full, plan, what):
    """`record` (chunked) equals `_pooled_from_full` of the full record, flags included."""
    assert record.scores is None and record.pooled is not None, what
    assert record.shape == full.shape, (what, record.shape, full.shape)
    assert (record.cross, record.causal) == (full.cross, full.causal), what
    assert record.source == full.source, (what, record.source, full.source)
    expected = capture._pooled_from_full(full.scores, full.mask, plan)
    for name in ("means", "maxes"):
        assert np.array_equal(np.isnan(record.pooled[name]), np.isnan(expected[name])), what
        np.testing.assert_allclose(record.pooled[name], expected[name], err_msg=what,
                                   **TOLERANCE)
    assert [w[:3] for w in record.pooled["windows"]] == [w[:3] for w in expected["windows"]]
    for got, want in zip(record.pooled["windows"], expected["windows"]):
        np.testing.assert_allclose(got[3], want[3], err_msg="%s %s" % (what, got[0]),
                                   **TOLERANCE)
    if full.max_logit is None:  # a registered function hands over no logits
        assert record.max_logit is None, what
        return
    np.testing.assert_allclose(record.max_logit, full.max_logit[:plan.examples], err_msg=what,
                               rtol=1e-5, atol=1e-5)


def assert_every_position_counted(reduced, full, plan, what):
    """The blocks' unmasked counts add up to the unmasked positions of each example and head."""
    examples, heads, tq, tk = (plan.examples,) + tuple(full.shape[1:])
    if "counts" not in reduced:  # no mask: every position is in one static block
        assert full.mask is None and full.scores.shape[-2:] == (tq, tk), what
        assert blocked.static_counts(tq, tk, *plan.block).sum() == tq * tk, what
        return
    counts = np.broadcast_to(np.asarray(reduced["counts"]), (examples, heads) +
                             np.asarray(reduced["counts"]).shape[2:])
    attended = np.broadcast_to(full.mask, full.scores.shape)[:examples].sum(axis=(2, 3))
    np.testing.assert_array_equal(counts.sum(axis=(2, 3)), attended, err_msg=what)


def check_family(name, chunk_rows=(8, 32), examples=2):
    """Every call of a family's backbone, chunked at each of `chunk_rows` query rows per chunk
    (part of a block; two blocks, the last chunk padded), against its full capture. Returns
    `{tag: source}`."""
    model, probe, sites = built(name)
    plans = pooled_plans(model, probe, sites, examples)
    full = full_records(model, probe, sites)
    default_chunk_bytes = blocked.CHUNK_BYTES
    try:
        for rows in chunk_rows:
            heads = max(plan.shape[1] for plan in plans.values())
            blocked.CHUNK_BYTES = examples * heads * LENGTH * 4 * rows
            records, reduced = patched_pass(model, probe, sites, plans)
            assert sorted(records) == sorted(full), (sorted(records), sorted(full))
            for tag, record in records.items():
                what = "%s %s, %d rows per chunk" % (name, tag, rows)
                plan = plan_of(plans, tag)
                assert_pooled_like_full(record, full[tag], plan, what)
                assert_every_position_counted(reduced[tag], full[tag], plan, what)
    finally:
        blocked.CHUNK_BYTES = default_chunk_bytes
    return {tag: record.source for tag, record in records.items()}


if __name__ == "__main__":
    for family_name in sys.argv[1:]:
        sources = check_family(family_name, chunk_rows=(32,))
        print("ok", keras.backend.backend(), family_name, sorted(set(sources.values())))
