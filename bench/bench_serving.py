"""How fast the Attention tab gets one head, against TensorBoard's images plugin getting a PNG.

Writes a logdir with 100 steps of a 12-layer x 12-head model at 512x512 (one probe example)
plus, in the same run, 100 steps of 512x512 grayscale PNGs through `tf.summary.image`: one of
a head's weights in linear 8-bit (what tensor2tensor logged; it drops a long row's small
weights) and, per head, one of that step's faithful codes (the same picture at the fidelity
`/matrix` sends, so the two answers carry the same information). Then,
for the Rust data server (default) and the Python reader (`--load_fast=false`), starts a real
`tensorboard` on 127.0.0.1 and times HTTP requests:

- `images`: `/data/plugin/images/individualImage?blob_key=...` for distinct steps (TensorBoard's
  own path for one image; it has no server-side cache), asked in turn with `head (cold)` and
  `images, PNG of the same codes` (the order rotating) so that a change of the machine's load
  hits the three alike;
- `images, PNG of the same codes`: the PNG of the faithful codes of the head asked at that
  step: the same pixels at the same fidelity, about the bytes of the head's answer;
- `steps`: `/steps` of the tag, as the tab asks before showing a step (it starts reading the
  headers of all listed steps in the background);
- `head (cold)`: `/matrix?...&head=H` for (step, head) pairs never asked before, after `/steps`
  and a 2 s pause (a person picks a step after the list shows);
- `head (cold, no /steps)`: the same on another tag whose `/steps` was never asked (a direct
  URL): header and payload are then read together;
- `head (cached)`: the same requests again (the plugin's LRU answer cache);
- `mean (cold)`: `/matrix?...&head=mean` (reads and decodes all 12 heads of the step).

Then the CPU time the `tensorboard` process tree (with `rustboard`) spends per request, from
`/proc`, in batches of 10 requests (CPU ticks are 10 ms): PNGs (linear, and of head 0's codes),
cold heads (head 0 of the same steps, never asked before) and the same heads again (cached).
A loaded machine stretches latencies far more than CPU time, so these ratios are the steadier
ones.

Prints median latencies and the ratio to `images`, both readers side by side. Requests send
`Accept-Encoding: gzip, deflate`, as every browser does (at least).

Usage:

    .venv/bin/python bench/bench_serving.py [--layers 12] [--steps 100] [--requests 40]
                                            [--logdir DIR]

Steps repeat four distinct sets of weights (encoding is not what is measured); every step is
still its own event, blob and cache key.
"""

import argparse
import gzip
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tb_attention_plugin import encoding  # noqa: E402
from tb_attention_plugin import metadata  # noqa: E402
from tb_attention_plugin.server import wire_format  # noqa: E402
from tensorboard_process import tensorboard  # noqa: E402

SIZE = 512
HEADS = 12
IMAGE_TAG = "png/attention_map"
SMALL_IMAGE_TAG = "png/attention_map_128"  # a PNG of a few KB, see the note printed at the end
# Per head h: a 512x512 grayscale PNG of layer 0's head h at that step as its faithful codes
# (the primary byte of each value: the same picture at the same fidelity as /matrix sends).
CODES_IMAGE_TAG = "png/faithful_codes/head_%d"


def attention_weights(seed):
    """Softmax rows with a different temperature per head (sharp and diffuse heads)."""
    rng = np.random.default_rng(seed)
    temperature = np.linspace(1.0, 4.0, HEADS, dtype=np.float32)[:, None, None]
    logits = rng.normal(size=(1, HEADS, SIZE, SIZE)).astype(np.float32) * temperature
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def layer_tag(layer):
    return "encoder/layer_%d/self_attention" % layer


