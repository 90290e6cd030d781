"""The probe: the small fixed batch the logger runs the model on, and the images under it.

`Probe` keeps the first `max_examples` examples of the batch the user gives (an array, a
tuple/list or a dict of arrays, as the model is called with), remembers how many there were
(for the reduction note), and holds the images to draw attention over: the `images=` argument,
or the probe itself when it is an image batch `[B, H, W, 1|3|4]`. `patch_layout` says whether
a layer's keys are those images' patches.

Example:

```python
probe = Probe(pixels[:8], max_examples=2)
probe.size, probe.examples   # 8, 2
probe.images.shape           # (2, 32, 32, 3): the probe is an image batch
probe.patch_layout("vit/mha", 65, cross=False)   # ([8, 8], 1)
```
"""

import keras
import numpy as np

from tb_attention_plugin import encoding


def slice_batch(structure, count):
    """The first `count` examples of every array in a (nested) probe batch."""

    def first(value):
        if hasattr(value, "shape") and len(value.shape) >= 1:
            return value[:count]
        return value

    return keras.tree.map_structure(first, structure)


def batch_size(structure):
    """The length of the first batch axis found in a (nested) probe batch."""
    for value in keras.tree.flatten(structure):
        if hasattr(value, "shape") and len(value.shape) >= 1:
            return int(value.shape[0])
    raise ValueError("probe must hold arrays with a batch axis, got %r" % (type(structure),))


def is_image_batch(value):
    """Whether `value` is one array `[B, H, W, 1|3|4]` of floats or uint8."""
    if isinstance(value, (dict, list, tuple)) or not hasattr(value, "shape"):
        return False
    array = np.asarray(value)
    return array.ndim == 4 and array.shape[-1] in (1, 3, 4) and (
        np.issubdtype(array.dtype, np.floating) or array.dtype == np.uint8
    )


def _checked_images(images, examples):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError("images must have shape [batch, height, width, 1|3|4], got %s"
                         % (images.shape,))
    if images.shape[0] < examples:
        raise ValueError("images holds %d examples, the probe logs %d"
                         % (images.shape[0], examples))
    encoding.check_image_size(int(images.shape[1]), int(images.shape[2]))
    return images[:examples]


class Probe:
    """The probe batch cut to `max_examples`, and its images.

    Attributes:
      inputs: The first `examples` examples of the batch, in the batch's structure.
      size: The number of examples the user's batch holds.
      examples: `min(size, max_examples)`, the examples run and logged.
      images: `[examples, height, width, channels]`, or None without images.
    """

    def __init__(self, batch, max_examples, images=None, image_grid=None, prefix_tokens=None):
        if batch is None:
            raise ValueError("probe is required: a small batch of model inputs")
        self.size = batch_size(batch)
        self.inputs = slice_batch(batch, max_examples)
        self.examples = min(self.size, max_examples)
        self._explicit_images = images is not None
        if images is None and is_image_batch(batch):
            images = batch
        self.images = None if images is None else _checked_images(images, self.examples)
        self._image_grid = image_grid
        self._prefix_tokens = prefix_tokens

    def patch_layout(self, tag, key_length, cross):
        """`(grid, prefix_tokens)` when a layer's keys are the images' patches, else None.

        From `image_grid`/`prefix_tokens` when given, else inferred for a square grid. Raises
        `ValueError` when the keys should be patches and do not fit: `image_grid` was given, or
        `images` was and no grid can be inferred.
        """
        if self.images is None or cross:
            return None
        grid, prefix = self._image_grid, self._prefix_tokens
        if grid is not None:
            if prefix is None:
                prefix = key_length - grid[0] * grid[1]
            if prefix >= 0 and grid[0] * grid[1] + prefix == key_length:
                return list(grid), int(prefix)
            raise ValueError("%s has %d key positions, which image_grid=%s does not fit; logged "
                             "without the image" % (tag, key_length, grid))
        try:
            return encoding.infer_patch_grid(key_length, prefix)
        except ValueError as e:
            if self._explicit_images:
                raise ValueError("%s: %s; logged without the image" % (tag, e)) from None
            return None
