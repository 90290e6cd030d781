"""Finds a Keras model's attention layers and captures their scores in one forward pass.

Two kinds of capture sites, each read by its own adapter in `logger/adapters/`, installed as
instance attributes (and, for `keras.ops` functions, module attributes) for the duration of one
`model(probe, training=False)` call:

- Keras' own attention layers (`adapters/stock.py`): the shadows of their score methods
  (`_compute_attention` for `MultiHeadAttention` / `GroupedQueryAttention`, `_apply_scores` for
  `Attention` / `AdditiveAttention`) ask the original methods for scores, record them with the
  mask that was applied, and return what the caller expected. A POOLED layer (`budget.py`) is
  computed in query chunks by `blocked.py` instead, so its full scores never exist.
- every other layer whose own code makes attention probabilities (`adapters/owners.py`): read
  at a `Softmax` sublayer, `keras.ops.softmax` or the fused `keras.ops.dot_product_attention`
  (`adapters/recording.py` and the adapter modules beside it). A POOLED one is reduced in query
  chunks by the same `blocked.reduce_in_chunks`: the capture holds one chunk of its weights.

Afterwards every layer and function is restored exactly, also when the pass raises, so compiled
training steps never see them. On TensorFlow, `CompiledCapture` traces that patched pass once
into a graph and reruns the graph. `ProbeCapture` is what the `AttentionLogger` runs at each
capture: layers found once, the traced pass where it works, the eager pass elsewhere, broken
layers left out.

Example:

```python
sites, unreadable = find_attention_layers(model)
result = capture_attention(model, probe_batch, sites)
for record in result.records:
    print(record.tag, record.scores.shape, record.cross, record.causal, record.max_logit,
          record.kv_heads)
```

Besides the post-softmax scores, each record carries the largest pre-softmax logit per example
and head (`record.max_logit` `[B, H]`, over unmasked positions), read where the layer hands its logits to the
softmax (`_masked_softmax` of `MultiHeadAttention` / `GroupedQueryAttention`, the `scores`
argument of `Attention._apply_scores`) and reduced there, so the logits never leave the
backend (a POOLED layer's comes from its blocked pass, `blocked.py`). It is the measure of
attention-logit growth (docs/health.md).
"""

import collections
import contextlib
import fnmatch

import numpy as np

from tb_attention_plugin.logger.adapters import groups
from tb_attention_plugin.logger.adapters import owners as owner_layers
from tb_attention_plugin.logger.adapters.recording import OwnerRecording
from tb_attention_plugin.logger.adapters.recording import REGISTER_HINT
from tb_attention_plugin.logger.adapters.stock import HEADS as _HEADS
from tb_attention_plugin.logger.adapters.stock import SINGLE as _SINGLE
from tb_attention_plugin.logger.adapters.stock import StockShadows
from tb_attention_plugin.logger.adapters.values import to_numpy as _to_numpy

# The third kind of site besides Keras' own (`_HEADS`, `_SINGLE`): any other layer making
# probabilities, read by logger/adapters/.
_OWNER = "owner"


class AttentionSite:
    """One attention layer of a model: the layer, its readable path and its kind."""

    def __init__(self, layer, path, kind):
        self.layer = layer
        self.path = path
        self.kind = kind

    @property
    def score_method(self):
        return "_compute_attention" if self.kind == _HEADS else "_apply_scores"

    def __repr__(self):
        return "AttentionSite(%r, %s)" % (self.path, type(self.layer).__name__)


class AttentionRecord:
    """Scores of one call of one attention layer during the probe pass.

    Attributes:
      tag: the layer path, suffixed `/call_<i>` when the layer was called more than once.
      site: the `AttentionSite`.
      scores: float32 numpy `[B, H, Tq, Tk]` (post-softmax; `H = 1` for single-head layers),
        or None for a POOLED layer (see `pooled`).
      mask: bool numpy broadcastable to `scores` (True = attended) or None.
      cross: True when the query tensor was not the key tensor.
      causal: True for self-attention under a causal mask.
      shape: `(B, H, Tq, Tk)` of the layer's full attention.
      pooled: None, or for a layer computed in blocks (`blocked.py`) a dict `block` `(bq, bk)`,
        `means`, `maxes` float32 `[b, H, nq, nk]` (NaN = all masked) and `windows`
        `[(name, (q0, q1), (k0, k1), weights [b, H, q1-q0, k1-k0])]` of the kept `b` examples.
      max_logit: float32 `[B, H]` (every example of the pass, pooled or not): the largest
        pre-softmax logit of each example and head over unmasked positions (NaN where none is
        finite), or None where the layer's logits were not seen.
      kv_heads: the key/value heads `K` of a grouped-query layer (`K < H`, query head `h`
        reads key/value head `h // (H / K)`; `adapters/groups.py`), else None.
    """

    def __init__(self, tag, site, scores, mask, cross, causal, shape=None, pooled=None,
                 max_logit=None, kv_heads=None):
        self.tag = tag
        self.site = site
        self.scores = scores
        self.mask = mask
        self.cross = cross
        self.causal = causal
        self.shape = tuple(int(n) for n in (scores.shape if shape is None else shape))
        self.pooled = pooled
        self.max_logit = max_logit
        self.kv_heads = kv_heads


