"""Head health over a run, and the attention mass heads put on chosen keys (`/health`, `/mass`).

Everything is read through `reader.AttentionReader` (the one read path). A layer's head-health
measures come from its stored records (`<layer tag>/health`, written by `AttentionWriter.health`
or `summary.write_health`; all steps of all layers in one `read_tensors` call) or, for a layer
without records (the summary op's users), are computed here from the stored steps with
`health.HeadHealth`, once per `(run, tag, step, wall time)`. Alarms, emergence steps, the
sentences of what changed and the head groups come from health.py's functions (`health.changes`
reads each entropy alarm with the head's role and logits), so the server and every other user of
health.py judge alike; the frontend draws the answer's alarms and derives none.
docs/http_api.md shows both answers.

Example (inside a route):

```python
cache = HealthCache()
body = run_health(reader, ctx, eid, "train", cache)          # the /health answer
body["changes"]     # ["decoder/layer_1 head 3 became a previous-token head at step 1200"]
mass = key_mass(reader, ctx, eid, "train", "decoder/layer_1", 1200, 0, [0], cache=cache)
mass["mass"]        # [[per head] per layer], share of each row on key 0
```
"""

import math
import time

import numpy as np

from tb_attention_plugin import health
from tb_attention_plugin import health_summary
from tb_attention_plugin.server import bounded_cache
from tb_attention_plugin.server.errors import NotFound, Unreadable

# Stored measure names (record and answer) -> health.py names, and the answer's order.
MEASURES = health_summary.MEASURES
# The answer's alarm kinds (docs/http_api.md), from health.py's alarm kinds.
ALARM_KINDS = {
    "entropy-floor": ("entropy_collapse", "entropy"),
    "entropy-drop": ("entropy_collapse", "entropy"),
    "max-logit": ("logit_growth", "max_logit"),
}
# Seconds one /health request spends computing measures from stored steps (the rest is
# "pending", computed by the next requests).
COMPUTE_SECONDS = 5.0
# Most keys in one /mass request.
MAX_KEYS = 4096


class HealthCache:
    """The server's memory for health: records computed from stored steps, and per-key profiles.

    - computed records: `(experiment, run, tag, step, wall time) -> record or error message`
      (a record is ~100 bytes per head: 16384 entries of 12 heads are ~20 MB);
    - key profiles for `/mass`: `(experiment, run, tag, step, wall time, example) -> float64
      [H, Tk]`, each head's attention on each key averaged over its valid query rows (the mass
      of any set of keys is a sum of its columns), bounded to 64 MB.
    """

    def __init__(self, max_records=16384, profile_bytes=64 * 1024 * 1024):
        self.records = bounded_cache.LRUCache(max_entries=max_records)
        self.profiles = bounded_cache.LRUCache(
            max_entries=65536, max_bytes=profile_bytes, size_of=lambda value: getattr(value, "nbytes", 64)
        )
        # (experiment, run, tag, step, wall time) -> (layout, examples, Tk) of the step's header
        self.facts = bounded_cache.LRUCache(max_entries=65536)
        self.computed = 0  # steps whose measures were computed (not cached): for tests


# --------------------------------------------------------------------------------------------
# Measures of a layer at a step, computed from the stored weights


def step_weights(reader, ctx, experiment_id, run, tag, datum, header):
    """All examples' weights of a stored step: float32 `[B, H, Tq, Tk]`, NaN where masked."""
    if header.get("layout", "full") != "full":
        raise Unreadable(
            "run %r tag %r step %d is stored as an overview (%s layout): head health is computed "
            "from full steps only; log health records with the callback"
            % (run, tag, datum.step, header.get("layout"))
        )
    batch = header["shape"][0]
    return np.stack(
        [np.stack(reader.example_weights(ctx, experiment_id, run, tag, datum, header, example))
         for example in range(batch)]
    )


