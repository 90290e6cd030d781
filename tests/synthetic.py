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
