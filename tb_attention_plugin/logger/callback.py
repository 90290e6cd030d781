"""`AttentionLogger`: a Keras callback that logs every attention layer's scores to TensorBoard.

The hooks decide when to capture; one capture runs capture -> view -> summaries -> write,
each step in its own module (`capture.py`, `budget.py`, `summaries.py`, `writing.py`) and each
failure one `AttentionLoggerWarning` (`problems.py`).
"""

import keras
import numpy as np

from tb_attention_plugin.logger import background
from tb_attention_plugin.logger import budget
from tb_attention_plugin.logger import capture
from tb_attention_plugin.logger import distribution
from tb_attention_plugin.logger import health_pass
from tb_attention_plugin.logger import options as options_utils
from tb_attention_plugin.logger import probe as probe_utils
from tb_attention_plugin.logger import shared_pass
from tb_attention_plugin.logger import summaries
from tb_attention_plugin.logger import task_probe
from tb_attention_plugin.logger import tokens as token_utils
from tb_attention_plugin.logger import writing
from tb_attention_plugin.logger.problems import Problems


class AttentionLogger(keras.callbacks.Callback):
    """Logs the attention scores of every attention layer of a Keras model to TensorBoard.

    The callback finds `keras.layers.MultiHeadAttention` (and subclasses such as keras-hub's
    `CachedMultiHeadAttention`), `GroupedQueryAttention`, `Attention` and `AdditiveAttention`
    layers at any depth by itself. To read them it runs the model once on `probe`, in
    inference mode (`training=False`), before training, every `update_freq` optimizer steps
    and at each epoch end; training, the model's outputs and saved models are unaffected.
    Each layer call becomes one tag of the Attention tab, named after the layer path (a layer
    called twice gives `<path>/call_0` and `<path>/call_1`).

    Problems (an unwritable directory, a layer that returns no scores, tokens that do not fit)
    become one `tb_attention_plugin.AttentionLoggerWarning` each; training never stops because
    of this callback.

    Each capture is bounded by `max_bytes_per_step`, planned from the layer shapes before
    anything is computed, so every step has the same layout. Every position of every logged
    layer and head is kept: a layer too large to store in full is POOLED, an overview of
    position blocks (each block's mean and max, so that mass and spikes both survive) plus
    exact windows at full resolution (`windows`), and is computed block by block so that its
    full score tensor never exists (a 32-head layer at 8192 tokens captures within a few
    hundred MB). Over budget it first keeps one example; only when even pooled layers do not
    fit, fewer heads, then fewer layers (see `logger/budget.py`).

    Args:
      log_dir: The same root directory as `keras.callbacks.TensorBoard`'s `log_dir`; the
        summaries go to its training run, `<log_dir>/train`. Local, or a URL TensorBoard's
        gfile knows (`gs://`, `s3://`, `hdfs://`, ...). In a multi-process job one process
        writes (TensorFlow: the chief or worker 0 of `TF_CONFIG`; JAX: process 0; PyTorch:
        rank 0 of `torch.distributed`); give every process the same `log_dir` and probe.
        Layer paths holding quotes, backslashes or control characters are logged with `_` in
        their place (TensorBoard could not read them). Defaults to `"logs"`.
      probe: Required. A small fixed batch of model inputs (array, tuple/list or dict of
        arrays), as the model is called with. Only its first `max_examples` examples are run.
        For a keras-hub task with a preprocessor (`CausalLM`, `Seq2SeqLM`, `TextClassifier`,
        `ImageClassifier`), also what its `fit` takes: a list of strings, a dict
        `{"encoder_text": [...], "decoder_text": [...]}`, or images. The task's preprocessor
        turns them into inputs once, when training starts (language models: the prompt as
        `generate_preprocess` gives it), and the axes show the tokenizer's tokens (special
        tokens as it spells them, byte-level BPE decoded: `"Ġfox"` is `" fox"`; they replace
        `vocabulary`) with padding masked; see `logger/task_probe.py`.
      tokens: Token strings for the attention axes: one list for every example, or one list
        per example, for single-sequence models; for encoder-decoder models a dict
        `{"source": ..., "target": ...}` of those. Cross-attention then shows
        (target, source), causal self-attention (target, target), other self-attention
        (source, source). Defaults to `None` (from a text probe's tokenizer, else from
        `vocabulary`, or no tokens).
      vocabulary: Maps the probe's integer token ids (`[B, T]` arrays) to strings when
        `tokens` does not give them: a list of strings, `keras.layers.StringLookup` or
        `keras.layers.TextVectorization`, or a dict `{"source": ..., "target": ...}` of them
        for encoder-decoder models. Two id arrays in the probe (or dict keys naming
        encoder/decoder or source/target) are source and target. Defaults to `None`.
      token_roles: `{layer path pattern: (query_role, key_role)}` with roles `"source"`,
        `"target"` or `"tokens"`, overriding the choice above for the layers it matches.
        Defaults to `None`.
      images: Probe images `[B, height, width, channels]` to draw attention over (Vision
        Transformers). Defaults to `None`: the probe itself when it is such an image batch.
        At most 2048 x 2048 pixels (8192 on a side): larger images are a `ValueError`.
      image_grid: `(rows, cols)` of the patch grid. Defaults to `None`: inferred for square
        grids.
      prefix_tokens: Number of non-patch positions (a class token) before the patches.
        Defaults to `None`: inferred with the grid (1, else 0).
      layers: An fnmatch pattern, or a list of them, on layer paths (or names) selecting the
        layers to log, e.g. `"decoder*"`. Defaults to `None`: every attention layer.
      update_freq: `"epoch"`, `"batch"` or an integer, as in `keras.callbacks.TensorBoard`:
        an integer `N` captures whenever the optimizer step crosses a multiple of `N`
        (`"batch"` is 1), `"epoch"` only at epoch ends. There is always one capture before
        training and one at each epoch end. Defaults to `100`.
      max_examples: Number of probe examples to run and log. Defaults to `2`.
      max_heads: Number of heads to log per layer. Defaults to `None`: all.
      max_bytes_per_step: Budget in bytes for one capture (all logged layers of one step),
        at least 64 KiB. Both TensorBoard readers keep every retained step in memory (100 per
        tag by default), so this bounds their memory too. GPT-2 small (12 layers x 12 heads)
        at 1024 tokens keeps 1 example, every layer and head pooled in 16x16 blocks with
        exact windows. What a capture pools or drops is said in one warning and in the tab.
        Defaults to `4 * 2**20` (4 MiB); `None`: no budget (every layer in full).
      windows: Exact windows to keep at full resolution in pooled layers, besides the default
        ones (causal self-attention: the last queries' rows over all keys, `last_queries`, and
        the first query block, `first_queries`; other attention: the first and the last
        queries over all keys; both: every query's weight on key 0, `first_key`). A dict
        `{layer path pattern: [(name, (q0, q1), (k0, k1)), ...]}` or a list of windows for
        every layer; ranges are half-open query and key positions with Python slice
        conventions (`None`: the end, negative: from the end), e.g.
        `{"decoder*": [("answer", (900, None), (0, None))]}`. A layer with named windows is
        always stored pooled. Defaults to `None`.
      statistics: Also write per-head statistics (entropy, max_weight, mean_distance,
        first_token_share) as scalar summaries `<tag>/<statistic>/head_<h>`, for the Scalars
        tab. Defaults to `False`.
      run_eagerly: On TensorFlow the probe pass is traced once into a graph (a few ms per
        capture instead of tens); `True` runs it eagerly every time, as the other backends
        and models compiled with `run_eagerly=True` do. Defaults to `False`.
      health_probe: The probe SET over which every captured layer's head health is measured
        at each capture (`tb_attention_plugin.health`, docs/health.md: entropy, maximum
        pre-softmax logit, sinks, previous-token / diagonal / first-token / induction /
        cross-attention monotonicity scores, roles, similarity groups). Only the measures are
        kept: per layer and step one record `<tag>/health` for the Health view, and the
        scalars `attention_health/<tag>/min_entropy` and `.../max_logit` for the Scalars
        dashboard. `None` or `True`: the whole `probe` batch (not only its first
        `max_examples`); a batch of model inputs (e.g. 64 sequences; run in blocks of 8), or
        for a keras-hub task raw inputs as `probe` takes them (a list of strings);
        `(inputs, repeat_offset)` as `tb_attention_plugin.induction_probe(vocab_size, L)`
        returns it, which adds the induction score of the self-attention layers; `False`: no
        health records. Layers the budget pools are measured from the query chunks of their
        blocked pass (their full matrices never exist), with the same results. Defaults to
        `None`.

    Example:

    ```python
    import tb_attention_plugin as tba

    logger = tba.AttentionLogger(
        "logs", probe=(source_ids[:2], target_ids[:2]),
        vocabulary={"source": english_vocabulary, "target": chinese_vocabulary},
        update_freq=100)
    model.fit(dataset, epochs=5, callbacks=[keras.callbacks.TensorBoard("logs"), logger])

    # A keras-hub task on raw text: the probe is text too, the axes its tokenizer's tokens.
    causal_lm.fit(texts, epochs=1, callbacks=[
        tba.AttentionLogger("logs", probe=["The quick brown fox", "Attention is all"])])

    # Head health over 64 induction sequences (roles, sinks, alarms in the Scalars tab):
    ids, offset = tba.induction_probe(vocab_size=32000, length=64, batch=64)
    logger = tba.AttentionLogger("logs", probe=ids[:2], health_probe=(ids, offset))
    ```
    """

    _background = None  # background.BackgroundWriter, from the first write on

    def __init__(
        self,
        log_dir="logs",
        probe=None,
        *,
        tokens=None,
        vocabulary=None,
        token_roles=None,
        images=None,
        image_grid=None,
        prefix_tokens=None,
        layers=None,
        update_freq=100,
        max_examples=2,
        max_heads=None,
        max_bytes_per_step=budget.DEFAULT_BYTES_PER_STEP,
        windows=None,
        statistics=False,
        run_eagerly=False,
        health_probe=None,
    ):
        super().__init__()
        self.options = options_utils.check_options(
            log_dir, update_freq=update_freq, layers=layers, token_roles=token_roles,
            image_grid=image_grid, prefix_tokens=prefix_tokens, max_examples=max_examples,
            max_heads=max_heads, max_bytes_per_step=max_bytes_per_step, windows=windows,
            statistics=statistics, run_eagerly=run_eagerly,
        )
        self.log_dir = self.options.log_dir
        self.update_freq = update_freq
        self._problems = Problems()
        self._writer = writing.RunWriter(self.options.run_dir, self._problems)
        # The probe as given; raw task inputs (text) wait for the model's preprocessor.
        self._probe_arguments = dict(probe=probe, tokens=tokens, vocabulary=vocabulary,
                                     images=images, health_probe=health_probe)
        self._prepared_for = None  # the model a raw probe was preprocessed for
        self.probe = None
        if not task_probe.holds_text(probe):
            self._use_probe(**self._probe_arguments)
        self._role = None  # distribution.Role of this process, found at on_train_begin
        self._last_step_by_tag = {}
        self._last_health_step = {}
        self._last_logged_step = None
        self._cadence_mark = None
        self._epoch_base_step = 0

    def _use_probe(self, probe, tokens, vocabulary, images, health_probe, task_tokens=None,
                   task_special=None):
        """Sets up the capture of `probe` (model inputs); `task_tokens` are the tokenizer's
        (`task_probe.prepare`), used for the roles `tokens=` does not give, with their special
        and padding flags `task_special`."""
        self.probe = probe_utils.Probe(probe, self.options.limits.max_examples, images=images,
                                       image_grid=self.options.image_grid,
                                       prefix_tokens=self.options.prefix_tokens)
        # A tokenizer's tokens stand in for vocabulary=; explicit tokens= still win.
        self._token_lists = token_utils.resolve_tokens(
            self.probe.inputs, tokens=tokens, vocabulary=None if task_tokens else vocabulary)
        # Special flags only where the tokenizer's tokens label the axis.
        self._token_special = {role: (task_special or {})[role] for role in (task_tokens or {})
                               if role not in self._token_lists and role in (task_special or {})}
        for role, lists in (task_tokens or {}).items():
            self._token_lists.setdefault(role, lists)
        self._probe_capture = capture.ProbeCapture(
            self.probe.inputs, patterns=self.options.layers, run_eagerly=self.options.run_eagerly,
            problems=self._problems, planner=self._plan)
        self._budget = budget.Budget(
            self.options.limits, self.probe.size,
            images_shape=None if self.probe.images is None else self.probe.images.shape,
            statistics=self.options.statistics)
        self._capture_plan = None  # budget.CapturePlan, from the shape pass
        self._pooled = {}  # {(path, call index): tag} of the layers the plan pools
        self._health = self._health_pass(probe, health_probe)

    def set_model(self, model):
        """Keras hook; a probe of raw task inputs (text, images for an image classifier) is run
        through `model`'s preprocessor here, once (`task_probe.py`)."""
        super().set_model(model)
        arguments = self._probe_arguments
        if model is self._prepared_for or not task_probe.wants_preprocessing(
                model, arguments["probe"]):
            return
        prepared = task_probe.prepare(model, arguments["probe"])
        health_probe = arguments["health_probe"]
        if task_probe.holds_text(health_probe):
            health_probe = task_probe.prepare(model, health_probe).inputs
        self._use_probe(prepared.inputs, arguments["tokens"], arguments["vocabulary"],
                        arguments["images"], health_probe, task_tokens=prepared.tokens,
                        task_special=prepared.special)
        self._prepared_for = model

    def _health_pass(self, probe, health_probe):
        inputs, repeat_offset = health_pass.health_inputs(health_probe, probe)
        if inputs is None:
            return None
        if shared_pass.shares(self.probe, repeat_offset is None and inputs is probe,
                              health_pass.DEFAULT_BATCH_SIZE):
            # The displayed capture runs over the whole probe set: measure its records.
            inputs = None
            self._probe_capture.inputs = probe_utils.slice_batch(probe, self.probe.size)
        return health_pass.HealthPass(
            inputs, repeat_offset, patterns=self.options.layers,
            run_eagerly=self.options.run_eagerly, problems=self._problems)

    # ----------------------------------------------------------------------- Keras hooks

    def on_train_begin(self, logs=None):
        try:
            self._role = distribution.process_role(self.model)
        except Exception as e:
            self._role = None
            self._warn_failed("role", "cannot tell which process writes; this one writes", e)
        self._capture_at_current_step()

    def on_epoch_begin(self, epoch, logs=None):
        if self.options.update_steps:
            self._epoch_base_step = self._current_step()

    def on_train_batch_end(self, batch, logs=None):
        every = self.options.update_steps
        if not every:
            return
        # Counted, not read: reading the step variable costs more than a small model's step
        # fraction we can afford per batch, and on JAX it forces a state sync. `batch` is the
        # last batch index of the execution (steps_per_execution); the capture itself reads
        # the real step.
        step = self._epoch_base_step + int(batch) + 1
        mark, self._cadence_mark = self._cadence_mark, step
        if mark is not None and step // every > mark // every:
            self._capture_and_write(self._current_step())

    def on_epoch_end(self, epoch, logs=None):
        self._capture_at_current_step()

    def on_train_end(self, logs=None):
        if self._background is not None:
            self._background.drain()
        self._problems.release()
        self._writer.flush()

    # ------------------------------------------------------------------- one capture

    def _capture_at_current_step(self):
        step = self._current_step()
        self._cadence_mark = step
        self._capture_and_write(step)

    def _current_step(self):
        try:
            value = self.model.optimizer.iterations.value
            if keras.backend.backend() != "tensorflow":  # e.g. a torch tensor on a GPU
                value = distribution.to_numpy(value)  # replicated over processes: read locally
            return int(np.asarray(value))  # a tf.Variable converts directly, without a copy
        except Exception as e:
            self._problems.warn("step", "cannot read the optimizer step (%s); logging at step 0"
                                % e)
            return 0

    def _capture_and_write(self, step):
        """One capture at `step`; every failure becomes one warning per cause."""
        if self._last_logged_step is not None and step == self._last_logged_step:
            return
        role = self._role
        if role is not None and not role.runs_probe:
            return  # another process of the job writes; the probe pass is not a collective
        collective = role is not None and role.collective
        if collective:
            # Every process runs the probe (and the health pass) at the same steps: decide
            # from the step alone, the same on every process.
            self._last_logged_step = step
        elif self._last_step_by_tag and step <= min(self._last_step_by_tag.values()):
            self._warn_step_went_back(step)  # e.g. a new optimizer: skip the whole capture
            return
        if self._health is not None:
            self._health.start_capture()
        try:
            records = self._probe_capture(self.model)
        except Exception as e:
            self._warn_failed("capture", "capturing attention failed at step %d, training goes "
                              "on" % step, e)
            return
        health = self._measure_health(records, step)  # a collective too, where the probe is
        if role is not None and not role.writes:
            return
        records = shared_pass.first_examples(records, self.probe.examples)
        current = [r for r in records if step > self._last_step_by_tag.get(r.tag, -1)]
        if len(current) < len(records):
            self._warn_step_went_back(step)
        if not current and not health:
            return
        try:
            items = self._summary_items(current) if current else []
        except Exception as e:
            self._warn_failed("budget", "cannot size the capture at step %d, nothing logged"
                              % step, e)
            items = []
        if not items and not health:
            return
        self._write_in_background(items, step, health)
        self._last_step_by_tag.update(dict.fromkeys((item.tag for item in items), step))
        self._last_health_step.update(dict.fromkeys(health, step))
        self._last_logged_step = step

    def _write_in_background(self, items, step, health):
        """Statistics, encoding and writing of one capture, on the background writer's thread
        (they only read the capture's numpy results); its problems are warned here."""
        if self._background is None:
            self._background = background.BackgroundWriter()

        def write():
            with self._problems.deferred():
                scalars = self._statistics(items) if self.options.statistics else {}
                self._writer.write(items, scalars, step, health=health)

        def failed(error):
            with self._problems.deferred():
                self._warn_failed("write", "writing attention summaries to %s failed, training "
                                  "goes on" % self.options.run_dir, error)

        self._background.submit(write, failed)
        self._problems.release()

    def _plan(self, shapes):
        """The capture's plan from the shape pass (`capture.LayerShape`s): which layers are
        FULL, POOLED (computed in blocks) or skipped. Returns `{(path, index): LayerPlan}`."""
        shapes = shared_pass.first_examples(shapes, self.probe.examples)
        calls = [self._layer_call(shape) for shape in shapes]
        self._capture_plan = self._budget.plan_for(calls) if calls else None
        if self._capture_plan is None:
            return {}
        plans = {(shape.path, shape.index): self._capture_plan.layers[shape.tag]
                 for shape in shapes}
        self._pooled = {(shape.path, shape.index): shape.tag for shape in shapes
                        if plans[(shape.path, shape.index)].mode == "pooled"}
        if self._health is not None and self._health.inputs is None:
            # One pass for both: the pooled layers' chunks are measured as the display makes them.
            plans = self._health.stream_display(shapes, plans)
        return plans

    def _measure_health(self, records, step):
        """`{tag: HeadHealth.result()}` of this capture (empty without health or on failure)."""
        if self._health is None:
            return {}
        try:
            results = self._health(self.model, records, pooled=self._pooled)
        except Exception as e:
            self._warn_failed("health", "measuring head health failed at step %d, training "
                              "goes on" % step, e)
            return {}
        return {tag: result for tag, result in results.items()
                if step > self._last_health_step.get(tag, -1)}

    def _summary_items(self, records):
        """The `SummaryItem`s of a capture's records under the budget's plan."""
        calls = [self._layer_call(record) for record in records]
        plan = self._capture_plan
        if plan is None:  # no shape pass (e.g. its layers were all skipped): plan these calls
            plan = self._budget.plan_for(calls)
        if plan.note:
            self._problems.warn("reduced", "logging a reduced view: " + plan.note)
        skipped = {tag for tag, layer in plan.layers.items() if layer.mode == "skip"}
        kept = [call for call in calls if call.tag not in skipped]
        layers = len(plan.layers) or len(calls)
        items = []
        for call in kept:
            layer_plan = plan.layers.get(call.tag)
            if layer_plan is None or (layer_plan.mode == "pooled") != (call.pooled is not None):
                layer_plan = budget.LayerPlan(
                    "full", call.shape, min(call.shape[0], plan.view.examples),
                    call.shape[1] if plan.view.heads is None
                    else min(call.shape[1], plan.view.heads))
            try:
                items.append(summaries.summary_item(
                    call, layer_plan, plan.note, len(kept), layers, self.probe.size,
                    images=self.probe.images,
                    max_bytes_per_step=self.options.limits.max_bytes_per_step))
            except Exception as e:
                self._warn_failed(("prepare", call.tag), "cannot log %s" % call.tag, e)
        return items

    def _layer_call(self, record):
        """A record (or a shape-pass `LayerShape`) with the tokens of its axes and its patch
        layout (problems reported)."""
        batch, _, query_length, key_length = (int(n) for n in record.shape)
        roles = token_utils.roles_for(record.tag, record.cross, record.causal,
                                      self._token_lists, self.options.token_roles)
        axes, special = {}, {}
        for axis, role, length in zip(("query", "key"), roles, (query_length, key_length)):
            try:
                axes[axis] = token_utils.axis_tokens(self._token_lists, role, batch, length)
                special[axis] = token_utils.axis_tokens(self._token_special, role, batch, length)
            except ValueError as e:
                self._problems.warn(
                    ("tokens", record.tag, axis),
                    "%s: %s; its %s axis is logged without tokens (pass token_roles= or tokens "
                    "that fit)" % (record.tag, e, axis),
                )
                axes[axis] = special[axis] = None
        try:
            layout = self.probe.patch_layout(record.tag, key_length, record.cross)
        except ValueError as e:
            self._problems.warn(("grid", record.tag), str(e))
            layout = None
        return summaries.LayerCall(
            record.tag, getattr(record, "scores", None), getattr(record, "mask", None),
            axes["query"], axes["key"], layout, full_shape=tuple(record.shape),
            causal=bool(record.causal), pooled=getattr(record, "pooled", None),
            max_logit=getattr(record, "max_logit", None), kv_heads=record.kv_heads,
            query_special=special["query"], key_special=special["key"])

    def _statistics(self, items):
        scalars = {}
        for item in items:
            try:
                scalars.update(summaries.head_statistics(item))
            except Exception as e:
                self._problems.warn(
                    ("statistics", item.tag),
                    "no statistics for %s (%s: %s)" % (item.tag, type(e).__name__, e),
                )
        return scalars

    def _warn_failed(self, cause, message, error):
        cause = cause if isinstance(cause, tuple) else (cause,)
        self._problems.warn(cause + (type(error).__name__,),
                            "%s (%s: %s)" % (message, type(error).__name__, error))

    def _warn_step_went_back(self, step):
        newest = max(self._last_step_by_tag.values())
        if step < newest:
            self._problems.warn(
                "step went back",
                "the optimizer step went back to %d (a new optimizer?) but steps up to %d are "
                "already logged and TensorBoard keeps only increasing steps: captures resume "
                "after step %d (or log to a new log_dir)" % (step, newest, newest),
            )
