"""The stored form of head-health measures: one small JSON record per layer and step (numpy only).

`health.HeadHealth.result()` (or `health.head_health(...)`) summarises the heads of one layer;
`to_record` turns that result into the record stored under the tag `<layer tag>/health`
(plugin "attention", `DATA_CLASS_TENSOR`, a rank-0 string tensor holding the record's UTF-8
JSON; docs/format.md, "Head-health records"), `from_record` reads it back and `encode` /
`decode` go to and from the stored bytes. Both writers (`AttentionWriter.health` and
`summary.write_health`) and the server use these functions, so the record has one definition.

Record, version 1 (NaN is stored as `null`; numbers rounded to 6 decimals):

```json
{"version": 1, "heads": 2, "examples": 64,
 "measures": {"entropy": [0.41, 0.93], "entropy_nats": [1.2, 2.8], "max_logit": [7.5, 3.1],
              "previous_token": [0.91, 0.02], "diagonal": [0.03, 0.05],
              "first_token": [0.01, 0.4], "induction": null, "monotonicity": null},
 "sinks": [[], [[0, 0.41]]],
 "role": ["previous-token", "none"],
 "similarity_groups": [[0], [1]]}
```

A measure that does not apply to any head (no logits, no induction probe, self- vs
cross-attention) is `null` as a whole; a head without a usable row is `null` inside the list.

Example:

>>> import numpy as np
>>> from tb_attention_plugin import health
>>> weights = np.zeros((1, 2, 6, 6), np.float32)
>>> weights[0, 0] = np.eye(6)
>>> weights[0, 1] = np.eye(6, k=-1); weights[0, 1, 0, 0] = 1
>>> record = to_record(health.head_health(weights))
>>> record["role"], record["measures"]["max_logit"]
(['diagonal', 'previous-token'], None)
>>> from_record(decode(encode(record)))["previous_token"].tolist()
[0.0, 1.0]
"""

import json
import math

import numpy as np

from tb_attention_plugin import health

RECORD_VERSION = 1
# Versions of the record this code reads.
SUPPORTED_RECORD_VERSIONS = frozenset({1})
# The suffix of a layer's health tag: `<layer tag>/health`.
TAG_SUFFIX = "/health"
# Scalars for TensorBoard's Scalars dashboard, per layer: `attention_health/<layer>/<name>`.
SCALAR_PREFIX = "attention_health/"

# Stored measure name -> `HeadHealth.result()` key. The record says "monotonicity"
# (docs/format.md), health.py "monotonic".
MEASURES = {
    "entropy": "entropy",
    "entropy_nats": "entropy_nats",
    "max_logit": "max_logit",
    "previous_token": "previous_token",
    "diagonal": "diagonal",
    "first_token": "first_token",
    "induction": "induction",
    "monotonicity": "monotonic",
}
# The largest record accepted when reading (a record is ~100 bytes per head).
MAX_RECORD_BYTES = 4 * 1024 * 1024


class RecordError(ValueError):
    """Bytes or JSON that are not a head-health record this code can read."""


def health_tag(layer_tag):
    """The tag of a layer's health records.

    >>> health_tag("decoder/layer_0/self_attention")
    'decoder/layer_0/self_attention/health'
    """
    if not isinstance(layer_tag, str) or not layer_tag:
        raise ValueError("layer tag must be a non-empty string, got %r" % (layer_tag,))
    return layer_tag + TAG_SUFFIX


def layer_of(tag):
    """The layer tag of a health tag, or None when `tag` is not one.

    >>> layer_of("encoder/layer_0/health"), layer_of("encoder/layer_0")
    ('encoder/layer_0', None)
    """
    if tag.endswith(TAG_SUFFIX) and len(tag) > len(TAG_SUFFIX):
        return tag[: -len(TAG_SUFFIX)]
    return None


def _floats(values):
    """A list of floats with NaN/Inf as None, or None when no value is finite."""
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(array)
    if not finite.any():
        return None
    # 6 decimals: below float32's noise for measures in [0, 1]; keeps records and answers short.
    rounded = np.round(array, 6).tolist()
    return [v if ok else None for v, ok in zip(rounded, finite.tolist())]


def groups_of(labels):
    """Cluster labels (`health.cluster_heads`) as groups of heads, in order of first head.

    >>> groups_of([0, 0, 1, 0])
    [[0, 1, 3], [2]]
    """
    groups = {}
    for head, label in enumerate(np.asarray(labels).tolist()):
        groups.setdefault(label, []).append(head)
    return sorted(groups.values(), key=min)