# A probe of at most this many values per example (tokens, pixels) is traced before its layer
# shapes are known (`ProbeCapture._planned_first_run`): its attention is almost always small.
SMALL_PROBE_VALUES = 4096

LayerShape = collections.namedtuple("LayerShape", ["tag", "path", "index", "shape", "cross",
                                                   "causal", "kv_heads"], defaults=(None,))
LayerShape.__doc__ = """One layer call seen by the shape pass (`layer_shapes`): its tag, site
path and call index, full attention `shape` `(B, H, Tq, Tk)`, `cross`, `causal` and `kv_heads`
(as `AttentionRecord.kv_heads`)."""


CaptureResult = collections.namedtuple("CaptureResult", ["records", "problems"])
CaptureResult.__doc__ = """`records`: `AttentionRecord`s in call order; `problems`: dict of
layer path -> reason for attention layers that were called but yielded no readable scores."""


def attention_classes():
    """Returns `{class: kind}` of the Keras attention layers this module can read."""
    import keras

    from keras.src.layers.attention.grouped_query_attention import GroupedQueryAttention

    return {
        keras.layers.MultiHeadAttention: _HEADS,
        GroupedQueryAttention: _HEADS,  # public as keras.layers.GroupQueryAttention
        keras.layers.Attention: _SINGLE,
        keras.layers.AdditiveAttention: _SINGLE,
    }


def _kind_of(layer, classes):
    for cls, kind in classes.items():
        if isinstance(layer, cls):
            return kind
    return None


