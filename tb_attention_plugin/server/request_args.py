"""Strict parsing of query-string parameters for the plugin's HTTP routes.

Every problem raises `errors.BadRequest` with a message naming the parameter, which the routes
answer with HTTP 400 and `{"error": message}`. `RouteArgs` is every route's prelude: the data
provider's request context and the parameters most routes share (`run`, `tag`, `step`,
`example`, `head`), parsed one way.

Example:

>>> from werkzeug.test import EnvironBuilder
>>> args = QueryArgs(EnvironBuilder(query_string="step=12&head=mean").get_request())
>>> args.integer("step"), args.integer_or("head", "mean")
(12, 'mean')
>>> args.choice("residual", ("0", "1"), default="1"), args.integer_list("keys", None, 16)
('1', None)
"""

import re

from tensorboard import plugin_util

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

    def choice(self, name, choices, default=_REQUIRED):
        """One of the strings `choices` (e.g. `("0", "1")` for a flag)."""
        value = self._raw(name, default)
        if value not in choices and not (value is default and default is not _REQUIRED):
            raise BadRequest("parameter %r must be %s, got %r"
                             % (name, " or ".join(repr(c) for c in choices), value[:100]))
        return value

    def integer_list(self, name, default=_REQUIRED, most=64, minimum=_INT64_MIN):
        """Distinct comma-separated integers >= `minimum` (at most `most` of them), in order."""
        value = self._raw(name, default)
        if value is default and default is not _REQUIRED:
            return value
        if not value:
            raise BadRequest("parameter %r must not be empty: list values as %s=1,3" % (name, name))
        parts = value.split(",")
        if len(parts) > most:
            raise BadRequest("parameter %r lists %d values, more than %d" % (name, len(parts), most))
        try:
            numbers = [_parse_integer(name, part, minimum) for part in parts]
        except BadRequest:
            floor = "" if minimum <= _INT64_MIN else " >= %d" % minimum
            raise BadRequest("parameter %r must be integers%s separated by commas, got %r"
                             % (name, floor, value[:100])) from None
        if len(set(numbers)) != len(numbers):
            raise BadRequest("parameter %r lists a value twice" % name)
        return numbers


class RouteArgs(QueryArgs):
    """A route's prelude: its request context and the shared parameters it names, parsed.

    `ctx` and `eid` are what the data provider wants (`RequestContext`, experiment id); each
    name in `shared` (keys of `SHARED_PARAMETERS`) becomes an attribute, parsed as every route
    parses it. Other parameters are read with the `QueryArgs` methods.

    Example:

    ```python
    args = RouteArgs(request, "run", "tag", "step", "example", "head")
    datum = reader.datum(args.ctx, args.eid, args.run, args.tag, args.step)
    window = args.string("window", default=None)
    ```
    """

    def __init__(self, request, *shared):
        super().__init__(request)
        self.ctx = plugin_util.context(request.environ)
        self.eid = plugin_util.experiment_id(request.environ)
        for name in shared:
            setattr(self, name, SHARED_PARAMETERS[name](self))


# How every route reads the parameters most of them take.
SHARED_PARAMETERS = {
    "run": lambda args: args.string("run"),
    "tag": lambda args: args.string("tag"),
    "step": lambda args: args.integer("step"),
    "example": lambda args: args.integer("example", minimum=0),
    "head": lambda args: args.integer_or("head", "mean", minimum=0),
}


def _parse_integer(name, value, minimum):
    if not _INTEGER.match(value):
        raise BadRequest("parameter %r must be an integer, got %r" % (name, value[:100]))
    number = int(value)
    if not max(minimum, _INT64_MIN) <= number <= _INT64_MAX:
        raise BadRequest("parameter %r must be in [%d, %d], got %d" % (name, minimum, _INT64_MAX, number))
    return number
