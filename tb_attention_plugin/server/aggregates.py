"""Statistics over a logged run and attention rollout, read through TensorBoard's data provider.

The plugin backend calls these from its `/stats` and `/rollout` routes. Only
`read_blob_sequences` and `read_blob` of `context.data_provider` are used, so both the Rust data
server and the Python reader (`--load_fast=false`) work; payloads are decoded with numpy straight
from the blobs (`encoding.decode_header`, `decode_codes`, `codes_to_weights`).

API (errors are `tensorboard.errors.PublicError`s carrying their HTTP code: answer
`{"error": str(e)}` with `e.http_code`):

```
tag_statistics(provider, ctx, experiment_id, run, tag, example=None, cache=None) -> dict
{
  "run": "train", "tag": "encoder/layer_0/self_attention",
  "example": null,                # null: each step's statistics averaged over its examples
  "steps": [0, 100, 200],         # ascending, readable steps only
  "heads": 4,                     # heads of the newest readable step
  "stats": {                      # one list per step, one number (or null) per head
    "entropy":           [[0.93, 0.41, 0.88, 0.97], ...],
    "max_weight":        [[...], ...],
    "mean_distance":     [[...], ...],
    "first_token_share": [[...], ...]
  },
  "errors": [{"step": 300, "error": "run 'train' tag ... step 300 cannot be read: ..."}]
}
  NotFoundError (404): no such run/tag, or `example` beyond a step's examples.
  InvalidArgumentError (400): `example` not a non-negative int.

rollout(provider, ctx, experiment_id, run, tags, step, example, residual=True) -> dict
{
  "run": "train", "step": 500, "example": 0,
  "tags": ["encoder/layer_0/self_attention", "encoder/layer_1/self_attention"],
  "residual": true,
  "shape": [12, 12],
  "tokens": ["i", "have", ...] or null,   # the example's key tokens of the bottom layer
  "image": {"grid": [14, 14], "prefix_tokens": 1, ...} or null,  # the bottom layer's
  "matrix": float32 numpy array [T, T]     # serve as /matrix wire format dtype 2 (NaN-free)
}
  NotFoundError (404): unknown tag, a tag without that step, example out of range, unreadable.
  InvalidArgumentError (400): no tags or repeated tags, a layer that is not square, layers of
    different sizes or different tokens, bad step/example types.
```

Statistics are example-averaged by default because the chart shows how a head behaves on the
probe as a whole; `example=E` gives one example's values. Either way the per-example values of
each step are computed once and kept in a small LRU cache keyed by (experiment, run, tag, step)
and checked against the step's wall time, so a repeated request reads no blobs and a run that
grew only computes its new steps.

Example (inside a plugin route):

```python
ctx, eid = plugin_util.context(environ), plugin_util.experiment_id(environ)
try:
    body = aggregates.tag_statistics(self._data_provider, ctx, eid, run, tag)
except tensorboard.errors.PublicError as e:
    return http_util.Respond(request, {"error": str(e)}, "application/json", code=e.http_code)
```
"""

import collections
import math
import threading

import numpy as np
from tensorboard import errors
from tensorboard.data import provider as tb_provider

from tb_attention_plugin import encoding
from tb_attention_plugin import metadata
from tb_attention_plugin import stats

# Lists every retained step whatever --samples_per_plugin says.
_ALL_STEPS = 1 << 30
_MAX_ROLLOUT_LAYERS = 1024


class StepStatisticsCache:
    """Thread-safe LRU cache of per-step statistics, with hit and miss counts.

    Keys are `(experiment_id, run, tag, step)`; each entry remembers the step's wall time, and a
    step whose wall time changed (a restarted run that logged the step again) is recomputed.
    Values are `{name: float32 [B, H]}` from `stats.example_statistics`, or the message why the
    step cannot be read. An entry takes about 1.3 KB (measured, 2 examples x 12 heads), so the
    default 16384 entries (e.g. 12 runs x 12 layers x 100 steps) stay near 22 MB.

    Example:

    >>> cache = StepStatisticsCache(max_entries=2)
    >>> cache.get(("", "train", "layer_0", 100), wall_time=1.5) is None
    True
    >>> cache.put(("", "train", "layer_0", 100), 1.5, "unreadable")
    >>> cache.get(("", "train", "layer_0", 100), wall_time=1.5), cache.hits, cache.misses
    ('unreadable', 1, 1)
    """

    def __init__(self, max_entries=16384):
        self._max_entries = max_entries
        self._entries = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key, wall_time):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != wall_time:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key, wall_time, value):
        with self._lock:
            self._entries[key] = (wall_time, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self):
        with self._lock:
            return len(self._entries)


