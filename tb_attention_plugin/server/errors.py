"""The server's one error vocabulary: what the routes answer with 400 or 404 and `{"error": ...}`.

Each class is a TensorBoard `tensorboard.errors.PublicError` with its `http_code`, so the routes
(`route_util.json_errors`) and TensorBoard itself answer it alike, and code catching TensorBoard's
`NotFoundError` or `InvalidArgumentError` catches ours too. Unlike TensorBoard's, the message is
the text given, without a "Not found: " prefix: it already names what is missing.

Example:

>>> e = NotFound("no attention data for run 'train' tag 'layer_0'")
>>> e.http_code, str(e)
(404, "no attention data for run 'train' tag 'layer_0'")
"""

from tensorboard import errors as tb_errors


class BadRequest(tb_errors.InvalidArgumentError):
    """A missing, repeated or malformed parameter, or arguments that do not fit together (400)."""

    def __init__(self, message):
        tb_errors.PublicError.__init__(self, message)


class NotFound(tb_errors.NotFoundError):
    """No such run, tag, step, example or head (HTTP 404)."""

    def __init__(self, message):
        tb_errors.PublicError.__init__(self, message)


class Unreadable(NotFound):
    """The data exists but cannot be read: corrupt, or written by a newer format version (404)."""
