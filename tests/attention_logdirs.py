"""Logdirs written with the real `AttentionWriter` for the browser tests and the frontend bench.

Weights are chosen so that known cells have known values: the test can check pixels and
tooltips against them.
"""

import numpy as np

from tb_attention_plugin import AttentionWriter

HOSTILE = "<img src=x onerror=alert(1)>"
# 6 target tokens (Chinese) x 7 source tokens (English, with the hostile token).
TARGET = ["<s>", "我", "有", "三本", "书", "</s>"]
SOURCE = ["i", "have", HOSTILE, "three", "books", "</s>", "<pad>"]
TEXT_STEPS = [0, 10, 20]
VISION_GRID = (4, 4)
VISION_PREFIX = 1
# What AttentionLogger records when its budget made it drop examples (docs/format.md).
VISION_REDUCED = {"source_shape": [4, 2, 17, 17], "examples": 1,
                  "note": "examples 1 of 4; raise max_examples= to log more"}


def text_weights(step, heads=3):
    """[2, heads, 6, 7] cross-attention weights, different per step and head; the <pad> key masked.

    Head h, example b, step s: row i puts weight on key (i + h + s // 10) % 6 so that each step
    moves the bright cells; the rest is spread evenly.
    """
    batch, tq, tk = 2, len(TARGET), len(SOURCE)
    w = np.zeros((batch, heads, tq, tk), np.float32)
    for b in range(batch):
        for h in range(heads):
            for i in range(tq):
                peak = (i + h + b + step // 10) % (tk - 1)
                row = np.full(tk - 1, (1 - 0.7) / (tk - 2), np.float32)
                row[peak] = 0.7
                w[b, h, i, : tk - 1] = row
    return w


def text_mask(heads=3):
    mask = np.ones((2, heads, len(TARGET), len(SOURCE)), bool)
    mask[..., -1] = False  # <pad>
    return mask


def causal_weights(step, tokens=len(TARGET)):
    """[1, 2, T, T] causal self-attention: row i spreads over keys 0..i, with a step-dependent tilt."""
    w = np.zeros((1, 2, tokens, tokens), np.float32)
    for h in range(2):
        for i in range(tokens):
            raw = np.arange(1, i + 2, dtype=np.float32) ** (1 + h + step / 20)
            w[0, h, i, : i + 1] = raw / raw.sum()
    mask = np.tril(np.ones((tokens, tokens), bool))[None, None].repeat(2, axis=1)
    return w, mask


def probe_image(size=64):
    """A 64x64 RGB probe: red top-left quadrant, blue bottom-right, grey elsewhere."""
    image = np.full((size, size, 3), 128, np.uint8)
    image[: size // 2, : size // 2] = (220, 40, 40)
    image[size // 2 :, size // 2 :] = (40, 40, 220)
    return image


def vision_weights(step, heads=2):
    """[1, heads, 17, 17] self-attention over [cls] + 4x4 patches: the class token looks at patch
    (r, c) = (step//10 % 4, 1) most."""
    n = VISION_PREFIX + VISION_GRID[0] * VISION_GRID[1]
    rng = np.random.default_rng(step)
    w = rng.random((1, heads, n, n)).astype(np.float32) * 0.1
    target = VISION_PREFIX + ((step // 10) % 4) * VISION_GRID[1] + 1
    w[:, :, :, target] += 2.0
    return (w / w.sum(-1, keepdims=True)).astype(np.float32)


FUTURE_TAG = "from_the_future/attention"


def write_future_version_tag(run_dir, version=99):
    """A tag whose metadata says a format version this tb-attention cannot read (as a newer
    tb-attention would write it), with TensorBoard's own event writer and protos."""
    import json

    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="attention", content=json.dumps({"version": version}).encode()),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    tensor = tensor_util.make_tensor_proto([b"{}", b"future payload"])
    writer = EventFileWriter(str(run_dir), filename_suffix=".future")
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=FUTURE_TAG, metadata=metadata, tensor=tensor)])
    writer.add_event(event_pb2.Event(step=0, wall_time=1.0, summary=summary))
    writer.close()


def write_unguarded(run_dir, tag_steps, description=None, **encode_kwargs):
    """Attention events as another writer (an older tb-attention, a hand-rolled one) may leave
    them: encoded as `AttentionWriter` does, written with TensorBoard's own event writer and
    protos, WITHOUT its guard on run and tag names, so the readers' handling of names the Rust
    data server cannot read stays testable. `tag_steps`: `[(tag, weights, step)]`."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
    from tensorboard.compat.proto import types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from tb_attention_plugin import encoding, metadata

    writer = EventFileWriter(str(run_dir), filename_suffix=".unguarded")
    for tag, weights, step in tag_steps:
        blobs = encoding.encode_step(weights, **encode_kwargs)
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]),
            string_val=blobs)
        value = summary_pb2.Summary.Value(
            tag=tag, tensor=tensor, metadata=metadata.create_summary_metadata(description))
        writer.add_event(event_pb2.Event(step=step, wall_time=1.0 + step,
                                         summary=summary_pb2.Summary(value=[value])))
    writer.close()


# Run "gqa": a grouped-query layer of 4 query heads over 2 key/value heads; <s> and </s> are
# special tokens.
GQA_KV_HEADS = 2
TARGET_SPECIAL = [token in ("<s>", "</s>") for token in TARGET]


def gqa_weights(step):
    """[1, 4, T, T] causal self-attention of 4 query heads (causal_weights twice) and its mask."""
    first, mask = causal_weights(step)
    second, _ = causal_weights(step + 10)
    return np.concatenate([first, second], axis=1), np.concatenate([mask, mask], axis=1)


def write_demo_logdir(logdir):
    """Writes run "translate" (cross and causal self-attention, plus a tag in a future format
    version), run "vit" (vision) and run "gqa" (grouped-query attention, special tokens)."""
    with AttentionWriter(logdir / "translate") as writer:
        for step in TEXT_STEPS:
            writer.attention("decoder/cross_attention", text_weights(step), step,
                             query_tokens=[TARGET, TARGET], key_tokens=[SOURCE, SOURCE], mask=text_mask(),
                             description="decoder cross-attention")
            weights, mask = causal_weights(step)
            writer.attention("decoder/self_attention", weights, step, query_tokens=TARGET,
                             key_tokens=TARGET, mask=mask)
    write_future_version_tag(logdir / "translate")
    with AttentionWriter(logdir / "vit") as writer:
        image = probe_image()
        for step in TEXT_STEPS:
            writer.attention("encoder/layer_0/attention", vision_weights(step), step,
                             images=image[None], image_grid=VISION_GRID, prefix_tokens=VISION_PREFIX,
                             reduced=VISION_REDUCED)
    with AttentionWriter(logdir / "gqa") as writer:
        for step in TEXT_STEPS:
            weights, mask = gqa_weights(step)
            writer.attention("decoder/self_attention", weights, step, mask=mask,
                             kv_heads=GQA_KV_HEADS, query_tokens=TARGET, key_tokens=TARGET,
                             query_special=TARGET_SPECIAL, key_special=TARGET_SPECIAL)
    return logdir


def write_bench_logdir(logdir, long_tokens=512, long_steps=20, grid_tokens=128, layers=12, heads=12,
                       model_steps=2):
    """Run "bench": tag "long/attention" with one 512x512 head per step (20 steps), and a
    12-layer x 12-head model at 128 tokens ("model/layer_NN", 2 steps)."""
    rng = np.random.default_rng(0)
    long_names = ["t%d" % i for i in range(long_tokens)]
    tokens = ["tok%d" % i for i in range(grid_tokens)]
    with AttentionWriter(logdir / "bench") as writer:
        for step in range(max(long_steps, model_steps)):
            if step < long_steps:
                w = rng.random((1, 1, long_tokens, long_tokens)).astype(np.float32)
                writer.attention("long/attention", w / w.sum(-1, keepdims=True), step,
                                 query_tokens=long_names, key_tokens=long_names)
            if step < model_steps:
                for layer in range(layers):
                    w = rng.random((1, heads, grid_tokens, grid_tokens)).astype(np.float32) ** 4
                    writer.attention("model/layer_%02d" % layer, w / w.sum(-1, keepdims=True), step,
                                     query_tokens=tokens, key_tokens=tokens)
    return logdir

