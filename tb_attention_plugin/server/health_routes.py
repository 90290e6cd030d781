"""The plugin's head-health routes: `/health` and `/mass`.

Both answer JSON computed by `health_aggregates.py`. Every blob is read through
`reader.AttentionReader`; errors are the server's one vocabulary (`errors.py`); cacheable
answers go through `route_util.etagged`. docs/http_api.md documents each route with an example
answer.

Example (how `AttentionPlugin` mounts them):

```python
routes = HealthRoutes(reader)
apps = {"/health": routes.serve_health, "/mass": routes.serve_mass}
```
"""

import json

from tensorboard.backend import http_util

from tb_attention_plugin.server import health_aggregates
from tb_attention_plugin.server import request_args
from tb_attention_plugin.server import route_util

ANSWER_CACHE_BYTES = 32 * 1024 * 1024


class HealthRoutes:
    """Handlers of `/health` and `/mass`, with their caches.

    Args:
      reader: the plugin's `reader.AttentionReader`, through which every blob is read.
    """

    def __init__(self, reader):
        self._reader = reader
        self.cache = health_aggregates.HealthCache()
        # Seconds a /health request may spend computing measures from stored steps.
        self.compute_seconds = health_aggregates.COMPUTE_SECONDS
        self._answers = route_util.answer_cache(1024, ANSWER_CACHE_BYTES)

    @route_util.json_errors
    def serve_health(self, request):
        """`GET /health?run=R`: head-health series, roles, alarms, emergence, changes, groups."""
        args = request_args.RouteArgs(request, "run")
        ctx, eid, run = args.ctx, args.eid, args.run
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
        args = request_args.RouteArgs(request, "run", "tag", "step", "example")
        keys = args.integer_list("keys", most=health_aggregates.MAX_KEYS, minimum=0)
        over_steps = args.choice("over_steps", ("0", "1"), default="0")
        body = health_aggregates.key_mass(
            self._reader, args.ctx, args.eid, args.run, args.tag, args.step, args.example, keys,
            over_steps=over_steps == "1", cache=self.cache, compute_seconds=self.compute_seconds,
        )
        # Not HTTP-cached: the profiles behind it are cached, and new steps keep coming.
        return http_util.Respond(request, body, "application/json")
