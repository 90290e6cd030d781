"""Encodes attention weights into the blobs of one step and decodes them again (numpy only).

See docs/format.md for the layout. Every writer (TensorFlow summary op, TensorFlow-free writer,
Keras callback) goes through `encode_step`, `encode_attention` or `encode_pooled_step`; every
reader goes through `decode_header` and `decode_codes`. This module writes full steps and
chooses between full and pooled; the format's parts live in their own modules, whose public
names it re-exports (import them from here):

- `step_inputs`: checks of what writers are given (weights, tokens, mask, images);
- `step_header`: blob 0, the JSON header, and the blob indexes it implies;
- `step_payload`: one payload blob (zlib), its checks, its size bound, codes to weights;
- `codes_v1`, `codes_v2`: the two versions' codes and their stored bytes;
- `pooled_step`: the pooled layout (overview, windows, `choose_pooling`).

Format version 2 (written since) stores "faithful" log-linear codes (`u8-loglin-zlib`): every
weight of at least 1e-6 of its head's largest decodes within 2.8% of its value and within
`scale / 508` of it. Version 1 (`u8-zlib`, linear codes) is still read. `decode_codes` returns
uint8 codes for a version 1 payload and uint16 level indices for a version 2 payload;
`codes_to_weights` turns either into weights.

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
>>> header["version"], header["encoding"], str(decode_codes(blobs[1], header).dtype)
(2, 'u8-loglin-zlib', 'uint16')
"""

import json

import numpy as np

from tb_attention_plugin import metadata
from tb_attention_plugin import step_facts
from tb_attention_plugin.codes_v1 import LEVELS, MASKED, MAX_ERROR, quantize_v1  # noqa: F401
from tb_attention_plugin.codes_v2 import (  # noqa: F401 (re-exported)
    ESCAPE, LINEAR_FROM, LOG_FLOOR, LOG_LEVELS, LOG_STEP, MAX_RELATIVE_ERROR, V2_LEVELS,
    V2_MASKED, _rule_boundaries, level_rule_v2, pack_codes, quantize_v2, unpack_v2, v2_levels,
    v2_table,
)
from tb_attention_plugin.pooled_step import (  # noqa: F401 (re-exported)
    MAX_DEFAULT_WINDOW_ROWS, check_window, choose_pooling, decode_overview, decode_window,
    default_windows, encode_pooled_step, is_causal, pool, pooled_bytes_bound,
)
from tb_attention_plugin.pooled_step import nan_masked_codes as _nan_masked_codes  # noqa: F401
from tb_attention_plugin.step_header import (  # noqa: F401 (re-exported)
    ENCODING, ENCODING_V1, ENCODING_V2, ENCODINGS, LAYOUT_FULL, LAYOUT_POOLED, MAX_HEADER_BYTES,
    MAX_POOLED_VALUES, MAX_VALUES_PER_STEP, MAX_WINDOW_NAME, RANGE_TOLERANCE, FormatError,
    blob_count, decode_header, header_blob, image_index, is_pooled, overview_index,
    overview_shape, payload_checks, payload_index, pool_grid, window, window_index,
)
from tb_attention_plugin.step_inputs import (  # noqa: F401 (re-exported)
    MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_POOLED_INPUT_VALUES, MAX_TOKEN_CHARS,
    TRUNCATED_TOKEN_MARK, as_numpy, check_image_size, infer_patch_grid, normalize_images,
    normalize_mask, normalize_tokens, normalize_weights, truncate_token, whole_number,
)
from tb_attention_plugin.step_payload import (  # noqa: F401 (re-exported)
    PAYLOAD_SLACK, codes_to_weights, compressed_payloads, decode_codes, full_bytes_bound,
    inflate_codes, inflate_raw, is_plain_zlib, payload_bound, vouched_length,
)

def quantize(matrix, mask=None, version=None):
    """Quantises one `[Tq, Tk]` float32 matrix. Returns `(codes, float scale)`.

    Version 2 (the default, `metadata.FORMAT_VERSION`): uint16 level indices, `V2_MASKED`
    where masked. Version 1: uint8 linear codes, 255 where masked (kept to write version 1
    data for tests). `codes_to_weights(codes, scale)` decodes both.

    >>> codes, scale = quantize(np.array([[1.0, 0.01, 1e-5, 0.0]], np.float32))
    >>> [round(float(w), 7) for w in codes_to_weights(codes, scale)[0]]
    [1.0, 0.0097783, 1.01e-05, 0.0]
    """
    version = metadata.FORMAT_VERSION if version is None else version
    scale = _largest(matrix, mask)
    if version == 1:
        return quantize_v1(matrix, scale, mask), float(scale)
    if version != 2:
        raise ValueError("cannot write format version %r" % (version,))
    masked = None if mask is None else ~np.asarray(mask, bool)
    if scale > 0:
        return quantize_v2(matrix, scale, masked), float(scale)
    codes = np.zeros(np.shape(matrix), np.uint16)
    if masked is not None:
        codes[masked] = V2_MASKED
    return codes, float(scale)



