"""Summary metadata of the attention plugin: plugin name, format version, data class.

Import-light on purpose (only the protobuf messages TensorBoard ships): the plugin loader and the
TensorFlow-free writer both use it.
"""

import json

from tensorboard.compat.proto import summary_pb2

PLUGIN_NAME = "attention"
FORMAT_VERSION = 2  # 2: faithful log-linear codes (docs/format.md); 1: linear codes
# Versions this reader understands. A step written by a newer writer is reported, not guessed at.
SUPPORTED_VERSIONS = frozenset({1, 2})


def create_summary_metadata(description=None):
    """Returns the `SummaryMetadata` for one attention tag.

    `data_class` must be set explicitly: TensorBoard only infers it for its own plugins, and a
    blob sequence without it is invisible to `list_blob_sequences`.

    Example:

    >>> md = create_summary_metadata("encoder layer 0")
    >>> md.plugin_data.plugin_name
    'attention'
    """
    if description is not None and not isinstance(description, str):
        raise TypeError("description must be a string, got %r" % (description,))
    content = json.dumps({"version": FORMAT_VERSION}).encode("utf-8")
    return summary_pb2.SummaryMetadata(
        summary_description=description or "",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )


# What a health tag's plugin content says (`<layer tag>/health`, docs/format.md): the record is a
# rank-0 string tensor, not a blob sequence, so `/runs` never lists it as a layer.
HEALTH_KIND = "health"
HEALTH_RECORD_VERSION = 1


def create_health_metadata(description=None):
    """Returns the `SummaryMetadata` of a layer's head-health tag (`<layer tag>/health`).

    Plugin "attention", `DATA_CLASS_TENSOR` (a rank-0 string tensor holding the record's JSON),
    content `{"version": 1, "kind": "health"}`.

    Example:

    >>> md = create_health_metadata()
    >>> md.plugin_data.plugin_name, md.data_class == summary_pb2.DATA_CLASS_TENSOR
    ('attention', True)
    """
    if description is not None and not isinstance(description, str):
        raise TypeError("description must be a string, got %r" % (description,))
    content = json.dumps({"version": HEALTH_RECORD_VERSION, "kind": HEALTH_KIND}).encode("utf-8")
    return summary_pb2.SummaryMetadata(
        summary_description=description or "",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def parse_plugin_metadata(content):
    """Parses `plugin_data.content` into a dict with at least `version`.

    Raises `ValueError` for content that is not this plugin's JSON.
    """
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    if not content:
        raise ValueError("attention summary metadata is empty")
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError as e:
        raise ValueError("attention summary metadata is not JSON: %s" % e) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("version"), int):
        raise ValueError("attention summary metadata has no integer 'version'")
    return parsed
