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

import warnings


class AttentionLoggerWarning(UserWarning):
    """Something the `AttentionLogger` could not log; training goes on.

    Example: `warnings.simplefilter("error", tb_attention_plugin.AttentionLoggerWarning)` turns
    these into errors in a test.
    """


class Problems:
    """Warns once per cause: `cause` is any hashable, e.g. `("tokens", tag, axis)`."""

    def __init__(self):
        self._seen = set()

    def warn(self, cause, message):
        if cause in self._seen:
            return
        self._seen.add(cause)
        # stacklevel 3: the logger method that hit the problem, as before the split.
        warnings.warn("AttentionLogger: " + message, AttentionLoggerWarning, stacklevel=3)