def _tree_paths(model):
    """Readable paths from the layer tree (`parent/child`), for layers without `layer.path`."""
    paths = {}

    def visit(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if id(child) in paths:
                continue
            path = child.name if not prefix else prefix + "/" + child.name
            paths[id(child)] = path
            visit(child, path)

    visit(model, "")
    return paths


def _sublayer_ids(layer):
    return {id(sub) for sub in layer._flatten_layers(include_self=False, recursive=True)}


def find_attention_layers(model, patterns=None):
    """Lists the attention layers of `model` at any depth.

    Args:
      model: a built or unbuilt Keras 3 model (functional, Sequential or subclassed).
      patterns: None for all layers, or fnmatch patterns matched against layer paths (and
        names); a layer is kept when any pattern matches.

    Returns:
      `(sites, unreadable)`: `AttentionSite`s in model order (Keras' stock attention layers,
      and the layers whose own code makes probabilities, `adapters/owners.py`), and
      descriptions of layers whose class name says attention but that neither are nor hold
      one (e.g. tf-keras layers). Both respect `patterns`.
    """
    classes = attention_classes()
    tree_paths = _tree_paths(model)
    sites, named, seen, taken = [], [], set(), set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = _layer_path(layer, tree_paths)
        if patterns is not None and not any(
            fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(layer.name, p) for p in patterns
        ):
            continue
        kind = _kind_of(layer, classes)
        if kind is None and owner_layers.owner_reason(layer) is not None:
            kind = _OWNER
        if kind is None or any(id(layer) in _sublayer_ids(site.layer) for site in sites
                               if site.kind != _OWNER):
            if kind is None and owner_layers.looks_like_attention(layer):
                named.append((layer, path))
            continue  # not attention, or a part of a stock attention layer
        if path in taken:  # e.g. two nested backbones with the same layer names
            path = tree_paths.get(id(layer), path)
        base, number = path, 1
        while path in taken:
            number += 1
            path = "%s_%d" % (base, number)
        taken.add(path)
        sites.append(AttentionSite(layer, path, kind))
    return sites, _unreadable(named, sites)


def _layer_path(layer, tree_paths):
    path = getattr(layer, "path", None)
    if not isinstance(path, str) or not path:
        path = tree_paths.get(id(layer), layer.name)
    return path


def _unreadable(named, sites):
    """The attention-named layers that are neither a site nor hold one nor sit inside one
    (a wrapper such as DINOv2's around a MultiHeadAttention is read through its inner layer)."""
    site_ids = {id(site.layer) for site in sites}
    unreadable = []
    for layer, path in named:
        inside = _sublayer_ids(layer)
        if site_ids & inside or any(id(layer) in _sublayer_ids(s.layer) for s in sites):
            continue
        unreadable.append("%s (%s)" % (path, type(layer).__name__))
    return unreadable


def _max_logit(logits, mask, head_axis):
    """Largest logit per head over unmasked, finite positions, computed in the backend.

    `logits` `[B, H, Tq, Tk]` (`head_axis=1`) or `[B, Tq, Tk]` (`head_axis=None`: one head);
    `mask` broadcastable after adding axes before the last two (True = attended), or None.
    Returns a float32 tensor `[B, H]` (`[B, 1]` without a head axis); -inf where nothing is
    usable.
    """
    import keras

    ops = keras.ops
    logits = ops.cast(logits, "float32")
    usable = ops.isfinite(logits)
    if mask is not None:
        mask = ops.cast(mask, "bool")
        while len(mask.shape) < len(logits.shape):
            # Keras' own expansion: before the (query, key) axes, or before the key axis of a
            # head-less `[B, Tk]` mask.
            mask = ops.expand_dims(mask, axis=-2 if head_axis is None else -3)
        usable = ops.logical_and(usable, mask)
    logits = ops.where(usable, logits, ops.cast(float("-inf"), "float32"))
    if head_axis is None:
        return ops.expand_dims(ops.max(logits, axis=(1, 2)), 1)
    axes = tuple(axis for axis in range(len(logits.shape)) if axis not in (0, head_axis))
    return ops.max(logits, axis=axes)


def _is_causal(mask, tq, tk):
    """True when every example's mask hides the strict upper triangle (future keys)."""
    if mask is None or tq != tk or tq < 2:
        return False
    upper = np.triu(np.ones((tq, tk), bool), k=1)
    return not np.broadcast_to(mask, mask.shape[:-2] + (tq, tk))[..., upper].any()


def _nothing_above_diagonal(scores):
    """True when square weights put no weight on future keys (a layer that masks by adding a
    large negative number to its logits, such as T5's decoder, hands no mask to its softmax)."""
    tq, tk = scores.shape[-2:]
    if tq != tk or tq < 2:
        return False
    return not np.any(scores[..., np.triu(np.ones((tq, tk), bool), k=1)])


class _Patcher(OwnerRecording, StockShadows):
    """Installs and removes the recording shadows on the attention layer instances (stock
    layers here, owner layers through `OwnerRecording` and `logger/adapters/`)."""

    def __init__(self, sites, symbolic=False, plans=None, shapes_only=False):
        self._sites = sites
        self._symbolic = symbolic  # tracing a tf.function: keep tensors, convert nothing
        self._plans = plans or {}  # (site path, call index) -> budget.LayerPlan
        self._shapes_only = shapes_only  # the shape pass: record shapes, compute nothing more
        self._saved = []  # (layer, attribute, had_instance_value, old_value)
        self.calls = collections.defaultdict(list)  # id(site) -> list of call records
        self.problems = {}

    def _set(self, layer, name, value):
        had = name in layer.__dict__
        self._saved.append((layer, name, had, layer.__dict__.get(name)))
        object.__setattr__(layer, name, value)  # bypasses Keras attribute tracking

    def install(self):
        self.install_owners([site for site in self._sites if site.kind == _OWNER])
        self.install_stock([site for site in self._sites if site.kind != _OWNER])

    def restore(self):
        while self._saved:
            layer, name, had, old = self._saved.pop()
            if had:
                object.__setattr__(layer, name, old)
            else:
                layer.__dict__.pop(name, None)

    def _record(self, site, scores, mask):
        calls = self.calls[id(site)]
        if not calls:
            calls.append({"same": True, "causal_flag": False})
        entry = calls[-1]
        if "scores" in entry:  # score method called twice in one call: keep the first
            return
        if scores is None:
            self.problems.setdefault(site.path, "the layer returned no attention scores")
            entry["scores"] = None
            return
        if self._symbolic:
            entry["scores"], entry["mask"] = scores, mask
            return
        try:
            entry["scores"] = _to_numpy(scores)
            entry["mask"] = None if mask is None else _to_numpy(mask).astype(bool)
        except Exception as e:
            self.problems.setdefault(site.path, "scores are not readable: %s" % e)
            entry["scores"] = None

    def _record_logits(self, site, logits, mask, head_axis):
        """Keeps the largest logit per head of the current call (the first softmax only)."""
        calls = self.calls[id(site)]
        if not calls:
            calls.append({"same": True, "causal_flag": False})
        entry = calls[-1]
        if "max_logit" in entry or "scores" in entry:
            return
        try:
            if head_axis is not None and len(logits.shape) != 4:
                entry["max_logit"] = None  # attention over several axes: not shown anyway
                return
            value = _max_logit(logits, mask, head_axis)
            entry["max_logit"] = value if self._symbolic else _to_numpy(value)
        except Exception:
            entry["max_logit"] = None  # the scores still count; only this measure is lost

    def _failed(self, site, error):
        self.problems.setdefault(
            site.path, "asking it for scores raised %s: %s" % (type(error).__name__, error)
        )
        calls = self.calls[id(site)]
        if calls:
            calls[-1]["scores"] = None

    def _entry(self, site):
        calls = self.calls[id(site)]
        if not calls:
            calls.append({"same": True, "causal_flag": False})
        return len(calls) - 1, calls[-1]

    def _convert(self, value):
        return value if self._symbolic else _to_numpy(value)

    def _record_shape(self, entry, shape, mask):
        """The shape pass: the full attention shape and whether the mask is causal."""
        entry["shape"] = tuple(int(n) for n in shape)
        entry["scores"] = None
        if mask is not None and entry.get("mask_causal") is None:
            try:
                entry["mask_causal"] = _is_causal(_to_numpy(mask).astype(bool), shape[2],
                                                  shape[3])
            except Exception:
                entry["mask_causal"] = False

def _pooled_from_full(scores, mask, plan):
    """A POOLED record's reductions computed from full scores (layers `blocked.py` cannot
    compute in blocks): the same overview and windows, from the materialised scores."""
    from tb_attention_plugin import encoding

    examples = plan.examples
    weights = scores[:examples]
    if mask is not None:
        weights = np.where(mask[:examples], weights, np.nan).astype(np.float32)
    means, maxes = encoding.pool(weights, plan.block)
    windows = [(name, tuple(q), tuple(k), np.ascontiguousarray(weights[:, :, q[0]:q[1], k[0]:k[1]]))
               for name, q, k in plan.windows]
    return {"block": tuple(plan.block), "means": means, "maxes": maxes, "windows": windows}


def _checked_max_logit(value, batch, heads):
    """float32 `[batch, heads]` with NaN for -inf/NaN, or None when absent or of another
    shape."""
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float32)
    if value.size != batch * heads:
        return None
    value = value.reshape(batch, heads)
    return np.where(np.isfinite(value), value, np.float32(np.nan)).astype(np.float32)


