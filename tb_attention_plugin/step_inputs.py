"""Checks what a writer is given (weights, tokens, mask, probe images) and brings it to the
form the format stores (numpy only). Bad input raises `TypeError` / `ValueError` naming the
argument, before anything is written.

Example:

>>> import numpy as np
>>> weights, rank, dtype = normalize_weights(np.full((2, 3), 1 / 3, np.float16))
>>> weights.shape, rank, dtype
((1, 1, 2, 3), 2, 'float16')
>>> normalize_tokens(["a", "b"], batch=2, length=2, name="query_tokens")
[['a', 'b'], ['a', 'b']]
"""

import math
import numbers

import numpy as np

from tb_attention_plugin import png
from tb_attention_plugin.step_header import MAX_VALUES_PER_STEP, RANGE_TOLERANCE

# Full float32 weights a writer pools in one call (4 GiB of float32).
MAX_POOLED_INPUT_VALUES = 1 << 30
# A token longer than this many characters is stored as its first MAX_TOKEN_CHARS - 1 characters
# and "…" (the tab shows a token in one cell; a 10 kB "token" is a tokenizer bug, not a label).
MAX_TOKEN_CHARS = 256
TRUNCATED_TOKEN_MARK = "\u2026"
# Probe images are stored as PNG in every step's blobs: at most this many pixels per image
# (2048 x 2048), at most MAX_IMAGE_SIDE per side. Larger images are refused with a clear error.
MAX_IMAGE_PIXELS = 2048 * 2048
MAX_IMAGE_SIDE = 8192


def as_numpy(value):
    """Converts numpy arrays, Python lists and eager framework tensors to numpy."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # TensorFlow eager tensor or torch tensor on CPU
    elif hasattr(value, "__array__") and not isinstance(value, np.ndarray):
        value = np.asarray(value)
    return np.asarray(value)


def normalize_weights(weights, name="weights", max_values=MAX_VALUES_PER_STEP):
    """Validates attention weights and returns `(float32 [B, H, Tq, Tk], source_rank, dtype)`.

    Raises `TypeError` for non-numeric data and `ValueError` for a wrong rank, empty axes,
    NaN/Inf, values outside [0, 1] or a tensor too large for one step.
    """
    try:
        array = as_numpy(weights)
    except Exception as e:  # ragged lists, objects numpy cannot hold
        raise TypeError("%s must be a numeric array, got %r (%s)" % (name, type(weights), e))
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            "%s must hold real numbers (float16/32/64 or bfloat16), got dtype %s"
            % (name, array.dtype)
        )
    source_dtype = str(array.dtype)
    rank = array.ndim
    if rank not in (2, 3, 4):
        raise ValueError(
            "%s must have shape [Tq, Tk], [heads, Tq, Tk] or [batch, heads, Tq, Tk]; got rank %d "
            "shape %s" % (name, rank, tuple(array.shape))
        )
    if 0 in array.shape:
        raise ValueError("%s has an empty axis: shape %s" % (name, tuple(array.shape)))
    if array.size > max_values:
        raise ValueError(
            "%s has %d values, more than the %d one step may hold; log fewer examples, heads or "
            "tokens, or give max_bytes to store it pooled (shape %s)"
            % (name, array.size, max_values, tuple(array.shape))
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("%s contains NaN or Inf" % name)
    low, high = float(array.min()), float(array.max())
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            "%s must be attention probabilities in [0, 1] (after softmax); found values in "
            "[%g, %g]" % (name, low, high)
        )
    array = np.clip(array, 0.0, 1.0)
    while array.ndim < 4:
        array = array[np.newaxis]
    return array, rank, source_dtype


def normalize_tokens(tokens, batch, length, name):
    """Returns `None` or one list of `length` strings per example (`batch` lists).

    Accepts one list for all examples or one list per example; strings or UTF-8 bytes.
    """
    if tokens is None:
        return None
    tokens = as_numpy(tokens) if not isinstance(tokens, (list, tuple)) else tokens
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)):
        raise TypeError("%s must be a list of strings (or one list per example)" % name)
    per_example = len(tokens) > 0 and all(isinstance(t, (list, tuple)) for t in tokens)
    lists = list(tokens) if per_example else [tokens] * batch
    if len(lists) != batch:
        raise ValueError(
            "%s has token lists for %d examples but the weights have batch %d"
            % (name, len(lists), batch)
        )
    result = []
    for i, example in enumerate(lists):
        if len(example) != length:
            raise ValueError(
                "%s[%d] has %d tokens but the attention axis has length %d"
                % (name, i, len(example), length)
            )
        strings = []
        for token in example:
            if isinstance(token, bytes):
                token = token.decode("utf-8", errors="replace")
            if not isinstance(token, str):
                raise TypeError(
                    "%s must hold strings, got %r (%s)" % (name, token, type(token).__name__)
                )
            strings.append(truncate_token(token))
        result.append(strings)
    return result


def truncate_token(token):
    """`token`, or its first `MAX_TOKEN_CHARS - 1` characters and "…" when it is longer."""
    if len(token) <= MAX_TOKEN_CHARS:
        return token
    return token[: MAX_TOKEN_CHARS - 1] + TRUNCATED_TOKEN_MARK


def check_image_size(height, width, name="images"):
    """Raises `ValueError` when one probe image is larger than the stored format allows."""
    if height * width > MAX_IMAGE_PIXELS or max(height, width) > MAX_IMAGE_SIDE:
        raise ValueError(
            "%s are %dx%d pixels; at most %d pixels per image (e.g. 2048x2048) and %d per side "
            "are stored with every step: pass a downscaled copy (the tab draws attention over "
            "the patch grid, a few hundred pixels per side are plenty)"
            % (name, height, width, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE)
        )


def normalize_mask(mask, source_shape, name="mask"):
    """Returns a bool array `[B, H, Tq, Tk]` (True = attended) or `None`.

    `mask` must broadcast to the weights' shape as given (numpy rules).
    """
    if mask is None:
        return None
    array = boolean_array(mask, name)
    try:
        array = np.broadcast_to(array, source_shape)
    except ValueError:
        raise ValueError(
            "%s of shape %s does not broadcast to the weights' shape %s"
            % (name, tuple(array.shape), tuple(source_shape))
        ) from None
    while array.ndim < 4:
        array = array[np.newaxis]
    return array


def boolean_array(value, name):
    """`value` as a numpy bool array: booleans as they are, numbers true where non-zero;
    `TypeError` naming `name` for anything else."""
    array = as_numpy(value)
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number):
            raise TypeError("%s must be boolean, got dtype %s" % (name, array.dtype))
        array = array != 0
    return array


def infer_patch_grid(key_length, prefix_tokens=None):
    """Guesses `(grid, prefix_tokens)` for a ViT key axis: a square grid after 0 or 1 prefix."""
    candidates = [prefix_tokens] if prefix_tokens is not None else [1, 0]
    for prefix in candidates:
        side = math.isqrt(max(key_length - prefix, 0))
        if side > 0 and side * side == key_length - prefix:
            return [side, side], prefix
    raise ValueError(
        "cannot infer a square patch grid from %d key positions; pass image_grid=(rows, cols) "
        "and prefix_tokens" % key_length
    )


def whole_number(value, name, minimum):
    """Returns `value` as an int no smaller than `minimum`.

    Accepts Python and numpy integers and integral floats; raises `TypeError` for anything else
    and `ValueError` below `minimum`, both naming the argument.
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not float(value).is_integer()
    ):
        raise TypeError("%s must be an integer, got %r" % (name, value))
    number = int(value)
    if number < minimum:
        raise ValueError("%s must be an integer >= %d, got %d" % (name, minimum, number))
    return number


