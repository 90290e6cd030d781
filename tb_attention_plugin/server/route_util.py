"""Helpers shared by the plugin's route handlers: JSON errors and cached answers.

Every route answers errors the same way (`json_errors`), and every answer fully determined by
its ETag goes through `etagged`: 304 when the browser has it, else the body from the cache or
built once, with the ETag and `Cache-Control: max-age`.

Example:

```python
@route_util.json_errors
def serve_image(self, request):
    args = request_args.RouteArgs(request, "run", "tag", "step", "example")
    datum = self._reader.datum(args.ctx, args.eid, args.run, args.tag, args.step)
    etag = route_util.etag("image", args.eid, args.run, args.tag, args.step, datum.wall_time,
                           args.example)
    return route_util.etagged(
        request, etag, "image/png", lambda: (self._png(...), None), cache=self._responses
    )
```
"""

import functools
import hashlib

from tensorboard import errors as tb_errors
from tensorboard.backend import http_util
from werkzeug import wrappers

from tb_attention_plugin.server import bounded_cache

# A step never changes once written; the ETag (which includes the wall time) changes when a
# restarted run rewrites it, so browsers may keep an answer this long without asking.
CACHE_SECONDS = 300


def json_errors(handler):
    """Wraps a route handler `(self, request) -> Response` into a WSGI app with JSON errors.

    Every `tensorboard.errors.PublicError` becomes `{"error": message}` with its HTTP code: ours
    (`errors.BadRequest` 400, `errors.NotFound` and `errors.Unreadable` 404) and TensorBoard's
    own (`InvalidArgumentError` 400, `NotFoundError` 404, ...).
    """

    @functools.wraps(handler)
    def wrapper(self, request):
        try:
            return handler(self, request)
        except tb_errors.PublicError as e:
            return error_response(request, e.http_code, str(e))

    return wrappers.Request.application(wrapper)


def error_response(request, code, message):
    return http_util.Respond(request, {"error": message}, "application/json", code=code)


def etag(*parts):
    """A short strong ETag for an answer fully determined by `parts`."""
    return hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:20]


def answer_cache(max_entries, max_bytes):
    """A `bounded_cache.LRUCache` of `(body, content_encoding)` answers for `etagged`, bounded
    by the bodies' total bytes."""
    return bounded_cache.LRUCache(
        max_entries=max_entries, max_bytes=max_bytes, size_of=lambda entry: len(entry[0])
    )


def etagged(
    request, etag, content_type, build, cache=None, cache_key=None, expires=CACHE_SECONDS,
    headers=(),
):
    """Answers a request whose answer is fully determined by `etag`: THE way routes cache.

    Args:
      request: the werkzeug request.
      etag: from `etag(...)`; 304 Not Modified when the request's `If-None-Match` holds it.
      content_type: of the body.
      build: `() -> (body, content_encoding or None)`, called only when the answer is neither
        revalidated nor in `cache`; `body` is bytes, or a dict answered as JSON.
      cache: a `bounded_cache.LRUCache` of `(body, content_encoding)`, or None to build every
        time (when building is as cheap as a cache look-up).
      cache_key: the key in `cache`; `etag` by default (add what else varies the body, e.g. the
        content coding).
      expires: `Cache-Control: max-age` seconds; 0 makes the browser revalidate every time.
      headers: more `(name, value)` response headers (e.g. `Vary`).
    """
    if etag in request.if_none_match:
        return not_modified(request, etag, expires)
    if cache is None:
        body, content_encoding = build()
    else:
        key = etag if cache_key is None else cache_key
        entry = cache.get(key)
        if entry is None:
            entry = build()
            cache.put(key, entry)
        body, content_encoding = entry
    return http_util.Respond(
        request,
        body,
        content_type,
        expires=expires,
        content_encoding=content_encoding,
        headers=[("ETag", '"%s"' % etag), *headers],
    )


def not_modified(request, etag, expires=CACHE_SECONDS):
    """A 304 answer repeating `etag`, for a request whose `If-None-Match` holds it."""
    return http_util.Respond(
        request, b"", "application/octet-stream", code=304, expires=expires,
        headers=[("ETag", '"%s"' % etag)],
    )
