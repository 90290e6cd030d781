"""Per-head attention statistics and attention rollout (numpy only).

Everything here works on float32 weights in which NaN marks a masked position (padding, a
causal future key, a `mask` entry of `False`), as `encoding.codes_to_weights` returns them.
Nothing here reads files: `server/aggregates.py` feeds these functions from TensorBoard's data
provider, and the Keras callback calls `head_statistics` on the probe's scores.

Example:

>>> import numpy as np
>>> uniform = np.full((1, 4, 4), 0.25, np.float32)   # one head, 4 queries, 4 keys
>>> stats = head_statistics(uniform)
>>> sorted(stats)
['entropy', 'first_token_share', 'max_weight', 'mean_distance']
>>> [round(float(stats[name][0]), 3) for name in sorted(stats)]
[1.0, 0.25, 0.25, 1.25]
"""

import numpy as np

STATISTICS = ("entropy", "max_weight", "mean_distance", "first_token_share")

def _as_batch(weights):
    """Returns float32 `[B, H, Tq, Tk]` from `[H, Tq, Tk]` or `[B, H, Tq, Tk]`."""
    array = np.asarray(weights, dtype=np.float32)
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise ValueError(
            "weights must have shape [heads, Tq, Tk] or [batch, heads, Tq, Tk], got %s"
            % (tuple(array.shape),)
        )
    if 0 in array.shape:
        raise ValueError("weights has an empty axis: shape %s" % (tuple(array.shape),))
    if np.isinf(array).any():
        raise ValueError("weights contains Inf (NaN marks masked positions; Inf is not allowed)")
    return array


