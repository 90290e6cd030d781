"""Keras' own attention layers: their score methods, shadowed for the probe pass.

`MultiHeadAttention` (and subclasses such as keras-hub's `CachedMultiHeadAttention`) and
`GroupQueryAttention` are asked for their scores through `_compute_attention` (kind `HEADS`,
`[B, H, Tq, Tk]`); `Attention` and `AdditiveAttention` through `_apply_scores` (kind `SINGLE`,
`[B, Tq, Tk]`). Their `call` is shadowed too (whether the query is the key sequence, the causal
flag), and `_masked_softmax` for the largest logit. A POOLED layer is computed in query chunks
by `blocked.py` instead, so its full scores never exist.

`StockShadows` is mixed into `capture._Patcher`, which keeps the call records and restores
every shadow.

Example (what the patcher does for each stock site):

```python
patcher.install_stock([site for site in sites if site.kind in (HEADS, SINGLE)])
```
"""

import inspect

from tb_attention_plugin.logger.adapters import values

# Kinds of stock attention layers: the method whose result holds the scores.
HEADS = "heads"  # MultiHeadAttention, GroupedQueryAttention: (B, H, Tq, Tk)
SINGLE = "single"  # Attention, AdditiveAttention: (B, Tq, Tk), no head axis


def attention_parameters(layer, method):
    """The parameters of a layer's `_compute_attention` (bound `method`), by name.

    A subclass that forwards `*args, **kwargs` to its base is named by the Keras class it
    derives from, so the arguments Keras passes by position keep their meaning."""
    import keras

    parameters = inspect.signature(method).parameters
    if not any(p.kind == p.VAR_POSITIONAL for p in parameters.values()):
        return parameters
    for base in (keras.layers.GroupQueryAttention, keras.layers.MultiHeadAttention):
        if isinstance(layer, base):
            return dict(list(inspect.signature(base._compute_attention).parameters.items())[1:])
    return parameters


class _ScoreMethod:
    """How a layer's `_compute_attention` is called and asked for its scores."""

    def __init__(self, layer, original):
        parameters = attention_parameters(layer, original)
        self.layer = layer
        # MultiHeadAttention is asked through the argument, GroupedQueryAttention through the
        # attribute its `call` sets.
        self.takes_flag = "return_attention_scores" in parameters
        # Names of positional parameters after (query, key, value, attention_mask, training).
        self.later_names = [name for name, p in parameters.items()
                            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][5:]

    def wanted(self, kwargs):
        """Whether the layer's caller asked for the scores itself."""
        if self.takes_flag:
            return kwargs.get("return_attention_scores", False)
        return bool(getattr(self.layer, "_return_attention_scores", False))


class _AttentionCall:
    """One call of `_compute_attention`: its arguments and the way to run it unchanged."""

    def __init__(self, site, original, query, key, value, attention_mask, training, kwargs):
        self.site, self.original = site, original
        self.query, self.key, self.value = query, key, value
        self.attention_mask, self.training, self.kwargs = attention_mask, training, kwargs

    def plain(self):
        return self.original(self.query, self.key, self.value,
                             attention_mask=self.attention_mask, training=self.training,
                             **self.kwargs)

    def combined_mask(self):
        """The attention mask with the causal mask of `use_causal_mask` applied."""
        import keras

        if not self.kwargs.get("use_causal_mask"):
            return self.attention_mask
        causal = self.site.layer._compute_causal_mask(self.query, self.value)
        if self.attention_mask is None:
            return causal
        return keras.ops.logical_and(keras.ops.cast(self.attention_mask, "bool"), causal)


