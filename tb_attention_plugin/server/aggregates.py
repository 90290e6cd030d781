"""Statistics over a logged run and attention rollout, read through `reader.AttentionReader`.

The plugin backend calls these from its `/stats` and `/rollout` routes. Every blob is read by the
plugin's one read path (`reader.py`: step index, header checks, payload decoding, its caches and
its messages), so both the Rust data server and the Python reader (`--load_fast=false`) work and
a step that `/matrix` cannot read is unreadable here for the same reason, in the same words.

API (errors are `errors.BadRequest` (400) and `errors.NotFound` (404), which are
`tensorboard.errors.PublicError`s carrying their HTTP code: answer `{"error": str(e)}` with
`e.http_code`):

```
tag_statistics(reader, ctx, experiment_id, run, tag, example=None, cache=None) -> dict
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
  NotFound (404): no such run/tag, or `example` beyond a step's examples.
  BadRequest (400): `example` not a non-negative int.

rollout(reader, ctx, experiment_id, run, tags, step, example, residual=True) -> dict
{
  "run": "train", "step": 500, "example": 0,
  "tags": ["encoder/layer_0/self_attention", "encoder/layer_1/self_attention"],
  "residual": true,
  "shape": [12, 12],
  "tokens": ["i", "have", ...] or null,   # the example's key tokens of the bottom layer
  "image": {"grid": [14, 14], "prefix_tokens": 1, ...} or null,  # the bottom layer's
  "matrix": float32 numpy array [T, T]     # serve as /matrix wire format dtype 2 (NaN-free)
}
  NotFound (404): unknown tag, a tag without that step, example out of range, unreadable.
  BadRequest (400): no tags, more than MAX_ROLLOUT_TAGS or repeated tags, a layer that is not
    square, layers of different sizes or different tokens, bad step/example types.
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
    body = aggregates.tag_statistics(self._reader, ctx, eid, run, tag)
except tensorboard.errors.PublicError as e:
    return http_util.Respond(request, {"error": str(e)}, "application/json", code=e.http_code)
```
"""

import collections
import math
import threading

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin import stats
from tb_attention_plugin.server.errors import BadRequest, NotFound, Unreadable

# Most layers in one rollout (docs/http_api.md): a deeper stack is not a real model's.
MAX_ROLLOUT_TAGS = 256


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


