"""Synthetic attention weights shared by the tests."""

import numpy as np


def softmax_weights(shape, seed=0, sharpness=3.0):
    """Row-stochastic weights of `shape` (softmax over the last axis of random logits)."""
    logits = np.random.default_rng(seed).normal(size=shape).astype(np.float32) * sharpness
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def as_rank4(weights):
    """`weights` with leading axes added up to `[batch, heads, Tq, Tk]`, as the format stores them."""
    while weights.ndim < 4:
        weights = weights[np.newaxis]
    return weights


HEAD_KINDS = ("causal", "bidirectional", "vit")


def attention_head(kind, tokens, seed=0):
    """One head's weights `[T, T]` float32 and its mask (`None`: nothing masked), softmax of
    N(0, 1) logits shaped like a real head of `kind`:

    - "causal": a causal LM head with a first-token sink (+4 on key 0), future keys masked;
    - "bidirectional": an encoder head, every key attended;
    - "vit": a Vision Transformer head over a CLS token and a square patch grid, attending
      mostly to nearby patches (logits fall by 1/2 per patch of distance); `tokens` is rounded
      to 1 + side * side (128 -> 122, 1024 -> 1025, 4096 -> 4097).

    Built in float32 row blocks, so 8192 tokens take about 1 GB at the peak.
    """
    rng = np.random.default_rng(seed)
    if kind == "vit":
        side = max(1, int(round((tokens - 1) ** 0.5)))
        tokens = 1 + side * side
        patch = np.arange(tokens - 1)
        row, col = patch // side, patch % side
    elif kind not in HEAD_KINDS:
        raise ValueError("unknown head kind %r" % (kind,))
    weights = np.empty((tokens, tokens), np.float32)
    block = max(1, (1 << 22) // tokens)
    for start in range(0, tokens, block):
        stop = min(tokens, start + block)
        logits = rng.standard_normal((stop - start, tokens), dtype=np.float32)
        queries = np.arange(start, stop)[:, np.newaxis]
        if kind == "causal":
            logits[:, 0] += 4
            logits[np.arange(tokens)[np.newaxis, :] > queries] = -np.inf
        elif kind == "vit":
            logits *= 0.5
            q = np.clip(queries[:, 0] - 1, 0, None)
            distance2 = (row[q][:, np.newaxis] - row) ** 2 + (col[q][:, np.newaxis] - col) ** 2
            logits[:, 1:] -= (np.sqrt(distance2) / 2.0).astype(np.float32)
            logits[:, 0] += 2
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        weights[start:stop] = logits
    mask = np.tril(np.ones((tokens, tokens), bool)) if kind == "causal" else None
    return weights, mask


def row_entropy(weights):
    """Entropy (nats) of each row of `[Tq, Tk]` weights renormalised to sum 1, NaN = masked
    (what /stats averages); float64."""
    p = np.nan_to_num(np.asarray(weights, np.float64))
    p /= p.sum(axis=1, keepdims=True)
    logs = np.log(p, where=p > 0, out=np.zeros_like(p))
    return -(p * logs).sum(axis=1)
