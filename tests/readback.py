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


def read_back(logdir):
    """Returns `{run: {tag: [(step, header, weights float32 [B, H, Tq, Tk], NaN = masked)]}}`."""
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
                entries.append((datum.step, header, decode_weights(header, blobs)))
            result.setdefault(run, {})[tag] = entries
    return result
