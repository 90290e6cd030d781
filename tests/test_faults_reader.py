"""Damaged logdirs served by a real `tensorboard` process, on both of TensorBoard's readers.

Faults: an event file cut mid-record (a writer killed while writing), bytes flipped inside a
step's header and inside one head's payload, a garbage event file next to a good one, a run
deleted while TensorBoard runs, tags written by a future format version (in the tag metadata
and in one step's header), and one tag with different shapes in two runs and across the steps
of one run. Whatever is served must be exactly what was written; what cannot be read gets a
404 JSON error that says why; the server keeps serving everything else.
"""

import json
import pathlib
import shutil
import struct
import time
import urllib.parse

import numpy as np
import pytest

from attention_logdirs import FUTURE_TAG, write_future_version_tag, write_unguarded
from tb_attention_plugin import AttentionWriter, encoding
from tb_attention_plugin.server import wire_format
from tensorboard_process import get_json, http_get, tensorboard

QUERY, KEY = list("abcd"), list("vwxyz")
SHAPE = (1, 2, 4, 5)
SHAPE_B = (2, 3, 6, 3)
# Step 1 of "resized" has the same blob count as step 0 (1 + B*H = 5) but another layout.
RESIZED = {0: (2, 2, 3, 3), 1: (1, 4, 5, 5)}
# Names with characters that JSON escapes (quote, backslash, control character).
ESCAPED_RUN = 'run "quoted" \\ back\x07slash'
ESCAPED_TAG = 'tag "quoted"\x1b'


def weights(step, shape=SHAPE):
    w = np.random.default_rng([step, *shape]).random(shape).astype(np.float32)
    return w / w.sum(-1, keepdims=True)


def records(path):
    """`[(offset, length)]` of the TFRecords of an event file."""
    data = pathlib.Path(path).read_bytes()
    found, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        found.append((pos, 12 + length + 4))
        pos += 12 + length + 4
    return found


def flip_byte_inside(path, needle, offset):
    """Flips one byte `offset` bytes into the first occurrence of `needle` in the file."""
    data = bytearray(pathlib.Path(path).read_bytes())
    at = data.index(needle)
    data[at + offset] ^= 0xA5
    pathlib.Path(path).write_bytes(bytes(data))