def _records_from_calls(calls, problems, sites, plans=None):
    """Builds `AttentionRecord`s from numpy call entries `{id(site): [entry]}`."""
    plans = plans or {}
    records = []
    for site in sites:
        entries = calls.get(id(site), [])
        for index, entry in enumerate(entries):
            if entry.get("skipped"):
                continue
            tag = _call_tag(site, index, len(entries))
            plan = plans.get((site.path, index))
            if entry.get("reduced") is not None:
                records.append(_blocked_record(tag, site, entry, plan))
                continue
            record = _scores_record(tag, site, entry, plan, problems)
            if record is not None:
                records.append(record)
    return records


def _blocked_record(tag, site, entry, plan):
    """The record of a layer computed in query chunks (its reductions, no scores)."""
    from tb_attention_plugin.logger import blocked

    shape = plan.shape
    means, maxes, windows, _ = blocked.finish(
        entry["reduced"], shape, plan.block, plan.windows, plan.examples)
    pooled = {"block": tuple(plan.block), "means": means, "maxes": maxes, "windows": windows}
    cross = not bool(entry.get("same", True))
    # An owner without a mask (T5's decoder adds a large negative number instead) is causal
    # when it put no weight above the diagonal.
    above = entry["reduced"].get("above_diagonal")
    causal = not cross and (entry["causal_flag"] or plan.causal or (
        above is not None and not np.any(np.asarray(above))))
    # The max logit of every example of the pass: the head health measures them all.
    max_logit = entry["reduced"].get("max_logit")  # absent where no logits were seen
    if max_logit is not None:
        max_logit = np.asarray(max_logit, np.float32)
        max_logit = _checked_max_logit(max_logit, len(max_logit), shape[1])
    record = AttentionRecord(tag, site, None, None, cross, causal, shape=shape, pooled=pooled,
                             max_logit=max_logit,
                             kv_heads=groups.kv_heads(site.layer, entry.get("kv_heads"), shape[1]))
    record.source = entry.get("source", "stock")  # which adapter read it
    return record


