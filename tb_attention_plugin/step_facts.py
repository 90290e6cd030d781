"""The optional facts a step may carry about its heads and tokens (numpy only): the key/value
group of every query head (grouped-query attention) and which positions hold special or
padding tokens. Checks what writers are given and builds the header fields (docs/format.md,
"Header": `kv_group_size`, `query_special`, `key_special`); `step_header.decode_header` checks
them on reading.

Example:

>>> group_size(heads=8, kv_heads=2)
4
>>> special_positions([True, False, False, True], batch=2, length=4, name="query_special")
[[0, 3], [0, 3]]
>>> header_fields(4, [[0, 3]], None)
{'kv_group_size': 4, 'query_special': [[0, 3]]}
"""

import numpy as np

from tb_attention_plugin.step_header import MAX_VALUES_PER_STEP
from tb_attention_plugin.step_inputs import boolean_array, whole_number


def group_size(heads, kv_heads=None, kv_group_size=None):
    """Query heads per key/value head, or None when every query head has its own.

    `kv_heads`: the number of key/value heads the given `heads` query heads read (grouped-query
    attention: `heads` must be a multiple of it). `kv_group_size`: the same fact as query heads
    per key/value head, for weights that hold only the first heads of a layer. At most one of
    the two may be given; a group of 1 is no grouping (None).

    >>> group_size(4, kv_heads=4) is None, group_size(3, kv_group_size=2)
    (True, 2)
    """
    if kv_heads is not None and kv_group_size is not None:
        raise ValueError("give kv_heads or kv_group_size, not both")
    if kv_heads is not None:
        kv_heads = whole_number(kv_heads, "kv_heads", 1)
        if heads % kv_heads:
            raise ValueError("kv_heads=%d does not divide the %d heads of the weights (query head "
                             "h reads key/value head h // (heads / kv_heads)); for only some of a "
                             "layer's heads give kv_group_size" % (kv_heads, heads))
        size = heads // kv_heads
    elif kv_group_size is not None:
        size = whole_number(kv_group_size, "kv_group_size", 1)
        if size > MAX_VALUES_PER_STEP:
            raise ValueError("kv_group_size=%d is larger than any layer has" % size)
    else:
        return None
    return size if size > 1 else None


def special_positions(flags, batch, length, name):
    """None, or for each of `batch` examples the ascending positions where `flags` is true.

    `flags`: booleans (or 0/1) per position: one sequence of `length` for every example, or one
    per example (`[batch, length]`)."""
    if flags is None:
        return None
    array = boolean_array(flags, name)
    if array.ndim == 1:
        array = np.broadcast_to(array, (batch,) + array.shape)
    if array.shape != (batch, length):
        raise ValueError("%s must be %d booleans (one per position) or [%d, %d], got shape %s"
                         % (name, length, batch, length, tuple(array.shape)))
    return [np.flatnonzero(row).tolist() for row in array]


def header_fields(kv_group_size=None, query_special=None, key_special=None):
    """The given facts as header fields (absent ones are left out: readers take an absent
    field as no groups, no special positions)."""
    fields = {"kv_group_size": kv_group_size, "query_special": query_special,
              "key_special": key_special}
    return {key: value for key, value in fields.items() if value is not None}
