"""The plugin as TensorBoard builds it with its default flags, behind a werkzeug test client.

Reads go through a real `MultiplexerDataProvider` with TensorBoard's production size guidance
after our loader's `fix_flags`, so sampling is what a user gets (not the test multiplexer's).
"""

import argparse
import json

from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test

from tb_attention_plugin.server import loader

PREFIX = "/data/plugin/attention"


def production_plugin(logdir):
    """An `AttentionPlugin` over `logdir`, loaded as `tensorboard` with no flags would."""
    return production_plugin_and_multiplexer(logdir)[0]


def production_plugin_and_multiplexer(logdir):
    """`(plugin, multiplexer)`: `production_plugin` and the multiplexer it reads, for tests
    that write more and `multiplexer.Reload()` as TensorBoard's reload thread does."""
    flags = argparse.Namespace(samples_per_plugin={})
    loader.AttentionLoader().fix_flags(flags)
    tensor_size_guidance = dict(data_ingester.DEFAULT_TENSOR_SIZE_GUIDANCE)
    tensor_size_guidance.update(flags.samples_per_plugin)
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance=data_ingester.DEFAULT_SIZE_GUIDANCE,
        tensor_size_guidance=tensor_size_guidance,
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    context = base_plugin.TBContext(
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)),
        logdir=str(logdir),
        sampling_hints=flags.samples_per_plugin,
    )
    return loader.AttentionLoader().load(context), multiplexer


def wsgi_client(plugin):
    return werkzeug_test.Client(application.TensorBoardWSGI([plugin]))


def get(client, route, headers=None, **params):
    return client.get(PREFIX + route, query_string=params, headers=headers or {})


def get_json(client, route, **params):
    response = get(client, route, **params)
    assert response.status_code == 200, response.get_data()[:300]
    assert response.mimetype == "application/json"
    return json.loads(response.get_data())