def write_logdir(root):
    for run in ("good", "truncated", "corrupt", "doomed", "garbage_first"):
        with AttentionWriter(root / run) as writer:
            for step in range(5):
                writer.attention("layer", weights(step), step, query_tokens=QUERY, key_tokens=KEY)
    # A writer killed half-way through its last record (step 4).
    event_file = next((root / "truncated").glob("events*"))
    offset, length = records(event_file)[-1]
    with open(event_file, "r+b") as f:
        f.truncate(offset + length // 2)
    # Bit rot: step 2's header JSON and step 3's head-1 payload each get one flipped byte.
    event_file = next((root / "corrupt").glob("events*"))
    step2 = encoding.encode_step(weights(2), query_tokens=QUERY, key_tokens=KEY)
    step3 = encoding.encode_step(weights(3), query_tokens=QUERY, key_tokens=KEY)
    flip_byte_inside(event_file, step2[0], len(step2[0]) // 2)
    flip_byte_inside(event_file, step3[2], len(step3[2]) // 2)
    # Random bytes in a file named like an event file, sorted before the good one.
    garbage = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (root / "garbage_first" / "events.out.tfevents.0000000001.garbage").write_bytes(garbage)
    # Tags from a newer tb-attention: version 99 in the tag metadata; in one step's header.
    write_future_version_tag(root / "good")
    with AttentionWriter(root / "good") as writer:
        writer.attention("mixed_versions", weights(0), 0)
        future = encoding.encode_step(weights(1))
        header = json.loads(future[0])
        header["version"] = 99
        writer.write_blobs("mixed_versions", [json.dumps(header).encode()] + future[1:], 1)
        header["version"] = []  # not even a number: once a TypeError and an HTTP 500 for /runs
        writer.write_blobs("odd_version", [json.dumps(header).encode()] + future[1:], 0)
    # One tag, different shapes: across runs, and across the steps of one run.
    with AttentionWriter(root / "other_shape") as writer:
        for step in range(3):
            writer.attention("layer", weights(step, SHAPE_B), step,
                             query_tokens=[list("ABCDEF")] * 2, key_tokens=list("XYZ"))
    # AttentionWriter refuses these names; files from other writers may still hold them.
    write_unguarded(root / ESCAPED_RUN, [(ESCAPED_TAG, weights(0), 0), ("plain", weights(1), 1)])
    with AttentionWriter(root / "resized") as writer:
        for step, shape in RESIZED.items():
            writer.attention("layer", weights(step, shape), step)
    return root


@pytest.fixture(scope="module", params=["rust", "python"])
def server(request, tmp_path_factory):
    root = write_logdir(tmp_path_factory.mktemp("faulty-logdir"))
    flags = ["--load_fast=false"] if request.param == "python" else []
    with tensorboard(root, *flags) as base:
        yield request.param, root, base + "/data/plugin/attention"


def call(base, route, **params):
    """`(status, body)`; a non-200 answer must be a JSON error, never a 500."""
    status, headers, body = http_get(base + route + "?" + urllib.parse.urlencode(params))
    assert status in (200, 404), (route, params, status, body[:300])
    if status != 200:
        error = json.loads(body)["error"]
        assert isinstance(error, str) and error
        return status, error
    return status, body


def steps_of(base, run, tag="layer"):
    return [s["step"] for s in get_json(base + "/steps?" + urllib.parse.urlencode(dict(run=run, tag=tag)))["steps"]]


def assert_head_served(base, run, step, head, expected, example=0, tag="layer"):
    status, body = call(base, "/matrix", run=run, tag=tag, step=step, example=example, head=head)
    assert status == 200, (run, step, head, body)
    served = wire_format.decode(body).weights()
    assert served.shape == expected.shape
    assert np.abs(served - expected).max() <= encoding.MAX_ERROR + 1e-7, (run, step, head)


def assert_unreadable(base, run, step, head, *words, tag="layer"):
    status, error = call(base, "/matrix", run=run, tag=tag, step=step, example=0, head=head)
    assert status == 404, (run, step, head)
    for word in words:
        assert word in error, (word, error)


def tags_by_run(base):
    return {r["run"]: {t["tag"]: t for t in r["tags"]} for r in get_json(base + "/runs")["runs"]}


def test_truncated_last_record_is_ignored_and_the_rest_is_served(server):
    _, _, base = server
    assert steps_of(base, "truncated") == [0, 1, 2, 3]
    assert tags_by_run(base)["truncated"]["layer"]["error"] is None
    for step in range(4):
        assert_head_served(base, "truncated", step, 1, weights(step)[0, 1])
    status, error = call(base, "/step", run="truncated", tag="layer", step=4)
    assert status == 404 and "no step 4" in error


def test_flipped_bytes_are_never_served_as_data(server):
    reader, _, base = server
    steps = steps_of(base, "corrupt")
    if reader == "python":
        # The Python reader stops at the first record whose checksum fails.
        assert steps == [0, 1]
    else:
        # The Rust data server keeps records whatever their checksum: our decoder notices.
        assert steps == [0, 1, 2, 3, 4]
        status, error = call(base, "/step", run="corrupt", tag="layer", step=2)
        assert status == 404 and "step 2 cannot be read" in error and "not UTF-8 JSON" in error
        assert_unreadable(base, "corrupt", 2, 0, "step 2 cannot be read")
        assert_unreadable(base, "corrupt", 3, 1, "step 3", "head 1 cannot be read")
        assert_unreadable(base, "corrupt", 3, "mean", "head 1 cannot be read")
        assert_head_served(base, "corrupt", 3, 0, weights(3)[0, 0])  # its intact neighbour
        assert_head_served(base, "corrupt", 4, 1, weights(4)[0, 1])
    for step in (0, 1):
        assert_head_served(base, "corrupt", step, 1, weights(step)[0, 1])


def test_garbage_event_file_does_not_hide_the_good_one(server):
    _, _, base = server
    assert steps_of(base, "garbage_first") == [0, 1, 2, 3, 4]
    assert_head_served(base, "garbage_first", 4, 0, weights(4)[0, 0])


def test_future_versions_are_named_and_older_steps_still_serve(server):
    _, _, base = server
    good = tags_by_run(base)["good"]
    assert "format version 99" in good[FUTURE_TAG]["error"]
    assert "upgrade tb-attention" in good[FUTURE_TAG]["error"]
    assert good[FUTURE_TAG]["shape"] is None
    status, error = call(base, "/steps", run="good", tag=FUTURE_TAG)
    assert status == 404 and "upgrade tb-attention" in error
    # The newest step of "mixed_versions" is from the future: /runs says so, step 0 still serves.
    assert "format version 99" in good["mixed_versions"]["error"]
    assert steps_of(base, "good", "mixed_versions") == [0, 1]
    assert_head_served(base, "good", 0, 1, weights(0)[0, 1], tag="mixed_versions")
    status, error = call(base, "/step", run="good", tag="mixed_versions", step=1)
    assert status == 404 and "format version 99" in error
    assert_unreadable(base, "good", 1, "mean", "format version 99", tag="mixed_versions")
    assert "format version []" in good["odd_version"]["error"]
    assert_unreadable(base, "good", 0, 0, "format version []", tag="odd_version")
    assert good["layer"]["error"] is None and good["layer"]["shape"] == list(SHAPE)


def test_same_tag_with_different_shapes_in_two_runs_and_across_steps(server):
    _, _, base = server
    runs = tags_by_run(base)
    assert runs["good"]["layer"]["shape"] == list(SHAPE)
    assert runs["other_shape"]["layer"]["shape"] == list(SHAPE_B)
    assert runs["resized"]["layer"]["shape"] == list(RESIZED[1])
    # Interleaved, so that what one run or step taught the reader's caches is put to the test.
    for step in range(3):
        for head in range(3):
            assert_head_served(base, "other_shape", step, head, weights(step, SHAPE_B)[1, head], example=1)
            assert_head_served(base, "good", step, head % 2, weights(step)[0, head % 2])
        status, body = call(base, "/step", run="other_shape", tag="layer", step=step)
        assert json.loads(body)["query_tokens"] == [list("ABCDEF")] * 2
    for step, example, head in [(0, 1, 1), (1, 0, 3), (0, 0, 0), (1, 0, 1), (0, 1, 0), (1, 0, 2)]:
        assert_head_served(base, "resized", step, head, weights(step, RESIZED[step])[example, head],
                           example=example)
    status, error = call(base, "/matrix", run="resized", tag="layer", step=1, example=1, head=0)
    assert status == 404 and "out of range" in error
    status, error = call(base, "/matrix", run="resized", tag="layer", step=0, example=0, head=3)
    assert status == 404 and "out of range" in error


def test_names_with_quotes_or_control_characters(server):
    reader, _, base = server
    runs = tags_by_run(base)
    assert sorted(runs[ESCAPED_RUN]) == sorted([ESCAPED_TAG, "plain"])
    if reader == "python":
        assert_head_served(base, ESCAPED_RUN, 0, 1, weights(0)[0, 1], tag=ESCAPED_TAG)
        assert_head_served(base, ESCAPED_RUN, 1, 0, weights(1)[0, 0], tag="plain")
        return
    # TensorBoard's Rust data server cannot read blobs under such names: each tag says so and
    # how to get around it, and every other run is still listed and served.
    for tag in (ESCAPED_TAG, "plain"):
        error = runs[ESCAPED_RUN][tag]["error"]
        assert "--load_fast=false" in error and "quotes" in error, error
        assert_unreadable(base, ESCAPED_RUN, runs[ESCAPED_RUN][tag]["max_step"], 0,
                          "--load_fast=false", tag=tag)
    assert runs["good"]["layer"]["error"] is None
    assert_head_served(base, "good", 1, 0, weights(1)[0, 0])


def test_run_deleted_while_serving_disappears_and_the_rest_keeps_serving(server):
    _, root, base = server
    assert_head_served(base, "doomed", 2, 0, weights(2)[0, 0])  # read once: now in the caches
    shutil.rmtree(root / "doomed")
    deadline = time.monotonic() + 30
    while "doomed" in tags_by_run(base):
        assert time.monotonic() < deadline, "the deleted run is still listed"
        time.sleep(0.3)
    for route, params in [("/steps", {}), ("/step", {"step": 2}),
                          ("/matrix", {"step": 2, "example": 0, "head": 0}),
                          ("/matrix", {"step": 3, "example": 0, "head": "mean"})]:
        status, error = call(base, route, run="doomed", tag="layer", **params)
        assert status == 404 and "doomed" in error, (route, error)
    assert_head_served(base, "good", 4, 1, weights(4)[0, 1])
