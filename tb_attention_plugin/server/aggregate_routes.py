"""The plugin's `/stats` and `/rollout` routes: aggregates computed on the server.

Statistics over every step of a tag and the attention rollout through a stack of layers read
many matrices; the server computes them (`aggregates.py`) and sends the browser only the result:
per-head numbers as JSON, or one float32 matrix in the `/matrix` wire format. A step difference
is not served here: the tab subtracts two `/matrix` answers it already fetches for the two steps
(docs/http_api.md says why).

Example (how `AttentionPlugin` mounts them):

```python
routes = AggregateRoutes(reader)
apps = {"/stats": routes.serve_stats, "/rollout": routes.serve_rollout}
```
"""

from tensorboard.backend import http_util

from tb_attention_plugin.server import aggregates
from tb_attention_plugin.server import request_args
from tb_attention_plugin.server import route_util
from tb_attention_plugin.server import wire_format
from tb_attention_plugin.server.errors import BadRequest

ROLLOUT_CACHE_BYTES = 32 * 1024 * 1024


class AggregateRoutes:
    """Handlers of `/stats` and `/rollout`, with their own caches.

    Args:
      reader: the plugin's `reader.AttentionReader`, through which every blob is read.
    """

    def __init__(self, reader):
        self._reader = reader
        # Per-step statistics of every tag asked for: a repeated /stats reads no blobs, a grown
        # run computes only its new steps.
        self.statistics_cache = aggregates.StepStatisticsCache()
        self._rollouts = route_util.answer_cache(512, ROLLOUT_CACHE_BYTES)

    @route_util.json_errors
    def serve_stats(self, request):
        """`GET /stats?run=R&tag=T[&example=E]`: per-head statistics of every retained step."""
        args = request_args.RouteArgs(request, "run", "tag")
        example = args.integer("example", default=None, minimum=0)
        body = aggregates.tag_statistics(
            self._reader, args.ctx, args.eid, args.run, args.tag, example=example,
            cache=self.statistics_cache,
        )
        return http_util.Respond(request, body, "application/json")

    @route_util.json_errors
    def serve_rollout(self, request):
        """`GET /rollout?run=R&tag=T1&tag=T2...&step=S&example=E[&residual=0]` (wire dtype 2)."""
        args = request_args.RouteArgs(request, "run", "step", "example")
        ctx, eid, run, step, example = args.ctx, args.eid, args.run, args.step, args.example
        residual = args.choice("residual", ("0", "1"), default="1")
        tags = _tags(request)
        # The ETag includes every layer's wall time, so a restarted run's rewrite gets a new one.
        wall_times = tuple(self._reader.datum(ctx, eid, run, tag, step).wall_time for tag in tags)
        etag = route_util.etag("rollout", eid, run, tags, step, wall_times, example, residual)

        def build():
            result = aggregates.rollout(
                self._reader, ctx, eid, run, tags, step, example, residual=residual == "1"
            )
            return wire_format.encode_values(result["matrix"]), None

        return route_util.etagged(
            request, etag, "application/octet-stream", build, cache=self._rollouts
        )


def _tags(request):
    """The repeated `tag` parameter, bottom layer first; 400 when missing, empty or repeated."""
    tags = aggregates.rollout_tags(request.args.getlist("tag"))
    for tag in tags:
        if not tag or len(tag) > 4096:
            raise BadRequest("every 'tag' must be 1 to 4096 characters")
    return tags
