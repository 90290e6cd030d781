"""The plugin's download routes: `/export` (NumPy files) and `/filmstrip` (a PNG).

`/export` answers one decoded matrix as a `.npy` file, or, for a step stored pooled, all it
stores of a head (overview means and maxes with their block ranges, and each exact window) as
one `.npz` archive; both load with `numpy.load(..., allow_pickle=False)`. `/filmstrip` answers
one head across steps as a PNG (`filmstrip.py`). Matrices come from `matrices.py`, which reads
through `reader.AttentionReader`; cacheable answers go through `route_util.etagged`.
docs/http_api.md documents both routes.

Example (how `AttentionPlugin` mounts them):

```python
routes = ExportRoutes(reader)
apps = {"/export": routes.serve_export, "/filmstrip": routes.serve_filmstrip}
```
"""

import io
import re

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin.server import filmstrip
from tb_attention_plugin.server import matrices
from tb_attention_plugin.server import request_args
from tb_attention_plugin.server import route_util
from tb_attention_plugin.server.errors import BadRequest, NotFound

# `.npy`: one matrix (full steps); `.npz`: named arrays (any step; what a pooled step stores).
EXPORT_FORMATS = ("npy", "npz")
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


class ExportRoutes:
    """Handlers of `/export` and `/filmstrip`, with their answer cache.

    Args:
      reader: the plugin's `reader.AttentionReader`, through which every blob is read.
    """

    def __init__(self, reader):
        self._reader = reader
        self._answers = route_util.answer_cache(1024, ANSWER_CACHE_BYTES)

    @route_util.json_errors
    def serve_export(self, request):
        """`GET /export?run=R&tag=T&step=S&example=E&head=H[&format=npy|npz]`: a download."""
        args = request_args.RouteArgs(request, "run", "tag", "step", "example", "head")
        requested = args.choice("format", EXPORT_FORMATS, default=None)
        where = (args.ctx, args.eid, args.run, args.tag)
        datum = self._reader.datum(*where, args.step)
        header = self._reader.header(*where, datum)  # cached by the reader
        pooled = encoding.is_pooled(header)
        file_format = requested or ("npz" if pooled else "npy")
        if pooled and file_format == "npy":
            raise NotFound(
                "run %r tag %r step %d is stored as an overview and exact windows: no single "
                "matrix; ask format=npz (or no format) for all of them" % (
                    args.run, args.tag, args.step))
        etag = route_util.etag("export", args.eid, args.run, args.tag, args.step,
                               datum.wall_time, args.example, args.head, file_format)
        filename = "%s_%s_step%d_example%d_head%s.%s" % (
            _safe(args.run), _safe(args.tag), args.step, args.example, args.head, file_format)

        def build():
            if pooled:
                arrays = matrices.pooled_arrays(self._reader, *where, datum, header,
                                                args.example, args.head)
            else:
                arrays = {"matrix": matrices.full_matrix(self._reader, *where, datum,
                                                         args.example, args.head)}
            return numpy_file(arrays, file_format), None

        return route_util.etagged(
            request, etag, "application/octet-stream", build, cache=self._answers,
            headers=[("Content-Disposition", 'attachment; filename="%s"' % filename)],
        )

    @route_util.json_errors
    def serve_filmstrip(self, request):
        """`GET /filmstrip?run=R&tag=T&example=E&head=H[&steps=s1,s2][&scale=tile][&cell=N]`."""
        args = request_args.RouteArgs(request, "run", "tag", "example", "head")
        where = (args.ctx, args.eid, args.run, args.tag)
        scale = args.choice("scale", filmstrip.SCALES, default="tile")
        cell = args.integer("cell", default=None, minimum=1)
        if cell is not None and cell > MAX_CELL:
            raise BadRequest("parameter 'cell' must be 1 to %d, got %d" % (MAX_CELL, cell))
        datums = self._filmstrip_datums(*where, args.integer_list(
            "steps", default=None, most=MAX_FILMSTRIP_TILES))
        # The newest tile's shape decides the size; every tile must share it.
        rows, cols = self._reader.header(*where, datums[-1])["shape"][2:]
        cell = _filmstrip_cell(len(datums), rows, cols, cell)
        steps = [d.step for d in datums]
        etag = route_util.etag("filmstrip", args.eid, args.run, args.tag,
                               [(d.step, d.wall_time) for d in datums], args.example, args.head,
                               scale, cell)

        def build():
            tiles = [matrices.full_matrix(self._reader, *where, datum, args.example, args.head)
                     for datum in datums]
            for datum, tile in zip(datums, tiles):
                if tile.shape != (rows, cols):
                    raise BadRequest(
                        "step %d of tag %r is %dx%d, step %d is %dx%d: a filmstrip needs one "
                        "shape (pass steps= of one shape)"
                        % (datum.step, args.tag, *tile.shape, steps[-1], rows, cols)
                    )
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


def numpy_file(arrays, file_format):
    """The bytes of a `.npy` file of `arrays["matrix"]` (little-endian float32) or of a `.npz`
    archive of every array in `arrays` (compressed); neither needs pickle to load.

    >>> data = numpy_file({"matrix": np.eye(2, dtype=np.float32)}, "npy")
    >>> np.load(io.BytesIO(data), allow_pickle=False).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    buffer = io.BytesIO()
    if file_format == "npy":
        np.save(buffer, np.ascontiguousarray(arrays["matrix"], dtype="<f4"), allow_pickle=False)
    else:
        np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _filmstrip_cell(tiles, rows, cols, cell):
    """The cell size in pixels (`cell`, or about `FILMSTRIP_TILE_PIXELS` a tile side); 400 when
    the PNG would have more than `MAX_FILMSTRIP_PIXELS`."""
    if cell is None:
        cell = max(1, min(8, FILMSTRIP_TILE_PIXELS // max(rows, cols)))
    width = tiles * cols * cell + (tiles - 1) * FILMSTRIP_GAP
    if width * rows * cell > MAX_FILMSTRIP_PIXELS:
        raise BadRequest(
            "a filmstrip of %d tiles of %dx%d cells at %d pixels a cell has %d pixels, more "
            "than %d: ask for fewer steps or a smaller cell"
            % (tiles, rows, cols, cell, width * rows * cell, MAX_FILMSTRIP_PIXELS)
        )
    return cell


def _safe(name):
    """A run or tag as a file-name part: letters, digits, '.', '-' and '_' (others '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100]