def to_record(result, similarity_threshold=health.SIMILARITY_THRESHOLD):
    """The record of one layer at one step from `health.HeadHealth.result()`.

    `similarity_groups` come from `health.cluster_heads(result["divergence"])`; without a
    divergence (`HeadHealth(similarity=False)`) they are None.
    """
    if not isinstance(result, dict) or "entropy" not in result or "roles" not in result:
        raise ValueError("expected the dict of HeadHealth.result(), got %r" % (type(result),))
    heads = int(np.asarray(result["entropy"]).shape[0])
    measures = {}
    for stored, key in MEASURES.items():
        values = result.get(key)
        if values is None:
            measures[stored] = None
            continue
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (heads,):
            raise ValueError("measure %r has shape %s, expected (%d,)" % (key, values.shape, heads))
        measures[stored] = _floats(values)
    sinks = result.get("sinks") or [[] for _ in range(heads)]
    if len(sinks) != heads:
        raise ValueError("sinks has %d heads, expected %d" % (len(sinks), heads))
    roles = [str(role) for role in result["roles"]]
    if len(roles) != heads:
        raise ValueError("roles has %d heads, expected %d" % (len(roles), heads))
    groups = None
    divergence = result.get("divergence")
    if divergence is not None:
        groups = groups_of(health.cluster_heads(divergence, similarity_threshold))
    return {
        "version": RECORD_VERSION,
        "heads": heads,
        "examples": int(result.get("examples") or 0),
        "measures": measures,
        "sinks": [[[int(k), round(float(alpha), 6)] for k, alpha in head] for head in sinks],
        "role": roles,
        "similarity_groups": groups,
    }


def encode(record):
    """The stored bytes of a record: compact UTF-8 JSON (NaN never appears: it is null)."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode(data):
    """Parses and checks stored bytes (or a str); raises `RecordError` for anything else."""
    if isinstance(data, np.ndarray):
        if data.ndim != 0:
            raise RecordError("a health record is a rank-0 string tensor, got shape %s" % (data.shape,))
        data = data.item()
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise RecordError("a health record is bytes, got %s" % type(data).__name__)
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError("health record of %d bytes is larger than %d" % (len(data), MAX_RECORD_BYTES))
    try:
        record = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError("health record is not UTF-8 JSON: %s" % e) from None
    return check(record)


def check(record):
    """Checks a parsed record's structure and returns it; raises `RecordError`."""
    if not isinstance(record, dict):
        raise RecordError("health record is not a JSON object")
    version = record.get("version")
    if version not in SUPPORTED_RECORD_VERSIONS:
        raise RecordError(
            "health record version %r; this tb-attention reads version(s) %s: upgrade tb-attention"
            % (version, sorted(SUPPORTED_RECORD_VERSIONS))
        )
    heads = record.get("heads")
    if not isinstance(heads, int) or isinstance(heads, bool) or not 0 < heads <= 65536:
        raise RecordError("health record has no valid 'heads' (got %r)" % (heads,))
    measures = record.get("measures")
    if not isinstance(measures, dict) or not isinstance(measures.get("entropy"), list):
        raise RecordError("health record has no 'measures' with 'entropy'")
    for name, values in measures.items():
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != heads or not all(
            v is None or _finite_number(v) for v in values
        ):
            raise RecordError("health measure %r is not %d finite numbers or nulls" % (name, heads))
    roles = record.get("role")
    if not isinstance(roles, list) or len(roles) != heads or not all(isinstance(r, str) for r in roles):
        raise RecordError("health record 'role' is not %d strings" % heads)
    sinks = record.get("sinks", [[] for _ in range(heads)])
    if not isinstance(sinks, list) or len(sinks) != heads or not all(
        isinstance(head, list) and all(
            isinstance(s, list) and len(s) == 2 and isinstance(s[0], int) and _finite_number(s[1])
            for s in head)
        for head in sinks
    ):
        raise RecordError("health record 'sinks' is not one list of [key, alpha] per head")
    groups = record.get("similarity_groups")
    if groups is not None and not (
        isinstance(groups, list)
        and all(isinstance(g, list) and all(isinstance(h, int) and 0 <= h < heads for h in g)
                for g in groups)
    ):
        raise RecordError("health record 'similarity_groups' is not lists of head indices")
    return record


def _finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def from_record(record):
    """The record as `HeadHealth.result()`-like arrays: float32 `[H]` per measure (health.py's
    names, NaN for null), "sinks", "roles", "similarity_groups" and "examples"."""
    record = check(record)
    heads = record["heads"]
    result = {}
    for stored, key in MEASURES.items():
        values = record["measures"].get(stored)
        if values is None:
            result[key] = np.full(heads, np.nan, np.float32)
        else:
            result[key] = np.array([np.nan if v is None else v for v in values], np.float32)
    result["sinks"] = [[(int(k), float(alpha)) for k, alpha in head] for head in record.get("sinks") or [[] for _ in range(heads)]]
    result["roles"] = list(record["role"])
    result["similarity_groups"] = record.get("similarity_groups")
    result["examples"] = record.get("examples", 0)
    return result


def layer_scalars(result):
    """The two Scalars-dashboard values of one layer: `{"min_entropy": x, "max_logit": y}`,
    each left out when no head has it (e.g. no logits).

    >>> layer_scalars({"entropy": np.array([0.5, 0.2]), "max_logit": np.array([np.nan, np.nan])})
    {'min_entropy': 0.2}
    """
    scalars = {}
    for name, key, pick in (("min_entropy", "entropy", np.nanmin), ("max_logit", "max_logit", np.nanmax)):
        values = np.asarray(result.get(key, []), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            scalars[name] = float(pick(values))
    return scalars


def scalar_tag(layer_tag, name):
    """`attention_health/<layer>/<name>`.

    >>> scalar_tag("decoder/layer_0", "min_entropy")
    'attention_health/decoder/layer_0/min_entropy'
    """
    return "%s%s/%s" % (SCALAR_PREFIX, layer_tag, name)


def json_number(value):
    """A float for JSON, None for NaN/Inf."""
    value = float(value)
    return value if math.isfinite(value) else None
