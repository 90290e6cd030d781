"""Checks of the chunked (POOLED) capture of GroupedQueryAttention, Attention and
AdditiveAttention, run once per Keras backend by tests/test_pooled_layers.py:

    KERAS_BACKEND=jax python tests/pooled_layer_checks.py [--quick]     # prints "ok jax"

One model holds every case: grouped-query attention (4 query heads over 2 key/value heads) on
the causal-only path and (6 over 3) under padding masks; `Attention` "dot" with `use_scale`,
dropout and a causal mask over padded tokens; `Attention` "concat"; `AdditiveAttention`.
Example 1 of the probe is padded at the front, so a causal row of it sees no key at all.
With every layer POOLED (explicit plans, blocks of 8 over 45 positions, windows that cut
blocks), the capture must

- never hand a layer's softmax more query rows than one chunk (the full scores never exist);
- give every layer the output the unpatched layer gives (float tolerance);
- give block means, maxes, windows and max logits equal to those computed from the layer's own
  `return_attention_scores=True` scores under the layer's mask (float tolerance),

at several chunk sizes (one row, part of a block, several blocks), eagerly and, on TensorFlow,
traced (`CompiledCapture`). Then `AttentionLogger` with a small `max_bytes_per_step` pools
these layers at 192 tokens; what is read back through TensorBoard's data provider equals the
same references within the storage format's bounds.
"""

import contextlib
import os
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import callback_helpers as helpers  # noqa: E402
from tb_attention_plugin import AttentionLogger, AttentionLoggerWarning, encoding  # noqa: E402
from tb_attention_plugin.logger import blocked, budget, capture  # noqa: E402

LENGTH = 45  # not a multiple of the block: the last block row and column are short
LOGGED_LENGTH = 192  # 2 x 6 x 192 x 192 weights do not fit 64 KiB: the budget pools
BLOCK = (8, 8)
VOCABULARY = 30
TAGS = ("gqa_causal", "gqa_padded", "dot", "concat", "additive")


def build_model():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32")  # any length
    masked = keras.layers.Embedding(VOCABULARY, 8, mask_zero=True)(tokens)  # padding masks
    plain = keras.layers.Embedding(VOCABULARY, 8)(tokens)
    gqa = keras.layers.GroupQueryAttention
    outputs = [
        # No Keras mask and use_causal_mask only: GQA's causal-only path (attention_mask None).
        gqa(head_dim=4, num_query_heads=4, num_key_value_heads=2, name="gqa_causal")(
            plain, plain, use_causal_mask=True),
        gqa(head_dim=4, num_query_heads=6, num_key_value_heads=3, dropout=0.5,
            name="gqa_padded")(masked, masked),
        keras.layers.Attention(use_scale=True, dropout=0.5, name="dot")(
            [masked, masked], use_causal_mask=True),
        keras.layers.Attention(score_mode="concat", use_scale=True, name="concat")(
            [plain, masked]),
        keras.layers.AdditiveAttention(name="additive")([masked, masked, plain]),
    ]
    outputs = [keras.layers.Identity(name="out_" + tag)(o) for tag, o in zip(TAGS, outputs)]
    model = keras.Model(tokens, outputs)
    model.compile("adam", ["mse"] * len(outputs))
    return model


def probe_tokens(length=LENGTH):
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, VOCABULARY, size=(2, length)).astype("int32")
    tokens[0, -5:] = 0  # padded at the end
    tokens[1, :3] = 0  # padded at the front: causal rows 0-2 of "dot" see no key
    return tokens


def plans_for(model, probe):
    """Every layer POOLED in 8x8 blocks, with the default windows and one that cuts blocks."""
    sites, _ = capture.find_attention_layers(model)
    plans = {}
    for shape in capture.layer_shapes(model, probe, sites):
        windows = tuple(encoding.default_windows(shape.shape, 8, shape.causal)) + (
            ("middle", (10, 27), (3, 30)),)
        plans[(shape.path, shape.index)] = budget.LayerPlan(
            "pooled", shape.shape, 2, shape.shape[1], shape.causal, BLOCK, windows)
    assert sorted(path for path, _ in plans) == sorted(TAGS), plans
    return sites, plans


