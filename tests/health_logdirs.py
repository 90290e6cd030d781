"""A run whose head health is known, for the health view's browser tests and the screenshots.

Run "health", causal self-attention over TOKENS (10 tokens, 2 examples), steps 0..600 by 100:

- "lm/layer_0" (3 heads), written with `attention()` only, so the server computes its measures:
  head 0 attends uniformly over the visible keys at every step (diffuse); head 1 is uniform
  until step 200 and a previous-token head (0.9 on the previous key) from step 300
  (EMERGE_STEP); head 2 is uniform until step 300 and one-hot on the first token from step 400
  (COLLAPSE_STEP: its entropy falls to the floor as it becomes a first-token head, which the
  alarms read as its role, not as a collapse).
- "lm/layer_1" (2 heads): attention steps plus health records written with
  `AttentionWriter.health` from `health.head_health(..., logits=...)`: head 0's largest logit
  grows past 100 at LOGIT_STEP, and from L1_COLLAPSE_STEP the head is one-hot on the key two
  before each query, a position no role names (an entropy collapse without a role); head 1 is a
  previous-token head throughout.

Run "long" (LONG_TOKENS causal positions, 2 examples, steps 0 and 100): "lm/long" is stored
POOLED (an overview and windows, as the callback stores a layer over its byte budget) with the
health records the callback writes for it (measured from its query chunks, equal to
`head_health` on the full weights): head 0 uniform, head 1 a previous-token head from step 100.
"""

import numpy as np

from tb_attention_plugin import AttentionWriter
from tb_attention_plugin import health

# Token 0 is hostile: token text is user data and must reach the page as text only.
TOKENS = ["<img src=x onerror=alert(1)>The", "cat", "sat", "on", "the", "mat", "and", "then", "it", "slept"]
STEPS = list(range(0, 700, 100))
EMERGE_STEP = 300
COLLAPSE_STEP = 400
LOGIT_STEP = 400
L1_COLLAPSE_STEP = 500
LOGITS = {0: 10.0, 100: 20.0, 200: 40.0, 300: 80.0, 400: 150.0, 500: 160.0, 600: 170.0}
T = len(TOKENS)


def causal_mask():
    return np.tril(np.ones((T, T), dtype=bool))


def uniform_head():
    mask = causal_mask()
    return mask / mask.sum(axis=1, keepdims=True)


def previous_token_head():
    """0.9 on the previous key, 0.1 spread over the other visible keys (row 0: its one key)."""
    weights = np.zeros((T, T))
    weights[0, 0] = 1.0
    for i in range(1, T):
        weights[i, : i + 1] = 0.1 / i
        weights[i, i - 1] = 0.9
    return weights


def first_token_head():
    weights = np.zeros((T, T))
    weights[:, 0] = 1.0
    return weights


def two_back_head():
    """One-hot on the key two before each query (the first key for queries 0 to 2)."""
    weights = np.zeros((T, T))
    weights[np.arange(T), np.maximum(np.arange(T) - 2, 0)] = 1.0
    return weights


def layer0_weights(step, examples=2):
    heads = [uniform_head(),
             previous_token_head() if step >= EMERGE_STEP else uniform_head(),
             first_token_head() if step >= COLLAPSE_STEP else uniform_head()]
    return np.broadcast_to(np.stack(heads)[None], (examples, 3, T, T)).astype(np.float32)


def layer1_weights(step, examples=2):
    heads = [two_back_head() if step >= L1_COLLAPSE_STEP else uniform_head(), previous_token_head()]
    return np.broadcast_to(np.stack(heads)[None], (examples, 2, T, T)).astype(np.float32)


def layer1_logits(step, examples=2):
    logits = np.zeros((examples, 2, T, T), dtype=np.float32)
    logits[:, 0, T - 1, 0] = LOGITS[step]
    logits[:, 1, T - 1, 0] = 3.0
    return logits


LONG_TOKENS = 96
LONG_STEPS = [0, 100]


def long_weights(step, examples=2):
    """`[examples, 2, LONG_TOKENS, LONG_TOKENS]`: a uniform causal head, and a head that turns
    from uniform to previous-token at step 100."""
    t = LONG_TOKENS
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    previous = np.eye(t, k=-1)
    previous[0, 0] = 1.0
    heads = [uniform, previous if step >= 100 else uniform]
    return np.broadcast_to(np.stack(heads)[None], (examples, 2, t, t)).astype(np.float32)


def write_long_run(logdir):
    t = LONG_TOKENS
    tokens = ["w%d" % i for i in range(t)]
    mask = np.broadcast_to(np.tril(np.ones((t, t), bool))[None, None], (2, 1, t, t))
    with AttentionWriter(logdir / "long") as writer:
        for step in LONG_STEPS:
            weights = long_weights(step)
            writer.attention("lm/long", weights, step, query_tokens=tokens, key_tokens=tokens,
                             mask=mask, max_bytes=8 * 1024)
            writer.health("lm/long", health.head_health(weights, causal=True), step)


def write_health_logdir(logdir):
    """Writes runs "health" and "long" (see the module docstring) under `logdir`; returns
    `logdir`."""
    write_long_run(logdir)
    mask = np.broadcast_to(causal_mask()[None, None], (2, 1, T, T))
    with AttentionWriter(logdir / "health") as writer:
        for step in STEPS:
            writer.attention("lm/layer_0", layer0_weights(step), step, query_tokens=TOKENS, key_tokens=TOKENS,
                             mask=mask)
            weights = layer1_weights(step)
            writer.attention("lm/layer_1", weights, step, query_tokens=TOKENS, key_tokens=TOKENS, mask=mask)
            writer.health("lm/layer_1", health.head_health(weights, logits=layer1_logits(step), causal=True), step)
    return logdir
