"""The Attention tab's backend: a TensorBoard plugin serving the HTTP API of docs/http_api.md.

Data is read only through `context.data_provider`, so the plugin works with the Rust data server
(the default) and with the Python reader (`--load_fast=false`). Every route is one handler
method; bad parameters get 400 and unknown or unreadable data 404, both as `{"error": "..."}`.

Example (how TensorBoard mounts it; routes live under `/data/plugin/attention`):

```python
from tensorboard.backend import application
plugin = AttentionPlugin(base_plugin.TBContext(data_provider=provider, logdir=logdir))
app = application.TensorBoardWSGI([plugin])   # GET /data/plugin/attention/runs
```
"""

import functools
import gzip
import hashlib
import zlib

import numpy as np
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import http

from tb_attention_plugin import encoding
from tb_attention_plugin import metadata
from tb_attention_plugin.server import aggregate_routes
from tb_attention_plugin.server import errors
from tb_attention_plugin.server import export_routes
from tb_attention_plugin.server import health_routes
from tb_attention_plugin.server import matrices
from tb_attention_plugin.server import reader as reader_lib
from tb_attention_plugin.server import request_args
from tb_attention_plugin.server import route_util
from tb_attention_plugin.server import static_files
from tb_attention_plugin.server import wire_format

# A step's data never changes once written, so the browser may reuse answers for a while without
# asking. Not forever: a restarted run can rewrite a step number (the ETag, which includes the
# step's wall time, then changes and the next revalidation fetches the new data).
CACHE_SECONDS = route_util.CACHE_SECONDS
# Answers kept in memory, so that flipping back and forth between heads or steps costs nothing.
RESPONSE_CACHE_BYTES = 64 * 1024 * 1024
# Below this, the 6 to 18 bytes of zlib or gzip framing outweigh what compression saves.
GZIP_MIN_BYTES = 512
# Content codings of /matrix answers, preferred first: a deflate (zlib) answer of one head is the
# stored stream with our header in front and a combined checksum, no pass over the codes; gzip
# needs a CRC-32 over them.
MATRIX_CODINGS = ("deflate", "gzip")