class StockShadows:
    """Mixin of `capture._Patcher`: the shadows of Keras' own attention layers."""

    def install_stock(self, sites):
        for site in sites:
            layer = site.layer
            if "_flash_attention" in layer.__dict__:
                self._set(layer, "_flash_attention", False)  # flash cannot return scores
            self._set(layer, "call", self._shadow_call(site, layer.call))
            method = getattr(layer, site.score_method)
            shadow = (self._shadow_compute_attention(site, method) if site.kind == HEADS
                      else self._shadow_apply_scores(site, method))
            self._set(layer, site.score_method, shadow)
            if site.kind == HEADS and callable(getattr(layer, "_masked_softmax", None)):
                self._set(layer, "_masked_softmax",
                          self._shadow_masked_softmax(site, layer._masked_softmax))

    # ------------------------------------------------------------------------- call

    def _shadow_call(self, site, original):
        signature = inspect.signature(original)
        calls = self.calls[id(site)]

        def call(*args, **kwargs):
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = {}
            calls.append({"same": self._same_query_and_key(site, bound),
                          "causal_flag": bool(bound.get("use_causal_mask"))})
            if site.kind == SINGLE and not self._shapes_only:
                output = self._blocked_single_call(site, bound)
                if output is not None:
                    return output
            return original(*args, **kwargs)

        return call

    def _same_query_and_key(self, site, bound):
        if site.kind == HEADS:
            query = bound.get("query")
            key = bound.get("key")
            key = bound.get("value") if key is None else key
        else:
            inputs = bound.get("inputs")
            if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
                inputs = [None, None]
            query = inputs[0]
            key = inputs[2] if len(inputs) > 2 else inputs[1]
        if query is None or key is None:
            return True
        return values.same_sequence(query, key, self._symbolic)

    def _blocked_single_call(self, site, bound):
        """A POOLED (or, in the health pass, STREAMED) `Attention` / `AdditiveAttention` call
        computed in query chunks (`blocked.blocked_call`): its output, or None where the
        layer's own call must run (not pooled, scores asked for by the caller, a layer
        `blocked.py` cannot reproduce, or a failure, which is reported)."""
        from tb_attention_plugin.logger import blocked

        index, entry = self._entry(site)
        plan = self._plans.get((site.path, index))
        if (plan is None or plan.mode not in ("pooled", "stream")
                or bound.get("return_attention_scores")):
            return None
        inputs = bound.get("inputs")
        if not blocked.supports_single(site.layer, inputs):
            return None
        try:
            output, reduced = blocked.blocked_call(
                site.layer, inputs, bound.get("mask"), bound.get("training"),
                bool(bound.get("use_causal_mask")), plan.block, plan.windows,
                on_chunk=self._chunk_hook(plan))
            entry["reduced"] = {k: self._convert(v) for k, v in reduced.items()}
            entry["scores"] = None
        except Exception as e:
            self._failed(site, e)
            return None
        return output

    def _shadow_masked_softmax(self, site, original):
        def masked_softmax(attention_scores, attention_mask=None, *args, **kwargs):
            self._record_logits(site, attention_scores, attention_mask, head_axis=1)
            return original(attention_scores, attention_mask, *args, **kwargs)

        return masked_softmax

    # ------------------------------------------------------------- _compute_attention

    def _shadow_compute_attention(self, site, original):
        method = _ScoreMethod(site.layer, original)

        def compute_attention(query, key, value, attention_mask=None, training=None, *args,
                              **kwargs):
            kwargs.update(zip(method.later_names, args))
            call = _AttentionCall(site, original, query, key, value, attention_mask, training,
                                  kwargs)
            return self._stock_attention(call, method)

        return compute_attention

    def _stock_attention(self, call, method):
        """One `_compute_attention` call, as the call's plan wants it."""
        from tb_attention_plugin.logger import blocked

        index, entry = self._entry(call.site)
        plan = self._plans.get((call.site.path, index))
        mode = "full" if plan is None else plan.mode
        if self._shapes_only or mode == "skip":
            return self._stock_shape_or_skip(call, entry)
        wanted = method.wanted(call.kwargs)
        if (mode in ("pooled", "stream") and not wanted
                and blocked.supports(call.site.layer, call.query, call.key, call.value)):
            return self._stock_blocked(call, entry, plan)
        if mode == "stream" and not wanted:
            return self._unstreamed(call.site, entry, plan, call.plain)
        return self._stock_scores(call, entry, method, wanted)

    def _stock_shape_or_skip(self, call, entry):
        """The shape pass (record the full shape) or a skipped layer: the layer's own path."""
        query, key = call.query, call.key
        entry["max_logit"] = None  # nothing is measured in this mode
        if self._shapes_only and len(query.shape) == 4 and len(key.shape) == 4:
            shape = (query.shape[0], query.shape[2], query.shape[1], key.shape[1])
            if call.kwargs.get("use_causal_mask"):
                entry["mask_causal"] = True  # no need to build the [Tq, Tk] mask
            self._record_shape(entry, shape, call.attention_mask)
        entry.setdefault("scores", None)
        entry["skipped"] = True
        return call.plain()

    def _stock_blocked(self, call, entry, plan):
        """A POOLED (or STREAMED) layer computed in query chunks: its full scores never
        exist; the blocked pass measures the max logit itself."""
        from tb_attention_plugin.logger import blocked

        entry["max_logit"] = None  # the first chunk's softmax must not record one
        try:
            # The causal part is built per chunk: no [Tq, Tk] mask is materialised.
            output, reduced = blocked.blocked_attention(
                call.site.layer, call.query, call.key, call.value, call.attention_mask,
                plan.block, plan.windows, causal=bool(call.kwargs.get("use_causal_mask")),
                on_chunk=self._chunk_hook(plan))
            entry["reduced"] = {k: self._convert(v) for k, v in reduced.items()}
            entry["scores"] = None
        except Exception as e:
            self._failed(call.site, e)
            return call.plain()
        return output, None

    def _stock_scores(self, call, entry, method, wanted):
        """The layer's own pass, asked for its scores, which are recorded; returns what the
        caller expected (the scores only when it asked for them)."""
        from tb_attention_plugin.logger import blocked

        layer, kwargs = call.site.layer, call.kwargs
        kwargs.pop("return_attention_scores", None)
        forced = dict(kwargs, return_attention_scores=True) if method.takes_flag else kwargs
        restore = None
        if not method.takes_flag and "_return_attention_scores" in layer.__dict__:
            restore = layer.__dict__["_return_attention_scores"]
            object.__setattr__(layer, "_return_attention_scores", True)
        try:
            output, scores = call.original(call.query, call.key, call.value,
                                           attention_mask=call.attention_mask,
                                           training=call.training, **forced)
        except Exception as e:
            self._failed(call.site, e)
            if method.takes_flag:
                kwargs["return_attention_scores"] = wanted
            return self._restored(layer, restore, call.plain)
        self._restored(layer, restore, None)
        mask = call.combined_mask() if scores is not None else call.attention_mask
        if (scores is not None and entry.get("max_logit") is None
                and blocked.supports(layer, call.query, call.key, call.value)):
            # Only where the layer's softmax was not seen (`_record_logits`).
            try:
                entry["max_logit"] = self._convert(
                    blocked.max_logit(layer, call.query, call.key, mask))
            except Exception:
                pass  # the scores stay; only the logit measure is missing
        self._record(call.site, scores, mask)
        return output, scores

    @staticmethod
    def _restored(layer, value, then):
        """Puts `_return_attention_scores` back (when it was set), then runs `then`."""
        if value is not None:
            object.__setattr__(layer, "_return_attention_scores", value)
        return None if then is None else then()

    # -------------------------------------------------------------------- streaming

    def _chunk_hook(self, plan):
        """`blocked_attention`'s `on_chunk` for the health measures (a plan with `chunks`: mode
        "stream", or a displayed "pooled" layer measured in the same pass), else None."""
        if plan.chunks is None:
            return None
        from tb_attention_plugin.logger import chunk_feed

        return chunk_feed.hook(plan.chunks, self._symbolic)

    def _unstreamed(self, site, entry, plan, plain):
        """A "stream" layer that cannot be computed in chunks runs its plain attention: its
        full scores are what the budget avoids, so the health pass gets no chunks."""
        plan.chunks.unsupported(
            "pooled, and %s attention is not computed in query chunks: its full matrices "
            "do not fit max_bytes_per_step" % type(site.layer).__name__)
        entry["max_logit"] = None
        entry.setdefault("scores", None)
        entry["skipped"] = True
        return plain()

    # ----------------------------------------------------------------- _apply_scores

    def _shadow_apply_scores(self, site, original):
        def apply_scores(scores, value, scores_mask=None, training=False):
            def plain():
                return original(scores, value, scores_mask=scores_mask, training=training)

            index, entry = self._entry(site)
            plan = self._plans.get((site.path, index))
            if plan is not None and plan.mode == "stream":
                return self._unstreamed(site, entry, plan, plain)
            if not (self._shapes_only or (plan is not None and plan.mode == "skip")):
                self._record_logits(site, scores, scores_mask, head_axis=None)
            output, weights = plain()
            self._after_apply_scores(site, weights, scores_mask)
            return output, weights

        return apply_scores

    def _after_apply_scores(self, site, weights, scores_mask):
        """Records the weights an `_apply_scores` call made (or only their shape)."""
        index, entry = self._entry(site)
        if self._shapes_only:
            shape = tuple(weights.shape)
            if entry.get("causal_flag"):
                entry["mask_causal"] = True  # no need to read the [Tq, Tk] mask back
            self._record_shape(entry, (shape[0], 1) + shape[1:], scores_mask)
            entry["skipped"] = True
            return
        plan = self._plans.get((site.path, index))
        if plan is not None and plan.mode == "skip":
            entry["scores"], entry["skipped"] = None, True
            return
        self._record(site, weights, scores_mask)
