"""Logdirs of long sequences for the tab's browser test, bench and README screenshot.

`write_long_logdir(path)` writes run "long" with `AttentionWriter`:

- tag "lm/pooled": 2 heads of causal self-attention at `tokens` (2048) positions with a
  first-token sink, written with a per-step budget (`max_bytes`) far below the full matrices, so
  the writer stores it POOLED (an overview of blocks plus exact windows: its defaults and the
  named window `WINDOW`);
- tag "lm/full": one such head stored in full (no budget).

`long_weights(tokens, heads, seed)` returns the logged weights (float32 [1, H, T, T], NaN-free;
the causal future is 0 and `long_mask` says which positions are masked), so tests compare what
the tab shows with what was logged.
"""

import numpy as np

from tb_attention_plugin import AttentionWriter
from tb_attention_plugin.encoding import default_windows

TOKENS = 2048
WORDS = ("the cat sat on a mat while rain fell over quiet hills and every river ran to sea "
         "under stars that watched old towns sleep").split()
# A named exact window: queries 1000-1063 over the first 256 keys (kept with the defaults:
# the last 64 queries over all keys, the first 64 queries).
WINDOW = ("middle", (1000, 1064), (0, 256))
WINDOW_ROWS = 64
POOLED_BUDGET = 512 * 1024  # bytes per step: far below the two full 2048x2048 heads (~3.4 MB)


def long_tokens(tokens=TOKENS):
    return ["%s%d" % (WORDS[i % len(WORDS)], i) for i in range(tokens)]


def long_mask(tokens=TOKENS):
    """Causal mask [T, T]: True where attended."""
    return np.tril(np.ones((tokens, tokens), dtype=bool))


def long_weights(tokens=TOKENS, heads=2, seed=0):
    """Causal softmax of N(0, 1) logits with +4 on key 0 (a first-token sink) and, for head 1,
    +3 on the previous token: float32 [1, heads, T, T], 0 in the masked future."""
    rng = np.random.default_rng(seed)
    mask = long_mask(tokens)
    out = np.empty((1, heads, tokens, tokens), np.float32)
    for h in range(heads):
        logits = rng.standard_normal((tokens, tokens)).astype(np.float32)
        logits[:, 0] += 4
        if h == 1:
            idx = np.arange(1, tokens)
            logits[idx, idx - 1] += 3
        logits = np.where(mask, logits, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out[0, h] = e / e.sum(axis=1, keepdims=True)
    return out


def write_long_logdir(logdir, tokens=TOKENS, steps=(0,), full=True):
    """Writes run "long" (tags "lm/pooled" and, with `full`, "lm/full") into `logdir`."""
    names = long_tokens(tokens)
    mask = long_mask(tokens)[None, None]
    with AttentionWriter(logdir / "long") as writer:
        for step in steps:
            weights = long_weights(tokens, 2, seed=step)
            writer.attention("lm/pooled", weights, step, query_tokens=names, key_tokens=names,
                             mask=np.broadcast_to(mask, weights.shape), max_bytes=POOLED_BUDGET,
                             windows=default_windows(weights.shape, WINDOW_ROWS, causal=True) + [WINDOW])
            if full:
                writer.attention("lm/full", weights[:, :1], step, query_tokens=names, key_tokens=names,
                                 mask=mask)
    return logdir