@contextlib.contextmanager
def softmax_rows_seen():
    """Records the query rows of every score tensor handed to the layers' softmax (the
    classes' own methods, which the chunked pass calls)."""
    seen = []
    patched = [(keras.layers.GroupQueryAttention, "_masked_softmax", 0),
               (keras.layers.Attention, "_apply_scores", 0)]
    originals = []
    for cls, name, position in patched:
        original = cls.__dict__[name]

        def spy(self, *args, _original=original, **kwargs):
            scores = args[0] if args else kwargs["scores"]
            seen.append(int(scores.shape[-2]))
            return _original(self, *args, **kwargs)

        originals.append((cls, name, original))
        setattr(cls, name, spy)
    try:
        yield seen
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def patched_pass(model, probe, sites, plans):
    """The capture's patched pass: the model's outputs and the records."""
    patcher = capture._Patcher(sites, plans=plans)
    patcher.install()
    try:
        outputs = model(probe, training=False)
    finally:
        patcher.restore()
    problems = dict(patcher.problems)
    records = capture._records_from_calls(patcher.calls, problems, sites, plans)
    assert not problems, problems
    return [keras.ops.convert_to_numpy(o) for o in outputs], {r.tag: r for r in records}


def references(model, probe, sites):
    """`{tag: (weights [B, H, T, T], mask, max logit)}` from each layer's own scores."""
    path_of = {id(site.layer): site.path for site in sites}
    weights = helpers.references_by_tag(model, probe, lambda layer: path_of[id(layer)])
    full = {r.tag: r for r in capture.capture_attention(model, probe, sites).records}
    for tag, record in full.items():  # the full capture is the layer's own scores too
        np.testing.assert_allclose(record.scores, weights[tag], rtol=1e-5, atol=1e-7)
    return {tag: (weights[tag], full[tag].mask, full[tag].max_logit) for tag in TAGS}


def check_pooled(record, reference, what):
    weights, mask, max_logit = reference
    assert record.scores is None and record.pooled is not None, what
    assert record.shape == weights.shape, (what, record.shape, weights.shape)
    means, maxes = encoding.pool(weights, BLOCK, mask)
    np.testing.assert_allclose(record.pooled["means"], means, rtol=1e-5, atol=1e-7,
                               err_msg=what)
    np.testing.assert_allclose(record.pooled["maxes"], maxes, rtol=1e-5, atol=1e-7,
                               err_msg=what)
    shown = weights if mask is None else np.where(mask, weights, np.nan)
    for name, (q0, q1), (k0, k1), window in record.pooled["windows"]:
        np.testing.assert_allclose(window, shown[:, :, q0:q1, k0:k1], rtol=1e-5, atol=1e-7,
                                   err_msg="%s %s" % (what, name))
    np.testing.assert_allclose(record.max_logit, max_logit, rtol=1e-5, atol=1e-6,
                               err_msg=what)


# Chunk sizes: one row per chunk; mixed (half a block of GQA rows, two blocks of "dot" rows
# with the last chunk padded, two rows of "concat" and additive scores); several blocks.
ONE_ROW, MIXED, SEVERAL_BLOCKS = 1, 2 * 6 * LENGTH * 4 * 4, 2 * 6 * LENGTH * 4 * 16


def check_capture(model, probe, sites, plans, refs, chunk_sizes):
    plain = [keras.ops.convert_to_numpy(o) for o in model(probe, training=False)]
    assert all(ref[1] is not None for tag, ref in refs.items() if tag != "gqa_causal")
    default_chunk_bytes = blocked.CHUNK_BYTES
    for chunk_bytes in chunk_sizes:
        blocked.CHUNK_BYTES = chunk_bytes
        with softmax_rows_seen() as rows:
            outputs, records = patched_pass(model, probe, sites, plans)
        assert rows, "no layer's own softmax ran"
        # (With several blocks per chunk "dot" takes all its rows in one.)
        assert chunk_bytes == SEVERAL_BLOCKS or max(rows) < LENGTH, sorted(set(rows))
        for tag, output, expected in zip(TAGS, outputs, plain):
            # Rows where a query sees no key: Keras' fused dot_product_attention (the plain
            # GQA path) and its masked softmax (the capture's, as return_attention_scores=True)
            # disagree; the capture keeps the latter. Every other row must be the same.
            seen = rows_with_keys(refs[tag][1], output.shape[:2])
            np.testing.assert_allclose(output[seen], expected[seen], rtol=1e-5, atol=1e-6,
                                       err_msg="%s output, chunks of %d bytes"
                                       % (tag, chunk_bytes))
            check_pooled(records[tag], refs[tag], "%s, chunks of %d bytes" % (tag, chunk_bytes))
    blocked.CHUNK_BYTES = MIXED
    if keras.backend.backend() == "tensorflow":
        traced = capture.CompiledCapture(model, probe, sites, plans)()
        assert not traced.problems, traced.problems
        for record in traced.records:
            check_pooled(record, refs[record.tag], "%s, traced" % record.tag)
    blocked.CHUNK_BYTES = default_chunk_bytes
    helpers.assert_unpatched(model)