STEP_STATISTICS = StepStatisticsCache()


def tag_statistics(provider, ctx, experiment_id, run, tag, example=None, cache=None):
    """Per-head statistics of every retained step of one tag (JSON shape in the module doc).

    Args:
      provider: a TensorBoard `DataProvider` (`context.data_provider`).
      ctx: the request context (`plugin_util.context(environ)`).
      experiment_id: `plugin_util.experiment_id(environ)`.
      run, tag: the time series.
      example: None for the mean over each step's examples, or an example index.
      cache: a `StepStatisticsCache`; the module's shared `STEP_STATISTICS` by default.

    Returns:
      A JSON-ready dict; per-head values are floats, or None for a head with no usable row.
      Steps that cannot be read are left out of "steps" and listed under "errors".
    """
    if example is not None:
        example = _index_argument(example, "example")
    cache = STEP_STATISTICS if cache is None else cache
    datums = _datums(provider, ctx, experiment_id, run, [tag])[tag]
    steps, unreadable, heads = [], [], None
    values = {name: [] for name in stats.STATISTICS}
    for datum in datums:
        key = (experiment_id, run, tag, datum.step)
        per_example = cache.get(key, datum.wall_time)
        if per_example is None:
            try:
                per_example = _step_statistics(provider, ctx, run, tag, datum)
            except errors.NotFoundError as e:  # dropped by the reader since it was listed
                unreadable.append({"step": datum.step, "error": str(e)})
                continue
            cache.put(key, datum.wall_time, per_example)
        if isinstance(per_example, str):
            unreadable.append({"step": datum.step, "error": per_example})
            continue
        batch, heads = per_example["entropy"].shape
        if example is None:
            per_head = stats.mean_over_examples(per_example)
        elif example < batch:
            per_head = {name: array[example] for name, array in per_example.items()}
        else:
            raise errors.NotFoundError(
                "run %r tag %r step %d has %d example(s); there is no example %d"
                % (run, tag, datum.step, batch, example)
            )
        steps.append(datum.step)
        for name in stats.STATISTICS:
            values[name].append(_json_floats(per_head[name]))
    return {
        "run": run,
        "tag": tag,
        "example": example,
        "steps": steps,
        "heads": heads,
        "stats": values,
        "errors": unreadable,
    }


def rollout(provider, ctx, experiment_id, run, tags, step, example, residual=True):
    """Attention rollout of one example through a stack of self-attention layers.

    Each tag's heads are averaged (masked = 0), then `stats.attention_rollout` multiplies the
    layers bottom-up.

    Args:
      provider, ctx, experiment_id, run: as for `tag_statistics`.
      tags: the stack's tags, bottom layer first (e.g. `encoder/layer_0/...` to `layer_5/...`).
      step, example: which step and which probe example.
      residual: add the residual identity term (`0.5 * A + 0.5 * I`).

    Returns:
      A dict as in the module doc; "matrix" is a float32 numpy array `[T, T]`.
    """
    step = _index_argument(step, "step")
    example = _index_argument(example, "example")
    if isinstance(tags, str) or not tags:
        raise errors.InvalidArgumentError("rollout needs a list of one or more tags")
    tags = list(tags)
    if len(set(tags)) != len(tags):
        raise errors.InvalidArgumentError("rollout tags must not repeat: %r" % (tags,))
    if len(tags) > _MAX_ROLLOUT_LAYERS:
        raise errors.InvalidArgumentError("rollout takes at most %d tags" % _MAX_ROLLOUT_LAYERS)
    datums = _datums(provider, ctx, experiment_id, run, tags)
    layers, first_header = [], None
    for tag in tags:
        datum = next((d for d in datums[tag] if d.step == step), None)
        if datum is None:
            raise errors.NotFoundError("run %r tag %r has no step %d" % (run, tag, step))
        header, weights = _read_example(provider, ctx, run, tag, datum, example)
        tq, tk = header["shape"][2:]
        if tq != tk:
            raise errors.InvalidArgumentError(
                "tag %r is not self-attention ([%d, %d]): rollout needs square layers"
                % (tag, tq, tk)
            )
        if first_header is None:
            first_header = header
        elif tk != first_header["shape"][3]:
            raise errors.InvalidArgumentError(
                "tag %r has %d tokens but %r has %d: a rollout stack shares one token axis"
                % (tag, tk, tags[0], first_header["shape"][3])
            )
        elif _tokens(header, example) and _tokens(first_header, example) and (
            _tokens(header, example) != _tokens(first_header, example)
        ):
            raise errors.InvalidArgumentError(
                "tag %r attends over other tokens than %r: not one stack" % (tag, tags[0])
            )
        layers.append(np.nan_to_num(weights, nan=0.0).mean(axis=0))
    matrix = stats.attention_rollout(layers, residual=residual)
    return {
        "run": run,
        "step": step,
        "example": example,
        "tags": tags,
        "residual": bool(residual),
        "shape": list(matrix.shape),
        "tokens": _tokens(first_header, example),
        "image": first_header.get("image"),
        "matrix": matrix,
    }


