"""Reads attention summaries through TensorBoard's data provider, one blob at a time.

Works the same over the Rust data server and the Python reader (`--load_fast=false`): only
`list_blob_sequences`, `read_blob_sequences` and `read_blob` are used. A head is served from two
blobs (the step header and that head's payload); other heads are never read or decoded.

Example (inside a plugin route):

```python
reader = AttentionReader(context.data_provider)
ctx, eid = plugin_util.context(environ), plugin_util.experiment_id(environ)
datum = reader.datum(ctx, eid, "train", "encoder/layer_0", step=100)
header, codes, scale, stream = reader.header_and_head(
    ctx, eid, "train", "encoder/layer_0", datum, example=0, head=3
)
```
"""

import concurrent.futures
import dataclasses
import threading

from tensorboard import errors as tb_errors
from tensorboard.backend.event_processing import data_provider as multiplexer_provider
from tensorboard.data import provider

from tb_attention_plugin import encoding
from tb_attention_plugin import health_summary
from tb_attention_plugin import metadata
from tb_attention_plugin.server import bounded_cache
from tb_attention_plugin.server.errors import NotFound, Unreadable

# Enough to list every retained step whatever --samples_per_plugin says (0 = keep all).
_LIST_ALL = 1 << 30
# Blobs read at once. The Rust data server answers a lone `read_blob` of a blob between about
# 1 KB and 64 KB only after ~40 ms (TCP delayed acknowledgement; see bench/bench_serving.py),
# while several reads in flight share that wait: so reads that one answer needs go out together.
# The Python reader (`--load_fast=false`) reads in process, holding the GIL: there threads only
# add hand-offs, and reads run one after the other on the request's thread.
_CONCURRENT_READS = 8


@dataclasses.dataclass(frozen=True)
class HealthRecord:
    """One stored head-health record of a layer (`<layer tag>/health`) at one step."""

    step: int
    wall_time: float
    record: dict  # `health_summary.check`ed; None when `error` is set
    error: str  # None when readable


@dataclasses.dataclass(frozen=True)
class TagSummary:
    """What `/runs` says about one tag: its newest step's header, or why it cannot be read."""

    run: str
    tag: str
    description: str
    max_step: int
    header: dict  # of the newest step; None when `error` is set
    error: str  # None when readable


