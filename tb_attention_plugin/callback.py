"""`AttentionLogger`: a Keras callback that logs every attention layer's scores to TensorBoard.

At the start of training, every `every_n_steps` optimizer steps and at each epoch end, the
callback runs the model once, eagerly and in inference mode, on a small fixed probe batch,
reads the attention scores of every attention layer (see `capture.py`) and writes one summary
per layer call to `<log_dir>/<subdir>`, for the Attention tab.
"""

import fnmatch
import json
import math
import os
import warnings

import keras
import numpy as np

from tb_attention_plugin import budget as budget_utils
from tb_attention_plugin import capture
from tb_attention_plugin import encoding
from tb_attention_plugin import fs
from tb_attention_plugin import names
from tb_attention_plugin import tokens as token_utils
from tb_attention_plugin.logger import distribution


# Below this even one small layer with its tokens may not fit.
MIN_BYTES_PER_STEP = 64 * 1024
# Per tag: event and record framing, summary metadata, the header's fixed fields.
_TAG_OVERHEAD = 2048
_BLOB_OVERHEAD = 32  # per blob: its length prefix in the tensor proto, a scale in the header
_SCALAR_BYTES = 160  # one statistics scalar event, its tag included


class AttentionLoggerWarning(UserWarning):
    """Something the `AttentionLogger` could not log; training goes on."""


def _slice_batch(structure, count):
    """The first `count` examples of every array in a (nested) probe batch."""

    def first(value):
        if hasattr(value, "shape") and len(value.shape) >= 1:
            return value[:count]
        return value

    return keras.tree.map_structure(first, structure)


def _batch_size(structure):
    for value in keras.tree.flatten(structure):
        if hasattr(value, "shape") and len(value.shape) >= 1:
            return int(value.shape[0])
    raise ValueError("probe must hold arrays with a batch axis, got %r" % (type(structure),))


def _is_image_batch(value):
    if isinstance(value, (dict, list, tuple)) or not hasattr(value, "shape"):
        return False
    array = np.asarray(value)
    return array.ndim == 4 and array.shape[-1] in (1, 3, 4) and (
        np.issubdtype(array.dtype, np.floating) or array.dtype == np.uint8
    )


