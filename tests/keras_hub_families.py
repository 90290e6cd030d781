"""Tiny keras-hub backbones of every family the AttentionLogger reads, and the checks that prove
each against its own math.

Used by tests/test_keras_hub_families.py in the test process (TensorFlow) and, as a script, in a
subprocess on another Keras backend (JAX: `python tests/keras_hub_families.py LOGDIR gemma ...`
prints one JSON summary per family).

`check_family(name, logdir)` trains the family's tiny model twice from one seed, with and
without `AttentionLogger`, reads the logs back through TensorBoard's data provider and returns
a summary; `prove(model, inputs)` checks that the captured probabilities times the layer's own
values give the layer's own attention output.
"""

import dataclasses
import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

VOCABULARY = 64
LENGTH = 12
TARGET_LENGTH = 8
VALID = (LENGTH, 9)  # the second example's last 3 positions are padding


@dataclasses.dataclass
class Family:
    """A tiny backbone of one family: how to build it and what its attention must show."""

    build: object  # () -> keras_hub Backbone
    heads: int  # query heads of each attention layer
    causal: bool  # its self-attention is causal
    layers: int = 2  # tags expected: attention layer calls
    seq2seq: bool = False


def _hub():
    import keras_hub

    return keras_hub.models


FAMILIES = {
    "gemma": Family(lambda: _hub().GemmaBackbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32, head_dim=8), heads=4, causal=True),
    "gemma2": Family(lambda: _hub().GemmaBackbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32, head_dim=8, query_head_dim_normalize=False,
        use_post_ffw_norm=True, use_post_attention_norm=True, attention_logit_soft_cap=5.0,
        final_logit_soft_cap=30.0, use_sliding_window_attention=True, sliding_window_size=4),
        heads=4, causal=True),
    "gemma3": Family(lambda: _hub().Gemma3Backbone(
        vocabulary_size=VOCABULARY, image_size=16, num_layers=2, num_query_heads=4,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, head_dim=8,
        use_query_key_norm=True, use_post_ffw_norm=True, use_post_attention_norm=True,
        use_sliding_window_attention=True, sliding_window_size=4, vision_encoder=None),
        heads=4, causal=True),
    "llama3": Family(lambda: _hub().Llama3Backbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32), heads=4, causal=True),
    "mistral": Family(lambda: _hub().MistralBackbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32, sliding_window=4), heads=4, causal=True),
    "qwen3": Family(lambda: _hub().Qwen3Backbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        head_dim=8, hidden_dim=16, intermediate_dim=32), heads=4, causal=True),
    "phi3": Family(lambda: _hub().Phi3Backbone(
        vocabulary_size=VOCABULARY, num_layers=2, hidden_dim=16, intermediate_dim=32,
        num_query_heads=4, num_key_value_heads=2), heads=4, causal=True),
    "gpt_neox": Family(lambda: _hub().GPTNeoXBackbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_heads=4, hidden_dim=32,
        intermediate_dim=32, max_sequence_length=32), heads=4, causal=True),
    "falcon": Family(lambda: _hub().FalconBackbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_attention_heads=4, hidden_dim=16,
        intermediate_dim=32), heads=4, causal=True),
    "bloom": Family(lambda: _hub().BloomBackbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_heads=4, hidden_dim=16,
        intermediate_dim=32), heads=4, causal=True),
    "deberta_v3": Family(lambda: _hub().DebertaV3Backbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_heads=4, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=32), heads=4, causal=False),
    "t5": Family(lambda: _hub().T5Backbone(
        vocabulary_size=VOCABULARY, num_layers=2, num_heads=4, hidden_dim=16,
        intermediate_dim=32), heads=4, causal=True, layers=6, seq2seq=True),
}


def probe_inputs(family, count=2, seed=0):
    """`count` examples of the family's inputs; example 1 (and 3, ...) padded after 9 tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCABULARY, size=(count, LENGTH)).astype("int32")
    mask = np.ones((count, LENGTH), "int32")
    mask[1::2, VALID[1]:] = 0
    ids[mask == 0] = 0
    if not family.seq2seq:
        return {"token_ids": ids, "padding_mask": mask}
    return {"encoder_token_ids": ids, "encoder_padding_mask": mask,
            "decoder_token_ids": ids[:, :TARGET_LENGTH],
            "decoder_padding_mask": mask[:, :TARGET_LENGTH]}


def trainable_model(family):
    """The backbone under a Dense head over its (decoder) sequence output, compiled."""
    backbone = family.build()
    output = backbone.output
    if isinstance(output, dict):
        output = output["decoder_sequence_output"]
    logits = keras.layers.Dense(VOCABULARY, name="head")(output)
    model = keras.Model(backbone.input, logits)
    _compile(model)
    return model


def _compile(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _targets(inputs):
    ids = inputs.get("decoder_token_ids", inputs.get("token_ids"))
    return np.roll(ids, -1, axis=1)


def _weights(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def _state(model):
    """Every variable of the model, dropout's seed-generator states included."""
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]


