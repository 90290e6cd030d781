"""Run and tag names that TensorBoard's data server can read back.

TensorBoard's Rust data server (the default reader since TensorBoard 2.5; 2.21 checked) cannot
parse its own blob keys for a run or tag name holding a character that JSON escapes: a double
quote, a backslash or a control character (U+0000 to U+001F). Its steps then list but never
load. The writers refuse such names (`check`), the Keras callback renames its tags (`sanitise`).

Example:

```python
from tb_attention_plugin import names

names.check("encoder/layer_0", "tag")      # fine
names.sanitise('say "hi"')                  # 'say _hi_'
```
"""

import re

_UNREADABLE = re.compile(r'["\\\x00-\x1f]')
REPLACEMENT = "_"


def unreadable_characters(name):
    """The characters of `name` the data server cannot read back, in order, without repeats."""
    found = []
    for character in _UNREADABLE.findall(name):
        if character not in found:
            found.append(character)
    return found


def check(name, what="tag"):
    """Raises `ValueError` when `name` (a run or tag name) cannot be read back by TensorBoard."""
    bad = unreadable_characters(name)
    if bad:
        raise ValueError(
            "%s %r holds %s, which TensorBoard's data server cannot read back (it fails on "
            "quotes, backslashes and control characters in run and tag names): choose a name "
            "without them" % (what, name, ", ".join(repr(c) for c in bad))
        )
    return name


def sanitise(name):
    """`name` with every unreadable character replaced by `_`."""
    return _UNREADABLE.sub(REPLACEMENT, name)


def check_run_dir(path):
    """Raises `ValueError` when a component of the run directory `path` is unreadable.

    The run name TensorBoard shows is the run directory relative to its `--logdir`, which is not
    known at write time, so every component is checked (local separators are not names).
    """
    import os
    import pathlib

    from tb_attention_plugin import fs

    path = os.fspath(path)
    if fs.is_local(path):
        parts = pathlib.PurePath(fs.local_path(path)).parts
    else:
        parts = path.split("://", 1)[1].split("/")
    for part in parts:
        if unreadable_characters(part):
            check(part, "run directory component")  # raises, naming the component
    return path