def rows_with_keys(mask, batch_and_rows):
    """bool `[B, Tq]`: query rows with at least one unmasked key."""
    if mask is None:
        return np.ones(batch_and_rows, bool)
    return mask.any(axis=-1).all(axis=1)


def check_logged(model, sites):
    """`AttentionLogger` with a small budget pools every layer; the logs hold the layers' own
    scores within the format's bounds. The callback runs its training-start capture on the
    real model through its Keras hooks; no training step is compiled (tests/test_callback_*.py
    run the same capture inside `model.fit`)."""
    probe = probe_tokens(LOGGED_LENGTH)
    with tempfile.TemporaryDirectory() as logdir:
        logger = AttentionLogger(logdir, probe, update_freq="epoch", max_bytes_per_step=64 * 1024)
        logger.set_model(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger.on_train_begin()
            logger.on_train_end()
        messages = [str(w.message) for w in caught if "pooled" not in str(w.message)
                    and issubclass(w.category, AttentionLoggerWarning)]
        assert not messages, messages  # only the note that says what is pooled
        attention, _ = helpers.read_logs(logdir)
    refs = references(model, probe, sites)
    steps = attention["train"]
    assert sorted(steps) == sorted(TAGS), sorted(steps)
    for tag in TAGS:
        step = steps[tag][max(steps[tag])]
        header = step["header"]
        weights, mask, _ = refs[tag]
        weights = weights[:header["shape"][0]]  # the budget may keep one example
        mask = None if mask is None else mask[:header["shape"][0]]
        assert header["layout"] == "pooled" and header["shape"] == list(weights.shape), tag
        means, maxes, windows = helpers.pooled_parts(header, step["blobs"])
        ref_means, ref_maxes = encoding.pool(weights, header["pooled"]["block"], mask)
        shown = weights if mask is None else np.where(mask, weights, np.nan)
        assert np.array_equal(np.isnan(means), np.isnan(ref_means)), tag
        for stored, expected in ((means, ref_means), (maxes, ref_maxes)):
            error = np.nanmax(np.abs(stored - expected))
            assert error <= encoding.MAX_ERROR + 1e-6, (tag, error)
        for entry in header["windows"]:
            (q0, q1), (k0, k1) = entry["query"], entry["key"]
            stored, expected = windows[entry["name"]], shown[:, :, q0:q1, k0:k1]
            assert np.array_equal(np.isnan(stored), np.isnan(expected)), (tag, entry)
            error = np.nanmax(np.abs(stored - expected)) if np.isfinite(expected).any() else 0
            assert error <= encoding.MAX_ERROR + 1e-6, (tag, entry["name"], error)
    helpers.assert_unpatched(model)


def main(argv):
    """`--quick`: the mixed chunk size only and no logging (JAX compiles every new chunk
    shape eagerly, tens of seconds each on a busy machine)."""
    quick = "--quick" in argv
    model = build_model()
    probe = probe_tokens()
    model(probe)
    sites, plans = plans_for(model, probe)
    refs = references(model, probe, sites)
    check_capture(model, probe, sites, plans, refs,
                  (MIXED,) if quick else (ONE_ROW, MIXED, SEVERAL_BLOCKS))
    if not quick:
        check_logged(model, sites)
    print("ok", keras.backend.backend())


if __name__ == "__main__":
    main(sys.argv[1:])
