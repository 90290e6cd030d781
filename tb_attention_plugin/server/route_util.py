"""Helpers shared by the plugin's route handlers: JSON errors, request context, ETags.

Example:

```python
@route_util.json_errors
def serve_steps(self, request):
    ctx, eid = route_util.request_context(request)
    ...
```
"""

import functools
import hashlib

from tensorboard import errors as tb_errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from werkzeug import wrappers

from tb_attention_plugin.server import reader as reader_lib
from tb_attention_plugin.server import request_args

# A step never changes once written; the ETag (which includes the wall time) changes when a
# restarted run rewrites it, so browsers may keep an answer this long without asking.
CACHE_SECONDS = 300


def json_errors(handler):
    """Wraps a route handler `(self, request) -> Response` into a WSGI app with JSON errors.

    `request_args.BadRequest` becomes 400; `reader.NotFound` (and `Unreadable`) 404;
    TensorBoard's public errors their own code (`InvalidArgumentError` 400, `NotFoundError` 404).
    """

    @functools.wraps(handler)
    def wrapper(self, request):
        try:
            return handler(self, request)
        except request_args.BadRequest as e:
            return error_response(request, 400, str(e))
        except reader_lib.NotFound as e:
            return error_response(request, 404, str(e))
        except tb_errors.PublicError as e:
            return error_response(request, e.http_code, str(e))

    return wrappers.Request.application(wrapper)


def error_response(request, code, message):
    return http_util.Respond(request, {"error": message}, "application/json", code=code)


def request_context(request):
    """`(RequestContext, experiment_id)` of a request, as the data provider wants them."""
    return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)


def etag(*parts):
    """A short strong ETag for an answer fully determined by `parts`."""
    return hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:20]


def not_modified(request, tag, expires=CACHE_SECONDS):
    return http_util.Respond(
        request, b"", "application/octet-stream", code=304, expires=expires,
        headers=[("ETag", '"%s"' % tag)],
    )