def repeat_offset_of(header):
    """`L` when every example's tokens are a sequence of `L >= 3` tokens repeated (an induction
    probe, as `health.induction_probe` builds it), else None.

    >>> repeat_offset_of({"shape": [1, 1, 6, 6], "key_tokens": [["a", "b", "c"] * 2]})
    3
    >>> repeat_offset_of({"shape": [1, 1, 6, 6], "key_tokens": [["a", "b", "c", "a", "b", "d"]]}) is None
    True
    """
    tokens = header.get("key_tokens") or header.get("query_tokens")
    tq, tk = header["shape"][2:]
    if not tokens or tq != tk or tk % 2 or tk < 6:
        return None
    half = tk // 2
    for example in tokens:
        if len(example) != tk or list(example[:half]) != list(example[half:]):
            return None
    return half


def compute_record(weights, header):
    """The health record (`health_summary.to_record`) of stored weights `[B, H, Tq, Tk]`.

    Self-attention (`Tq == Tk`) with nothing above the diagonal (no weight > 0: causal masking
    stored as NaN or as zeros) is measured as causal; `Tq != Tk` as cross-attention; an
    induction probe is recognised from the tokens (`repeat_offset_of`). No logits are stored:
    `max_logit` is null.
    """
    _, _, tq, tk = weights.shape
    cross = tq != tk
    causal = False
    if not cross:
        above = weights[..., np.triu_indices(tq, k=1)[0], np.triu_indices(tq, k=1)[1]]
        causal = bool(tq > 1 and not (np.nan_to_num(above, nan=0.0) > 0).any())
    offset = None if cross else repeat_offset_of(header)
    result = health.head_health(weights, causal=causal, cross=cross, repeat_offset=offset)
    return health_summary.to_record(result)


def _computed_record(reader, ctx, experiment_id, run, tag, datum, cache):
    """A computed record of one step, or the message why it cannot be read (both cached)."""
    key = (experiment_id, run, tag, datum.step, datum.wall_time)
    cached = cache.records.get(key)
    if cached is not None:
        return cached
    try:
        header = reader.header(ctx, experiment_id, run, tag, datum)
        weights = step_weights(reader, ctx, experiment_id, run, tag, datum, header)
        cached = compute_record(weights, header)
    except Unreadable as e:
        cached = str(e)
    except ValueError as e:  # weights health.py refuses (e.g. Inf): say so, keep the others
        cached = "run %r tag %r step %d: %s" % (run, tag, datum.step, e)
    cache.computed += 1
    cache.records.put(key, cached)
    return cached


# --------------------------------------------------------------------------------------------
# /health


def health_signature(reader, ctx, experiment_id, run):
    """What determines a run's /health answer: `(layers, {layer: (source, items)})` where items
    are the `(step, wall time)` of its records or stored steps. Raises `NotFound` for a run with
    neither."""
    layer_tags = reader.layer_tags(ctx, experiment_id, run)
    records = reader.health_records(ctx, experiment_id, run)
    layers = sorted(set(layer_tags) | set(records))
    if not layers:
        raise NotFound("no attention data for run %r" % run)
    sources = {}
    for tag in layers:
        if records.get(tag):
            sources[tag] = ("logged", records[tag])
            continue
        try:
            sources[tag] = ("computed", reader.steps(ctx, experiment_id, run, tag))
        except NotFound as e:  # e.g. written by a newer format: the other layers still serve
            sources[tag] = ("unreadable", str(e))
    signature = tuple(
        (tag, sources[tag][0], sources[tag][1] if sources[tag][0] == "unreadable"
         else tuple((d.step, d.wall_time) for d in sources[tag][1]))
        for tag in layers
    )
    return layers, sources, signature