def _restore(model, state):
    for variable, value in zip(model.variables, state):
        variable.assign(value)


def fit_twice(family, logdir, plain_fit=True):
    """One model fitted from the same initial weights twice: with the logger, then (weights
    and dropout's random state restored, a new optimizer) without it. Returns the model (as the logged fit left it), the
    weights after each fit, the logger and its warnings. Building once keeps this quick on
    JAX, where building a backbone costs far more than a tiny fit."""
    from tb_attention_plugin import AttentionLogger

    data = probe_inputs(family, count=8, seed=1)
    fit = dict(epochs=1, batch_size=4, verbose=0, shuffle=False)
    keras.utils.set_random_seed(3)
    model = trainable_model(family)
    initial = _state(model)
    logger = AttentionLogger(logdir, probe=probe_inputs(family), update_freq=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data, _targets(data), callbacks=[logger], **fit)
    messages = [str(w.message) for w in caught if "AttentionLogger" in type(w.message).__name__]
    logged = _weights(model)
    if not plain_fit:
        return model, (None, logged), logger, messages
    _restore(model, initial)
    _compile(model)
    model.fit(data, _targets(data), **fit)
    plain = _weights(model)
    model.set_weights(logged)
    return model, (plain, logged), logger, messages


def _sublayer(layer, names):
    for child in layer._flatten_layers(include_self=False, recursive=False):
        if child.name in names:
            return child
    raise AssertionError("%s has none of the sublayers %s" % (layer.name, names))


def _values_and_outputs(model, inputs, layers):
    """Runs `model` once and returns, per attention layer, the values `[B, Tk, K, D]` its value
    projection made and the input `[B, Tq, H, D]` of its output projection (the attention
    output), read on the layer's own sublayers."""
    seen, saved = {}, []
    for layer in layers:
        value = _sublayer(layer, ("value", "value_dense", "value_projector", "query_key_value"))
        output = _sublayer(layer, ("attention_output", "output_dense", "output_projector"))
        for role, sub in (("value", value), ("output", output)):
            original = sub.call

            def call(x, *args, _role=role, _sub=sub, _layer=layer, _original=original, **kw):
                result = _original(x, *args, **kw)
                kept = result if _role == "value" else x
                seen.setdefault(id(_layer), {}).setdefault(_role, []).append(
                    (keras.ops.convert_to_numpy(kept), _sub.name))
                return result

            saved.append(sub)
            object.__setattr__(sub, "call", call)
    try:
        model(inputs, training=False)
    finally:
        for sub in saved:
            sub.__dict__.pop("call", None)
    return seen


