"""The plugin's head-health routes: `/health`, `/mass`, `/export` and `/filmstrip`.

`/health` and `/mass` answer JSON computed by `health_aggregates.py`; `/export` answers one
decoded matrix as a NumPy `.npy` file and `/filmstrip` one head across steps as a PNG
(`filmstrip.py`). Every blob is read through `reader.AttentionReader`; errors are the server's
one vocabulary (`errors.py`); cacheable answers go through `route_util.etagged`.
docs/http_api.md documents each route with an example answer.

Example (how `AttentionPlugin` mounts them):

```python
routes = HealthRoutes(reader)
apps = {"/health": routes.serve_health, "/mass": routes.serve_mass,
        "/export": routes.serve_export, "/filmstrip": routes.serve_filmstrip}
```
"""

import io
import json
import re

import numpy as np
from tensorboard.backend import http_util

from tb_attention_plugin import encoding
from tb_attention_plugin.server import bounded_cache
from tb_attention_plugin.server import filmstrip
from tb_attention_plugin.server import health_aggregates
from tb_attention_plugin.server import request_args
from tb_attention_plugin.server import route_util
from tb_attention_plugin.server.errors import BadRequest, NotFound

# Most tiles in one filmstrip; without `steps=`, that many retained steps evenly spread (first
# and last included).
MAX_FILMSTRIP_TILES = 64
# Most pixels in one filmstrip PNG (~48 MB of RGB before compression).
MAX_FILMSTRIP_PIXELS = 16 * 1024 * 1024
FILMSTRIP_GAP = 2  # white pixels between tiles
# Default cell size: about 96 pixels a tile side, at most 8 pixels a cell.
FILMSTRIP_TILE_PIXELS = 96
MAX_CELL = 16
ANSWER_CACHE_BYTES = 32 * 1024 * 1024