def run_health(reader, ctx, experiment_id, run, cache, prepared=None,
               compute_seconds=COMPUTE_SECONDS):
    """The `/health` answer of a run (docs/http_api.md): per layer, head and step the measures,
    roles, sinks and groups; alarms, emergence steps and what changed.

    Measures of layers without records are computed from the stored steps for at most
    `compute_seconds` per call (at least one step), coarse to fine over each layer's steps
    (first, newest, middle, quarters, ...); what is left is counted in the answer's `pending`,
    and the next call goes on where this one stopped.

    Args:
      reader, ctx, experiment_id, run: as for the other aggregates.
      cache: a `HealthCache`.
      prepared: `health_signature(...)` already computed by the caller (for the ETag).
      compute_seconds: time budget for computing steps in this call.
    """
    layers, sources, _ = prepared or health_signature(reader, ctx, experiment_id, run)
    per_layer, errors = {tag: {} for tag in layers}, []
    to_compute = _known_records(per_layer, errors, layers, sources, cache.records,
                                (experiment_id, run))
    deadline = time.monotonic() + compute_seconds
    pending = len(to_compute)
    for _, tag, item in to_compute:
        if pending < len(to_compute) and time.monotonic() > deadline:
            break
        try:
            record = _computed_record(reader, ctx, experiment_id, run, tag, item, cache)
        except NotFound as e:  # the step vanished since it was listed: not cached
            record = str(e)
        _keep(per_layer, errors, tag, item.step, record)
        pending -= 1
    steps = sorted({step for found in per_layer.values() for step in found})
    answer = {"run": run, "layers": layers, "steps": steps,
              "sources": {tag: sources[tag][0] for tag in layers}}
    answer.update(_over_steps(run, layers, steps, per_layer, errors))
    alarms, emergence, changes = _changes(layers, steps, answer["series"])
    answer.update(alarms=alarms, emergence=emergence, changes=changes, errors=errors,
                  pending=pending)
    return answer


def _known_records(per_layer, errors, layers, sources, cached, run_key):
    """Keeps the logged and cached records of every layer's steps; returns the steps left to
    compute as `[(order, tag, datum)]`, coarse to fine (`_coarse_rank`)."""
    to_compute = []
    for position, tag in enumerate(layers):
        source, items = sources[tag]
        if source == "unreadable":
            errors.append({"tag": tag, "step": None, "error": items})
            continue
        for index, item in enumerate(items):
            if source == "logged":
                record = item.record if item.error is None else item.error
            else:
                record = cached.get(run_key + (tag, item.step, item.wall_time))
                if record is None:
                    order = (_coarse_rank(index, len(items)), index, position)
                    to_compute.append((order, tag, item))
                    continue
            _keep(per_layer, errors, tag, item.step, record)
    to_compute.sort(key=lambda entry: entry[0])
    return to_compute


def _over_steps(run, layers, steps, per_layer, errors):
    """Each layer's `heads` and its `series`, `roles`, `groups` and `sinks` over `steps`
    (None where a step has no record, or one of another head count: an error)."""
    heads, series, roles, groups, sinks = {}, {}, {}, {}, {}
    for tag in layers:
        found = per_layer[tag]
        h = heads[tag] = found[max(found)]["heads"] if found else 0
        series[tag] = {name: [] for name in MEASURES}
        roles[tag], groups[tag], sinks[tag] = [], [], []
        for step in steps:
            record = found.get(step)
            if record is not None and record["heads"] != h:
                errors.append({"tag": tag, "step": step, "error": "run %r tag %r step %d has %d "
                               "heads, the newest step %d" % (run, tag, step, record["heads"], h)})
                record = None
            for name in MEASURES:
                values = None if record is None else record["measures"].get(name)
                series[tag][name].append(list(values) if values is not None else [None] * h)
            roles[tag].append(list(record["role"]) if record else [None] * h)
            groups[tag].append(record.get("similarity_groups") if record else None)
            sinks[tag].append(record.get("sinks") if record else None)
    return {"heads": heads, "series": series, "roles": roles, "groups": groups, "sinks": sinks}


def _keep(per_layer, errors, tag, step, record):
    if isinstance(record, str):
        errors.append({"tag": tag, "step": step, "error": record})
    else:
        per_layer[tag][step] = record


