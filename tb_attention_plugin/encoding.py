"""Encodes attention weights into the blobs of one step and decodes them again (numpy only).

See docs/format.md for the layout. Every writer (TensorFlow summary op, TensorFlow-free writer,
Keras callback) goes through `encode_step`; every reader goes through `decode_header` and
`decode_codes`.

Example:

>>> import numpy as np
>>> w = np.full((2, 3), 1 / 3, np.float32)
>>> blobs = encode_step(w, query_tokens=["a", "b"], key_tokens=["x", "y", "z"])
>>> header = decode_header(blobs[0])
>>> header["shape"]
[1, 1, 2, 3]
>>> weights = codes_to_weights(decode_codes(blobs[1], header), header["scales"][0])
>>> bool(abs(weights - 1 / 3).max() < 0.002)
True
"""

import json
import math
import numbers
import zlib

import numpy as np

from tb_attention_plugin import metadata
from tb_attention_plugin import png

ENCODING = "u8-zlib"
MASKED = 255
LEVELS = 254  # codes 0..254 carry weights; 255 is "masked"
MAX_ERROR = 1.0 / (2 * LEVELS)  # for weights in [0, 1]
# Weights a little outside [0, 1] are float rounding (fp16 softmax); further out is a user error.
RANGE_TOLERANCE = 1e-3
# One step's tensor must stay far below TensorBoard's 256 MiB gRPC response limit.
MAX_VALUES_PER_STEP = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024 * 1024
# A token longer than this many characters is stored as its first MAX_TOKEN_CHARS - 1 characters
# and "…" (the tab shows a token in one cell; a 10 kB "token" is a tokenizer bug, not a label).
MAX_TOKEN_CHARS = 256
TRUNCATED_TOKEN_MARK = "\u2026"
# Probe images are stored as PNG in every step's blobs: at most this many pixels per image
# (2048 x 2048), at most MAX_IMAGE_SIDE per side. Larger images are refused with a clear error.
MAX_IMAGE_PIXELS = 2048 * 2048
MAX_IMAGE_SIDE = 8192


class FormatError(ValueError):
    """Stored data that does not follow docs/format.md (corrupt, truncated or from the future)."""


def _as_numpy(value):
    """Converts numpy arrays, Python lists and eager framework tensors to numpy."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # TensorFlow eager tensor or torch tensor on CPU
    elif hasattr(value, "__array__") and not isinstance(value, np.ndarray):
        value = np.asarray(value)
    return np.asarray(value)


def normalize_weights(weights, name="weights"):
    """Validates attention weights and returns `(float32 [B, H, Tq, Tk], source_rank, dtype)`.

    Raises `TypeError` for non-numeric data and `ValueError` for a wrong rank, empty axes,
    NaN/Inf, values outside [0, 1] or a tensor too large for one step.
    """
    try:
        array = _as_numpy(weights)
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
    if array.size > MAX_VALUES_PER_STEP:
        raise ValueError(
            "%s has %d values, more than the %d one step may hold; log fewer examples, heads or "
            "tokens (shape %s)" % (name, array.size, MAX_VALUES_PER_STEP, tuple(array.shape))
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
    tokens = _as_numpy(tokens) if not isinstance(tokens, (list, tuple)) else tokens
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
    array = _as_numpy(mask)
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number):
            raise TypeError("%s must be boolean, got dtype %s" % (name, array.dtype))
        array = array != 0
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
    array = _as_numpy(images)
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
    if grid is None:
        grid, prefix_tokens = infer_patch_grid(key_length, prefix_tokens)
    else:
        if prefix_tokens is None:
            prefix_tokens = key_length - grid[0] * grid[1]
        if prefix_tokens < 0 or grid[0] * grid[1] + prefix_tokens != key_length:
            raise ValueError(
                "image_grid %s with %s prefix tokens does not match %d key positions"
                % (grid, prefix_tokens, key_length)
            )
    info = {
        "grid": grid,
        "prefix_tokens": int(prefix_tokens),
        "height": int(array.shape[1]),
        "width": int(array.shape[2]),
    }
    return [png.encode_png(np.ascontiguousarray(image)) for image in array], info


def quantize(matrix, mask=None):
    """Quantises one `[Tq, Tk]` float32 matrix. Returns `(uint8 codes, float scale)`."""
    attended = matrix if mask is None else matrix[mask]
    scale = np.float32(attended.max()) if attended.size else np.float32(0.0)
    if scale > 0:
        codes = np.rint(matrix * (np.float32(LEVELS) / scale)).astype(np.uint8)
    else:
        codes = np.zeros(matrix.shape, np.uint8)
    if mask is not None:
        codes[~mask] = MASKED
    return codes, float(scale)


def encode_step(
    weights,
    query_tokens=None,
    key_tokens=None,
    mask=None,
    images=None,
    image_grid=None,
    prefix_tokens=None,
    reduced=None,
):
    """Validates and encodes one step of one tag. Returns the list of blobs (bytes).

    Nothing is written here: all validation happens before a writer touches a file.
    """
    array, rank, source_dtype = normalize_weights(weights)
    batch, heads, tq, tk = array.shape
    source_shape = _as_numpy(weights).shape
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    mask = normalize_mask(mask, source_shape)
    image_blobs, image_info = [], None
    if images is not None:
        image_blobs, image_info = normalize_images(images, batch, tk, image_grid, prefix_tokens)
    payloads, scales = [], []
    for b in range(batch):
        for h in range(heads):
            codes, scale = quantize(array[b, h], None if mask is None else mask[b, h])
            payloads.append(zlib.compress(codes.tobytes(), 6))
            scales.append(scale)
    header = {
        "version": metadata.FORMAT_VERSION,
        "shape": [batch, heads, tq, tk],
        "source_rank": rank,
        "source_dtype": source_dtype,
        "encoding": ENCODING,
        "scales": scales,
        "query_tokens": query_tokens,
        "key_tokens": key_tokens,
        "image": image_info,
        "reduced": reduced,
    }
    header_blob = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return [header_blob] + payloads + image_blobs


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


def _check_tokens(header, key, length):
    tokens = header.get(key)
    if tokens is None:
        return
    batch = header["shape"][0]
    if not isinstance(tokens, list) or len(tokens) != batch:
        raise FormatError("header %s must hold %d token lists" % (key, batch))
    for example in tokens:
        if not isinstance(example, list) or len(example) != length:
            raise FormatError("header %s lists must have %d tokens" % (key, length))
        if not all(isinstance(t, str) for t in example):
            raise FormatError("header %s must hold strings" % key)


def decode_header(blob):
    """Parses and validates a step header. Raises `FormatError` for anything malformed."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) > MAX_HEADER_BYTES:
        raise FormatError("step header is missing or too large")
    try:
        header = json.loads(bytes(blob).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError("step header is not UTF-8 JSON: %s" % e) from None
    if not isinstance(header, dict):
        raise FormatError("step header is not a JSON object")
    version = header.get("version")
    if not _is_int(version) or version not in metadata.SUPPORTED_VERSIONS:
        raise FormatError(
            "step written in format version %r; this tb-attention reads version(s) %s: upgrade "
            "tb-attention" % (version, sorted(metadata.SUPPORTED_VERSIONS))
        )
    if header.get("encoding") != ENCODING:
        raise FormatError("unknown payload encoding %r" % header.get("encoding"))
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(_is_int(n) and n > 0 for n in shape)
    ):
        raise FormatError("step header shape must be 4 positive integers, got %r" % (shape,))
    batch, heads, tq, tk = shape
    if batch * heads * tq * tk > MAX_VALUES_PER_STEP:
        raise FormatError("step header shape %s is larger than any writer produces" % shape)
    scales = header.get("scales")
    if (
        not isinstance(scales, list)
        or len(scales) != batch * heads
        or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 + RANGE_TOLERANCE
            for s in scales
        )
    ):
        raise FormatError("step header must hold %d scales in [0, 1]" % (batch * heads))
    _check_tokens(header, "query_tokens", tq)
    _check_tokens(header, "key_tokens", tk)
    image = header.get("image")
    if image is not None:
        if not isinstance(image, dict):
            raise FormatError("step header image must be an object")
        grid, prefix = image.get("grid"), image.get("prefix_tokens")
        if (
            not isinstance(grid, list)
            or len(grid) != 2
            or not all(_is_int(n) and n > 0 for n in grid)
            or not _is_int(prefix)
            or prefix < 0
            or grid[0] * grid[1] + prefix != tk
        ):
            raise FormatError("step header image grid does not match the key axis")
    header.setdefault("reduced", None)
    return header