def _index_argument(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise errors.InvalidArgumentError(
            "%s must be a non-negative integer, got %r" % (name, value)
        )
    return int(value)


def _tokens(header, example):
    tokens = header.get("key_tokens")
    return None if tokens is None else tokens[example]


def _datums(provider, ctx, experiment_id, run, tags):
    """Returns `{tag: [BlobSequenceDatum ascending by step]}`; NotFoundError for a missing tag."""
    sequences = provider.read_blob_sequences(
        ctx,
        experiment_id=experiment_id,
        plugin_name=metadata.PLUGIN_NAME,
        downsample=_ALL_STEPS,
        run_tag_filter=tb_provider.RunTagFilter(runs=[run], tags=tags),
    )
    found = sequences.get(run, {})
    result = {}
    for tag in tags:
        if tag not in found:
            raise errors.NotFoundError("no attention data for run %r tag %r" % (run, tag))
        result[tag] = sorted(found[tag], key=lambda datum: datum.step)
    return result


def _read_blob(provider, ctx, datum, index):
    if index >= len(datum.values):
        raise encoding.FormatError("step has %d blobs, needs blob %d" % (len(datum.values), index))
    return provider.read_blob(ctx, blob_key=datum.values[index].blob_key)


def _read_header(provider, ctx, datum):
    header = encoding.decode_header(_read_blob(provider, ctx, datum, 0))
    if encoding.blob_count(header) > len(datum.values):
        raise encoding.FormatError(
            "step header describes %d blobs but the step has %d"
            % (encoding.blob_count(header), len(datum.values))
        )
    return header


def _decode_heads(provider, ctx, datum, header, example):
    """float32 `[H, Tq, Tk]` of one example, NaN where masked."""
    heads, tq, tk = header["shape"][1:]
    weights = np.empty((heads, tq, tk), np.float32)
    for head in range(heads):
        index = encoding.payload_index(header, example, head)
        codes = encoding.decode_codes(_read_blob(provider, ctx, datum, index), header)
        weights[head] = encoding.codes_to_weights(codes, header["scales"][index - 1])
    return weights


def _read_example(provider, ctx, run, tag, datum, example):
    """Returns `(header, float32 [H, Tq, Tk])`; NotFoundError when missing or unreadable."""
    try:
        header = _read_header(provider, ctx, datum)
        if example >= header["shape"][0]:
            raise errors.NotFoundError(
                "run %r tag %r step %d has %d example(s); there is no example %d"
                % (run, tag, datum.step, header["shape"][0], example)
            )
        return header, _decode_heads(provider, ctx, datum, header, example)
    except encoding.FormatError as e:
        raise errors.NotFoundError(
            "run %r tag %r step %d cannot be read: %s" % (run, tag, datum.step, e)
        ) from None


def _step_statistics(provider, ctx, run, tag, datum):
    """`stats.example_statistics` of one stored step, or the message why it cannot be read."""
    try:
        header = _read_header(provider, ctx, datum)
        batch = header["shape"][0]
        weights = np.stack([_decode_heads(provider, ctx, datum, header, b) for b in range(batch)])
    except encoding.FormatError as e:
        return "run %r tag %r step %d cannot be read: %s" % (run, tag, datum.step, e)
    image = header.get("image")
    tq, tk = header["shape"][2:]
    if image is None:
        return stats.example_statistics(weights)
    if tq == tk:
        return stats.example_statistics(weights, image["grid"], image["prefix_tokens"])
    # Queries that are not patches (e.g. text attending to an image): an offset between a
    # query position and a patch position means nothing.
    result = stats.example_statistics(weights)
    result["mean_distance"] = np.full_like(result["mean_distance"], np.nan)
    return result


def _json_floats(array):
    """float32 values as short JSON numbers (6 decimals is below float32's noise), NaN -> null."""
    rounded = np.round(np.asarray(array, np.float64), 6).tolist()
    return [None if math.isnan(value) else value for value in rounded]
