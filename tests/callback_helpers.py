"""Helpers for the AttentionLogger tests: read logs back through TensorBoard's data provider,
record attention layer inputs, and compute reference scores with the layer's own
`return_attention_scores=True`."""

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin import png

SHADOWED = ("call", "_compute_attention", "_apply_scores")


def read_logs(logdir):
    """Reads a log directory with TensorBoard's real data provider.

    Returns `(attention, scalars)`: `attention[run][tag][step] = {"header", "weights" float32
    [B, H, Tq, Tk] (NaN = masked), "images" list of uint8 arrays}` and
    `scalars[run][tag] = [(step, value)]`.
    """
    from readback import decode_weights, provider_for
    from tensorboard import context

    provider = provider_for(logdir, keep_every=("attention", "scalars"))
    ctx = context.RequestContext()
    sequences = provider.read_blob_sequences(
        ctx, experiment_id="", plugin_name="attention", downsample=10**6
    )
    attention = {}
    for run, tags in sequences.items():
        for tag, data in tags.items():
            steps = attention.setdefault(run, {}).setdefault(tag, {})
            for datum in data:
                blobs = [provider.read_blob(ctx, blob_key=ref.blob_key) for ref in datum.values]
                header = encoding.decode_header(blobs[0])
                if encoding.is_pooled(header):  # overview + windows: see pooled_parts
                    steps[datum.step] = {"header": header, "weights": None, "blobs": blobs,
                                         "images": []}
                    continue
                weights = decode_weights(header, blobs)
                batch = header["shape"][0]
                images = []
                if header.get("image"):
                    images = [png.decode_png(blobs[encoding.image_index(header, b)])
                              for b in range(batch)]
                steps[datum.step] = {"header": header, "weights": weights, "images": images}
    scalar_data = provider.read_scalars(
        ctx, experiment_id="", plugin_name="scalars", downsample=10**6
    )
    scalars = {
        run: {tag: [(d.step, d.value) for d in data] for tag, data in tags.items()}
        for run, tags in scalar_data.items()
    }
    return attention, scalars


def pooled_parts(header, blobs):
    """`(means, maxes, {window name: weights})` of a pooled step (`readback.pooled_parts`)."""
    from readback import pooled_parts as parts

    return parts(header, blobs)


def attention_layers(model):
    from tb_attention_plugin.logger import capture

    classes = tuple(capture.attention_classes())
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, classes)
    ]


def assert_unpatched(model, flash_before=None):
    """No attention layer keeps a shadow attribute; `_flash_attention` is as before."""
    for layer in attention_layers(model):
        leftovers = [name for name in SHADOWED if name in layer.__dict__]
        assert not leftovers, "%s still has instance attributes %s" % (layer.path, leftovers)
        if flash_before is not None and id(layer) in flash_before:
            assert layer.__dict__.get("_flash_attention") == flash_before[id(layer)]


class InputRecorder:
    """Records every call's arguments of the given attention layers during one forward pass.

    Used only to obtain the exact inputs a nested layer saw, so that the test can call that
    layer again with `return_attention_scores=True` as a user would.
    """

    def __init__(self, layers):
        self.layers = layers
        self.calls = {id(layer): [] for layer in layers}

    def __enter__(self):
        import inspect

        from keras.src import backend

        for layer in self.layers:
            original = layer.call
            signature = inspect.signature(original)
            calls = self.calls[id(layer)]

            def call(*args, _original=original, _signature=signature, _calls=calls, **kwargs):
                arguments = dict(_signature.bind(*args, **kwargs).arguments)
                query = arguments.get("query")
                query_mask = None if query is None else backend.get_keras_mask(query)
                _calls.append((arguments, query_mask))
                return _original(*args, **kwargs)

            object.__setattr__(layer, "call", call)
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.__dict__.pop("call", None)
        return False


