"""A small thread-safe LRU cache bounded by entry count and by total size in bytes.

TensorBoard serves requests from several threads, so every operation takes a lock.

Example:

>>> cache = LRUCache(max_entries=2, max_bytes=1024)
>>> cache.put("a", b"xyz")
>>> cache.get("a")
b'xyz'
>>> cache.get("missing") is None
True
"""

import collections
import threading


class LRUCache:
    """Maps keys to values, evicting the least recently used entries beyond either bound.

    Args:
      max_entries: Most entries kept.
      max_bytes: Most total size kept; an entry's size is `size_of(value)`.
      size_of: Size of a value in bytes; by default `len(value)` for bytes and 1 otherwise.
    """

    def __init__(self, max_entries, max_bytes=None, size_of=None):
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._size_of = size_of or _default_size
        self._entries = collections.OrderedDict()  # key -> (value, size)
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key, value):
        size = self._size_of(value)
        if self._max_bytes is not None and size > self._max_bytes:
            return  # would evict everything else and still not fit
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while len(self._entries) > self._max_entries or (
                self._max_bytes is not None and self._bytes > self._max_bytes
            ):
                _, (_, evicted_size) = self._entries.popitem(last=False)
                self._bytes -= evicted_size

    def remove_where(self, predicate):
        """Drops every entry whose key satisfies `predicate(key)`."""
        with self._lock:
            for key in [k for k in self._entries if predicate(k)]:
                self._bytes -= self._entries.pop(key)[1]

    def __len__(self):
        with self._lock:
            return len(self._entries)


def _default_size(value):
    return len(value) if isinstance(value, (bytes, bytearray)) else 1