def write_logdir(root, layers, steps):
    """Writes the bench's logdir under `root/train`; `layers=0` writes only its PNGs (what
    `bench_memory` compares against). Returns the attention bytes of one step."""
    import tensorflow as tf

    variants = [attention_weights(seed) for seed in range(4)]
    encoded = [encoding.encode_step(w) for w in variants]
    blobs = [tf.constant(e, tf.string) for e in encoded]
    step_bytes = sum(len(b) for b in encoded[0]) * layers
    image = (variants[0][0, 0] / variants[0][0, 0].max() * 255).astype(np.uint8)
    image = tf.constant(image[np.newaxis, :, :, np.newaxis])
    codes_images = [[tf.constant(primary_codes(step_blobs, head)[np.newaxis, :, :, np.newaxis])
                     for head in range(HEADS)] for step_blobs in encoded]
    md = metadata.create_summary_metadata()
    writer = tf.summary.create_file_writer(str(root / "train"), max_queue=10)
    with writer.as_default():
        for step in range(steps):
            for layer in range(layers):
                tf.summary.write(layer_tag(layer), blobs[(step + layer) % len(blobs)], step=step,
                                 metadata=md)
            tf.summary.image(IMAGE_TAG, image, step=step, max_outputs=1)
            tf.summary.image(SMALL_IMAGE_TAG, image[:, ::4, ::4], step=step, max_outputs=1)
            for head, codes_image in enumerate(codes_images[step % len(blobs)]):
                tf.summary.image(CODES_IMAGE_TAG % head, codes_image, step=step, max_outputs=1)
            writer.flush()
    writer.close()
    return step_bytes


def primary_codes(step_blobs, head):
    """The primary bytes of one head's stored faithful codes as a `[T, T]` uint8 image."""
    header = encoding.decode_header(step_blobs[0])
    raw, _ = encoding.inflate_raw(step_blobs[encoding.payload_index(header, 0, head)], header)
    return np.frombuffer(raw, np.uint8, count=SIZE * SIZE).reshape(SIZE, SIZE)


