"""The filesystem layer of the writers: local paths and remote ones (`gs://`, `s3://`, `hdfs://`).

Every file operation of `AttentionLogger`, the TensorFlow summary op and the TensorFlow-free
`AttentionWriter` goes through the same `gfile` that TensorBoard's own event file writer uses:
`tf.io.gfile` when TensorFlow is installed (every scheme TensorFlow registers, `ram://` included),
otherwise TensorBoard's stub gfile (local files, `s3://` with boto3, and every protocol fsspec
knows: `gs://` with gcsfs, `memory://`, ...). Importing this module imports neither.

Example:

```python
from tb_attention_plugin import fs

run_dir = fs.join("gs://bucket/logs", "train")  # "gs://bucket/logs/train"
fs.glob(fs.join(run_dir, "events.out.tfevents.*"))
fs.vanished(run_dir)  # False: only a local directory can vanish under an open file
```
"""

import os
import posixpath


def gfile():
    """The gfile module TensorBoard's `EventFileWriter` writes through (see the module doc)."""
    from tensorboard.compat import tf  # lazily: real TensorFlow if installed, else the stub

    return tf.io.gfile


def scheme(path):
    """The URL scheme of `path` (`"gs"`, `"s3"`, `"ram"`, ...), or `""` for a local path."""
    path = os.fspath(path)
    head, separator, _ = path.partition("://")
    if separator and head and "/" not in head:
        return head
    return ""


def is_local(path):
    """True for a path on the local disk (plain, or `file://`)."""
    return scheme(path) in ("", "file")


def local_path(path):
    """`path` without a `file://` prefix (only meaningful when `is_local(path)`)."""
    path = os.fspath(path)
    return path[len("file://"):] if path.startswith("file://") else path


def join(base, *parts):
    """Joins path parts: with `os.path.join` locally, with `/` after a URL scheme."""
    base = os.fspath(base)
    if is_local(base):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def isdir(path):
    """True when `path` is a directory; local paths are checked with one `stat`."""
    if is_local(path):
        return os.path.isdir(local_path(path))
    return gfile().isdir(os.fspath(path))


def glob(pattern):
    """The paths matching `pattern`, through `gfile()` (remote patterns too)."""
    return gfile().glob(os.fspath(pattern))


def vanished(run_dir):
    """True when the local directory `run_dir` no longer exists (removed during training).

    Only local directories can vanish under an open event file: the file's inode goes with the
    directory and later writes are lost, so a writer should start a new file. Object stores
    (`gs://`, `s3://`) have no directories, only name prefixes (a writer keeps writing its object
    under the same name), `os.path` cannot see them, and asking their API would cost a network
    round trip per capture: remote paths answer False.
    """
    return is_local(run_dir) and not os.path.isdir(local_path(run_dir))