def _coarse_rank(index, count):
    """Order in which a layer's steps are computed: the first, the newest, then ever finer
    halvings (every 2^k-th step before the others), so a partial answer spans the run.

    >>> sorted(range(9), key=lambda i: (_coarse_rank(i, 9), i))
    [0, 8, 4, 2, 6, 1, 3, 5, 7]
    """
    if index == 0:
        return (0, 0)
    if index == count - 1:
        return (1, 0)
    return (2, -(index & -index))  # multiples of larger powers of two first



def _changes(layers, steps, series):
    """Alarms, emergence and sentences from health.changes, per layer over its own steps."""
    found = []
    order = {tag: index for index, tag in enumerate(layers)}
    values_at = {}
    for tag in layers:
        measures = series[tag]
        present = [i for i, row in enumerate(measures["entropy"]) if any(v is not None for v in row)]
        if not present:
            continue
        layer_steps = [steps[i] for i in present]
        h = len(measures["entropy"][present[0]])
        arrays = {  # [steps, heads] per measure, NaN for null
            MEASURES[name]: np.array([[np.nan if v is None else v for v in measures[name][i]]
                                      for i in present], np.float64)
            for name in MEASURES
        }
        heads = {
            (tag, head): {name: array[:, head] for name, array in arrays.items()}
            for head in range(h)
        }
        values_at[tag] = (layer_steps, heads)
        found.extend(health.changes(layer_steps, heads))
    found.sort(key=lambda c: (c.step, order[c.layer], c.head, c.kind))
    alarms, emergence = [], []
    for change in found:
        layer_steps, heads = values_at[change.layer]
        scores = heads[(change.layer, change.head)]
        if change.kind in ALARM_KINDS:
            kind, measure = ALARM_KINDS[change.kind]
            value = scores[measure][layer_steps.index(change.step)]
            alarms.append({
                "tag": change.layer, "head": change.head, "step": change.step, "kind": kind,
                "reason": change.kind, "value": None if math.isnan(value) else float(value),
                "message": change.sentence,
            })
        elif change.kind == "emerged":
            last = {name: float(values[-1]) for name, values in scores.items()}
            emergence.append({
                "tag": change.layer, "head": change.head, "role": health.role_of(last),
                "step": change.step, "message": change.sentence,
            })
    return alarms, emergence, [change.sentence for change in found]


# --------------------------------------------------------------------------------------------
# /mass


def key_profile(weights):
    """Per head, the mean over valid query rows of each key's weight: float64 `[H, Tk]`.

    `weights` `[H, Tq, Tk]` (NaN = masked, counted as 0); a valid row attends something (has an
    unmasked key and a positive sum: Keras zeroes padded queries). A head without valid rows is
    NaN. The mass of a set of keys is the sum of their columns.

    >>> nan = float("nan")
    >>> key_profile(np.array([[[1.0, 0.0], [0.5, 0.5], [nan, nan]]])).tolist()
    [[0.75, 0.25]]
    """
    weights = np.asarray(weights, np.float32)
    kept = np.nan_to_num(weights, nan=0.0)
    valid = (~np.isnan(weights)).any(axis=-1) & (kept.sum(axis=-1) > 0)  # [H, Tq]
    count = valid.sum(axis=-1)  # [H]
    total = np.where(valid[..., np.newaxis], kept, 0).sum(axis=-2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count[:, np.newaxis] > 0, total / np.maximum(count, 1)[:, np.newaxis], np.nan)


def _profile(reader, ctx, experiment_id, run, tag, datum, header, example, cache):
    key = (experiment_id, run, tag, datum.step, datum.wall_time, example)
    profile = cache.profiles.get(key)
    if profile is None:
        weights = reader.example_weights(ctx, experiment_id, run, tag, datum, header, example)
        profile = key_profile(np.stack(weights))
        cache.profiles.put(key, profile)
    return profile


PENDING = "pending"  # a (layer, step) whose mass was not computed in this request's budget