def reference_scores(layer, recorded):
    """Calls `layer` again on recorded inputs with `return_attention_scores=True`.

    Returns float32 `[B, H, Tq, Tk]` (a head axis of 1 for `Attention`/`AdditiveAttention`).
    """
    import keras
    from keras.src import backend

    arguments, query_mask = recorded
    arguments = dict(arguments)
    arguments.update(return_attention_scores=True, training=False)
    if "query" in arguments and query_mask is not None:
        backend.set_keras_mask(arguments["query"], query_mask)
    result = type(layer).call(layer, **arguments)
    scores = np.asarray(keras.ops.convert_to_numpy(result[1])).astype(np.float32)
    if scores.ndim == 3:
        scores = scores[:, np.newaxis]
    return scores


def references_by_tag(model, probe, tag_of_layer):
    """`{tag: reference scores}` for every attention layer call during `model(probe)`."""
    layers = attention_layers(model)
    with InputRecorder(layers) as recorder:
        model(probe, training=False)
    result = {}
    for layer in layers:
        calls = recorder.calls[id(layer)]
        for index, recorded in enumerate(calls):
            tag = tag_of_layer(layer)
            if len(calls) > 1:
                tag = "%s/call_%d" % (tag, index)
            result[tag] = reference_scores(layer, recorded)
    return result


def check_against_reference(stored, reference, tag):
    """Stored weights (NaN = masked) equal the reference within the format's error bound.

    Masked positions must carry (almost) no weight in the reference, and every row with an
    unmasked position sums to 1.
    """
    batch, heads, tq, tk = stored.shape
    reference = reference[:batch, :heads, :tq, :tk]
    attended = ~np.isnan(stored)
    assert attended.any(), "%s: everything is masked" % tag
    error = np.abs(stored[attended] - reference[attended]).max()
    assert error <= encoding.MAX_ERROR + 1e-3 * encoding.MAX_ERROR, (
        "%s: stored scores differ from return_attention_scores=True by %g" % (tag, error)
    )
    assert np.all(reference[~attended] <= 1e-6), "%s: weight found at masked positions" % tag
    rows = attended.any(axis=-1)
    sums = np.where(attended, stored, 0).sum(axis=-1)[rows]
    assert np.all(np.abs(sums - 1) <= tk * encoding.MAX_ERROR), "%s: rows do not sum to 1" % tag


def assert_causal(stored, tag):
    """The strict upper triangle is masked; the diagonal and below are not (all rows valid)."""
    tq, tk = stored.shape[-2:]
    assert tq == tk, tag
    upper = np.triu(np.ones((tq, tk), bool), k=1)
    assert np.isnan(stored[..., upper]).all(), "%s: future keys are not masked" % tag
    assert not np.isnan(stored[..., np.arange(tq), np.arange(tq)]).all(), tag


def read_health(logdir):
    """Head-health records read back with TensorBoard's real data provider (one `read_tensors`
    call, as the server does): `{run: {layer tag: {step: record dict}}}`."""
    from readback import provider_for
    from tensorboard import context

    from tb_attention_plugin import health_summary

    provider = provider_for(logdir, keep_every=("attention", "scalars"))
    sequences = provider.read_tensors(
        context.RequestContext(), experiment_id="", plugin_name="attention", downsample=10**6
    )
    records = {}
    for run, tags in sequences.items():
        for tag, data in tags.items():
            layer = health_summary.layer_of(tag)
            assert layer is not None, "a tensor of the attention plugin that is not health: %s" % tag
            records.setdefault(run, {})[layer] = {
                datum.step: health_summary.decode(datum.numpy) for datum in data
            }
    return records


def sentencepiece_proto():
    """The serialized model of a tiny word-level SentencePiece tokenizer (as keras-hub's
    `LlamaTokenizer(proto=...)` takes it): ids 0 `<pad>`, 1 `<unk>`, 2 `<s>`, 3 `</s>`, then
    the words of "the quick brown fox", "a quick fox" and "the fox"."""
    import io

    import sentencepiece

    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["the quick brown fox", "a quick fox", "the fox"] * 10),
        model_writer=proto, vocab_size=9, model_type="word", pad_id=0, unk_id=1, bos_id=2,
        eos_id=3, pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        minloglevel=2)
    return proto.getvalue()