def _largest(matrix, mask=None):
    """float32 largest value of `matrix` where `mask` (all of it when None); 0 when none."""
    if mask is None:
        return np.float32(matrix.max()) if matrix.size else np.float32(0.0)
    if not np.any(mask):
        return np.float32(0.0)
    return np.float32(np.max(matrix, where=mask, initial=-np.inf))  # no copy of the attended


def encode_step(weights, query_tokens=None, key_tokens=None, mask=None, images=None,
                image_grid=None, prefix_tokens=None, reduced=None, version=None, kv_heads=None,
                kv_group_size=None, query_special=None, key_special=None):
    """Validates and encodes one step of one tag. Returns the list of blobs (bytes).

    Nothing is written here: all validation happens before a writer touches a file.
    `version` is the format version to write: `metadata.FORMAT_VERSION` (2) unless given; 1
    writes the old linear codes (for tests of reading old data). No payload is larger than
    `payload_bound(Tq * Tk)`: a step whose faithful codes would be is written as version 1.
    `kv_heads` / `kv_group_size` and `query_special` / `key_special`: the optional facts of
    `step_facts` (key/value groups, special-token positions).
    """
    array, rank, source_dtype = normalize_weights(weights)
    batch, heads, tq, tk = array.shape
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    facts = step_facts.header_fields(
        step_facts.group_size(heads, kv_heads, kv_group_size),
        step_facts.special_positions(query_special, batch, tq, "query_special"),
        step_facts.special_positions(key_special, batch, tk, "key_special"))
    mask = normalize_mask(mask, as_numpy(weights).shape)
    image_blobs, image_info = [], None
    if images is not None:
        image_blobs, image_info = normalize_images(images, batch, tk, image_grid, prefix_tokens)
    version = metadata.FORMAT_VERSION if version is None else version
    if version not in ENCODINGS:
        raise ValueError("cannot write format version %r" % (version,))
    payloads, scales, lengths = _encode_payloads(array, mask, version)
    if version == 2 and max(len(p) for p in payloads) > payload_bound(tq * tk):
        # Faithful codes of weights spread evenly over [0, scale] (uniform random numbers, not
        # a softmax head) can take more than a byte per value; a payload never exceeds what one
        # byte per value compresses to at worst (size budgets count on it), so such a step is
        # written with version 1's linear codes.
        version = 1
        payloads, scales, lengths = _encode_payloads(array, mask, version)
    header = {"version": version, "shape": [batch, heads, tq, tk], "source_rank": rank,
              "source_dtype": source_dtype, "encoding": ENCODINGS[version], "scales": scales,
              "query_tokens": query_tokens, "key_tokens": key_tokens, "image": image_info,
              "reduced": reduced}
    header.update(facts)
    header.update(payload_checks(payloads, lengths))
    return [header_blob(header)] + payloads + image_blobs


def _encode_payloads(array, mask, version):
    """`(payloads, scales, inflated lengths)` of every head of every example."""
    def packed(head):
        b, h = head
        codes, scale = quantize(array[b, h], None if mask is None else mask[b, h], version)
        return pack_codes(codes), scale

    batch, heads = array.shape[:2]
    return compressed_payloads(packed, [(b, h) for b in range(batch) for h in range(heads)],
                               array.size)