def normalize_images(images, batch, key_length, grid=None, prefix_tokens=None):
    """Returns `(png_blobs, image_info)` for probe images `[B, height, width, channels]`."""
    if prefix_tokens is not None:
        prefix_tokens = whole_number(prefix_tokens, "prefix_tokens", 0)
    if grid is not None:
        try:
            rows, cols = (grid.tolist() if isinstance(grid, np.ndarray) else grid)
        except (TypeError, ValueError):
            raise TypeError("image_grid must be (rows, cols), got %r" % (grid,)) from None
        grid = [whole_number(rows, "image_grid rows", 1), whole_number(cols, "image_grid cols", 1)]
    array = _image_pixels(images, batch)
    grid, prefix_tokens = _patch_layout(key_length, grid, prefix_tokens)
    info = {
        "grid": grid,
        "prefix_tokens": int(prefix_tokens),
        "height": int(array.shape[1]),
        "width": int(array.shape[2]),
    }
    return [png.encode_png(np.ascontiguousarray(image)) for image in array], info


def _image_pixels(images, batch):
    """uint8 `[B, height, width, 1|3|4]` of probe images: floats in [0, 1] scaled by 255,
    other ranges stretched to 0..255."""
    array = as_numpy(images)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "images must have shape [batch, height, width, 1|3|4], got %s" % (tuple(array.shape),)
        )
    if array.shape[0] != batch:
        raise ValueError(
            "images has %d examples but the weights have batch %d" % (array.shape[0], batch)
        )
    check_image_size(int(array.shape[1]), int(array.shape[2]))
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("images contains NaN or Inf")
        low, high = float(array.min()), float(array.max())
        if low >= 0 and high <= 1:
            array = array * 255.0
        elif high - low > 0 and (low < 0 or high > 255):
            array = (array - low) / (high - low) * 255.0  # e.g. standardised inputs
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return array


def _patch_layout(key_length, grid, prefix_tokens):
    """`(grid, prefix_tokens)` of the key axis: as given (checked against `key_length`), or
    inferred (`infer_patch_grid`) without a grid."""
    if grid is None:
        return infer_patch_grid(key_length, prefix_tokens)
    if prefix_tokens is None:
        prefix_tokens = key_length - grid[0] * grid[1]
    if prefix_tokens < 0 or grid[0] * grid[1] + prefix_tokens != key_length:
        raise ValueError(
            "image_grid %s with %s prefix tokens does not match %d key positions"
            % (grid, prefix_tokens, key_length)
        )
    return grid, prefix_tokens