def tag_statistics(reader, ctx, experiment_id, run, tag, example=None, cache=None):
    """Per-head statistics of every retained step of one tag (JSON shape in the module doc).

    Args:
      reader: the plugin's `reader.AttentionReader` over `context.data_provider`.
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
    datums = reader.steps(ctx, experiment_id, run, tag)
    steps, unreadable, heads = [], [], None
    values = {name: [] for name in stats.STATISTICS}
    for datum in datums:
        key = (experiment_id, run, tag, datum.step)
        per_example = cache.get(key, datum.wall_time)
        if per_example is None:
            try:
                per_example = _step_statistics(reader, ctx, experiment_id, run, tag, datum)
            except Unreadable as e:  # corrupt or from a newer format: the same until rewritten
                per_example = str(e)
            except NotFound as e:  # dropped by the reader since it was listed: not cached
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
            raise _no_example(run, tag, datum.step, batch, example)
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


def rollout(reader, ctx, experiment_id, run, tags, step, example, residual=True):
    """Attention rollout of one example through a stack of self-attention layers.

    Each tag's heads are averaged (masked = 0), then `stats.attention_rollout` multiplies the
    layers bottom-up.

    Args:
      reader, ctx, experiment_id, run: as for `tag_statistics`.
      tags: the stack's tags, bottom layer first (e.g. `encoder/layer_0/...` to `layer_5/...`).
      step, example: which step and which probe example.
      residual: add the residual identity term (`0.5 * A + 0.5 * I`).

    Returns:
      A dict as in the module doc; "matrix" is a float32 numpy array `[T, T]`.
    """
    step = _index_argument(step, "step")
    example = _index_argument(example, "example")
    tags = rollout_tags(tags)
    datums = [reader.datum(ctx, experiment_id, run, tag, step) for tag in tags]
    layers, first_header = [], None
    for tag, datum in zip(tags, datums):
        header = reader.header(ctx, experiment_id, run, tag, datum)
        if encoding.is_pooled(header):
            raise BadRequest(
                "tag %r step %d is stored pooled (its heads were too large for the writer's "
                "budget): rollout needs every layer's full matrices; pick layers stored in full, "
                "or log them with a larger max_bytes" % (tag, step)
            )
        if example >= header["shape"][0]:
            raise _no_example(run, tag, step, header["shape"][0], example)
        tq, tk = header["shape"][2:]
        if tq != tk:
            raise BadRequest(
                "tag %r is not self-attention ([%d, %d]): rollout needs square layers"
                % (tag, tq, tk)
            )
        if first_header is None:
            first_header = header
        elif tk != first_header["shape"][3]:
            raise BadRequest(
                "tag %r has %d tokens but %r has %d: a rollout stack shares one token axis"
                % (tag, tk, tags[0], first_header["shape"][3])
            )
        elif _tokens(header, example) and _tokens(first_header, example) and (
            _tokens(header, example) != _tokens(first_header, example)
        ):
            raise BadRequest(
                "tag %r attends over other tokens than %r: not one stack" % (tag, tags[0])
            )
        weights = reader.example_weights(ctx, experiment_id, run, tag, datum, header, example)
        layers.append(np.nan_to_num(np.stack(weights), nan=0.0).mean(axis=0))
    matrix = stats.attention_rollout(layers, residual=residual)
    return {
        "run": run,
        "step": step,
        "example": example,
        "tags": list(tags),
        "residual": bool(residual),
        "shape": list(matrix.shape),
        "tokens": _tokens(first_header, example),
        "image": first_header.get("image"),
        "matrix": matrix,
    }


def rollout_tags(tags):
    """Checks a rollout's tags (bottom layer first) and returns them as a tuple.

    Raises `BadRequest` for none, more than `MAX_ROLLOUT_TAGS`, or a tag given twice.

    >>> rollout_tags(["layer_0", "layer_1"])
    ('layer_0', 'layer_1')
    """
    if isinstance(tags, str) or not tags:
        raise BadRequest("rollout needs one or more tags: give one 'tag' per layer, bottom first")
    tags = tuple(tags)
    if len(tags) > MAX_ROLLOUT_TAGS:
        raise BadRequest(
            "rollout takes at most %d tags (one 'tag' per layer), got %d"
            % (MAX_ROLLOUT_TAGS, len(tags))
        )
    if len(set(tags)) != len(tags):
        raise BadRequest(
            "a 'tag' is given twice; rollout tags must not repeat: each layer once, bottom first"
        )
    return tags


def _index_argument(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise BadRequest("%s must be a non-negative integer, got %r" % (name, value))
    return int(value)


def _no_example(run, tag, step, batch, example):
    return NotFound(
        "run %r tag %r step %d has %d example(s); there is no example %d"
        % (run, tag, step, batch, example)
    )


def _tokens(header, example):
    tokens = header.get("key_tokens")
    return None if tokens is None else tokens[example]


def _step_statistics(reader, ctx, experiment_id, run, tag, datum):
    """`stats.example_statistics` of one stored step; `Unreadable` when it cannot be read."""
    header = reader.header(ctx, experiment_id, run, tag, datum)
    if encoding.is_pooled(header):
        return _pooled_step_statistics(reader, ctx, experiment_id, run, tag, datum, header)
    weights = np.stack(
        [
            np.stack(reader.example_weights(ctx, experiment_id, run, tag, datum, header, b))
            for b in range(header["shape"][0])
        ]
    )
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


def _pooled_step_statistics(reader, ctx, experiment_id, run, tag, datum, header):
    """`stats.pooled_statistics` of a pooled step: exact rows from the windows over all keys,
    the other rows from the overview's block means (docs/http_api.md, /stats)."""
    batch, _, tq, tk = header["shape"]
    full_rows = [w for w in header["windows"] if w["key"] == [0, tk]]
    column = next(
        (w["name"] for w in header["windows"] if w["key"] == [0, 1] and w["query"] == [0, tq]),
        None,
    )
    means, maxes, exact = [], [], {w["name"]: [] for w in full_rows}
    first_key = []
    for b in range(batch):
        if column is not None:
            first_key.append(np.stack(
                reader.example_parts(ctx, experiment_id, run, tag, datum, header, b, column)
            )[..., 0])
        parts = reader.example_parts(ctx, experiment_id, run, tag, datum, header, b)
        means.append(np.stack([m for m, _ in parts]))
        maxes.append(np.stack([x for _, x in parts]))
        for w in full_rows:
            exact[w["name"]].append(
                np.stack(reader.example_parts(ctx, experiment_id, run, tag, datum, header, b, w["name"]))
            )
    exact_rows = [(w["query"][0], np.stack(exact[w["name"]])) for w in full_rows]
    return stats.pooled_statistics(
        np.stack(means), np.stack(maxes), header["pooled"]["block"], header["shape"],
        exact_rows, image_grid=(header.get("image") or {}).get("grid"),
        first_key=np.stack(first_key) if column is not None else None,
    )


def _json_floats(array):
    """float32 values as short JSON numbers (6 decimals is below float32's noise), NaN -> null."""
    rounded = np.round(np.asarray(array, np.float64), 6).tolist()
    return [None if math.isnan(value) else value for value in rounded]
