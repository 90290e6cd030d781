"""Structure-aware fuzzing of the step header: valid headers with fields replaced by arbitrary JSON.

Random bytes (tests/test_format_decoding.py) are almost never JSON; these headers are, so they
reach the field checks. `decode_header` must raise `FormatError` or return a header on which
everything the reader and the frontend do with it works: blob indexes in range for every
example and head, tokens that are strings of the right count, an image grid of positive
integers that matches the key axis, and a JSON answer a browser can parse.
"""

import json

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tensorboard.backend import json_util

from tb_attention_plugin import encoding

WEIGHTS = np.random.default_rng(0).dirichlet(np.ones(5), size=(2, 3, 4)).astype(np.float32)
IMAGES = np.zeros((2, 8, 8, 3), np.uint8)
GOOD = json.loads(encoding.encode_step(
    WEIGHTS, query_tokens=list("abcd"), key_tokens=list("vwxyz"), images=IMAGES, image_grid=(2, 2),
    prefix_tokens=1)[0])

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = st.sampled_from(sorted(GOOD) + ["image.grid", "image.prefix_tokens", "image.width",
                                         "shape.0", "shape.3", "scales.0", "query_tokens.0",
                                         "key_tokens.1.4", "payload_crc32.0",
                                         "payload_lengths.5", "extra"])
# Values near the valid ones hit the checks' edges more often than arbitrary JSON.
NEAR = st.sampled_from([0, 1, 2, 3, 4, 5, -1, True, False, 1.0, 2.5, 0.5, 1e308, float("nan"),
                        [2, 2], [True, True], [4, 1], [1, 4], [0, 5], [-2, -2], [2.0, 2.0], "2", None,
                        [], [[]], [["a"] * 4] * 2, [["v"] * 5, [1] * 5]])


def replaced(header, path, value):
    header = json.loads(json.dumps(header))
    *parents, last = path.split(".")
    node = header
    for key in parents:
        if isinstance(node, list) and not (key.isdigit() and node):
            return header
        node = node[int(key) % len(node)] if isinstance(node, list) else node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            return header
    if isinstance(node, list) and not (last.isdigit() and node):
        return header
    if isinstance(node, list):
        node[int(last) % len(node)] = value
    else:
        node[last] = value
    return header


def check_usable(header):
    batch, heads, tq, tk = header["shape"]
    assert all(type(n) is int and n > 0 for n in header["shape"])
    assert len(header["scales"]) == batch * heads
    for key in ("payload_crc32", "payload_lengths"):  # optional: both or neither
        values = header.get(key)
        assert (values is None) == (header.get("payload_crc32") is None)
        assert values is None or (len(values) == batch * heads
                                  and all(type(v) is int and v >= 0 for v in values))
    indexes = {encoding.payload_index(header, b, h) for b in range(batch) for h in range(heads)}
    assert indexes == set(range(1, 1 + batch * heads))
    for key, length in (("query_tokens", tq), ("key_tokens", tk)):
        tokens = header.get(key)
        if tokens is not None:
            assert len(tokens) == batch and all(len(t) == length and all(type(s) is str for s in t) for t in tokens)
    image = header.get("image")
    if image is not None:
        grid, prefix = image["grid"], image["prefix_tokens"]
        assert all(type(n) is int and n > 0 for n in grid) and type(prefix) is int and prefix >= 0
        assert grid[0] * grid[1] + prefix == tk
        images = [encoding.image_index(header, b) for b in range(batch)]
        assert images == list(range(1 + batch * heads, 1 + batch * heads + batch))
    # What /step sends: TensorBoard's Respond cleanses NaN/Inf, the rest must be plain JSON.
    json.loads(json.dumps(json_util.Cleanse(header), allow_nan=False))


@settings(max_examples=400, deadline=None)
@example(edits=[("version", [])])  # unhashable: once escaped FormatError as a TypeError
@example(edits=[("version", True)])
@example(edits=[("image.prefix_tokens", True)])
@example(edits=[("image.grid", [4, True])])
@example(edits=[("shape.0", True)])
@example(edits=[("scales.0", float("nan"))])
@given(edits=st.lists(st.tuples(FIELDS, st.one_of(NEAR, JSON_VALUES)), min_size=1, max_size=3))
def test_mutated_headers_are_rejected_or_usable(edits):
    header = GOOD
    for path, value in edits:
        header = replaced(header, path, value)
    blob = json.dumps(header, allow_nan=True).encode()
    try:
        decoded = encoding.decode_header(blob)
    except encoding.FormatError:
        return
    check_usable(decoded)


def test_the_unmutated_header_is_usable():
    check_usable(encoding.decode_header(json.dumps(GOOD).encode()))
