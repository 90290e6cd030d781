"""Strict parsing of query-string parameters for the plugin's HTTP routes.

Every problem raises `errors.BadRequest` with a message naming the parameter, which the routes
answer with HTTP 400 and `{"error": message}`.

Example:

>>> from werkzeug.test import EnvironBuilder
>>> args = QueryArgs(EnvironBuilder(query_string="step=12&head=mean").get_request())
>>> args.integer("step"), args.integer_or("head", "mean")
(12, 'mean')
"""

import re

from tb_attention_plugin.server.errors import BadRequest

_INTEGER = re.compile(r"-?[0-9]{1,19}\Z")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_STRING = 4096
_REQUIRED = object()


class QueryArgs:
    """Typed access to a werkzeug request's query parameters."""

    def __init__(self, request):
        self._args = request.args

    def _raw(self, name, default):
        values = self._args.getlist(name)
        if not values:
            if default is _REQUIRED:
                raise BadRequest("missing parameter %r" % name)
            return default
        if len(values) > 1:
            raise BadRequest("parameter %r given %d times" % (name, len(values)))
        return values[0]

    def string(self, name, default=_REQUIRED):
        """A non-empty string of at most 4096 characters."""
        value = self._raw(name, default)
        if value is default and default is not _REQUIRED:
            return value
        if not value:
            raise BadRequest("parameter %r must not be empty" % name)
        if len(value) > _MAX_STRING:
            raise BadRequest("parameter %r is longer than %d characters" % (name, _MAX_STRING))
        return value

    def integer(self, name, default=_REQUIRED, minimum=_INT64_MIN):
        """A decimal int64 no smaller than `minimum`."""
        value = self._raw(name, default)
        if value is default and default is not _REQUIRED:
            return value
        return _parse_integer(name, value, minimum)

    def integer_or(self, name, word, default=_REQUIRED, minimum=0):
        """Either the literal `word` (returned as is) or an integer as `integer()` reads it."""
        value = self._raw(name, default)
        if value == word or (value is default and default is not _REQUIRED):
            return value
        try:
            return _parse_integer(name, value, minimum)
        except BadRequest:
            raise BadRequest(
                "parameter %r must be %r or an integer >= %d, got %r"
                % (name, word, minimum, value[:100])
            ) from None


def _parse_integer(name, value, minimum):
    if not _INTEGER.match(value):
        raise BadRequest("parameter %r must be an integer, got %r" % (name, value[:100]))
    number = int(value)
    if not max(minimum, _INT64_MIN) <= number <= _INT64_MAX:
        raise BadRequest("parameter %r must be in [%d, %d], got %d" % (name, minimum, _INT64_MAX, number))
    return number
