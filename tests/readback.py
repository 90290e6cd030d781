"""Reads attention summaries back through TensorBoard's real data provider (Python reader)."""

import numpy as np
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer

from tb_attention_plugin import encoding
from tb_attention_plugin import metadata


def provider_for(logdir, keep_every=(metadata.PLUGIN_NAME,)):
    """A `MultiplexerDataProvider` that keeps every step of the `keep_every` plugins (by default
    attention), so no sampling surprises."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={plugin: 0 for plugin in keep_every}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, str(logdir))


def decode_weights(header, blobs):
    """The weights of one step: float32 `[B, H, Tq, Tk]`, NaN = masked, from its decoded `header`
    and all its `blobs` (blob 0 the header)."""
    batch, heads, tq, tk = header["shape"]
    weights = np.empty((batch, heads, tq, tk), np.float32)
    for b in range(batch):
        for h in range(heads):
            index = encoding.payload_index(header, b, h)
            codes = encoding.decode_codes(blobs[index], header)
            weights[b, h] = encoding.codes_to_weights(codes, header["scales"][index - 1])
    return weights


def pooled_parts(header, blobs):
    """`(means, maxes, {window name: weights})` of a pooled step, each `[B, H, ...]` float32
    (NaN = masked), decoded through encoding.py's pooled readers."""
    batch, heads = header["shape"][:2]
    nq, nk = header["pooled"]["grid"]
    means = np.empty((batch, heads, nq, nk), np.float32)
    maxes = np.empty_like(means)
    windows = {}
    for b in range(batch):
        for h in range(heads):
            index = encoding.overview_index(header, b, h)
            means[b, h], maxes[b, h] = encoding.decode_overview(
                blobs[index], header, header["scales"][index - 1])
            for entry in header["windows"]:
                index = encoding.window_index(header, entry["name"], b, h)
                values = encoding.decode_window(blobs[index], header, entry["name"],
                                                header["scales"][index - 1])
                windows.setdefault(entry["name"], np.empty(
                    (batch, heads) + values.shape, np.float32))[b, h] = values
    return means, maxes, windows


def read_back(logdir):
    """Returns `{run: {tag: [(step, header, weights)]}}`: `weights` float32 `[B, H, Tq, Tk]`
    (NaN = masked) of a full step, `pooled_parts(header, blobs)` of a pooled one
    (`encoding.is_pooled(header)`)."""
    provider = provider_for(logdir)
    ctx = tb_context.RequestContext()
    sequences = provider.read_blob_sequences(
        ctx, experiment_id="", plugin_name=metadata.PLUGIN_NAME, downsample=100000
    )
    result = {}
    for run, tags in sequences.items():
        for tag, datums in tags.items():
            entries = []
            for datum in datums:
                blobs = [provider.read_blob(ctx, blob_key=ref.blob_key) for ref in datum.values]
                header = encoding.decode_header(blobs[0])
                weights = (pooled_parts(header, blobs) if encoding.is_pooled(header)
                           else decode_weights(header, blobs))
                entries.append((datum.step, header, weights))
            result.setdefault(run, {})[tag] = entries
    return result
