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


def _row_values(weights, query_position, key_position, key_width, row_max=None):
    """Per-row statistics of `[B, H, n, K]` rows over K keys of `key_width` positions each
    (1 for exact rows; a block's width for overview rows, whose `weights` are per-key block
    means). Returns `({name: [B, H, n]}, valid [B, H, n], entropy_valid [B, H, n])`."""
    attended = ~np.isnan(weights)
    kept = np.where(attended, weights, np.float32(0)).astype(np.float64)
    mass = kept * key_width
    row_sum = mass.sum(axis=-1)
    keys = np.where(attended, key_width, 0).sum(axis=-1)
    valid = (keys > 0) & (row_sum > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = mass / np.where(valid, row_sum, 1)[..., np.newaxis]
        per_key = p / key_width
        logs = np.log(per_key, where=per_key > 0, out=np.zeros_like(per_key))
        entropy = -(p * logs).sum(axis=-1) / np.log(np.maximum(keys, 2))
    distance = np.abs(np.asarray(query_position, np.float64)[:, np.newaxis] - key_position)
    values = {
        "entropy": entropy,
        "max_weight": kept.max(axis=-1) if row_max is None else row_max,
        "mean_distance": (mass * distance).sum(axis=-1),
        "first_token_share": kept[..., 0],
    }
    return values, valid, valid & (keys > 1)


def pooled_statistics(means, maxes, block, shape, exact_rows=(), image_grid=None, first_key=None):
    """`example_statistics` of a POOLED step (docs/format.md), `{name: float32 [B, H]}`.

    Rows stored exactly (windows over all keys, `exact_rows` as `(q0, weights [B, H, n, Tk])`)
    count as themselves, with the formulas of `head_statistics`. Every other query row takes
    the statistics of its block row of the overview, read as a row of `nk` keys each as wide
    as its block with the block's mean weight on every one of its positions:

    - `entropy`: of that row, uniform within each block (equal to the row's when weights are
      uniform within blocks, otherwise above it), over `ln` of the keys in unmasked blocks;
    - `max_weight`: the largest block MAX of the block row (the largest weight of any of its
      rows: at least each row's own largest weight);
    - `mean_distance`: `sum_j mass_j |centre_i - centre_j|` between block centres (`null`
      with a patch grid);
    - `first_token_share`: the mean weight per key of the first key block (below a sink's
      weight on key 0 when the block is wider than 1).

    `first_key`, float32 `[B, H, Tq]` (a stored window of every query over key 0, NaN =
    masked), makes key 0 exact: `first_token_share` is then each row's own weight on key 0,
    and the entropy splits the first block into key 0 (the mean over the block row's queries
    of that weight) and the rest of the block (its remaining mass, uniform).

    Each statistic is the mean over the rows, each block row counting as many times as it has
    query rows not stored exactly.

    >>> w = np.full((1, 1, 8, 8), 1 / 8, np.float32)
    >>> means, maxes = np.full((1, 1, 2, 2), 1 / 8, np.float32), np.full((1, 1, 2, 2), 1 / 8)
    >>> stats = pooled_statistics(means, maxes, (4, 4), (1, 1, 8, 8), [(6, w[:, :, 6:])])
    >>> round(float(stats["entropy"][0, 0]), 6), float(stats["max_weight"][0, 0])
    (1.0, 0.125)
    """
    batch, heads, tq, tk = shape
    totals = _RowTotals(batch, heads, skip_distance=image_grid is not None)
    exact = np.zeros(tq, bool)
    for q0, weights in exact_rows:
        weights = np.asarray(weights, np.float32)
        rows = np.arange(q0, q0 + weights.shape[2])
        new = ~exact[rows]
        exact[rows] = True
        totals.add(*_row_values(weights, rows, np.arange(tk, dtype=np.float64), np.ones(tk)),
                   multiplicity=new.astype(np.float64))
    grid = _BlockGrid(block, shape, means.shape[-2:])
    remaining = np.array([(~exact[a:a + w]).sum() for a, w in grid.query_spans()], np.float64)
    maxes = np.asarray(maxes, np.float64)
    with np.errstate(invalid="ignore"):
        row_max = np.where(np.isnan(maxes), -np.inf, maxes).max(axis=-1)
    means = np.asarray(means, np.float64)
    share = None if first_key is None else grid.first_key_share(first_key)
    if share is not None and grid.key_width[0] > 1:
        means = grid.split_first_key(means, share)
    values, valid, entropy_valid = _row_values(
        means, grid.query_centre, grid.key_centre, grid.key_width, row_max=row_max,
    )
    if share is not None:
        values["first_token_share"] = np.where(np.isnan(share), 0.0, share)
    totals.add(values, valid, entropy_valid, multiplicity=remaining)
    return totals.means()


class _RowTotals:
    """Running sums of per-row statistics `[B, H, rows]`, each row counted `multiplicity`
    times, and their means per example and head."""

    def __init__(self, batch, heads, skip_distance):
        self.names = [name for name in STATISTICS
                      if not (skip_distance and name == "mean_distance")]
        self.totals = {name: np.zeros((batch, heads)) for name in STATISTICS}
        self.counts = {name: np.zeros((batch, heads)) for name in STATISTICS}

    def add(self, values, valid, entropy_valid, multiplicity):
        for name in self.names:
            ok = entropy_valid if name == "entropy" else valid
            weight = np.where(ok, multiplicity, 0)
            self.totals[name] += (np.where(ok, values[name], 0) * weight).sum(axis=-1)
            self.counts[name] += weight.sum(axis=-1)

    def means(self):
        """`{name: float32 [B, H]}`, NaN where no row counted."""
        result = {}
        for name in STATISTICS:
            count = self.counts[name]
            with np.errstate(invalid="ignore", divide="ignore"):
                result[name] = np.where(
                    count > 0, self.totals[name] / np.maximum(count, 1), np.nan
                ).astype(np.float32)
        return result


class _BlockGrid:
    """Where the overview blocks of a pooled step lie: their starts, widths and centres."""

    def __init__(self, block, shape, blocks):
        _, _, tq, tk = shape
        (bq, bk), (nq, nk) = block, blocks
        key_start = np.arange(nk) * bk
        self.key_width = (np.minimum(key_start + bk, tk) - key_start).astype(np.float64)
        self.key_centre = key_start + (self.key_width - 1) / 2.0
        self.query_start = np.arange(nq) * bq
        self.query_width = np.minimum(self.query_start + bq, tq) - self.query_start
        self.query_centre = self.query_start + (self.query_width - 1) / 2.0

    def query_spans(self):
        """`(first row, rows)` of each block row."""
        return zip(self.query_start, self.query_width)

    def first_key_share(self, first_key):
        """The mean weight on key 0 of each block row's queries, `[B, H, nq]` (NaN where
        masked), from `first_key` `[B, H, Tq]`."""
        column = np.asarray(first_key, np.float64)
        with np.errstate(invalid="ignore"):
            return np.stack([_nan_mean(column[..., a:a + w]) for a, w in self.query_spans()],
                            axis=-1)

    def split_first_key(self, means, share):
        """`means` with key 0 exact (`share`) and the rest of the first block uniform with
        the mass left; the grid's key widths and centres follow."""
        width = self.key_width[0]
        block0 = means[..., 0] * width
        key0 = np.where(np.isnan(share), means[..., 0], np.minimum(share, block0))
        rest = np.maximum(block0 - key0, 0) / (width - 1)
        self.key_width = np.concatenate([[1.0, width - 1], self.key_width[1:]])
        self.key_centre = np.concatenate([[0.0, self.key_width[1] / 2.0], self.key_centre[1:]])
        return np.concatenate([key0[..., None], rest[..., None], means[..., 1:]], axis=-1)


def _nan_mean(values):
    count = (~np.isnan(values)).sum(axis=-1)
    total = np.where(np.isnan(values), 0, values).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


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