def _per_query_head(values, heads, name):
    """Values `[B, Tk, H, D]` for each query head from a projection's output."""
    if name == "query_key_value":  # GPT-NeoX: [B, T, H, 3 D], values last
        values = values[..., 2 * values.shape[-1] // 3:]
    if values.ndim == 3:
        values = values.reshape(values.shape[0], values.shape[1], heads, -1)
    groups = heads // values.shape[2]
    return np.repeat(values, groups, axis=2)  # query head h reads key/value head h // groups


def prove(model, inputs, records, family):
    """The largest difference between `probs @ values` and the layer's own attention output,
    over the valid query rows of every recorded call (0 when they agree)."""
    from tb_attention_plugin.logger import capture

    sites, _ = capture.find_attention_layers(model)
    seen = _values_and_outputs(model, inputs, [site.layer for site in sites])
    by_path = {site.path: site.layer for site in sites}
    worst = 0.0
    for record in records:
        path, _, call = record.tag.partition("/call_")
        layer = by_path[path if call else record.tag]
        index = int(call) if call else 0
        values, value_name = seen[id(layer)]["value"][index]
        output, _ = seen[id(layer)]["output"][index]
        values = _per_query_head(values, record.scores.shape[1], value_name)
        expected = np.einsum("bhqk,bkhd->bqhd", record.scores, values)
        output = output.reshape(expected.shape)
        valid = _query_validity(inputs, record.scores.shape[2], family, record.cross)
        worst = max(worst, float(np.max(np.abs(expected - output)[valid])))
    return worst


def _query_validity(inputs, queries, family, cross):
    key = "decoder_padding_mask" if family.seq2seq and (cross or queries == TARGET_LENGTH) \
        else ("encoder_padding_mask" if family.seq2seq else "padding_mask")
    return np.asarray(inputs[key])[:, :queries].astype(bool)


def window_of(layer):
    """The sliding-window size a layer applies, or None (Gemma 2/3, Mistral, Qwen 3)."""
    if hasattr(layer, "use_sliding_window_attention"):  # Gemma: every other layer
        return int(layer.sliding_window_size) if layer.use_sliding_window_attention else None
    for name in ("_sliding_window", "sliding_window_size"):
        value = getattr(layer, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def stored_checks(weights, causal, window):
    """`(largest row-sum error over valid rows, weight above the diagonal, weight outside the
    window)` of stored weights `[B, H, Tq, Tk]` (NaN = masked)."""
    filled = np.nan_to_num(weights)
    rows = np.isfinite(weights).any(-1)
    row_error = float(np.max(np.abs(filled.sum(-1) - 1)[rows]))
    tq, tk = weights.shape[-2:]
    q, k = np.indices((tq, tk))
    above = float(filled[..., k > q].sum()) if causal else 0.0
    outside = float(filled[..., q - k >= window].sum()) if window else 0.0
    return row_error, above, outside


def check_family(name, logdir, plain_fit=True):
    """Everything the family test asserts, as a summary dict (JSON-able). Without `plain_fit`
    the fit without the logger is left out (`weights_equal` is None)."""
    from tb_attention_plugin.logger import capture
    import callback_helpers as helpers

    family = FAMILIES[name]
    model, (plain, logged), logger, messages = fit_twice(family, logdir, plain_fit)
    weights_equal = None if plain is None else all(
        np.array_equal(a, b) for a, b in zip(plain, logged))
    sites, unreadable = capture.find_attention_layers(model)
    probe = probe_inputs(family)
    records = capture.capture_attention(model, probe, sites).records
    attention, _ = helpers.read_logs(logdir)
    tags = attention.get("train", {})
    layers = {site.path: site.layer for site in sites}
    causal_by_tag = {record.tag: bool(record.causal) for record in records}
    checks = {}
    for tag, steps in sorted(tags.items()):
        stored = steps[max(steps)]
        weights = stored["weights"]
        layer = layers[tag.partition("/call_")[0]]
        causal = causal_by_tag[tag]
        cross = not causal and weights.shape[-2] != weights.shape[-1]
        checks[tag] = dict(zip(("row_error", "above_diagonal", "outside_window"),
                               stored_checks(weights, causal, window_of(layer))),
                           heads=int(weights.shape[1]), causal=causal, cross=cross,
                           window=window_of(layer))
    return {
        "family": name, "weights_equal": weights_equal, "warnings": messages,
        "unreadable": unreadable, "tags": checks, "proof_error": prove(model, probe, records, family),
        "record_heads": sorted({int(r.scores.shape[1]) for r in records}),
        "sources": sorted({getattr(r, "source", "stock") for r in records}),
        "traced": logger._probe_capture.compiled is not None,
    }


def check_on_backend(backend, names, logdir, plain_fits=()):
    """`check_family` of each name in a subprocess with `KERAS_BACKEND=backend`; the summaries.
    Only the families in `plain_fits` are also fitted without the logger (on JAX a second
    fit costs a second compilation of the train step)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.path.dirname(here))
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(logdir), ",".join(plain_fits)]
        + list(names),
        cwd=os.path.dirname(here), env=environment, capture_output=True, text=True,
        timeout=1200, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(line[len("SUMMARY "):]) for line in result.stdout.splitlines()
            if line.startswith("SUMMARY ")]


if __name__ == "__main__":
    root, plain_fits = sys.argv[1], sys.argv[2].split(",")
    for family_name in sys.argv[3:]:
        summary = check_family(family_name, os.path.join(root, family_name),
                               plain_fit=family_name in plain_fits)
        print("SUMMARY " + json.dumps(summary), flush=True)
