"""How the adapters' probabilities reach the capture: the owner side of `capture._Patcher`.

`OwnerRecording` is mixed into the patcher that installs every shadow of a probe pass. For
each owner layer (`owners.py`) it shadows the layer's `call` (one call record per call, the
innermost running owner known to the op adapters, a registered function run after it) and
installs the adapters. An adapter *offers* what it sees with `offer_probabilities`; the
patcher's plan for that call decides what is kept: the shape (the shape pass), nothing (a
skipped layer), the reductions of a POOLED (or STREAMED) call, made a chunk of query rows at a
time by `blocked.reduce_in_chunks` (`chunked.ProbabilityRows`, `fused_op.FusedRows`), or the
probabilities, mask and logits (computed only then).

Example (an adapter's side):

```python
site = patcher.current_owner()
patcher.offer_probabilities(site, (B, H, T, S), lambda: (probs, mask, logits), mask=mask,
                            rows=lambda examples: ProbabilityRows(probs, logits, mask, examples))
```
"""

import inspect

from tb_attention_plugin.logger.adapters import chunked
from tb_attention_plugin.logger.adapters import fused_op
from tb_attention_plugin.logger.adapters import owners
from tb_attention_plugin.logger.adapters import registered
from tb_attention_plugin.logger.adapters import softmax_layer
from tb_attention_plugin.logger.adapters import softmax_op
from tb_attention_plugin.logger.adapters import values

# Call arguments that carry another sequence than the query (cross-attention).
_KEY_WORDS = ("key", "value", "encoder", "context", "memory")
_NOT_KEY_WORDS = ("mask", "cache", "bias", "index", "position", "training")

REGISTER_HINT = ("register a function that returns its probabilities with "
                 "tb_attention_plugin.register_attention(%s, fn) (README: \"Your own "
                 "attention layers\")")


def _rows_of(compute):
    """`rows(examples)` over the full probabilities `compute()` returns (a registered
    function's)."""
    def rows(examples):
        probs, mask, logits = compute()
        return chunked.ProbabilityRows(probs, logits, mask, examples)

    return rows