def _scores_record(tag, site, entry, plan, problems):
    """The record of a call whose scores were read (pooled here when its plan pools it), or
    None (a problem is noted where the scores are missing or cannot be shown)."""
    scores = entry.get("scores")
    if scores is None:
        if "scores" not in entry:
            problems.setdefault(site.path, "the layer computed no scores")
        return None
    scores, mask = _four_axes(scores, entry.get("mask"), site.kind == _SINGLE)
    if scores.ndim != 4:
        problems.setdefault(site.path, "scores of shape %s (attention over several axes) "
                            "cannot be shown" % (scores.shape,))
        return None
    cross = not bool(entry.get("same", True))
    tq, tk = scores.shape[-2:]
    causal = not cross and (entry["causal_flag"] or _is_causal(mask, tq, tk) or (
        mask is None and site.kind == _OWNER and _nothing_above_diagonal(scores)))
    max_logit = _checked_max_logit(entry.get("max_logit"), *scores.shape[:2])
    kv_heads = groups.kv_heads(site.layer, entry.get("kv_heads"), scores.shape[1])
    scores = scores.astype(np.float32)
    if plan is not None and plan.mode == "pooled":
        if plan.chunks is not None:  # measured for head health in this pass: one whole chunk
            plan.chunks.feed(0, scores, None if mask is None else mask.astype(bool))
        return AttentionRecord(
            tag, site, None, None, cross, causal, shape=scores.shape,
            pooled=_pooled_from_full(scores, mask, plan), max_logit=max_logit,
            kv_heads=kv_heads)
    record = AttentionRecord(tag, site, scores, mask, cross, causal, max_logit=max_logit,
                             kv_heads=kv_heads)
    record.source = entry.get("source", "stock")  # which adapter read it
    return record


def _four_axes(scores, mask, single):
    """Scores `[B, H, Tq, Tk]` (a head axis added for single-head layers) and their mask
    broadcast to them (None when it does not broadcast)."""
    if single:
        scores = scores[:, np.newaxis]
        if mask is not None and mask.ndim == 2:
            mask = mask[:, np.newaxis]  # a value mask [B, Tk]: `_apply_scores`'s rows
        mask = None if mask is None else mask[..., np.newaxis, :, :]
    if mask is None or scores.ndim != 4:
        return scores, mask
    while mask.ndim < 3:
        mask = mask[np.newaxis]
    if mask.ndim == 3:
        mask = mask[:, np.newaxis]
    try:
        return scores, np.broadcast_to(mask, scores.shape)
    except ValueError:
        return scores, None


def layer_shapes(model, inputs, sites):
    """The shape pass: `LayerShape`s of every call of `sites` in one plain forward pass.

    Nothing but shapes (and whether a mask is causal) is kept: the layers run their own fast
    path, so this costs one forward pass of the probe. What `budget.py` plans from.
    """
    patcher = _Patcher(sites, shapes_only=True)
    _run_patched(model, inputs, patcher)
    shapes = []
    for site in sites:
        entries = patcher.calls.get(id(site), [])
        for index, entry in enumerate(entries):
            if entry.get("shape") is None:
                continue
            tag = _call_tag(site, index, len(entries))
            shape = entry["shape"]
            cross = not bool(entry.get("same", True))
            causal = not cross and bool(entry.get("causal_flag") or entry.get("mask_causal"))
            kv_heads = groups.kv_heads(site.layer, entry.get("kv_heads"), shape[1])
            shapes.append(LayerShape(tag, site.path, index, shape, cross, causal, kv_heads))
    return shapes


def _run_patched(model, inputs, patcher):
    """One inference pass of `model` with `patcher`'s shadows installed, removed afterwards."""
    import keras

    try:
        patcher.install()
        if keras.backend.backend() == "torch":
            import torch

            with torch.no_grad():
                model(inputs, training=False)
        else:
            model(inputs, training=False)
        patcher.settle_owners([site for site in patcher._sites if site.kind == _OWNER])
    finally:
        patcher.restore()


