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
fs.makedirs(run_dir)
fs.glob(fs.join(run_dir, "events.out.tfevents.*"))
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


def basename(path):
    """The last component of `path` (a trailing separator ignored)."""
    path = os.fspath(path)
    if is_local(path):
        return os.path.basename(os.path.normpath(local_path(path)))
    return posixpath.basename(path.rstrip("/"))


def exists(path):
    return gfile().exists(os.fspath(path))


def isdir(path):
    """True when `path` is a directory; local paths are checked with one `stat`."""
    if is_local(path):
        return os.path.isdir(local_path(path))
    return gfile().isdir(os.fspath(path))


def makedirs(path):
    """Creates `path` and its parents (no error when it exists)."""
    gfile().makedirs(os.fspath(path))


def glob(pattern):
    return gfile().glob(os.fspath(pattern))


def listdir(path):
    return gfile().listdir(os.fspath(path))


def vanished(run_dir):
    """True when the local directory `run_dir` no longer exists (removed during training).

    Only local directories can vanish under an open event file: the file's inode goes with the
    directory and later writes are lost, so a writer should start a new file. Object stores
    (`gs://`, `s3://`) have no directories to remove and upload the whole file again on each
    flush, and asking them costs a network round trip: remote paths answer False.
    """
    return is_local(run_dir) and not os.path.isdir(local_path(run_dir))