def get(url):
    """Returns `(seconds until the whole answer arrived, decompressed body)`."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, deflate"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
        status = response.status
        coding = response.headers.get("Content-Encoding")
    elapsed = time.perf_counter() - start
    assert status == 200, (url, status)
    decode = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(coding, bytes)
    return elapsed, decode(body), len(body)


def wait_until_loaded(base, layers, steps, timeout=300):
    last = urllib.parse.urlencode({"run": "train", "tag": layer_tag(layers - 1)})
    images = urllib.parse.urlencode({"run": "train", "tag": CODES_IMAGE_TAG % (HEADS - 1)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listed = json.loads(get(base + "/data/plugin/attention/steps?" + last)[1])["steps"]
            pngs = json.loads(get(base + "/data/plugin/images/images?" + images)[1])
            if len(listed) == steps and len(pngs) == steps:
                return [image_listing(base, tag) for tag in
                        [IMAGE_TAG] + [CODES_IMAGE_TAG % h for h in range(HEADS)]]
        except (AssertionError, OSError, ValueError, KeyError):
            pass
        time.sleep(1)
    raise RuntimeError("tensorboard did not load %d steps in %ds" % (steps, timeout))


def image_listing(base, tag):
    """`{step: individualImage URL}` of an image tag."""
    query = urllib.parse.urlencode({"run": "train", "tag": tag})
    listed = json.loads(get(base + "/data/plugin/images/images?" + query)[1])
    return {e["step"]: base + "/data/plugin/images/individualImage?" + e["query"] for e in listed}


def matrix_url(base, step, head, layer=0):
    query = urllib.parse.urlencode(
        {"run": "train", "tag": layer_tag(layer), "step": step, "example": 0, "head": head}
    )
    return base + "/data/plugin/attention/matrix?" + query


def measure(logdir, flags, layers, steps, requests):
    results = {}
    started = time.perf_counter()
    with tensorboard(logdir, *flags, "--samples_per_plugin=images=%d" % steps) as base:
        pngs, *codes_pngs = wait_until_loaded(base, layers, steps)
        results["load (s)"] = time.perf_counter() - started
        rng = np.random.default_rng(1)
        chosen = rng.choice(steps, size=min(requests, steps), replace=False)
        image_urls = [pngs[int(s)] for s in chosen]
        get(image_urls[0])  # warm the connection path
        small = json.loads(get(base + "/data/plugin/images/images?" + urllib.parse.urlencode(
            {"run": "train", "tag": SMALL_IMAGE_TAG}))[1])
        small_timings = [
            get(base + "/data/plugin/images/individualImage?" + small[int(s)]["query"])
            for s in chosen
        ]
        results["images, 128x128 PNG"] = [t for t, _, _ in small_timings]
        results["small png bytes"] = small_timings[0][2]

        runs_time, runs_body, _ = get(base + "/data/plugin/attention/runs")
        assert len(json.loads(runs_body)["runs"][0]["tags"]) == layers
        results["runs, cold (all layers)"] = [runs_time]
        steps_time, _, _ = get(base + "/data/plugin/attention/steps?" + urllib.parse.urlencode(
            {"run": "train", "tag": layer_tag(0)}))
        results["steps (index build)"] = [steps_time]
        time.sleep(2)  # the tab lists the steps; a person then picks one
        pairs = [(int(s), int(h)) for s, h in zip(chosen, rng.integers(1, HEADS, len(chosen)))]
        timings, codes_timings, cold = interleaved(
            image_urls, [codes_pngs[h][s] for s, h in pairs],
            [matrix_url(base, s, h) for s, h in pairs])
        results["images"] = [t for t, _, _ in timings]
        results["png bytes"] = timings[0][2]
        results["images, PNG of the same codes"] = [t for t, _, _ in codes_timings]
        results["codes png bytes"] = statistics.mean(n for _, _, n in codes_timings)
        results["head (cold)"] = [t for t, _, _ in cold]
        first, _, _ = get(matrix_url(base, int(chosen[0]), "0", layer=1))  # builds the index
        results["first head (index build)"] = [first]
        results["head (cold, no /steps)"] = [
            get(matrix_url(base, s, h, layer=1))[0] for s, h in pairs[1:]
        ]
        results["matrix bytes (compressed)"] = statistics.mean(n for _, _, n in cold)
        results["head (cached)"] = [get(matrix_url(base, s, h))[0] for s, h in pairs]
        results["mean (cold)"] = [get(matrix_url(base, s, "mean"))[0] for s in chosen[:10]]
        results.update(cpu_per_request(base, image_urls, [codes_pngs[0][s] for s in chosen],
                                       [matrix_url(base, s, 0) for s in chosen]))
        plain = get_plain(matrix_url(base, pairs[0][0], pairs[0][1]))
        assert cold[0][1] == plain  # the compressed answer decodes to exactly the plain one
        check = wire_format.decode(plain)
        assert (check.rows, check.cols) == (SIZE, SIZE)
    return results


def process_tree(port):
    """PIDs of the `tensorboard` listening on `port` and of all its descendants (the Rust data
    server): the processes whose CPU time and memory the benchmarks charge to TensorBoard."""
    parents, roots = {}, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                command = f.read().split(b"\0")
            with open("/proc/%s/stat" % entry) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = parent
        if b"tensorboard.main" in command and b"--port=%d" % port in command:
            roots.append(int(entry))
    if len(roots) != 1:
        raise RuntimeError("expected one tensorboard on port %d, found %s" % (port, roots))
    tree, grew = {roots[0]}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sorted(tree)


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def cpu_per_request(base, image_urls, codes_urls, cold_urls, batch=10):
    """Mean CPU seconds of the server per request: PNGs (linear, and of the same codes as the
    heads), cold heads, and the same heads again (cached)."""
    pids = process_tree(urllib.parse.urlparse(base).port)
    kinds = (("cpu: images", image_urls), ("cpu: images, PNG of the same codes", codes_urls),
             ("cpu: head (cold)", cold_urls), ("cpu: head (cached)", cold_urls))
    spent = {key: [] for key, _ in kinds}
    batch = min(batch, len(cold_urls))  # the smallest bench/run.py --smoke asks 2 heads
    for start in range(0, len(cold_urls) - batch + 1, batch):
        for key, urls in kinds:
            before = cpu_seconds(pids)
            for url in urls[start:start + batch]:
                get(url)
            spent[key].append((cpu_seconds(pids) - before) / batch)
    return spent


def interleaved(*url_lists):
    """The answers to each list of URLs, asked in turn with the order rotating (A B C, B C A,
    C A B, ...) so that every median sees the same moments of a machine whose load changes."""
    answers = [[] for _ in url_lists]
    for k, urls in enumerate(zip(*url_lists)):
        for j in range(len(urls)):
            which = (k + j) % len(urls)
            answers[which].append(get(urls[which]))
    return answers


def get_plain(url):
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def print_ratios(title, results, names, average, baseline, keys):
    """One row per key: `average` of its samples per reader, in ms and as a ratio."""
    print("%-36s" % title + "".join("%28s" % n for n in names))
    for key in keys:
        cells = []
        for name in names:
            value = average(results[name][key]) * 1000
            ratio = value / (average(results[name][baseline]) * 1000)
            cells.append("%9.2f ms  %6.2fx images" % (value, ratio))
        print("%-36s" % key + "".join("%28s" % c for c in cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--logdir", help="write the events here and keep them; a directory that "
                        "already holds them (same --layers and --steps) is read as it is, so "
                        "two versions of the plugin can be measured on the same data")
    args = parser.parse_args()
    if args.layers < 2:
        parser.error("--layers must be at least 2: layer 1 is the tag whose /steps is never "
                     "asked (row 'head (cold, no /steps)')")

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        logdir = pathlib.Path(args.logdir or tmp)
        start = time.perf_counter()
        if args.logdir and (logdir / "train").is_dir():
            step_bytes = sum(len(b) for b in encoding.encode_step(attention_weights(0))) * args.layers
        else:
            step_bytes = write_logdir(logdir, args.layers, args.steps)
        size = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file())
        print(
            "logdir: %d layers x %d heads x %dx%d, %d steps, 1 example: %.0f MB of events "
            "(%.1f MB of attention per step), written or found in %.0f s"
            % (args.layers, HEADS, SIZE, SIZE, args.steps, size / 1e6, step_bytes / 1e6,
               time.perf_counter() - start)
        )
        readers = {"rust data server": (), "python reader": ("--load_fast=false",)}
        results = {
            name: measure(logdir, flags, args.layers, args.steps, args.requests)
            for name, flags in readers.items()
        }

    names = list(readers)
    print()
    print_ratios("median latency", results, names, statistics.median, "images", (
        "images", "images, 128x128 PNG", "images, PNG of the same codes", "runs, cold (all layers)", "steps (index build)",
        "head (cold)", "first head (index build)", "head (cold, no /steps)", "head (cached)",
        "mean (cold)"))
    print_ratios("mean server CPU / request", results, names, statistics.mean, "cpu: images",
                 ("cpu: images", "cpu: images, PNG of the same codes", "cpu: head (cold)",
                  "cpu: head (cached)"))
    for key in ("png bytes", "small png bytes", "codes png bytes", "matrix bytes (compressed)",
                "load (s)"):
        print("%-36s" % key + "".join("%28.1f" % results[n][key] for n in names))
    print(
        "\nNote: the Rust data server answers a lone read_blob of a blob between about 1 KB and "
        "64 KB\nonly after ~40 ms (TCP delayed ACK against its unbuffered gRPC writes): TensorBoard's "
        "own\nimages plugin pays it for small PNGs (row 'images, 128x128 PNG'). The plugin reads "
        "the blobs\nof one answer concurrently (header + head, or all heads for the mean) so that "
        "they share\none such wait; /steps starts reading all listed steps' headers together. Single samples: 'runs, cold', 'steps' and 'first head'; other rows are "
        "medians of --requests\n(or 10 for the mean) requests for distinct steps."
    )


if __name__ == "__main__":
    main()