def capture_attention(model, inputs, sites, plans=None):
    """Runs `model(inputs, training=False)` once and returns the scores of `sites`.

    `plans` (`{(site path, call index): budget.LayerPlan}`) computes POOLED layers in blocks
    and leaves out skipped ones; without it every layer is captured in full.

    The model must be built (the caller builds it first: an unbuilt model is traced
    symbolically, which yields no values). Every shadow is removed before this returns or
    raises. Exceptions of the forward pass itself propagate; layers that yield no scores are
    reported in `CaptureResult.problems`.
    """
    patcher = _Patcher(sites, plans=plans)
    _run_patched(model, inputs, patcher)
    problems = dict(patcher.problems)
    records = _records_from_calls(patcher.calls, problems, sites, plans)
    return CaptureResult(records, problems)


class CompiledCapture:
    """The same capture as `capture_attention`, traced once into a TensorFlow graph.

    An eager Keras forward pass costs tens of milliseconds of Python per call; the traced
    graph runs the same probe in a few. Tracing happens once, with the shadows installed;
    they are removed right after, and later calls run the graph (which reads the model's
    current weights) without touching the layers. TensorFlow backend only.

    Example:

    ```python
    compiled = CompiledCapture(model, probe_batch, sites)   # traces
    result = compiled()                                     # a CaptureResult, each time
    ```
    """

    def __init__(self, model, inputs, sites, plans=None):
        import tensorflow as tf

        self._sites = sites
        self._plans = plans
        self._inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
        patcher = _Patcher(sites, symbolic=True, plans=plans)
        # per output group: (site, call index, static "same" or None, causal flag, kv heads
        # seen, the adapter that read it)
        layout = []

        def forward(inputs):
            for entries in patcher.calls.values():
                entries.clear()
            layout.clear()
            model(inputs, training=False)
            patcher.settle_owners([site for site in sites if site.kind == _OWNER])
            outputs = []
            for site in sites:
                for index, entry in enumerate(patcher.calls.get(id(site), [])):
                    values = _traced_outputs(entry)
                    if values is None:
                        continue
                    outputs.append(values)
                    same = entry["same"]
                    layout.append((site, index, None if tf.is_tensor(same) else bool(same),
                                   entry["causal_flag"], entry.get("kv_heads"),
                                   entry.get("source", "stock")))
            return outputs

        patcher.install()
        try:
            # Keras 3 layers trace without autograph (they also run under jax.jit); a layer
            # that needs it raises here and the caller falls back to the eager pass.
            self._function = tf.function(forward, autograph=False).get_concrete_function(
                self._inputs
            )
        finally:
            patcher.restore()
        self._layout = list(layout)
        # Static shapes of the scores each output group returns (None for reductions).
        self._score_shapes = [tuple(values["scores"].shape) if "scores" in values else None
                              for values in self._function.structured_outputs]
        self._calls_per_site = {id(s): len(patcher.calls.get(id(s), [])) for s in sites}
        self._skipped = {(id(s), i) for s in sites
                         for i, e in enumerate(patcher.calls.get(id(s), [])) if e.get("skipped")}
        self._problems = dict(patcher.problems)
        for site in sites:
            if any("scores" not in entry and not entry.get("skipped")
                   for entry in patcher.calls.get(id(site), [])):
                self._problems.setdefault(site.path, "the layer computed no scores")

    def __call__(self, inputs=None):
        """Runs the traced pass on the traced probe, or on `inputs` of the same shapes and
        dtypes (e.g. another block of a probe set)."""
        return self.records(*self.run(inputs))

    def static_shapes(self):
        """`LayerShape`s of the traced calls from static shapes alone, or None where one is not
        static. `causal` is the layer's own flag only (a causal mask is known when it runs)."""
        shapes = []
        for (site, index, same, causal_flag, kv_heads, _), shape in zip(self._layout,
                                                                        self._score_shapes):
            if shape is None:
                continue
            if any(n is None for n in shape):
                return None
            shape = (shape[0], 1) + shape[1:] if site.kind == _SINGLE else shape
            if len(shape) != 4:
                continue  # attention over several axes: never shown
            cross = same is not None and not same
            tag = _call_tag(site, index, self._calls_per_site[id(site)])
            shapes.append(LayerShape(tag, site.path, index, shape, cross,
                                     not cross and bool(causal_flag),
                                     groups.kv_heads(site.layer, kv_heads, shape[1])))
        return shapes

    def records(self, calls, problems, plans=None):
        """The `CaptureResult` of `run`'s calls, made under `plans` (default: the traced ones)."""
        plans = self._plans if plans is None else plans
        return CaptureResult(_records_from_calls(calls, problems, self._sites, plans), problems)

    def run(self, inputs=None):
        """`(calls, problems)`: the numpy call entries of one run of the graph."""
        import tensorflow as tf

        if inputs is not None:
            inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
        outputs = tf.nest.map_structure(
            np.asarray, self._function(self._inputs if inputs is None else inputs))
        # Calls without scores (their problem is known from tracing) stay placeholders.
        calls = {id(s): [{"skipped": True} if (id(s), i) in self._skipped else {"scores": None}
                         for i in range(self._calls_per_site[id(s)])] for s in self._sites}
        for (site, index, same, causal_flag, kv_heads, source), values in zip(self._layout,
                                                                              outputs):
            entry = {"scores": values.get("scores"), "causal_flag": causal_flag,
                     "mask": values.get("mask"), "max_logit": values.get("max_logit"),
                     "reduced": values.get("reduced"), "kv_heads": kv_heads, "source": source}
            entry["same"] = bool(values["same"]) if same is None else same
            calls[id(site)][index] = entry
        return calls, dict(self._problems)


