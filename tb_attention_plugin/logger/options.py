"""The `AttentionLogger`'s settings, checked once: `Options` and `check_options`.

Every argument is checked when the callback is built, so a typo fails at once with an error
that names the argument, not hours later in the first capture. The checked settings are a
frozen dataclass: nothing changes them during training.

Example:

```python
options = check_options(log_dir="logs", update_freq="epoch", layers="decoder*")
options.run_dir        # "logs/train"
options.update_steps   # None: capture at epoch ends only
```
"""

import dataclasses
import numbers
import os

from tb_attention_plugin import fs
from tb_attention_plugin import names
from tb_attention_plugin.logger import budget
from tb_attention_plugin.logger import tokens as token_utils

# The run the summaries go to under log_dir: keras.callbacks.TensorBoard's training run, so
# attention sits next to the loss curves.
RUN = "train"
EPOCH = "epoch"
BATCH = "batch"


@dataclasses.dataclass(frozen=True)
class Options:
    """The checked settings of one `AttentionLogger` (see its docstring for each argument).

    `update_steps` is `update_freq` as a number: optimizer steps between captures, or None
    for epoch ends only. `layers` and `token_roles` are tuples (patterns; `(pattern, (query
    role, key role))` pairs in the order given).
    """

    log_dir: str
    update_steps: int = 100
    layers: tuple = None
    token_roles: tuple = ()
    image_grid: tuple = None
    prefix_tokens: int = None
    limits: budget.Limits = budget.Limits()
    statistics: bool = False
    run_eagerly: bool = False

    @property
    def run_dir(self):
        """`<log_dir>/train`, where the summaries are written (joined with `/` after a URL
        scheme such as `gs://`)."""
        return fs.join(self.log_dir, RUN)


def _positive_integer(name, value, none_allowed=True):
    if value is None and none_allowed:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("%s must be a positive integer%s, got %r"
                         % (name, " or None" if none_allowed else "", value))
    return value


def _update_steps(update_freq):
    if update_freq == EPOCH:
        return None
    if update_freq == BATCH:
        return 1
    if not isinstance(update_freq, int) or isinstance(update_freq, bool) or update_freq < 1:
        raise ValueError("update_freq must be a positive integer (optimizer steps between "
                         "captures), 'batch' or 'epoch', got %r" % (update_freq,))
    return update_freq


def _layer_patterns(layers):
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not all(isinstance(p, str) for p in layers):
        raise TypeError("layers must be a pattern string or a list of them, got %r" % (layers,))
    return tuple(layers)


def _token_roles(token_roles):
    if token_roles is None:
        return ()
    try:
        token_roles = dict(token_roles)
    except (TypeError, ValueError):
        raise TypeError("token_roles must be a dict {layer path pattern: (query_role, key_role)}, "
                        "got %r" % (token_roles,)) from None
    for pattern, roles in token_roles.items():
        if (not isinstance(roles, (list, tuple)) or len(roles) != 2
                or not all(r in token_utils.ROLES for r in roles)):
            raise ValueError(
                "token_roles[%r] must be (query_role, key_role) with roles in %s, got %r"
                % (pattern, token_utils.ROLES, roles)
            )
    return tuple((pattern, tuple(roles)) for pattern, roles in token_roles.items())


def _image_grid(image_grid):
    if image_grid is None:
        return None
    if len(image_grid) != 2 or min(image_grid) < 1:
        raise ValueError("image_grid must be (rows, cols), got %r" % (image_grid,))
    return int(image_grid[0]), int(image_grid[1])


def _span(value, label):
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool))
            for v in value)):
        raise ValueError("%s must be (start, stop) with integers or None, got %r"
                         % (label, value))
    return tuple(None if v is None else int(v) for v in value)


def _windows(windows):
    """`((pattern, ((name, query, key), ...)), ...)` from the `windows=` argument."""
    if windows is None:
        return ()
    if isinstance(windows, (list, tuple)):
        windows = {"*": windows}
    if not isinstance(windows, dict):
        raise TypeError("windows must be a dict {layer path pattern: [(name, (q0, q1), (k0, k1)), "
                        "...]} or a list of such windows, got %r" % (windows,))
    result = []
    for pattern, entries in windows.items():
        if not isinstance(pattern, str):
            raise TypeError("windows keys must be layer path patterns, got %r" % (pattern,))
        checked = []
        for entry in entries:
            if not isinstance(entry, (list, tuple)) or len(entry) != 3:
                raise ValueError("windows[%r]: each window must be (name, (q0, q1), (k0, k1)), "
                                 "got %r" % (pattern, entry))
            name, query, key = entry
            if not isinstance(name, str) or not 0 < len(name) <= 100:
                raise ValueError("windows[%r]: a window name must be a string of 1 to 100 "
                                 "characters, got %r" % (pattern, name))
            checked.append((name, _span(query, "windows[%r] %r query range" % (pattern, name)),
                            _span(key, "windows[%r] %r key range" % (pattern, name))))
        result.append((pattern, tuple(checked)))
    return tuple(result)


def check_options(log_dir="logs", *, update_freq=100, layers=None, token_roles=None,
                  image_grid=None, prefix_tokens=None, max_examples=2, max_heads=None,
                  max_bytes_per_step=budget.DEFAULT_BYTES_PER_STEP, windows=None,
                  statistics=False, run_eagerly=False):
    """`Options` from the `AttentionLogger` arguments of the same names.

    Raises `ValueError` or `TypeError` naming the argument that is wrong.
    """
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError("log_dir must be a path, got %r" % (log_dir,))
    if prefix_tokens is not None and (
        not isinstance(prefix_tokens, numbers.Integral) or isinstance(prefix_tokens, bool)
        or prefix_tokens < 0
    ):
        raise ValueError("prefix_tokens must be a non-negative integer or None, got %r"
                         % (prefix_tokens,))
    if max_bytes_per_step is not None and (
        not isinstance(max_bytes_per_step, int) or isinstance(max_bytes_per_step, bool)
        or max_bytes_per_step < budget.MIN_BYTES_PER_STEP
    ):
        raise ValueError(
            "max_bytes_per_step must be an integer of at least %d bytes or None (no budget), "
            "got %r" % (budget.MIN_BYTES_PER_STEP, max_bytes_per_step)
        )
    limits = budget.Limits(
        max_examples=_positive_integer("max_examples", max_examples, none_allowed=False),
        max_heads=_positive_integer("max_heads", max_heads),
        max_bytes_per_step=max_bytes_per_step,
        windows=_windows(windows),
    )
    # A run directory TensorBoard's data server could not read back is refused now, not at
    # the first capture.
    names.check_run_dir(fs.join(os.fspath(log_dir), RUN))
    return Options(
        log_dir=os.fspath(log_dir),
        update_steps=_update_steps(update_freq),
        layers=_layer_patterns(layers),
        token_roles=_token_roles(token_roles),
        image_grid=_image_grid(image_grid),
        prefix_tokens=None if prefix_tokens is None else int(prefix_tokens),
        limits=limits,
        statistics=bool(statistics),
        run_eagerly=bool(run_eagerly),
    )