class OwnerRecording:
    """Mixin of `capture._Patcher`: owner layers' shadows and what the adapters offer."""

    def install_owners(self, sites):
        self._active_owners = []
        if not sites:
            return
        for site in sites:
            self._set(site.layer, "call", self._shadow_owner_call(site, site.layer.call))
            if registered.function_for(site.layer) is None:
                softmax_layer.install(self, site)
        softmax_op.install(self)
        fused_op.install(self)

    def set_attribute(self, target, name, value):
        """Sets `target.name` for the pass; `restore()` puts the old value back."""
        self._set(target, name, value)

    def current_owner(self):
        """The innermost owner layer running now (not a registered one), or None."""
        active = getattr(self, "_active_owners", None)
        if (not active or getattr(self, "_computing", False)
                or registered.function_for(active[-1].layer) is not None):
            return None  # (while computing, the adapters' own ops are not the layer's)
        return active[-1]

    def offer_probabilities(self, site, shape, compute, mask=None, causal=False,
                            source="", kv_heads=None, rows=None):
        """Keeps what the current call's plan wants of one probability tensor.

        `shape` `(B, H, Tq, Tk)`; `compute()` returns `(probs, mask, logits)` in that layout
        (mask and logits may be None), called only when they are kept in full; `rows(examples)`
        returns a kernel of `blocked.reduce_in_chunks` with `mask` and `causal` attributes
        (`chunked.ProbabilityRows`, `fused_op.FusedRows`), called for a POOLED or STREAMED
        call (None: rows of what `compute()` returns); `mask` the raw mask (read for causality
        in the shape pass); `causal` the op's own causal flag; `kv_heads` the key/value heads
        the adapter saw (grouped-query layouts, `groups.py`). The first offer of a call wins."""
        index, entry = self._entry(site)
        if "scores" in entry or entry.get("skipped"):
            return
        entry["causal_flag"] = entry.get("causal_flag") or causal
        entry["source"] = source
        entry["kv_heads"] = kv_heads
        plan = self._plans.get((site.path, index))
        if self._shapes_only:
            entry["max_logit"] = None
            self._record_shape(entry, shape, mask)
            entry["skipped"] = True
            return
        if plan is not None and plan.mode == "skip":
            entry["scores"], entry["max_logit"], entry["skipped"] = None, None, True
            return
        self._computing = True
        try:
            if plan is not None and plan.mode in ("pooled", "stream"):
                self._reduce_owner(entry, plan, rows or _rows_of(compute))
            else:
                self._keep_full(site, compute)
        except Exception as e:
            self._failed(site, e)
        finally:
            self._computing = False

    def logits_first(self, site, logits, mask=None):
        """Before a softmax runs on `logits` (`[B, ..., Tq, Tk]`, the layer's layout; `mask` as
        the softmax gets it): for a POOLED or STREAMED call, the largest logit of each head is
        measured now, a chunk of query rows at a time, and the logits the softmax must take are
        returned (in a traced graph they wait for the measure, so no copy of them outlives the
        softmax); None where nothing is measured now (the probabilities' offer measures them,
        and must then be given the logits)."""
        from tb_attention_plugin.logger import blocked

        index, entry = self._entry(site)
        plan = self._plans.get((site.path, index))
        if (self._shapes_only or plan is None or plan.mode not in ("pooled", "stream")
                or "scores" in entry or entry.get("skipped") or "logits_first" in entry):
            return None
        self._computing = True
        try:
            kernel = chunked.ProbabilityRows(None, logits, mask, _examples_reduced(plan))
            largest = blocked.chunked_max_logit(kernel, kernel.mask)
        except Exception:
            return None  # measured from the offer's logits instead
        finally:
            self._computing = False
        entry["logits_first"] = largest
        return blocked.serialise(logits, largest)

    def _keep_full(self, site, compute):
        probs, probs_mask, logits = compute()
        if logits is not None:
            self._record_logits(site, logits, probs_mask, head_axis=1)
        self._record(site, probs, probs_mask)

    def _reduce_owner(self, entry, plan, rows):
        """A POOLED (or STREAMED) call reduced a chunk of query rows at a time: no more than a
        chunk of its weights is held besides the reductions (`capture._blocked_record`)."""
        from tb_attention_plugin.logger import blocked
        from tb_attention_plugin.logger import chunk_feed

        kernel = rows(_examples_reduced(plan))
        _, reduced = blocked.reduce_in_chunks(
            kernel, kernel.mask, plan.block, plan.windows, kernel.causal,
            on_chunk=chunk_feed.plan_hook(plan, self._symbolic))
        if entry.get("logits_first") is not None:
            reduced["max_logit"] = entry["logits_first"]
        entry["reduced"] = {k: self._convert(v) for k, v in reduced.items()}
        entry["scores"], entry["max_logit"] = None, None

    def settle_owners(self, sites):
        """After the pass: owners that made no probabilities are dropped; those whose name
        says attention are reported, with the way to register them."""
        for site in sites:
            entries = self.calls.get(id(site), [])
            if not entries or any("scores" in e or e.get("skipped") for e in entries):
                continue
            for entry in entries:
                entry["skipped"] = True
            if owners.looks_like_attention(site.layer):
                self.problems.setdefault(
                    site.path, "no attention probabilities were made where the adapters look "
                    "(a Softmax sublayer, keras.ops.softmax, keras.ops.dot_product_attention); "
                    + REGISTER_HINT % type(site.layer).__name__)

    def _shadow_owner_call(self, site, original):
        signature = inspect.signature(original)
        function = registered.function_for(site.layer)

        def call(*args, **kwargs):
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = {}
            self.calls[id(site)].append({"same": self._same_sequence(bound),
                                         "causal_flag": False})
            self._active_owners.append(site)
            try:
                output = original(*args, **kwargs)
            finally:
                self._active_owners.pop()
            if function is not None:
                self._offer_registered(site, function, args, kwargs)
            return output

        return call

    def _offer_registered(self, site, function, args, kwargs):
        def compute():
            probs, mask = registered.split_result(function(site.layer, *args, **kwargs))
            import keras

            probs = keras.ops.convert_to_tensor(probs)
            return probs, mask, None

        self._computing = True
        try:
            shape = None if not self._shapes_only else tuple(compute()[0].shape)
        except Exception as e:
            self._failed(site, e)
            return
        finally:
            self._computing = False
        self.offer_probabilities(site, shape, compute, source="registered function")

    def _same_sequence(self, bound):
        """False when the call got another sequence (keys/values) than its first input."""
        arguments = list(bound.items())
        if not arguments:
            return True
        query = arguments[0][1]
        for name, value in arguments[1:]:
            lowered = name.lower()
            if (value is None or not hasattr(value, "shape")
                    or not any(w in lowered for w in _KEY_WORDS)
                    or any(w in lowered for w in _NOT_KEY_WORDS)):
                continue
            return values.same_sequence(query, value, self._symbolic)
        return True


def _examples_reduced(plan):
    """The examples a POOLED or STREAMED call is reduced over: those its plan keeps, or None
    (every example of the pass) where its chunks feed the head health too (`plan.chunks`; the
    stored overview is cut to the plan's examples afterwards, `blocked.finish`)."""
    return plan.examples if plan.chunks is None else None