class AttentionReader:
    """Reads steps, headers, payloads and images of attention tags, with small caches.

    Caches never serve stale data: the step index of a tag is rebuilt when the tag's newest step,
    wall time or blob count changes, and decoded headers are keyed by `(run, tag, step, wall
    time)`, so a step rewritten by a restarted run is read afresh.

    Args:
      data_provider: `context.data_provider` of the plugin.
      downsample: Most steps to list per tag; `None` or 0 lists every retained step.
    """

    def __init__(self, data_provider, downsample=None):
        self._provider = data_provider
        self._downsample = downsample if downsample else _LIST_ALL
        self._indexes = bounded_cache.LRUCache(max_entries=256)
        self._headers = bounded_cache.LRUCache(max_entries=4096)
        # Parsed head-health records (~100 bytes a head), by (run, tag, step, wall time).
        self._records = bounded_cache.LRUCache(max_entries=16384)
        # (eid, run, tag) -> the newest shape seen
        self._shapes = bounded_cache.LRUCache(max_entries=4096)
        self._index_lock = threading.Lock()
        self._inflight = {}  # header key -> Future of the read in progress
        self._inflight_lock = threading.Lock()
        self._pool = None
        if not isinstance(data_provider, multiplexer_provider.MultiplexerDataProvider):
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_CONCURRENT_READS, thread_name_prefix="tb-attention-read"
            )

    def _map(self, function, items):
        """`[function(item) for item in items]`, concurrently when reads gain from it."""
        if self._pool is None:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    def list_tags(self, ctx, experiment_id):
        """Returns a `TagSummary` for every attention tag of every run, sorted by run and tag."""
        listing = self._provider.list_blob_sequences(
            ctx, experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME
        )
        newest = self._provider.read_blob_sequences(
            ctx, experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME, downsample=1
        )
        def newest_header(run, tag):
            """`(header, error)` of the tag's newest step."""
            error = _metadata_error(listing[run][tag].plugin_content)
            datums = newest.get(run, {}).get(tag) or []
            if error is None and not datums:
                error = "no readable step"
            if error is not None:
                return None, error
            try:
                return self.header(ctx, experiment_id, run, tag, datums[-1]), None
            except NotFound as e:
                return None, str(e)

        run_tags = [(run, tag) for run in sorted(listing) for tag in sorted(listing[run])]
        headers = self._map(lambda run_tag: newest_header(*run_tag), run_tags)
        summaries = []
        for (run, tag), (header, error) in zip(run_tags, headers):
            series = listing[run][tag]
            summaries.append(
                TagSummary(
                    run=run,
                    tag=tag,
                    description=series.description or "",
                    max_step=series.max_step,
                    header=header,
                    error=error,
                )
            )
        return summaries

    def layer_tags(self, ctx, experiment_id, run):
        """The attention (blob sequence) tags of one run, sorted; `NotFound` for no such run.

        Health records (`<layer>/health`) are tensors, not blob sequences: never listed here.
        """
        listing = self._provider.list_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        )
        return sorted(listing.get(run, {}))

    def health_records(self, ctx, experiment_id, run):
        """Every retained head-health record of a run: `{layer tag: [HealthRecord ascending]}`.

        One `read_tensors` call reads every step of every layer (the records are small JSON).
        Parsed records are cached by `(run, tag, step, wall time)`.
        """
        sequences = self._provider.read_tensors(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=self._downsample,
            run_tag_filter=provider.RunTagFilter(runs=[run]),
        )
        records = {}
        for tag, datums in sorted(sequences.get(run, {}).items()):
            layer = health_summary.layer_of(tag)
            if layer is None:
                continue
            found = []
            for datum in sorted(datums, key=lambda d: d.step):
                key = (experiment_id, run, tag, datum.step, datum.wall_time)
                cached = self._records.get(key)
                if cached is None:
                    try:
                        cached = health_summary.decode(datum.numpy)
                    except health_summary.RecordError as e:
                        cached = "run %r tag %r step %d cannot be read: %s" % (
                            run, tag, datum.step, e)
                    self._records.put(key, cached)
                if isinstance(cached, str):
                    found.append(HealthRecord(datum.step, datum.wall_time, None, cached))
                else:
                    found.append(HealthRecord(datum.step, datum.wall_time, cached, None))
            records[layer] = found
        return records

    def steps(self, ctx, experiment_id, run, tag):
        """Returns the tag's retained steps as `BlobSequenceDatum`s, ascending by step."""
        return self._index(ctx, experiment_id, run, tag)[1]

    def datum(self, ctx, experiment_id, run, tag, step):
        """Returns the `BlobSequenceDatum` of one step; `NotFound` if it is not retained."""
        by_step = self._index(ctx, experiment_id, run, tag)[0]
        if step not in by_step:
            raise NotFound(
                "run %r tag %r has no step %d (steps may have been dropped by sampling; see "
                "/steps)" % (run, tag, step)
            )
        return by_step[step]

    def header(self, ctx, experiment_id, run, tag, datum):
        """Returns the decoded header of a step; `Unreadable` if corrupt or from the future.

        Concurrent requests for one step (the tab asks for a step's header and all its heads at
        once) share a single read of the header blob.
        """
        key = (experiment_id, run, tag, datum.step, datum.wall_time)
        with self._inflight_lock:
            cached = self._headers.get(key)
            pending = None if cached is not None else self._inflight.get(key)
            owner = cached is None and pending is None
            if owner:
                pending = self._inflight[key] = concurrent.futures.Future()
        if cached is None:
            if not owner:
                cached = pending.result()  # raises what the reading request raised
            else:
                try:
                    cached = self._decode_header(ctx, experiment_id, run, tag, datum)
                    self._headers.put(key, cached)
                    pending.set_result(cached)
                except BaseException as e:  # e.g. the step vanished: every waiter learns why
                    pending.set_exception(e)
                    raise
                finally:
                    with self._inflight_lock:
                        del self._inflight[key]
        if isinstance(cached, Exception):
            raise cached
        return cached

    def _decode_header(self, ctx, experiment_id, run, tag, datum):
        """Reads and decodes a header; a malformed one is returned as an `Unreadable`."""
        try:
            blob = self._read(ctx, datum, 0)
            header = encoding.decode_header(blob)
            if encoding.blob_count(header) > len(datum.values):
                raise encoding.FormatError(
                    "step header describes %d blobs but the step has %d"
                    % (encoding.blob_count(header), len(datum.values))
                )
        except encoding.FormatError as e:
            return Unreadable("run %r tag %r step %d cannot be read: %s" % (run, tag, datum.step, e))
        self._shapes.put((experiment_id, run, tag), tuple(header["shape"]))
        return header

    def header_and_head(self, ctx, experiment_id, run, tag, datum, example, head):
        """Returns `(header, codes [Tq, Tk], scale, stream)` of one head (codes as
        `encoding.decode_codes` gives them: uint8 for a format v1 step, uint16 for v2).

        `stream` is the stored payload when it is exactly one zlib stream whose checksum zlib
        verified against `codes` (its deflate blocks can be served as they are), else None.

        When the header is not cached yet and reads run concurrently, its blob and the head's
        payload blob are read at the same time, the payload's index being predicted from the
        tag's last known shape (layers keep their shape across steps); a wrong prediction costs
        one more read, never a wrong answer.
        """
        header_key = (experiment_id, run, tag, datum.step, datum.wall_time)
        guess = self._shapes.get((experiment_id, run, tag))
        speculative = None
        if self._pool is not None and self._headers.get(header_key) is None and guess is not None:
            guessed = {"shape": list(guess), "image": len(datum.values) > 1 + guess[0] * guess[1]}
            if encoding.blob_count(guessed) == len(datum.values):
                try:
                    index = encoding.payload_index(guessed, example, head)
                except IndexError:
                    index = None
                if index is not None:
                    speculative = (index, self._pool.submit(self._read, ctx, datum, index))
        header = self.header(ctx, experiment_id, run, tag, datum)
        index = self._payload_index(header, example, head)
        if speculative is not None and speculative[0] == index:
            payload = speculative[1].result()
        else:
            payload = self._read(ctx, datum, index)
        codes, scale, whole = self._decode_head(run, tag, datum, header, example, head, payload)
        return header, codes, scale, (payload if whole else None)

    def _decode_head(self, run, tag, datum, header, example, head, payload):
        """`(codes, scale, whole)`; see `encoding.inflate_codes`."""
        index = encoding.payload_index(header, example, head)
        try:
            codes, whole = encoding.inflate_codes(payload, header)
        except encoding.FormatError as e:
            raise Unreadable(
                "run %r tag %r step %d example %d head %d cannot be read: %s"
                % (run, tag, datum.step, example, head, e)
            ) from None
        return codes, header["scales"][index - 1], whole

    def example_weights(self, ctx, experiment_id, run, tag, datum, header, example):
        """Returns one example's weights as a list of float32 `[Tq, Tk]`, one per head, NaN
        where masked (`np.stack` it for `[heads, Tq, Tk]`)."""
        heads = range(header["shape"][1])
        indexes = [self._payload_index(header, example, head) for head in heads]
        payloads = self._map(lambda index: self._read(ctx, datum, index), indexes)
        weights = []
        for head, payload in zip(heads, payloads):
            codes, scale, _ = self._decode_head(run, tag, datum, header, example, head, payload)
            weights.append(encoding.codes_to_weights(codes, scale))
        return weights

    def image_png(self, ctx, experiment_id, run, tag, datum, header, example):
        """Returns the PNG bytes of one example's probe image; `NotFound` if there is none."""
        try:
            index = encoding.image_index(header, example)
        except IndexError as e:
            raise NotFound("run %r tag %r step %d: %s" % (run, tag, datum.step, e)) from None
        png = self._read(ctx, datum, index)
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise Unreadable(
                "run %r tag %r step %d image %d is not a PNG" % (run, tag, datum.step, example)
            )
        return png

    def _payload_index(self, header, example, head):
        try:
            return encoding.payload_index(header, example, head)
        except IndexError as e:
            raise NotFound(str(e)) from None

    def _read(self, ctx, datum, index):
        if index >= len(datum.values):
            raise Unreadable("step %d has no blob %d" % (datum.step, index))
        try:
            return self._provider.read_blob(ctx, blob_key=datum.values[index].blob_key)
        except tb_errors.NotFoundError as e:
            raise NotFound("step %d is no longer available: %s" % (datum.step, e)) from None
        except tb_errors.InvalidArgumentError as e:
            # The Rust data server (TensorBoard 2.21) cannot parse its own blob keys when the run
            # or tag name holds a character JSON escapes: one such tag must not break the rest.
            raise Unreadable(
                "step %d cannot be read by TensorBoard's data server (%s); it fails on run and "
                "tag names with quotes, backslashes or control characters: rename the run or "
                "tag, or start tensorboard with --load_fast=false" % (datum.step, e)
            ) from None

    def _index(self, ctx, experiment_id, run, tag):
        """Returns `({step: datum}, [datum ascending])`, rebuilt only when the tag changed."""
        run_tag_filter = provider.RunTagFilter(runs=[run], tags=[tag])
        listing = self._provider.list_blob_sequences(
            ctx,
            experiment_id=experiment_id,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=run_tag_filter,
        )
        series = listing.get(run, {}).get(tag)
        if series is None:
            raise NotFound("no attention data for run %r tag %r" % (run, tag))
        error = _metadata_error(series.plugin_content)
        if error is not None:
            raise Unreadable("run %r tag %r: %s" % (run, tag, error))
        signature = (series.max_step, series.max_wall_time, series.max_length)
        key = (experiment_id, run, tag)
        cached = self._indexes.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        with self._index_lock:  # one rebuild at a time: the frontend fires requests in bursts
            cached = self._indexes.get(key)
            if cached is not None and cached[0] == signature:
                return cached[1]
            sequences = self._provider.read_blob_sequences(
                ctx,
                experiment_id=experiment_id,
                plugin_name=metadata.PLUGIN_NAME,
                downsample=self._downsample,
                run_tag_filter=run_tag_filter,
            )
            datums = sorted(sequences.get(run, {}).get(tag) or [], key=lambda d: d.step)
            index = ({d.step: d for d in datums}, datums)
            self._indexes.put(key, (signature, index))
            return index


def _metadata_error(plugin_content):
    """Returns why a tag's plugin metadata cannot be read, or None."""
    try:
        parsed = metadata.parse_plugin_metadata(plugin_content)
    except ValueError as e:
        return str(e)
    if parsed["version"] not in metadata.SUPPORTED_VERSIONS:
        return (
            "written in format version %r; this tb-attention reads version(s) %s: upgrade "
            "tb-attention" % (parsed["version"], sorted(metadata.SUPPORTED_VERSIONS))
        )
    return None