def _layer_mass(reader, ctx, experiment_id, run, tag, step, example, keys, key_length, cache,
                may_read=True, reads=None):
    """`(mass per head or None, note or None, comparable)` of one layer at one step, or
    `(None, PENDING, True)` when that needs reading blobs and `may_read` is False. Appends to
    the list `reads` when it reads."""
    try:
        datum = reader.datum(ctx, experiment_id, run, tag, step)
        facts_key = (experiment_id, run, tag, step, datum.wall_time)
        facts = cache.facts.get(facts_key)  # (layout, batch, Tk) of the step's header
        if facts is None:
            if not may_read:
                return None, PENDING, True
            if reads is not None:
                reads.append(tag)
            header = reader.header(ctx, experiment_id, run, tag, datum)
            facts = (header.get("layout", "full"), header["shape"][0], header["shape"][3])
            cache.facts.put(facts_key, facts)
        layout, batch, tk = facts
        if layout != "full":
            return None, "stored as an overview at step %d" % step, True
        if tk != key_length:
            return None, "its key axis has %d positions, not %d: not comparable" % (tk, key_length), False
        if example >= batch:
            return None, "example %d out of range (batch %d)" % (example, batch), True
        profile = cache.profiles.get(facts_key + (example,))
        if profile is None:
            if not may_read:
                return None, PENDING, True
            if reads is not None:
                reads.append(tag)
            header = reader.header(ctx, experiment_id, run, tag, datum)
            profile = _profile(reader, ctx, experiment_id, run, tag, datum, header, example, cache)
    except NotFound as e:  # no such step, or unreadable (Unreadable is a NotFound)
        return None, str(e), True
    mass = profile[:, keys].sum(axis=1)
    return [None if math.isnan(v) else round(float(v), 6) for v in mass], None, True


def key_mass(reader, ctx, experiment_id, run, tag, step, example, keys, over_steps=False,
             cache=None, compute_seconds=COMPUTE_SECONDS):
    """The `/mass` answer: the attention mass each head of every layer of `run` puts on `keys`
    (positions of `tag`'s key axis), mean over query rows, at `step` and optionally every step.

    The answer at `step` is always complete. Over steps, blobs are read for at most
    `compute_seconds` (coarse to fine over the steps, as `/health`); the (layer, step) pairs
    left are `null` in `series` and counted in `pending`.

    Raises `NotFound` for an unknown run/tag/step, an example or a key out of `tag`'s range.
    """
    cache = cache or HealthCache()
    deadline = time.monotonic() + compute_seconds
    datum = reader.datum(ctx, experiment_id, run, tag, step)
    header = reader.header(ctx, experiment_id, run, tag, datum)
    batch, _, _, key_length = header["shape"]
    if example >= batch:
        raise NotFound("example %d out of range (batch %d)" % (example, batch))
    beyond = [k for k in keys if k >= key_length]
    if beyond:
        raise NotFound("key position %d out of range: tag %r has %d keys" % (beyond[0], tag, key_length))
    layers = reader.layer_tags(ctx, experiment_id, run)
    mass, notes, comparable = [], [], []
    for layer in layers:
        values, note, same_keys = _layer_mass(reader, ctx, experiment_id, run, layer, step,
                                              example, keys, key_length, cache)
        mass.append(values)
        notes.append(note)
        comparable.append(same_keys)
    body = {
        "run": run, "tag": tag, "step": step, "example": example, "keys": list(keys),
        "layers": layers, "comparable": comparable,
        "notes": notes, "mass": mass,
    }
    if over_steps:
        steps = [d.step for d in reader.steps(ctx, experiment_id, run, tag)]
        series = [[None] * len(steps) for _ in layers]
        order = sorted(
            ((_coarse_rank(i, len(steps)), i, li) for i in range(len(steps))
             for li in range(len(layers))),
        )
        pending, reads = 0, []
        for _, i, li in order:
            # Within the budget, and always until one pair was read: every request progresses.
            may_read = not reads or time.monotonic() <= deadline
            values, note, _ = _layer_mass(reader, ctx, experiment_id, run, layers[li], steps[i],
                                          example, keys, key_length, cache, may_read=may_read,
                                          reads=reads)
            if note == PENDING:
                pending += 1
            series[li][i] = values
        body["steps"] = steps
        body["series"] = series
        body["pending"] = pending
    return body