def blob_count(header):
    """Number of blobs a step with this header has."""
    batch, heads = header["shape"][:2]
    return 1 + batch * heads + (batch if header.get("image") else 0)


def payload_index(header, example, head):
    """Blob index of one head's payload; raises `IndexError` when out of range."""
    batch, heads = header["shape"][:2]
    if not (0 <= example < batch) or not (0 <= head < heads):
        raise IndexError(
            "example %d / head %d out of range (batch %d, heads %d)" % (example, head, batch, heads)
        )
    return 1 + example * heads + head


def image_index(header, example):
    """Blob index of one example's probe image; raises `IndexError` when absent."""
    batch, heads = header["shape"][:2]
    if not header.get("image"):
        raise IndexError("this step stores no probe images")
    if not 0 <= example < batch:
        raise IndexError("example %d out of range (batch %d)" % (example, batch))
    return 1 + batch * heads + example


def decode_codes(blob, header):
    """Decompresses one payload blob into `uint8 [Tq, Tk]`; `FormatError` when malformed."""
    return inflate_codes(blob, header)[0]


def inflate_codes(blob, header):
    """Returns `(codes uint8 [Tq, Tk], whole)` of one payload blob; `FormatError` when malformed.

    `whole` is True when the blob is exactly one zlib stream, nothing after its checksum (zlib
    has then checked the stored Adler-32 against these codes), so its deflate stream can be
    handed on as it is.

    >>> blob = encode_step(np.full((2, 2), 0.5, np.float32))[1]
    >>> codes, whole = inflate_codes(blob, {"shape": [1, 1, 2, 2]})
    >>> codes.tolist(), whole
    ([[254, 254], [254, 254]], True)
    """
    tq, tk = header["shape"][2:]
    expected = tq * tk
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(bytes(blob), expected + 1)  # bounded: no zip bombs
    except zlib.error as e:
        raise FormatError("payload is not valid zlib data: %s" % e) from None
    if len(raw) != expected or not inflater.eof:
        raise FormatError(
            "payload holds %s bytes, expected %d (%dx%d)"
            % (len(raw) if len(raw) <= expected else "more than %d" % expected, expected, tq, tk)
        )
    return np.frombuffer(raw, np.uint8).reshape(tq, tk), not inflater.unused_data


def codes_to_weights(codes, scale):
    """Dequantises codes into float32 weights, NaN where masked."""
    weights = codes.astype(np.float32) * (np.float32(scale) / np.float32(LEVELS))
    weights[codes == MASKED] = np.nan
    return weights