def _values_per_example(inputs):
    """The most values one example has in any of `inputs`' arrays (e.g. its tokens)."""
    import keras

    sizes = [int(np.prod(keras.ops.shape(x)[1:])) for x in keras.tree.flatten(inputs)
             if len(keras.ops.shape(x)) > 0]
    return max(sizes, default=0)


def _all_full(plans):
    return all(plan.mode == "full" for plan in plans.values())


def _call_tag(site, index, calls):
    """The tag of call `index` of a site called `calls` times in one pass."""
    return site.path if calls == 1 else "%s/call_%d" % (site.path, index)


def _shape_of(record):
    """The `LayerShape` of a record of a full run: what the shape pass would have found."""
    site = record.site
    index = 0 if record.tag == site.path else int(record.tag.rsplit("_", 1)[1])  # _call_tag's
    return LayerShape(record.tag, site.path, index, record.shape, record.cross, record.causal,
                      record.kv_heads)


def _traced_outputs(entry):
    """What the traced pass returns of one call entry: its reductions, or its scores (with
    mask and max logit), and its `same` flag where only the graph knows it; None for a call
    with nothing to return (skipped, or no scores)."""
    import tensorflow as tf

    if entry.get("skipped"):
        return None
    if entry.get("reduced") is not None:
        values = {"reduced": dict(entry["reduced"])}
    elif entry.get("scores") is not None:
        values = {"scores": entry["scores"]}
        if entry.get("mask") is not None:
            values["mask"] = tf.cast(entry["mask"], tf.bool)
        if entry.get("max_logit") is not None:
            values["max_logit"] = entry["max_logit"]
    else:
        return None
    if tf.is_tensor(entry["same"]):
        values["same"] = entry["same"]
    return values


