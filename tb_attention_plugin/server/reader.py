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
import time

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
# Header reads in flight at once when `/steps` prefetches the headers of a tag's steps: all of
# them share one such wait on the Rust data server.
_PREFETCH_READS = 32
# A step's blobs are looked up in a listing of its tag at most this old: the tab asks for a
# step's header and heads in bursts, and each listing is a call to the data provider (a gRPC
# round trip to the Rust data server). A step missing from it is looked up in a new listing,
# and `/steps` and `/runs` always list afresh, so new steps show at once.
DATUM_LISTING_SECONDS = 1.0
# Decoded headers kept: long token lists make a header of a 8192-token step about 1 MB in memory.
HEADER_CACHE_BYTES = 128 * 1024 * 1024
# Most headers one `/steps` prefetches (the newest ones; the tab lists 100 steps by default).
_PREFETCH_STEPS = 1000


class _PooledStep(NotFound):
    """`header_and_head` found a pooled step (`stored_part` reads its overview instead)."""


@dataclasses.dataclass(frozen=True)
class StoredPart:
    """One head's stored part as `/matrix` serves it (`AttentionReader.stored_part`)."""

    header: dict
    # The inflated stored bytes, checked (v1 codes, or v2 primary + extension bytes); None when
    # `stored_part(inflate=False)` found the payload vouched for by the header's checksum.
    raw: bytes
    length: int  # of the inflated stored bytes
    rows: int  # of one plane: Tq, a window's rows, or nq for an overview
    cols: int
    planes: int  # 2 for a pooled step's overview (means rows, then maxes rows), else 1
    scale: float
    faithful: bool  # format v2 codes (else v1 linear codes)
    stream: bytes  # the stored zlib payload when it is exactly one stream, else None


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
        self._headers = bounded_cache.LRUCache(
            max_entries=4096, max_bytes=HEADER_CACHE_BYTES, size_of=_header_size
        )
        # Parsed head-health records (~100 bytes a head), by (run, tag, step, wall time).
        self._records = bounded_cache.LRUCache(max_entries=16384)
        # (eid, run, tag) -> the newest shape seen
        self._shapes = bounded_cache.LRUCache(max_entries=4096)
        self._index_lock = threading.Lock()
        self._inflight = {}  # header key -> Future of the read in progress
        self._inflight_lock = threading.Lock()
        self._pool = None
        in_process = isinstance(data_provider, multiplexer_provider.MultiplexerDataProvider)
        self._in_process = in_process
        if not in_process:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_CONCURRENT_READS, thread_name_prefix="tb-attention-read"
            )
        # Background header reads (`prefetch_headers`): many in flight on the data server; one
        # thread on the Python reader, where reads hold the GIL anyway.
        self._prefetch_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1 if in_process else _PREFETCH_READS,
            thread_name_prefix="tb-attention-prefetch",
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
        # A tag this listing no longer holds (its run was deleted) is not served from an older
        # listing either (`datum`).
        listed = set(run_tags)
        self._indexes.remove_where(
            lambda key: key[0] == experiment_id and (key[1], key[2]) not in listed)
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

    def prefetch_headers(self, ctx, experiment_id, run, tag, datums):
        """Starts reading the headers of `datums` (the newest `_PREFETCH_STEPS`) in the
        background and returns at once; `header()` then finds them cached, or joins the read in
        flight. `/steps` calls it: the tab asks for a tag's steps before it shows one, so a
        later step change reads only the head's payload blob. On the Rust data server the reads
        go out together and share its ~40 ms wait on small blobs instead of paying it per step.
        Errors are not raised here: `header()` reports them when the step is asked for.
        """
        def read(datum):
            try:
                self.header(ctx, experiment_id, run, tag, datum)
            except Exception:  # noqa: BLE001 - reported by the request that needs this header
                pass

        for datum in list(datums)[-_PREFETCH_STEPS:]:
            key = (experiment_id, run, tag, datum.step, datum.wall_time)
            if self._headers.get(key) is None:
                self._prefetch_pool.submit(read, datum)

    def datum(self, ctx, experiment_id, run, tag, step):
        """Returns the `BlobSequenceDatum` of one step; `NotFound` if it is not retained."""
        cached = self._indexes.get((experiment_id, run, tag))
        if cached is not None and time.monotonic() - cached[2] < DATUM_LISTING_SECONDS:
            found = cached[1][0].get(step)
            if found is not None:
                return found
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
        header, payload = self._full_payload(ctx, experiment_id, run, tag, datum, example, head)
        codes, scale, whole = self._decode_head(run, tag, datum, header, example, head, payload)
        return header, codes, scale, (payload if whole else None)

    def _full_payload(self, ctx, experiment_id, run, tag, datum, example, head):
        """`(header, payload blob)` of one head of a full step (`_PooledStep` if pooled)."""
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
        if encoding.is_pooled(header):
            raise _PooledStep(
                "run %r tag %r step %d is pooled: read its overview or a window" % (run, tag, datum.step)
            )
        index = self._payload_index(header, example, head)
        if speculative is not None and speculative[0] == index:
            payload = speculative[1].result()
        else:
            payload = self._read(ctx, datum, index)
        return header, payload

    def stored_part(self, ctx, experiment_id, run, tag, datum, example, head, window=None,
                    inflate=True):
        """The stored bytes of one head's part, checked but not unpacked: what `/matrix` serves.

        `window=None` is the head's payload (full step) or its overview (pooled step: codes of
        `2*nq` rows, the means then the maxes), `window="name"` that exact window of a pooled
        step (`NotFound` naming the windows there are, or saying the step is stored in full).
        Returns a `StoredPart`; its `raw` bytes passed every
        check `encoding.inflate_raw` makes (a corrupt payload is `Unreadable` here, before any
        answer is sent), without building per-value arrays. With `inflate=False` a payload
        whose CRC-32 and length the step header records (`encoding.vouched_length`) is not
        inflated at all: `raw` is None and `stream` the payload, byte for byte as written.
        """
        if window is None:
            try:
                header, payload = self._full_payload(
                    ctx, experiment_id, run, tag, datum, example, head
                )
                index, shape, planes = encoding.payload_index(header, example, head), None, 1
            except _PooledStep:
                header = None
        if window is not None or header is None:
            header = self.header(ctx, experiment_id, run, tag, datum)
            index, shape = self._part_index(run, tag, datum, header, example, head, window)
            planes = 2 if window is None else 1
            payload = self._read(ctx, datum, index)
        rows, cols = header["shape"][2:] if shape is None else shape
        facts = dict(header=header, rows=rows // planes, cols=cols, planes=planes,
                     scale=header["scales"][index - 1],
                     faithful=header.get("version", 1) >= 2)
        if not inflate:
            length = encoding.vouched_length(payload, header, index, shape)
            if length is not None:
                return StoredPart(raw=None, length=length, stream=payload, **facts)
        try:
            raw, whole = encoding.inflate_raw(payload, header, shape=shape)
        except encoding.FormatError as e:
            part = "" if not encoding.is_pooled(header) else (
                " overview" if window is None else " window %r" % window)
            raise Unreadable(
                "run %r tag %r step %d example %d head %d%s cannot be read: %s"
                % (run, tag, datum.step, example, head, part, e)
            ) from None
        return StoredPart(raw=raw, length=len(raw), stream=payload if whole else None, **facts)

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

    def _part_index(self, run, tag, datum, header, example, head, window):
        """`(blob index, codes shape)` of a head's overview (window None) or window."""
        where = "run %r tag %r step %d" % (run, tag, datum.step)
        if not encoding.is_pooled(header):
            raise NotFound(
                "%s is stored in full (not pooled): it has no windows; ask without 'window' for "
                "the whole matrix" % where
            )
        try:
            if window is None:
                return encoding.overview_index(header, example, head), encoding.overview_shape(header)
            index = encoding.window_index(header, window, example, head)
        except IndexError as e:
            raise NotFound("%s: %s" % (where, e)) from None
        except KeyError as e:
            raise NotFound("%s: %s" % (where, e.args[0])) from None
        entry = encoding.window(header, window)
        return index, (entry["query"][1] - entry["query"][0], entry["key"][1] - entry["key"][0])

    def _inflate(self, run, tag, datum, header, example, head, payload, shape, window):
        try:
            return encoding.inflate_codes(payload, header, shape=shape)
        except encoding.FormatError as e:
            part = "overview" if window is None else "window %r" % window
            raise Unreadable(
                "run %r tag %r step %d example %d head %d %s cannot be read: %s"
                % (run, tag, datum.step, example, head, part, e)
            ) from None

    def example_parts(self, ctx, experiment_id, run, tag, datum, header, example, window=None,
                      heads=None):
        """One example's stored part of every head (or of the `heads` listed), as float32
        arrays, NaN where masked: full steps give `[Tq, Tk]` weights per head (`window` and
        `heads` must be None); pooled steps give `(means, maxes)` `[nq, nk]` per head for the
        overview (window None), or `[q1-q0, k1-k0]` exact weights per head for a window."""
        if not encoding.is_pooled(header) and window is None:
            return self.example_weights(ctx, experiment_id, run, tag, datum, header, example)
        heads = range(header["shape"][1]) if heads is None else heads
        located = [self._part_index(run, tag, datum, header, example, h, window) for h in heads]
        payloads = self._map(lambda item: self._read(ctx, datum, item[0]), located)
        parts = []
        for head, (index, shape), payload in zip(heads, located, payloads):
            codes, _ = self._inflate(run, tag, datum, header, example, head, payload, shape, window)
            weights = encoding.codes_to_weights(codes, header["scales"][index - 1])
            if window is None:
                nq = header["pooled"]["grid"][0]
                parts.append((weights[:nq], weights[nq:]))
            else:
                parts.append(weights)
        return parts

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
        if self._in_process:
            blob = self._in_process_blob(datum.values[index].blob_key)
            if blob is not None:
                return blob
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

    def _in_process_blob(self, blob_key):
        """One blob straight from the Python reader's loaded events, or None to use `read_blob`.

        The Python reader's `read_blob` turns the WHOLE step tensor (every head of the layer,
        megabytes) into a numpy array to return one blob of it; this takes just the one string
        from the same event, with the same choice of event (the first at that step). It relies
        on `MultiplexerDataProvider` internals (TensorBoard 2.x), so anything unexpected falls
        back to `read_blob`, which then reports errors as usual.
        """
        try:
            _, _, run, tag, step, index = multiplexer_provider._decode_blob_key(blob_key)
            events = self._provider._multiplexer.Tensors(run, tag)
            event = next((e for e in events if e.step == step), None)
            if event is None:
                return None
            values = event.tensor_proto.string_val
            return values[index] if 0 <= index < len(values) else None
        except Exception:  # noqa: BLE001 - any surprise: take the public path
            return None

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
        listed_at = time.monotonic()
        cached = self._indexes.get(key)
        if cached is not None and cached[0] == signature:
            self._indexes.put(key, (signature, cached[1], listed_at))
            return cached[1]
        with self._index_lock:  # one rebuild at a time: the frontend fires requests in bursts
            cached = self._indexes.get(key)
            if cached is not None and cached[0] == signature:
                self._indexes.put(key, (signature, cached[1], listed_at))
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
            self._indexes.put(key, (signature, index, listed_at))
            return index


def _header_size(header):
    """About the memory a decoded header takes (its token strings dominate), for the cache."""
    if not isinstance(header, dict):
        return 512
    size = 512 + 32 * len(header.get("scales") or ())
    for key in ("query_tokens", "key_tokens"):
        for tokens in header.get(key) or ():
            size += sum(64 + len(t) for t in tokens)
    return size


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