def encode_attention(weights, query_tokens=None, key_tokens=None, mask=None, images=None,
                     image_grid=None, prefix_tokens=None, reduced=None, max_bytes=None,
                     windows=None, kv_heads=None, kv_group_size=None, query_special=None,
                     key_special=None):
    """Encodes one step in full, or POOLED when the full step would exceed `max_bytes`.

    What both public writers (`tba.attention`, `AttentionWriter.attention`) call. Without
    `max_bytes` this is `encode_step`. With it, a step whose full size (bounded by
    `payload_bound` before encoding) exceeds `max_bytes` is stored pooled: the block size is
    the smallest power of two (2, 4, 8, ...) at which the overview takes at most half of the
    budget left after the header and images and the whole step, windows included, fits
    `max_bytes` (checked on the encoded blobs). `windows=[(name, (q0, q1), (k0, k1)), ...]`
    names the exact windows to keep (half-open query and key ranges); without it the
    `default_windows` are kept with the most rows (a power of two, at most 64) that fit.
    `windows` alone (no `max_bytes`) stores the step pooled at the smallest block that fits
    no budget: give `max_bytes` too.

    Raises `ValueError` when even the coarsest overview and the named windows do not fit.

    >>> w = np.tril(np.ones((256, 256), np.float32))
    >>> w /= w.sum(-1, keepdims=True)
    >>> blobs = encode_attention(w, max_bytes=16 * 1024)
    >>> header = decode_header(blobs[0])
    >>> header["layout"], header["pooled"]["block"], [x["name"] for x in header["windows"]]
    ('pooled', [8, 8], ['last_queries', 'first_queries', 'first_key'])
    >>> sum(map(len, blobs)) <= 16 * 1024
    True
    """
    kwargs = dict(query_tokens=query_tokens, key_tokens=key_tokens, images=images,
                  image_grid=image_grid, prefix_tokens=prefix_tokens, reduced=reduced,
                  kv_heads=kv_heads, kv_group_size=kv_group_size, query_special=query_special,
                  key_special=key_special)
    if max_bytes is None:
        if windows is not None:
            raise ValueError("windows= needs max_bytes=: windows are kept when a step is pooled "
                             "to fit max_bytes")
        return encode_step(weights, mask=mask, **kwargs)
    max_bytes = whole_number(max_bytes, "max_bytes", 1)
    array, rank, source_dtype = normalize_weights(weights, max_values=MAX_POOLED_INPUT_VALUES)
    batch, heads, tq, tk = shape = array.shape
    step_mask = normalize_mask(mask, as_numpy(weights).shape)
    fixed = _fixed_bytes(shape, query_tokens, key_tokens, images, image_grid, prefix_tokens,
                         (query_special, key_special))
    if array.size <= MAX_VALUES_PER_STEP and full_bytes_bound(shape, fixed + 24 * batch * heads) <= max_bytes:
        return encode_step(weights, mask=mask, **kwargs)  # the mask as given, like the weights
    named = None
    if windows is not None:
        named = [check_window(*_window_spec(w), tq, tk) for w in windows]
        if len({name for name, _, _ in named}) != len(named):
            raise ValueError("window names must be distinct")
    kwargs.update(source_rank=rank, source_dtype=source_dtype)
    return _pooled_to_fit(array, step_mask, max_bytes, named, fixed, kwargs)


def _fixed_bytes(shape, query_tokens, key_tokens, images, image_grid, prefix_tokens,
                 special=(None, None)):
    """The bytes a step of `shape` takes besides its payloads and scales, as `choose_pooling`
    counts them: its tokens (and special positions) as JSON, its probe images as PNG and 1024
    bytes for the rest of the header. Checks the tokens, special positions and images."""
    batch, _, tq, tk = shape
    query_tokens = normalize_tokens(query_tokens, batch, tq, "query_tokens")
    key_tokens = normalize_tokens(key_tokens, batch, tk, "key_tokens")
    positions = [step_facts.special_positions(flags, batch, length, name) for flags, length, name
                 in zip(special, (tq, tk), ("query_special", "key_special"))]
    image_bytes = 0
    if images is not None:
        image_blobs, _ = normalize_images(images, batch, tk, image_grid, prefix_tokens)
        image_bytes = sum(len(b) for b in image_blobs)
    token_bytes = len(json.dumps([query_tokens, key_tokens], ensure_ascii=False).encode("utf-8"))
    if positions != [None, None]:
        token_bytes += len(json.dumps(positions))
    return token_bytes + 1024 + image_bytes


def _pooled_to_fit(array, mask, max_bytes, windows, fixed, kwargs):
    """The blobs of `array` (float32 `[B, H, Tq, Tk]`, bool `mask` or None) pooled at the
    smallest block from `choose_pooling` whose encoded step fits `max_bytes`."""
    shape = array.shape
    causal = is_causal(array, mask)
    masked = array if mask is None else np.where(mask, array, np.nan)
    block = 1
    while True:
        block, chosen = choose_pooling(shape, max_bytes, causal, windows, fixed, start=block * 2)
        means, maxes = pool(masked, block)
        blobs = encode_pooled_step(
            shape, block, means, maxes,
            [(name, q, k, masked[:, :, q[0]:q[1], k[0]:k[1]]) for name, q, k in chosen],
            **kwargs,
        )
        if sum(len(b) for b in blobs) <= max_bytes:
            return blobs


def _window_spec(window):
    try:
        name, query, key = window
    except (TypeError, ValueError):
        raise ValueError("each window must be (name, (q0, q1), (k0, k1)), got %r" % (window,)) from None
    return name, query, key