class ProbeCapture:
    """The `AttentionLogger`'s capture: one probe, layers found once, traced where it can be.

    At the first call it finds the attention layers (reporting layers that look like attention
    but cannot be read, and a model without any). On TensorFlow it runs `CompiledCapture`
    unless `run_eagerly` (or the model's own `run_eagerly`) asks for the eager pass, and falls
    back to `capture_attention` for good when tracing fails. Layers whose scores cannot be read
    are reported once and left out of later captures.

    Example:

    ```python
    probe_capture = ProbeCapture(probe_batch, patterns=["decoder*"], problems=Problems())
    records = probe_capture(model)   # a list of AttentionRecord, each call
    ```
    """

    def __init__(self, inputs, patterns=None, run_eagerly=False, problems=None, planner=None):
        self.inputs = inputs
        self.planner = planner  # planner([LayerShape]) -> {(path, index): budget.LayerPlan}
        self.plans = None
        self.patterns = None if patterns is None else list(patterns)
        self.run_eagerly = run_eagerly
        self.compiled = None  # the CompiledCapture, once traced
        self.compiled_failed = False
        self._problems = problems
        self._sites = None
        self._excluded_paths = set()

    def __call__(self, model, inputs=None):
        """The records of one pass over the probe, or over `inputs` (same shapes and dtypes as
        the probe: they run through the same traced graph)."""
        inputs = self.inputs if inputs is None else inputs
        if not model.built:
            # An unbuilt model would be traced symbolically (no values): build it eagerly.
            model(inputs, training=False)
        if self._sites is None:
            self._sites = self._find_sites(model)
        sites = [s for s in self._sites if s.path not in self._excluded_paths]
        if not sites:
            return []
        result = None
        if self.plans is None and self.planner is not None:
            result = self._planned_first_run(model, sites, inputs)
            if result is None:
                # Shapes first, so that no layer's full scores are computed before the budget
                # has decided which layers are POOLED (computed in blocks).
                self.plans = self.planner(layer_shapes(model, self.inputs, sites))
        if result is None:
            result = self._compiled_capture(model, sites, inputs)
        if result is None:
            result = capture_attention(model, inputs, sites, self.plans)
        if result.problems:
            self._excluded_paths.update(result.problems)
            self._problems.warn(
                ("problems", tuple(sorted(result.problems))),
                "skipping attention layers whose scores cannot be read: %s"
                % "; ".join("%s: %s" % item for item in sorted(result.problems.items())),
            )
        return result.records

    def _find_sites(self, model):
        sites, unreadable = find_attention_layers(model, self.patterns)
        self._readable_tags(sites)
        if unreadable:
            self._problems.warn(
                "unreadable",
                "skipping layers that look like attention but make no probabilities where "
                "they can be read (a Keras attention layer, a Softmax sublayer, "
                "keras.ops.softmax or keras.ops.dot_product_attention): %s; %s"
                % (", ".join(unreadable),
                   REGISTER_HINT % "TheLayerClass"),
            )
        if not sites:
            self._problems.warn(
                "no layers",
                "found no attention layers%s in model %r; nothing is logged"
                % ("" if self.patterns is None else " matching %s" % self.patterns, model.name),
            )
        return sites

    def _readable_tags(self, sites):
        """Renames layer paths TensorBoard's data server could not read back as tags."""
        from tb_attention_plugin import names

        renamed, taken = [], {site.path for site in sites}
        for site in sites:
            tag = names.sanitise(site.path)
            if tag == site.path:
                continue
            base, number = tag, 1
            while tag in taken:
                number += 1
                tag = "%s_%d" % (base, number)
            taken.add(tag)
            renamed.append("%r -> %r" % (site.path, tag))
            site.path = tag
        if renamed:
            self._problems.warn(
                "renamed",
                "layer paths with quotes, backslashes or control characters are logged under "
                "other tags (TensorBoard's data server cannot read such tags back): %s"
                % ", ".join(renamed),
            )

    def _traces(self, model):
        """Whether this capture runs the traced graph (TensorFlow, not eager, not failed)."""
        import keras

        return not (self.run_eagerly or self.compiled_failed
                    or getattr(model, "run_eagerly", False)
                    or keras.backend.backend() != "tensorflow")

    def _planned_first_run(self, model, sites, inputs):
        """The first capture of a small probe without a shape pass, or None.

        The pass is traced with every layer full, and the budget plans from the traced static
        shapes (a layer's causal mask is not known yet). Only when that plan keeps every layer
        FULL does the graph run, and the budget plans again from its records (the shapes and
        masks a shape pass would have found); the graph is kept while that plan is all FULL
        too. Saves the eager shape pass, a fifth of the first capture on a small model.
        """
        if not self._traces(model) or _values_per_example(self.inputs) > SMALL_PROBE_VALUES:
            return None
        try:
            compiled = CompiledCapture(model, self.inputs, sites)
        except Exception:
            self.compiled_failed = True  # the eager pass (with its shape pass) from now on
            return None
        shapes = compiled.static_shapes()
        if shapes is None:
            return None
        # Planned from guessed masks (and so token roles): its warnings would be about them.
        with self._problems.muted() if self._problems is not None else contextlib.nullcontext():
            if not _all_full(self.planner(shapes)):
                return None  # pooled or skipped layers: shape pass, plans, and a new trace
        try:
            calls, problems = compiled.run(None if inputs is self.inputs else inputs)
        except Exception:
            self.compiled_failed = True  # as `_compiled_capture`: the eager pass from now on
            return None
        full = compiled.records(calls, dict(problems)).records
        self.plans = self.planner([_shape_of(record) for record in full])
        if _all_full(self.plans):
            self.compiled = compiled
            return CaptureResult(full, problems)
        return compiled.records(calls, problems, self.plans)  # traced again next time

    def _compiled_capture(self, model, sites, inputs):
        """The traced capture's result on TensorFlow, or None where the eager pass must run."""
        if not self._traces(model):
            return None
        try:
            if self.compiled is None:
                # Sites found broken while tracing stay in the graph (in their plain mode).
                self.compiled = CompiledCapture(model, self.inputs, sites, self.plans)
            return self.compiled(None if inputs is self.inputs else inputs)
        except Exception:
            # Some models cannot be traced from outside fit; the eager pass still works.
            self.compiled, self.compiled_failed = None, True
            return None