class AttentionLogger(keras.callbacks.Callback):
    """Logs the attention scores of every attention layer of a Keras model to TensorBoard.

    The callback finds `keras.layers.MultiHeadAttention` (and subclasses such as keras-hub's
    `CachedMultiHeadAttention`), `GroupedQueryAttention`, `Attention` and `AdditiveAttention`
    layers at any depth by itself. To read them it runs the model once on `probe`, eagerly
    with `training=False`; training, the model's outputs and saved models are unaffected.
    Each layer call becomes one tag, named after the layer path (a layer called twice gives
    `<path>/call_0` and `<path>/call_1`).

    Problems (an unwritable directory, a layer that returns no scores) become one
    `AttentionLoggerWarning` each; training never stops because of this callback.

    Args:
      log_dir: The same root directory as `keras.callbacks.TensorBoard`; summaries go to
        `<log_dir>/<subdir>`. Local, or a URL TensorBoard's gfile knows (`gs://`, `s3://`,
        `hdfs://`, ...). In a multi-process job one process writes (TensorFlow: the chief or
        worker 0 of `TF_CONFIG`; JAX: process 0; PyTorch: rank 0 of `torch.distributed`); give
        every process the same `log_dir` and probe. Layer paths holding quotes, backslashes or
        control characters are logged with `_` in their place (TensorBoard could not read them).
      probe: A small fixed batch of model inputs (array, tuple/list or dict), as the model
        is called with. Only its first `max_examples` examples are run.
      tokens: Token strings for single-sequence models: one list per example, or one list
        for all. Used for both axes of every layer.
      source_tokens, target_tokens: Token strings of encoder-decoder models. Cross-attention
        gets (target, source), causal self-attention (target, target), other self-attention
        (source, source).
      vocabulary: A list of strings, `keras.layers.StringLookup` or `TextVectorization`
        that maps the probe's token ids to strings when tokens are not given (integer
        `[B, T]` arrays of the probe: one for `tokens`; two, or dict keys naming
        encoder/decoder or source/target, for source and target).
      source_vocabulary, target_vocabulary: Separate vocabularies for source and target
        ids (e.g. English -> Chinese); default to `vocabulary`.
      token_roles: Optional dict `{layer path pattern: (query_role, key_role)}` with roles
        `"source"`, `"target"` or `"tokens"`, overriding the automatic choice above.
      images: Probe images `[B, height, width, channels]` to draw attention over (Vision
        Transformers). Default: the probe itself when it is a 4-D image batch. At most
        2048 x 2048 pixels (8192 on a side): larger images are a `ValueError`.
      image_grid: `(rows, cols)` of the patch grid; inferred for square grids.
      prefix_tokens: Number of non-patch positions (class token) before the patches;
        inferred with the grid.
      layers: fnmatch pattern or list of patterns on layer paths (or names) selecting the
        layers to log, e.g. `"decoder*"`. Default: all attention layers.
      every_n_steps: Capture whenever the optimizer step crosses a multiple of this number
        (None: only at the start and at epoch ends).
      on_epoch_end: Also capture at the end of each epoch.
      max_examples: Number of probe examples to log.
      max_heads: Number of heads to log per layer (None: all).
      max_tokens: Number of query/key positions to keep (None: all). Vision layers keep
        their whole key axis so that attention can be drawn over the image.
      max_bytes_per_step: Budget in bytes for one capture (all logged layers of one step),
        default 4 MiB; None: no budget. Both TensorBoard readers keep every retained step in
        memory (100 per tag by default), so this bounds their memory too. The size is bounded
        before encoding, from the shapes (1 byte per value, plus zlib's worst case, headers
        and images), so the same view is kept at every step. Over budget, the callback keeps,
        in this order until the capture fits: 1 example; a shorter token window (positions
        `[0, t)`, down to 64); the first `k` heads; `m` evenly spaced layers (always the
        first and the last); then a shorter window still. A 12-layer, 12-head model at 512
        tokens keeps 1 example of 128x128 positions (about 2.4 MB) by default.
      statistics: Also write per-head statistics (entropy, max_weight, mean_distance,
        first_token_share) as scalar summaries `<tag>/<statistic>/head_<h>`.
      subdir: Run subdirectory under `log_dir`.
      run_eagerly: On TensorFlow the probe pass is traced once into a graph (a few ms per
        capture instead of tens); True runs it eagerly every time, as do the other backends
        and models with `run_eagerly=True`.

    Example:

    ```python
    logger = tb_attention_plugin.AttentionLogger(
        "logs", probe=(source_ids[:2], target_ids[:2]),
        source_vocabulary=english_vocabulary, target_vocabulary=chinese_vocabulary,
        every_n_steps=100)
    model.fit(dataset, epochs=5, callbacks=[keras.callbacks.TensorBoard("logs"), logger])
    ```
    """

    def __init__(
        self,
        log_dir,
        probe,
        *,
        tokens=None,
        source_tokens=None,
        target_tokens=None,
        vocabulary=None,
        source_vocabulary=None,
        target_vocabulary=None,
        token_roles=None,
        images=None,
        image_grid=None,
        prefix_tokens=None,
        layers=None,
        every_n_steps=100,
        on_epoch_end=True,
        max_examples=2,
        max_heads=None,
        max_tokens=128,
        max_bytes_per_step=4 * 2**20,
        statistics=False,
        subdir="train",
        run_eagerly=False,
    ):
        super().__init__()
        if probe is None:
            raise ValueError("probe is required: a small batch of model inputs")
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError("log_dir must be a path, got %r" % (log_dir,))
        for name, value in (("every_n_steps", every_n_steps), ("max_heads", max_heads),
                            ("max_tokens", max_tokens)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError("%s must be a positive integer or None, got %r" % (name, value))
        if not isinstance(max_examples, int) or isinstance(max_examples, bool) or max_examples < 1:
            raise ValueError("max_examples must be a positive integer, got %r" % (max_examples,))
        if max_bytes_per_step is not None and (
            not isinstance(max_bytes_per_step, int) or isinstance(max_bytes_per_step, bool)
            or max_bytes_per_step < MIN_BYTES_PER_STEP
        ):
            raise ValueError(
                "max_bytes_per_step must be an integer of at least %d bytes or None (no budget), "
                "got %r" % (MIN_BYTES_PER_STEP, max_bytes_per_step)
            )
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None and not all(isinstance(p, str) for p in layers):
            raise TypeError("layers must be a pattern string or a list of them, got %r" % (layers,))
        if token_roles is not None:
            for pattern, roles in dict(token_roles).items():
                if (not isinstance(roles, (list, tuple)) or len(roles) != 2
                        or not all(r in token_utils.ROLES for r in roles)):
                    raise ValueError(
                        "token_roles[%r] must be (query_role, key_role) with roles in %s, got %r"
                        % (pattern, token_utils.ROLES, roles)
                    )
        if image_grid is not None and (len(image_grid) != 2 or min(image_grid) < 1):
            raise ValueError("image_grid must be (rows, cols), got %r" % (image_grid,))

        self.log_dir = os.fspath(log_dir)
        self.subdir = subdir
        self.every_n_steps = every_n_steps
        self.log_on_epoch_end = on_epoch_end
        self.max_examples = max_examples
        self.max_heads = max_heads
        self.max_tokens = max_tokens
        self.max_bytes_per_step = max_bytes_per_step
        self.statistics = statistics
        self.layer_patterns = None if layers is None else list(layers)
        self.token_roles = dict(token_roles or {})
        self.image_grid = None if image_grid is None else (int(image_grid[0]), int(image_grid[1]))
        self.prefix_tokens = prefix_tokens
        self.run_eagerly = run_eagerly

        self._probe_size = _batch_size(probe)
        self._probe = _slice_batch(probe, max_examples)
        self._examples = min(self._probe_size, max_examples)
        source_vocabulary = vocabulary if source_vocabulary is None else source_vocabulary
        target_vocabulary = vocabulary if target_vocabulary is None else target_vocabulary
        self._token_lists = token_utils.resolve_tokens(
            self._probe, tokens=tokens, source_tokens=source_tokens, target_tokens=target_tokens,
            source_vocabulary=source_vocabulary, target_vocabulary=target_vocabulary,
        )
        if (source_vocabulary is not None or target_vocabulary is not None) and not (
            self._token_lists
        ):
            raise ValueError(
                "a vocabulary was given but the probe holds no integer token-id array [B, T]; "
                "pass tokens= (or source_tokens=/target_tokens=) instead"
            )
        self._explicit_images = images is not None
        if images is None and _is_image_batch(probe):
            images = probe
        self._images = None
        if images is not None:
            images = np.asarray(images)
            if images.ndim == 3:
                images = images[..., np.newaxis]
            if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
                raise ValueError("images must have shape [batch, height, width, 1|3|4], got %s"
                                 % (images.shape,))
            if images.shape[0] < self._examples:
                raise ValueError("images holds %d examples, the probe logs %d"
                                 % (images.shape[0], self._examples))
            encoding.check_image_size(int(images.shape[1]), int(images.shape[2]))
            self._images = images[: self._examples]
        names.check_run_dir(self._run_dir())

        self._sites = None
        self._compiled = None
        self._compiled_failed = False
        self._writer = None
        self._last_step_by_tag = {}
        self._last_logged_step = None
        self._cadence_mark = None
        self._epoch_base_step = 0
        self._warned = set()
        self._excluded_paths = set()
        self._views = {}  # (tag, shape) of every record of a capture -> (View, note)
        self._role = None  # distribution.Role of this process, found at on_train_begin

    # ----------------------------------------------------------------------- Keras hooks

    def on_train_begin(self, logs=None):
        try:
            self._role = distribution.process_role(self.model)
        except Exception as e:
            self._role = None
            self._warn(("role", type(e).__name__),
                       "cannot tell which process writes (%s: %s); this one writes"
                       % (type(e).__name__, e))
        step = self._current_step()
        self._cadence_mark = step
        self._capture_and_write(step)

    def on_epoch_begin(self, epoch, logs=None):
        if self.every_n_steps:
            self._epoch_base_step = self._current_step()

    def on_train_batch_end(self, batch, logs=None):
        if not self.every_n_steps:
            return
        # Counted, not read: reading the step variable costs more than a small model's step
        # fraction we can afford per batch, and on JAX it forces a state sync. `batch` is the
        # last batch index of the execution (steps_per_execution); the capture itself reads
        # the real step.
        step = self._epoch_base_step + int(batch) + 1
        mark, self._cadence_mark = self._cadence_mark, step
        if mark is not None and step // self.every_n_steps > mark // self.every_n_steps:
            self._capture_and_write(self._current_step())

    def on_epoch_end(self, epoch, logs=None):
        if self.log_on_epoch_end:
            step = self._current_step()
            self._cadence_mark = step
            self._capture_and_write(step)

    def on_train_end(self, logs=None):
        self._flush()

    # ------------------------------------------------------------------------ internals

    @staticmethod
    def _optimizer_step(model):
        value = model.optimizer.iterations.value
        if keras.backend.backend() != "tensorflow":  # e.g. a torch tensor on a GPU
            value = distribution.to_numpy(value)  # replicated over processes: read locally
        return int(np.asarray(value))  # a tf.Variable converts directly, without a copy

    def _current_step(self):
        try:
            return self._optimizer_step(self.model)
        except Exception as e:
            self._warn("step", "cannot read the optimizer step (%s); logging at step 0" % e)
            return 0

    def _warn(self, cause, message):
        if cause in self._warned:
            return
        self._warned.add(cause)
        warnings.warn("AttentionLogger: " + message, AttentionLoggerWarning, stacklevel=3)

    def _capture_and_write(self, step):
        """One capture at `step`; every failure becomes one warning per cause."""
        if self._last_logged_step is not None and step == self._last_logged_step:
            return
        role = self._role
        if role is not None and not role.runs_probe:
            return  # another process of the job writes; the probe pass is not a collective
        collective = role is not None and role.collective
        if collective:
            # Every process runs the probe at the same steps: decide from the step alone.
            self._last_logged_step = step
        elif self._last_step_by_tag and step <= min(self._last_step_by_tag.values()):
            self._warn_step_went_back(step)  # e.g. a new optimizer: skip the whole capture
            return
        try:
            records = self._capture()
        except Exception as e:
            self._warn(
                ("capture", type(e).__name__),
                "capturing attention failed at step %d, training goes on (%s: %s)"
                % (step, type(e).__name__, e),
            )
            return
        if not records or (role is not None and not role.writes):
            return
        current = []
        for record in records:
            if step <= self._last_step_by_tag.get(record.tag, -1):
                self._warn_step_went_back(step)
            else:
                current.append(record)
        if not current:
            return
        try:
            view, note = self._view_for(current)
        except Exception as e:
            self._warn(
                ("budget", type(e).__name__),
                "cannot size the capture at step %d, nothing logged (%s: %s)"
                % (step, type(e).__name__, e),
            )
            return
        if note:
            self._warn("reduced", "logging a reduced view: " + note)
        kept = current if view.layers is None else [current[i] for i in view.layers]
        items = []
        for record in kept:
            try:
                items.append(self._summary_item(record, view, note, len(kept), len(current)))
            except Exception as e:
                self._warn(
                    ("prepare", record.tag, type(e).__name__),
                    "cannot log %s (%s: %s)" % (record.tag, type(e).__name__, e),
                )
        if not items:
            return
        try:
            self._write(items, step)
        except Exception as e:
            self._warn(
                ("write", type(e).__name__),
                "writing attention summaries to %s failed, training goes on (%s: %s)"
                % (self._run_dir(), type(e).__name__, e),
            )
            return
        self._last_logged_step = step

    def _warn_step_went_back(self, step):
        newest = max(self._last_step_by_tag.values())
        if step < newest:
            self._warn(
                "step went back",
                "the optimizer step went back to %d (a new optimizer?) but steps up to %d are "
                "already logged and TensorBoard keeps only increasing steps: captures resume "
                "after step %d (or log to a new log_dir/subdir)" % (step, newest, newest),
            )

    def _run_dir(self):
        return fs.join(self.log_dir, self.subdir) if self.subdir else self.log_dir

    def _capture(self):
        model = self.model
        if not model.built:
            # An unbuilt model would be traced symbolically (no values): build it eagerly.
            model(self._probe, training=False)
        if self._sites is None:
            sites, unreadable = capture.find_attention_layers(model, self.layer_patterns)
            self._readable_tags(sites)
            if unreadable:
                self._warn(
                    "unreadable",
                    "skipping layers that look like attention but are not Keras "
                    "MultiHeadAttention/GroupedQueryAttention/Attention/AdditiveAttention: %s"
                    % ", ".join(unreadable),
                )
            if not sites:
                self._warn(
                    "no layers",
                    "found no attention layers%s in model %r; nothing is logged"
                    % ("" if self.layer_patterns is None
                       else " matching %s" % self.layer_patterns, model.name),
                )
            self._sites = sites
        sites = [s for s in self._sites if s.path not in self._excluded_paths]
        if not sites:
            return []
        result = self._compiled_capture(model, sites)
        if result is None:
            result = capture.capture_attention(model, self._probe, sites)
        if result.problems:
            self._excluded_paths.update(result.problems)
            self._warn(
                ("problems", tuple(sorted(result.problems))),
                "skipping attention layers whose scores cannot be read: %s"
                % "; ".join("%s: %s" % item for item in sorted(result.problems.items())),
            )
        return result.records

    def _readable_tags(self, sites):
        """Renames layer paths TensorBoard's data server could not read back as tags."""
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
            self._warn(
                "renamed",
                "layer paths with quotes, backslashes or control characters are logged under "
                "other tags (TensorBoard's data server cannot read such tags back): %s"
                % ", ".join(renamed),
            )

    def _compiled_capture(self, model, sites):
        """The traced capture on TensorFlow, or None where the eager pass must be used."""
        if (self.run_eagerly or self._compiled_failed or getattr(model, "run_eagerly", False)
                or keras.backend.backend() != "tensorflow"):
            return None
        try:
            if self._compiled is None:
                # Sites found broken while tracing stay in the graph (in their plain mode).
                self._compiled = capture.CompiledCapture(model, self._probe, sites)
            return self._compiled()
        except Exception:
            # Some models cannot be traced from outside fit; the eager pass still works.
            self._compiled, self._compiled_failed = None, True
            return None

    def _roles(self, record):
        for pattern, roles in self.token_roles.items():
            if fnmatch.fnmatchcase(record.tag, pattern):
                return tuple(roles)
        lists = self._token_lists
        if token_utils.TOKENS in lists and not (
            token_utils.SOURCE in lists or token_utils.TARGET in lists
        ):
            return token_utils.TOKENS, token_utils.TOKENS
        if record.cross:
            return token_utils.TARGET, token_utils.SOURCE
        if record.causal:
            return token_utils.TARGET, token_utils.TARGET
        return token_utils.SOURCE, token_utils.SOURCE

    def _axis_tokens(self, record, role, batch, length, keep, axis):
        if role not in self._token_lists and token_utils.TOKENS in self._token_lists:
            role = token_utils.TOKENS
        try:
            return token_utils.tokens_for(self._token_lists, role, batch, length, keep)
        except ValueError as e:
            self._warn(
                ("tokens", record.tag, axis),
                "%s: %s; its %s axis is logged without tokens (pass token_roles= or tokens "
                "that fit)" % (record.tag, e, axis),
            )
            return None

    def _image_layout(self, record):
        """`(grid, prefix)` when this record's keys are the probe image's patches, else None."""
        if self._images is None or record.cross:
            return None
        tk = record.scores.shape[-1]
        if self.image_grid is not None:
            prefix = self.prefix_tokens
            if prefix is None:
                prefix = tk - self.image_grid[0] * self.image_grid[1]
            if prefix >= 0 and self.image_grid[0] * self.image_grid[1] + prefix == tk:
                return list(self.image_grid), int(prefix)
            self._warn(
                ("grid", record.tag),
                "%s has %d key positions, which image_grid=%s does not fit; logged without "
                "the image" % (record.tag, tk, self.image_grid),
            )
            return None
        try:
            return encoding.infer_patch_grid(tk, self.prefix_tokens)
        except ValueError as e:
            if self._explicit_images:
                self._warn(("grid", record.tag),
                           "%s: %s; logged without the image" % (record.tag, e))
            return None

    # ------------------------------------------------------------ what a capture keeps

    def _view_for(self, records):
        """`(View, note)` for these records; chosen once per set of layer shapes."""
        key = tuple((record.tag, tuple(record.scores.shape)) for record in records)
        if key not in self._views:
            if len(self._views) > 16:  # shapes keep changing: do not grow without bound
                self._views.clear()
            self._views[key] = self._choose_view(records)
        return self._views[key]

    def _choose_view(self, records):
        start = budget_utils.View(
            examples=min(int(r.scores.shape[0]) for r in records),
            tokens=self.max_tokens, heads=self.max_heads,
        )
        if self.max_bytes_per_step is None:
            view, met = start, True
        else:
            view, met = budget_utils.choose_view(
                start, [tuple(r.scores.shape) for r in records],
                lambda candidate: self._view_bytes(records, start, candidate)
                <= self.max_bytes_per_step,
            )
        return view, self._reduction_note(records, start, view, met)

    def _kept_shape(self, record, view, layout):
        batch, heads, tq, tk = (int(n) for n in record.scores.shape)
        return (
            min(batch, view.examples),
            heads if view.heads is None else min(heads, view.heads),
            tq if view.tokens is None else min(tq, view.tokens),
            tk if (view.tokens is None or layout) else min(tk, view.tokens),
        )

    def _view_bytes(self, records, start, view):
        """An upper bound of the bytes this view of the records writes, known before encoding."""
        note = self._reduction_note(records, start, view, True) or ""
        total = 0
        kept = records if view.layers is None else [records[i] for i in view.layers]
        for record in kept:
            layout = self._image_layout(record)
            examples, heads, kq, kk = self._kept_shape(record, view, layout)
            blobs = examples * heads
            total += blobs * (budget_utils.compress_bound(kq * kk) + _BLOB_OVERHEAD)
            total += _TAG_OVERHEAD + 2 * len(record.tag) + len(note.encode("utf-8"))
            query_role, key_role = self._roles(record)
            for role, length, keep, axis in ((query_role, record.scores.shape[2], kq, "query"),
                                             (key_role, record.scores.shape[3], kk, "key")):
                tokens = self._axis_tokens(record, role, examples, int(length), keep, axis)
                if tokens is not None:
                    total += len(json.dumps(tokens, ensure_ascii=False).encode("utf-8"))
            if layout is not None:
                _, height, width, channels = self._images.shape
                total += examples * (
                    budget_utils.compress_bound(height * (width * channels + 1)) + 64
                )
            if self.statistics:
                from tb_attention_plugin import stats

                total += len(stats.STATISTICS) * heads * (_SCALAR_BYTES + len(record.tag))
        return total

    def _reduction_note(self, records, start, view, met):
        """What the view drops and how to keep more, in words (None: nothing dropped)."""
        parts, limits = [], []
        if self._probe_size > view.examples:
            parts.append("examples %d of %d" % (view.examples, self._probe_size))
            if self._probe_size > self.max_examples:
                limits.append("max_examples=%d" % self.max_examples)
        kept = records if view.layers is None else [records[i] for i in view.layers]
        heads_text, positions_text = [], []
        for record in kept:
            batch, heads, tq, tk = (int(n) for n in record.scores.shape)
            _, keep_heads, kq, kk = self._kept_shape(record, view, self._image_layout(record))
            if keep_heads < heads:
                heads_text.append("heads %d of %d" % (keep_heads, heads))
            if kq < tq or kk < tk:
                positions_text.append("positions %dx%d of %dx%d" % (kq, kk, tq, tk))
        for texts in (heads_text, positions_text):
            parts.extend(sorted(set(texts), key=texts.index))
        if heads_text and self.max_heads is not None and any(
            self.max_heads < r.scores.shape[1] for r in kept
        ):
            limits.append("max_heads=%d" % self.max_heads)
        if positions_text and self.max_tokens is not None and any(
            self.max_tokens < max(r.scores.shape[2:]) for r in kept
        ):
            limits.append("max_tokens=%d" % self.max_tokens)
        if len(kept) < len(records):
            parts.append("layers %d of %d (kept: %s)"
                         % (len(kept), len(records), ", ".join(r.tag for r in kept)))
        if not parts:
            return None
        arguments = [limit.split("=")[0] + "=" for limit in limits]
        text = ", ".join(parts)
        if view != start:
            text += ("; %s by the budget max_bytes_per_step=%d (%.1f MiB), which the view asked "
                     "for would exceed" % ("set in part" if limits else "set",
                                           self.max_bytes_per_step,
                                           self.max_bytes_per_step / 2**20))
            if not met:
                text += " (even this smallest view does not fit; it is logged anyway)"
            arguments.insert(0, "max_bytes_per_step=")
        if limits:
            text += "; limits: " + ", ".join(limits)
        listed = arguments[0] if len(arguments) == 1 else "%s or %s" % (
            ", ".join(arguments[:-1]), arguments[-1])
        text += "; raise %s to log more (None keeps all%s)" % (
            listed,
            ", or no budget" if "max_bytes_per_step=" in arguments else "")
        return text

    def _summary_item(self, record, view, note, kept_layers, layers):
        scores = record.scores
        batch, heads, tq, tk = scores.shape
        layout = self._image_layout(record)
        examples, keep_heads, keep_tq, keep_tk = self._kept_shape(record, view, layout)
        weights = scores[:examples, :keep_heads, :keep_tq, :keep_tk]
        mask = record.mask
        if mask is not None:
            mask = mask[:examples, :keep_heads, :keep_tq, :keep_tk]
            if mask.all():
                mask = None
        reduced = None
        if note:
            reduced = {
                "source_shape": [self._probe_size, int(heads), int(tq), int(tk)],
                "examples": examples,
                "heads": keep_heads,
                "tokens": [0, view.tokens] if (keep_tq < tq or keep_tk < tk) else None,
                "layers": [kept_layers, layers],
                "max_bytes_per_step": self.max_bytes_per_step,
                "note": note,
            }
        query_role, key_role = self._roles(record)
        item = {
            "tag": record.tag,
            "weights": weights,
            "mask": mask,
            "query_tokens": self._axis_tokens(record, query_role, examples, tq, keep_tq,
                                              "query"),
            "key_tokens": self._axis_tokens(record, key_role, examples, tk, keep_tk, "key"),
            "images": None,
            "image_grid": None,
            "prefix_tokens": None,
            "reduced": reduced,
        }
        if layout is not None:
            item["images"] = self._images[:examples]
            item["image_grid"], item["prefix_tokens"] = layout
        return item

    def _statistics(self, item):
        from tb_attention_plugin import stats

        weights = np.where(item["mask"], item["weights"], np.nan) if item["mask"] is not None \
            else item["weights"]
        grid, prefix = item["image_grid"], item["prefix_tokens"] or 0
        if grid is not None and weights.shape[-2] != weights.shape[-1]:
            grid, prefix = None, 0
        result = stats.head_statistics(weights, image_grid=grid, prefix_tokens=prefix)
        return {
            "%s/%s/head_%d" % (item["tag"], name, head): float(value)
            for name, values in result.items()
            for head, value in enumerate(values)
            if not math.isnan(float(value))
        }

    def _write(self, items, step):
        scalars = {}
        if self.statistics:
            for item in items:
                try:
                    scalars.update(self._statistics(item))
                except Exception as e:
                    self._warn(
                        ("statistics", item["tag"]),
                        "no statistics for %s (%s: %s)" % (item["tag"], type(e).__name__, e),
                    )
        if self._writer is not None and fs.vanished(self._run_dir()):
            # Removed while training: the open event file went with it and every later write
            # would vanish silently, so start a new file in a new directory.
            self._warn(
                "vanished",
                "the log directory %s was removed during training; it is created again"
                % self._run_dir(),
            )
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception:
                pass  # the old file is gone: nothing left to save
        if keras.backend.backend() == "tensorflow":
            self._write_tensorflow(items, scalars, step)
        else:
            self._write_plain(items, scalars, step)

    @staticmethod
    def _summary_kwargs(item):
        return {k: item[k] for k in ("query_tokens", "key_tokens", "mask", "images",
                                     "image_grid", "prefix_tokens", "reduced")}

    def _write_tensorflow(self, items, scalars, step):
        import tensorflow as tf

        from tb_attention_plugin import summary

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                self._run_dir(), filename_suffix=".attention"
            )
        # keras.callbacks.TensorBoard(update_freq=N) sets a global record_if: override it.
        with self._writer.as_default(), tf.summary.record_if(True):
            for item in items:
                try:
                    summary.attention(item["tag"], item["weights"], step=step,
                                      **self._summary_kwargs(item))
                except (ValueError, TypeError) as e:
                    self._warn_invalid(item["tag"], step, e)
                    continue
                self._last_step_by_tag[item["tag"]] = step
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value, step=step)
        self._writer.flush()

    def _write_plain(self, items, scalars, step):
        from tb_attention_plugin.writer import AttentionWriter

        if self._writer is None:  # it creates the directory, through TensorBoard's gfile
            self._writer = AttentionWriter(self._run_dir())
        for item in items:
            try:
                self._writer.attention(item["tag"], item["weights"], step,
                                       **self._summary_kwargs(item))
            except (ValueError, TypeError) as e:
                self._warn_invalid(item["tag"], step, e)
                continue
            self._last_step_by_tag[item["tag"]] = step
        for tag, value in scalars.items():
            self._writer.scalar(tag, value, step)
        self._writer.flush()

    def _warn_invalid(self, tag, step, error):
        # The summary API checks before writing anything: one layer's bad scores (NaN from a
        # diverged layer, logits instead of probabilities) cost only that layer's summary.
        self._warn(
            ("invalid", tag),
            "cannot log %s at step %d (%s: %s); other layers are logged and later steps "
            "of this one are tried again"
            % (tag, step, type(error).__name__, error),
        )

    def _flush(self):
        if self._writer is None:
            return
        try:
            self._writer.flush()
        except Exception as e:
            self._warn(("flush", type(e).__name__), "flushing summaries failed (%s)" % e)