class AttentionPlugin(base_plugin.TBPlugin):
    """Serves attention steps, heads and probe images to the Attention tab.

    Example:

    ```python
    plugin = AttentionPlugin(context)
    plugin.get_plugin_apps()["/runs"]   # a WSGI app
    ```
    """

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context):
        self._data_provider = context.data_provider
        downsample = (context.sampling_hints or {}).get(self.plugin_name)
        self._reader = reader_lib.AttentionReader(context.data_provider, downsample)
        self._responses = route_util.answer_cache(4096, RESPONSE_CACHE_BYTES)
        self._frontend_root = static_files.frontend_root()
        self._aggregates = aggregate_routes.AggregateRoutes(self._reader)
        self._health = health_routes.HealthRoutes(self._reader)
        self._exports = export_routes.ExportRoutes(self._reader)

    def get_plugin_apps(self):
        return {
            "/runs": self._serve_runs,
            "/steps": self._serve_steps,
            "/step": self._serve_step,
            "/matrix": self._serve_matrix,
            "/image": self._serve_image,
            "/stats": self._aggregates.serve_stats,
            "/rollout": self._aggregates.serve_rollout,
            "/health": self._health.serve_health,
            "/mass": self._health.serve_mass,
            "/export": self._exports.serve_export,
            "/filmstrip": self._exports.serve_filmstrip,
            "/static/*": self._serve_static,
        }

    def is_active(self):
        return False  # TensorBoard enables the tab through `data_plugin_names()` instead

    def data_plugin_names(self):
        return (self.plugin_name,)

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/static/index.js", tab_name="Attention")

    @route_util.json_errors
    def _serve_runs(self, request):
        args = request_args.RouteArgs(request)
        runs = {}
        for summary in self._reader.list_tags(args.ctx, args.eid):
            header = summary.header or {}
            runs.setdefault(summary.run, []).append(
                {
                    "tag": summary.tag,
                    "description": summary.description,
                    "max_step": summary.max_step,
                    "shape": header.get("shape"),
                    "has_tokens": bool(header.get("query_tokens") or header.get("key_tokens")),
                    "has_image": bool(header.get("image")),
                    "error": summary.error,
                }
            )
        body = {"runs": [{"run": run, "tags": tags} for run, tags in runs.items()]}
        return http_util.Respond(request, body, "application/json")

    @route_util.json_errors
    def _serve_steps(self, request):
        args = request_args.RouteArgs(request, "run", "tag")
        datums = self._reader.steps(args.ctx, args.eid, args.run, args.tag)
        # The tab shows one of these steps next: read their headers now, together, so that a
        # step change later reads only the head's payload (docs/http_api.md, Performance).
        self._reader.prefetch_headers(args.ctx, args.eid, args.run, args.tag, datums)
        body = {"steps": [{"step": d.step, "wall_time": d.wall_time} for d in datums]}
        return http_util.Respond(request, body, "application/json")

    @route_util.json_errors
    def _serve_step(self, request):
        args = request_args.RouteArgs(request, "run", "tag", "step")
        datum = self._reader.datum(args.ctx, args.eid, args.run, args.tag, args.step)
        etag = route_util.etag("step", args.eid, args.run, args.tag, args.step, datum.wall_time)

        def build():  # the header is cached by the reader: no answer cache needed
            header = self._reader.header(args.ctx, args.eid, args.run, args.tag, datum)
            body = {"step": args.step, "wall_time": datum.wall_time, "layout": "full"}
            hidden = ("scales", "version", "encoding", "blobs", "payload_crc32",
                      "payload_lengths")
            body.update((k, v) for k, v in header.items() if k not in hidden)
            return body, None

        return route_util.etagged(request, etag, "application/json", build)

    @route_util.json_errors
    def _serve_matrix(self, request):
        args = request_args.RouteArgs(request, "run", "tag", "step", "example", "head")
        ctx, eid, run, tag, example = args.ctx, args.eid, args.run, args.tag, args.example
        window = args.string("window", default=None)
        datum = self._reader.datum(ctx, eid, run, tag, args.step)
        etag = route_util.etag(
            "matrix", eid, run, tag, args.step, datum.wall_time, example, args.head, window
        )
        coding = _matrix_coding(request)

        def build():
            if args.head == "mean":
                return self._mean_body(ctx, eid, run, tag, datum, example, coding, window)
            return self._head_body(ctx, eid, run, tag, datum, example, args.head, coding, window)

        return route_util.etagged(
            request, etag, "application/octet-stream", build, cache=self._responses,
            cache_key=(etag, coding), headers=[("Vary", "Accept-Encoding")],
        )

    def _head_body(self, ctx, eid, run, tag, datum, example, head, coding, window=None):
        # Served from the stored bytes as they are: nothing is unpacked per value. A payload
        # is checked before any answer: by the CRC-32 the step header records for it (a deflate
        # answer then needs no inflating), else by inflating it. A corrupt one answers 404 with
        # a message instead of a stream the browser fails to decode.
        part = self._reader.stored_part(ctx, eid, run, tag, datum, example, head, window,
                                        inflate=coding != "deflate")
        dtype = wire_format.stored_dtype(part.faithful, part.planes)
        shape = (part.rows, part.cols, part.scale)
        if part.raw is None:  # vouched for by its checksum: a plain zlib stream as written
            return wire_format.deflate_codes_from_zlib(
                *shape, part.stream, dtype, part.length), "deflate"
        if coding is None or part.length < GZIP_MIN_BYTES:
            return wire_format.encode_stored(part.raw, *shape, dtype), None
        if coding == "gzip":
            return wire_format.gzip_stored(part.raw, *shape, dtype, part.stream), "gzip"
        if part.stream is not None:
            try:
                return wire_format.deflate_codes_from_zlib(
                    *shape, part.stream, dtype, part.length
                ), "deflate"
            except wire_format.WireError:
                pass
        return zlib.compress(wire_format.encode_stored(part.raw, *shape, dtype), 1), "deflate"

    def _mean_body(self, ctx, eid, run, tag, datum, example, coding, window=None):
        header = self._reader.header(ctx, eid, run, tag, datum)
        matrices.check_example(header, example)
        parts = self._reader.example_parts(ctx, eid, run, tag, datum, header, example, window)
        if window is None and encoding.is_pooled(header):
            means = matrices.mean_over_heads(means for means, _ in parts)
            maxes = matrices.mean_over_heads(maxes for _, maxes in parts)
            body = wire_format.encode_values(np.concatenate([means, maxes]), planes=2)
        else:
            body = wire_format.encode_values(matrices.mean_over_heads(parts))
        if coding is not None and len(body) >= GZIP_MIN_BYTES:
            if coding == "gzip":
                compressed = gzip.compress(body, compresslevel=1, mtime=0)
            else:
                compressed = zlib.compress(body, 1)
            if len(compressed) < len(body):
                return compressed, coding
        return body, None

    @route_util.json_errors
    def _serve_image(self, request):
        args = request_args.RouteArgs(request, "run", "tag", "step", "example")
        datum = self._reader.datum(args.ctx, args.eid, args.run, args.tag, args.step)
        etag = route_util.etag(
            "image", args.eid, args.run, args.tag, args.step, datum.wall_time, args.example
        )

        def build():
            where = (args.ctx, args.eid, args.run, args.tag, datum)
            header = self._reader.header(*where)
            return self._reader.image_png(*where, header, args.example), None

        return route_util.etagged(request, etag, "image/png", build, cache=self._responses)

    @route_util.json_errors
    def _serve_static(self, request):
        # TensorBoard has already moved --path_prefix and /experiment/<id> out of the path.
        marker = "/data/plugin/%s/static/" % self.plugin_name
        path = request.path
        relative = path[len(marker) :] if path.startswith(marker) else ""
        found = static_files.resolve(self._frontend_root, relative)
        if found is None:
            raise errors.NotFound("no frontend file %r" % relative[:200])
        file_path, content_type = found
        content = file_path.read_bytes()
        etag = hashlib.sha1(content).hexdigest()[:20]
        # No max-age: a changed frontend (reinstall, development) shows up on the next reload.
        return route_util.etagged(
            request, etag, content_type, lambda: (content, None), expires=0
        )


def _matrix_coding(request):
    """The content coding for a /matrix answer: "deflate", "gzip" or None (identity)."""
    return _coding_for(request.headers.get("Accept-Encoding", ""))


@functools.lru_cache(maxsize=64)  # a browser sends the same header every time; parsing is slow
def _coding_for(accept_encoding):
    """The client's preferred coding by quality value; between equals, `MATRIX_CODINGS` order."""
    accepted = http.parse_accept_header(accept_encoding)  # quality of a coding, or of "*"
    best = max(MATRIX_CODINGS, key=lambda coding: accepted[coding])  # first of equal ones
    return best if accepted[best] > 0 else None