class HealthRoutes:
    """Handlers of `/health`, `/mass`, `/export` and `/filmstrip`, with their caches.

    Args:
      reader: the plugin's `reader.AttentionReader`, through which every blob is read.
    """

    def __init__(self, reader):
        self._reader = reader
        self.cache = health_aggregates.HealthCache()
        # Seconds a /health request may spend computing measures from stored steps.
        self.compute_seconds = health_aggregates.COMPUTE_SECONDS
        self._answers = bounded_cache.LRUCache(
            max_entries=1024, max_bytes=ANSWER_CACHE_BYTES,
            size_of=lambda entry: len(entry[0]),
        )

    @route_util.json_errors
    def serve_health(self, request):
        """`GET /health?run=R`: head-health series, roles, alarms, emergence, changes, groups."""
        ctx, eid = route_util.request_context(request)
        args = request_args.QueryArgs(request)
        run = args.string("run")
        prepared = health_aggregates.health_signature(self._reader, ctx, eid, run)
        etag = route_util.etag("health", eid, run, prepared[2])
        answered = self._answers.get(etag)  # (bytes, None) of a complete answer
        if etag in request.if_none_match or answered is not None:
            return route_util.etagged(request, etag, "application/json", lambda: answered,
                                      expires=0)
        body = health_aggregates.run_health(
            self._reader, ctx, eid, run, self.cache, prepared=prepared,
            compute_seconds=self.compute_seconds,
        )
        if body["pending"]:  # a partial answer: neither cached nor given an ETag
            return http_util.Respond(request, body, "application/json")
        # Bytes, so that the answer cache counts its real size. New steps keep coming while
        # training: the browser revalidates every time (304 when unchanged).
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("ascii")
        return route_util.etagged(request, etag, "application/json", lambda: (data, None),
                                  cache=self._answers, expires=0)

    @route_util.json_errors
    def serve_mass(self, request):
        """`GET /mass?run=R&tag=T&step=S&example=E&keys=k1,k2[&over_steps=1]`."""
        ctx, eid = route_util.request_context(request)
        args = request_args.QueryArgs(request)
        run, tag, step = args.string("run"), args.string("tag"), args.integer("step")
        example = args.integer("example", minimum=0)
        keys = args.integer_list("keys", most=health_aggregates.MAX_KEYS, minimum=0)
        over_steps = args.choice("over_steps", ("0", "1"), default="0")
        body = health_aggregates.key_mass(
            self._reader, ctx, eid, run, tag, step, example, keys,
            over_steps=over_steps == "1", cache=self.cache, compute_seconds=self.compute_seconds,
        )
        # Not HTTP-cached: the profiles behind it are cached, and new steps keep coming.
        return http_util.Respond(request, body, "application/json")

    @route_util.json_errors
    def serve_export(self, request):
        """`GET /export?run=R&tag=T&step=S&example=E&head=H&format=npy`: a `.npy` download."""
        ctx, eid = route_util.request_context(request)
        args = request_args.QueryArgs(request)
        run, tag, step = args.string("run"), args.string("tag"), args.integer("step")
        example = args.integer("example", minimum=0)
        head = args.integer_or("head", "mean", minimum=0)
        args.choice("format", ("npy",), default="npy")
        datum = self._reader.datum(ctx, eid, run, tag, step)
        etag = route_util.etag("export", eid, run, tag, step, datum.wall_time, example, head)
        filename = "%s_%s_step%d_example%d_head%s.npy" % (
            _safe(run), _safe(tag), step, example, head)

        def build():
            matrix = self._matrix(ctx, eid, run, tag, datum, example, head)
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(matrix, dtype="<f4"), allow_pickle=False)
            return buffer.getvalue(), None

        return route_util.etagged(
            request, etag, "application/octet-stream", build, cache=self._answers,
            headers=[("Content-Disposition", 'attachment; filename="%s"' % filename)],
        )

    @route_util.json_errors
    def serve_filmstrip(self, request):
        """`GET /filmstrip?run=R&tag=T&example=E&head=H[&steps=s1,s2][&scale=tile][&cell=N]`."""
        ctx, eid = route_util.request_context(request)
        args = request_args.QueryArgs(request)
        run, tag = args.string("run"), args.string("tag")
        example = args.integer("example", minimum=0)
        head = args.integer_or("head", "mean", minimum=0)
        scale = args.choice("scale", filmstrip.SCALES, default="tile")
        cell = args.integer("cell", default=None, minimum=1)
        if cell is not None and cell > MAX_CELL:
            raise BadRequest("parameter 'cell' must be 1 to %d, got %d" % (MAX_CELL, cell))
        datums = self._filmstrip_datums(ctx, eid, run, tag, args.integer_list(
            "steps", default=None, most=MAX_FILMSTRIP_TILES))
        # The newest tile's shape decides the size; every tile must share it.
        newest = self._reader.header(ctx, eid, run, tag, datums[-1])
        rows, cols = newest["shape"][2:]
        if cell is None:
            cell = max(1, min(8, FILMSTRIP_TILE_PIXELS // max(rows, cols)))
        width = len(datums) * cols * cell + (len(datums) - 1) * FILMSTRIP_GAP
        if width * rows * cell > MAX_FILMSTRIP_PIXELS:
            raise BadRequest(
                "a filmstrip of %d tiles of %dx%d cells at %d pixels a cell has %d pixels, more "
                "than %d: ask for fewer steps or a smaller cell"
                % (len(datums), rows, cols, cell, width * rows * cell, MAX_FILMSTRIP_PIXELS)
            )
        steps = [d.step for d in datums]
        etag = route_util.etag("filmstrip", eid, run, tag, [(d.step, d.wall_time) for d in datums],
                               example, head, scale, cell)

        def build():
            tiles = []
            for datum in datums:
                tile = self._matrix(ctx, eid, run, tag, datum, example, head)
                if tile.shape != (rows, cols):
                    raise BadRequest(
                        "step %d of tag %r is %dx%d, step %d is %dx%d: a filmstrip needs one "
                        "shape (pass steps= of one shape)"
                        % (datum.step, tag, tile.shape[0], tile.shape[1], steps[-1], rows, cols)
                    )
                tiles.append(tile)
            return filmstrip.filmstrip_png(tiles, cell=cell, gap=FILMSTRIP_GAP, scale=scale), None

        return route_util.etagged(
            request, etag, "image/png", build, cache=self._answers,
            headers=[("X-Steps", ",".join(str(s) for s in steps)), ("X-Cell", str(cell)),
                     ("X-Gap", str(FILMSTRIP_GAP))],
        )

    def _filmstrip_datums(self, ctx, eid, run, tag, steps):
        if steps is None:
            datums = self._reader.steps(ctx, eid, run, tag)
            if not datums:
                raise NotFound("run %r tag %r has no retained step" % (run, tag))
            if len(datums) > MAX_FILMSTRIP_TILES:
                picks = np.unique(np.round(np.linspace(0, len(datums) - 1, MAX_FILMSTRIP_TILES)))
                datums = [datums[int(i)] for i in picks]
            return datums
        return [self._reader.datum(ctx, eid, run, tag, step) for step in steps]

    def _matrix(self, ctx, eid, run, tag, datum, example, head):
        """float32 `[Tq, Tk]` of one head (or the mean of heads), NaN where masked."""
        from tb_attention_plugin.server.plugin import mean_over_heads  # plugin imports us

        header = self._reader.header(ctx, eid, run, tag, datum)
        if header.get("layout", "full") != "full":
            raise NotFound("run %r tag %r step %d is stored as an overview: no full matrix"
                           % (run, tag, datum.step))
        batch = header["shape"][0]
        if example >= batch:
            raise NotFound("example %d out of range (batch %d)" % (example, batch))
        if head == "mean":
            weights = self._reader.example_weights(ctx, eid, run, tag, datum, header, example)
            return mean_over_heads(weights)
        _, codes, scale, _ = self._reader.header_and_head(ctx, eid, run, tag, datum, example, head)
        return encoding.codes_to_weights(codes, scale)


def _safe(name):
    """A run or tag as a file-name part: letters, digits, '.', '-' and '_' (others '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]