def _distances(query_length, key_length, image_grid, prefix_tokens):
    """Returns `(distance [Tq, Tk] float32, query_has_position [Tq], key_has_position [Tk])`."""
    if image_grid is None:
        if prefix_tokens:
            raise ValueError("prefix_tokens is only meaningful together with image_grid")
        queries = np.arange(query_length, dtype=np.float32)[:, np.newaxis]
        keys = np.arange(key_length, dtype=np.float32)[np.newaxis, :]
        everywhere = np.ones(query_length, bool), np.ones(key_length, bool)
        return np.abs(queries - keys), everywhere[0], everywhere[1]
    try:
        rows, cols = (int(n) for n in image_grid)
    except (TypeError, ValueError):
        raise ValueError("image_grid must be (rows, cols), got %r" % (image_grid,)) from None
    prefix_tokens = int(prefix_tokens)
    if rows <= 0 or cols <= 0 or prefix_tokens < 0:
        raise ValueError(
            "image_grid %r and prefix_tokens %d must be positive / non-negative"
            % (image_grid, prefix_tokens)
        )
    if rows * cols + prefix_tokens != key_length:
        raise ValueError(
            "image_grid %dx%d with %d prefix tokens needs %d key positions, the weights have %d"
            % (rows, cols, prefix_tokens, rows * cols + prefix_tokens, key_length)
        )
    if query_length != key_length:
        raise ValueError(
            "a patch grid needs self-attention over patches (Tq == Tk), got Tq=%d, Tk=%d"
            % (query_length, key_length)
        )
    patch = np.arange(key_length) - prefix_tokens
    has_position = patch >= 0
    row = np.where(has_position, patch // cols, 0).astype(np.float32)
    col = np.where(has_position, patch % cols, 0).astype(np.float32)
    distance = np.hypot(row[:, np.newaxis] - row, col[:, np.newaxis] - col)
    return distance.astype(np.float32), has_position, has_position


def _mean_over_rows(values, valid):
    """Mean of `values [B, H, Tq]` over rows where `valid`; NaN for `[B, H]` without any."""
    count = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def example_statistics(weights, image_grid=None, prefix_tokens=0):
    """Per-example, per-head statistics: a dict of float32 arrays `[B, H]` (NaN: no valid row).

    Same arguments and formulas as `head_statistics`, without the mean over examples.

    Example:

    >>> import numpy as np
    >>> weights = np.stack([np.eye(4, dtype=np.float32)[None], np.full((1, 4, 4), 0.25)])
    >>> example_statistics(weights)["max_weight"].tolist()   # [B=2, H=1]
    [[1.0], [0.25]]
    """
    batch = _as_batch(weights)
    _, _, query_length, key_length = batch.shape
    distance, query_has_position, key_has_position = _distances(
        query_length, key_length, image_grid, prefix_tokens
    )

    attended = ~np.isnan(batch)
    kept = np.where(attended, batch, np.float32(0))
    unmasked_keys = attended.sum(axis=-1)
    row_sum = kept.sum(axis=-1)
    # A fully masked row, or an all-zero one (Keras >= 3.10 zeroes padded query rows), is no
    # attention distribution: it is padding, not a head that attends to nothing.
    valid = (unmasked_keys > 0) & (row_sum > 0)

    with np.errstate(invalid="ignore", divide="ignore"):
        probabilities = kept / np.where(valid, row_sum, 1)[..., np.newaxis]
        log_probabilities = np.log(probabilities, where=probabilities > 0, out=np.zeros_like(kept))
        row_entropy = -(probabilities * log_probabilities).sum(axis=-1)
        row_entropy = row_entropy / np.log(np.maximum(unmasked_keys, 2))

    positional = np.where(key_has_position, kept, np.float32(0))
    positional_sum = positional.sum(axis=-1)
    weighted_distance = (positional * distance).sum(axis=-1)
    if image_grid is None:
        row_distance = weighted_distance
        distance_valid = valid
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            row_distance = weighted_distance / np.where(positional_sum > 0, positional_sum, 1)
        distance_valid = valid & (positional_sum > 0) & query_has_position

    result = {
        "entropy": _mean_over_rows(row_entropy, valid & (unmasked_keys > 1)),
        "max_weight": _mean_over_rows(kept.max(axis=-1), valid),
        "mean_distance": _mean_over_rows(row_distance, distance_valid),
        "first_token_share": _mean_over_rows(kept[..., 0], valid),
    }
    return {name: result[name].astype(np.float32) for name in STATISTICS}


def mean_over_examples(statistics):
    """Averages `example_statistics` output `{name: [B, H]}` into `{name: [H]}`, skipping NaN."""
    result = {}
    for name, values in statistics.items():
        values = np.asarray(values, dtype=np.float64)
        present = ~np.isnan(values)
        count = present.sum(axis=0)
        total = np.where(present, values, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(
                np.float32
            )
    return result


def head_statistics(weights, image_grid=None, prefix_tokens=0):
    """Summarises each attention head in four numbers.

    Args:
      weights: float32 `[H, Tq, Tk]`, or `[B, H, Tq, Tk]` for several examples; NaN = masked.
      image_grid: `(rows, cols)` of the patch grid for vision self-attention, or None for
        sequences. Needs `Tq == Tk == prefix_tokens + rows * cols`.
      prefix_tokens: number of leading non-patch positions (class / register tokens); only
        with `image_grid`. Position `prefix_tokens + r * cols + c` is patch `(r, c)`.

    Returns:
      `{"entropy", "max_weight", "mean_distance", "first_token_share"}`, each float32 `[H]`;
      NaN for a head without a single row the statistic can use.

    Rows. For query row `i` of one example and head, `w_ij` are the unmasked weights and `K_i`
    their number. A row is *valid* when `K_i > 0` and `sum_j w_ij > 0`; fully masked rows and
    all-zero rows (how Keras >= 3.10 fills padded queries) are padding and ignored everywhere.
    Each statistic is the mean over the rows it can use, computed per example and then averaged
    over the examples that have such rows (each example counts once, whatever its length).

    - `entropy = -sum_j p_ij ln p_ij / ln K_i` with `p_ij = w_ij / sum_j w_ij` (the row
      renormalised, which only removes quantisation drift from a softmax row); rows with
      `K_i <= 1` are skipped (one key leaves no choice). 1 = uniform over the keys the query
      could see (causal rows are normalised by their own count), 0 = one-hot.
    - `max_weight = max_j w_ij`.
    - `mean_distance`, sequences: `sum_j w_ij |i - j|` in positions (raw weights, masked keys
      count 0). With a patch grid: `sum_j w_ij d_ij / sum_j w_ij`, both sums over patch keys
      only, `d_ij` the Euclidean distance between the centres of patches `i` and `j` in patch
      units (right neighbour 1, diagonal neighbour sqrt 2). Query rows of prefix tokens are
      skipped (a class token has no place in the image), and so are rows with no weight on
      patches. Renormalising over patches makes this "how far does this query look, when it
      looks at the image", so a head that parks most weight on [CLS] does not pass for a local
      one; `first_token_share` reports that weight instead.
    - `first_token_share = w_i0`, the weight on key 0 (0 when key 0 is masked): attention
      sinks in language models, the [CLS] token in BERT and ViT.

    Example:

    ```python
    weights = np.full((2, 4, 4), 0.25, np.float32)         # 2 uniform heads over 4 tokens
    weights[1] = np.eye(4)                                  # head 1 attends to itself only
    stats = head_statistics(weights)
    stats["entropy"]        # array([1., 0.], dtype=float32)
    stats["mean_distance"]  # array([1.25, 0.], dtype=float32)

    vit = np.full((12, 197, 197), 1 / 197, np.float32)     # ViT-B/16 layer at 224x224
    head_statistics(vit, image_grid=(14, 14), prefix_tokens=1)
    ```
    """
    return mean_over_examples(example_statistics(weights, image_grid, prefix_tokens))


def attention_rollout(layers, residual=True):
    """Attention rollout (Abnar & Zuidema, 2020): how much each top-layer position draws on
    each input position through all layers.

    Args:
      layers: per-layer head-averaged self-attention matrices `[T, T]`, bottom layer first
        (a list, or an array `[L, T, T]`). NaN (masked) counts as weight 0.
      residual: model the residual connection: `A_hat = 0.5 * A + 0.5 * I`.

    Returns:
      float32 `[T, T]`: `R = N(A_hat_L) @ ... @ N(A_hat_2) @ N(A_hat_1)`, where `N` divides
      every row by its sum (rows that sum to 0 stay 0). Row `i` is the top layer's position `i`,
      column `j` the input token `j`.

    Raises:
      ValueError: no layers, a matrix that is not 2-D and square, different sizes, negative
        or infinite values.

    Example:

    ```python
    layers = [np.full((3, 3), 1 / 3, np.float32), np.eye(3, dtype=np.float32)]
    attention_rollout(layers)                  # 1/6 off the diagonal, 2/3 on it
    attention_rollout(layers, residual=False)  # uniform 1/3
    ```
    """
    matrices = [np.asarray(layer, dtype=np.float64) for layer in layers]
    if not matrices:
        raise ValueError("attention_rollout needs at least one layer")
    size = None
    for index, matrix in enumerate(matrices):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                "layer %d: rollout needs square [T, T] self-attention, got shape %s"
                % (index, tuple(matrix.shape))
            )
        if size is None:
            size = matrix.shape[0]
        elif matrix.shape[0] != size:
            raise ValueError(
                "layer %d has %d tokens, layer 0 has %d: rollout needs one token axis for all"
                % (index, matrix.shape[0], size)
            )
        if np.isinf(matrix).any() or (matrix < 0).any():
            raise ValueError("layer %d holds negative or infinite weights" % index)
    if size == 0:
        raise ValueError("attention_rollout needs at least one token")
    identity = np.eye(size)
    rollout = identity
    for matrix in matrices:
        matrix = np.nan_to_num(matrix, nan=0.0)
        if residual:
            matrix = 0.5 * matrix + 0.5 * identity
        row_sum = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, row_sum, out=np.zeros_like(matrix), where=row_sum > 0)
        rollout = matrix @ rollout
    return rollout.astype(np.float32)
