"""What the logger could not do, told once: `AttentionLoggerWarning` and `Problems`.

The `AttentionLogger` never stops training. Every failure (an unwritable directory, a layer
without readable scores, tokens that do not fit) becomes one `AttentionLoggerWarning` per cause,
however often the cause recurs. This module imports nothing heavy, so
`tb_attention_plugin.AttentionLoggerWarning` can be filtered without importing Keras.

Example:

```python
problems = Problems()
problems.warn(("tokens", "encoder/mha"), "tokens do not fit")   # warns
problems.warn(("tokens", "encoder/mha"), "tokens do not fit")   # same cause: silent
```
"""

import contextlib
import threading
import warnings


class AttentionLoggerWarning(UserWarning):
    """Something the `AttentionLogger` could not log; training goes on.

    Example: `warnings.simplefilter("error", tb_attention_plugin.AttentionLoggerWarning)` turns
    these into errors in a test.
    """


class Problems:
    """Warns once per cause: `cause` is any hashable, e.g. `("tokens", tag, axis)`.

    Inside `deferred()` (the logger's background writer) problems wait until `release()` on
    another thread (the training thread), so that warning filters and `catch_warnings` there
    see them as they would any other."""

    def __init__(self):
        self._seen = set()
        self._local = threading.local()
        self._waiting = []  # (cause, message) met inside deferred(), oldest first

    def warn(self, cause, message):
        if getattr(self._local, "muted", False):
            return
        if getattr(self._local, "deferring", False):
            self._waiting.append((cause, message))  # list.append is atomic
            return
        if cause in self._seen:
            return
        self._seen.add(cause)
        # stacklevel 3: the logger method that hit the problem, as before the split.
        warnings.warn("AttentionLogger: " + message, AttentionLoggerWarning, stacklevel=3)

    @contextlib.contextmanager
    def deferred(self):
        """Problems met on this thread inside the block wait for `release()`."""
        self._local.deferring = True
        try:
            yield
        finally:
            self._local.deferring = False

    @contextlib.contextmanager
    def muted(self):
        """Problems met on this thread inside the block are dropped, not counted as told (a
        trial plan from guessed facts: what it would warn of is found again from real ones)."""
        self._local.muted = True
        try:
            yield
        finally:
            self._local.muted = False

    def release(self):
        """Warns what was met inside `deferred()` since the last call."""
        while self._waiting:
            cause, message = self._waiting.pop(0)
            self.warn(cause, message)
