"""The plugin's `/stats` and `/rollout` routes: aggregates computed on the server.

Statistics over every step of a tag and the attention rollout through a stack of layers read
many matrices; the server computes them (`aggregates.py`) and sends the browser only the result:
per-head numbers as JSON, or one float32 matrix in the `/matrix` wire format. A step difference
is not served here: the tab subtracts two `/matrix` answers it already fetches for the two steps
(docs/http_api.md says why).

Example (how `AttentionPlugin` mounts them):

```python
routes = AggregateRoutes(context.data_provider, reader)
apps = {"/stats": routes.serve_stats, "/rollout": routes.serve_rollout}
```
"""


from tensorboard.backend import http_util

from tb_attention_plugin.server import aggregates
from tb_attention_plugin.server import bounded_cache
from tb_attention_plugin.server import request_args
from tb_attention_plugin.server import route_util
from tb_attention_plugin.server import wire_format

# The ETag includes every layer's wall time, so a restarted run's rewrite gets a new one.
CACHE_SECONDS = route_util.CACHE_SECONDS
ROLLOUT_CACHE_BYTES = 32 * 1024 * 1024
MAX_ROLLOUT_TAGS = 256


class AggregateRoutes:
    """Handlers of `/stats` and `/rollout`, with their own caches.

    Args:
      data_provider: TensorBoard's `context.data_provider`.
      reader: the plugin's `reader.AttentionReader` (step lists and wall times).
    """

    def __init__(self, data_provider, reader):
        self._provider = data_provider
        self._reader = reader
        # Per-step statistics of every tag asked for: a repeated /stats reads no blobs, a grown
        # run computes only its new steps.
        self.statistics_cache = aggregates.StepStatisticsCache()
        self._rollouts = bounded_cache.LRUCache(
            max_entries=512, max_bytes=ROLLOUT_CACHE_BYTES, size_of=len
        )

    @route_util.json_errors
    def serve_stats(self, request):
        """`GET /stats?run=R&tag=T[&example=E]`: per-head statistics of every retained step."""
        ctx, eid = route_util.request_context(request)
        args = request_args.QueryArgs(request)
        run, tag = args.string("run"), args.string("tag")
        example = args.integer("example", default=None, minimum=0)
        body = aggregates.tag_statistics(
            self._provider, ctx, eid, run, tag, example=example, cache=self.statistics_cache
        )
        return http_util.Respond(request, body, "application/json")

    @route_util.json_errors
    def serve_rollout(self, request):
        """`GET /rollout?run=R&tag=T1&tag=T2...&step=S&example=E[&residual=0]` (wire dtype 2)."""
        ctx, eid = route_util.request_context(request)
        args = request_args.QueryArgs(request)
        run, step = args.string("run"), args.integer("step")
        example = args.integer("example", minimum=0)
        residual = args.string("residual", default="1")
        if residual not in ("0", "1"):
            raise request_args.BadRequest(
                "parameter 'residual' must be 0 or 1, got %r" % residual[:100]
            )
        tags = _tags(request)
        wall_times = tuple(self._reader.datum(ctx, eid, run, tag, step).wall_time for tag in tags)
        etag = route_util.etag("rollout", eid, run, tags, step, wall_times, example, residual)
        if etag in request.if_none_match:
            return route_util.not_modified(request, etag)
        body = self._rollouts.get(etag)
        if body is None:
            result = aggregates.rollout(
                self._provider, ctx, eid, run, tags, step, example, residual=residual == "1"
            )
            body = wire_format.encode_values(result["matrix"])
            self._rollouts.put(etag, body)
        return http_util.Respond(
            request, body, "application/octet-stream", expires=CACHE_SECONDS,
            headers=[("ETag", '"%s"' % etag)],
        )


def _tags(request):
    """The repeated `tag` parameter, bottom layer first; 400 when missing, empty or repeated."""
    tags = request.args.getlist("tag")
    if not tags:
        raise request_args.BadRequest("missing parameter 'tag' (give one per layer, bottom first)")
    if len(tags) > MAX_ROLLOUT_TAGS:
        raise request_args.BadRequest(
            "at most %d 'tag' parameters, got %d" % (MAX_ROLLOUT_TAGS, len(tags))
        )
    for tag in tags:
        if not tag or len(tag) > 4096:
            raise request_args.BadRequest("every 'tag' must be 1 to 4096 characters")
    if len(set(tags)) != len(tags):
        raise request_args.BadRequest("a 'tag' is given twice: each layer once, bottom first")
    return tuple(tags)
