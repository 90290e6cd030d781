"""A filmstrip: one head's matrices at several steps side by side, as one PNG (numpy + png.py).

Tiles go left to right in the order given, `gap` white pixels apart, each cell of a matrix a
`cell x cell` square coloured by the frontend's viridis (`colormap.py`), masked cells grey. The
image holds pixels only; which step each tile shows is said by the route (`X-Steps`).

Example:

>>> import numpy as np
>>> from tb_attention_plugin import png
>>> tiles = [np.eye(2, dtype=np.float32), np.full((2, 2), 0.5, np.float32)]
>>> image = png.decode_png(filmstrip_png(tiles, cell=2, gap=1))
>>> image.shape
(4, 9, 3)
"""

import numpy as np

from tb_attention_plugin import png
from tb_attention_plugin.server import colormap

SCALES = ("tile", "shared", "unit")
BACKGROUND = 255  # the gap between tiles: white


def tile_vmax(tiles, scale):
    """Top of the colour scale of each tile, as the frontend's `tileScales`: each tile's own
    maximum ("tile", the frontend's "head"), the largest over all tiles ("shared"), or 1
    ("unit"). A tile whose maximum is 0 (or all masked) gets 1.

    >>> tile_vmax([np.array([[0.5]]), np.array([[0.25]])], "shared")
    [0.5, 0.5]
    """
    maxes = []
    for tile in tiles:
        finite = np.asarray(tile, np.float64)
        finite = finite[np.isfinite(finite)]
        maxes.append(float(finite.max()) if finite.size else 0.0)
    if scale == "unit":
        return [1.0] * len(tiles)
    if scale == "shared":
        shared = max([0.0] + maxes) or 1.0
        return [shared] * len(tiles)
    if scale != "tile":
        raise ValueError("scale must be one of %s, got %r" % (SCALES, scale))
    return [m or 1.0 for m in maxes]


def filmstrip_image(tiles, cell=1, gap=2, scale="tile"):
    """RGB uint8 `[rows * cell, n * cols * cell + (n - 1) * gap, 3]` of same-shaped tiles."""
    tiles = [np.asarray(tile, np.float32) for tile in tiles]
    if not tiles:
        raise ValueError("a filmstrip needs at least one tile")
    rows, cols = tiles[0].shape
    if any(tile.shape != (rows, cols) for tile in tiles):
        raise ValueError("every tile of a filmstrip must have the same shape")
    width = len(tiles) * cols * cell + (len(tiles) - 1) * gap
    image = np.full((rows * cell, width, 3), BACKGROUND, np.uint8)
    for index, (tile, vmax) in enumerate(zip(tiles, tile_vmax(tiles, scale))):
        rgb = colormap.paint(tile, vmax)
        rgb = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
        left = index * (cols * cell + gap)
        image[:, left : left + cols * cell] = rgb
    return image


def filmstrip_png(tiles, cell=1, gap=2, scale="tile"):
    """PNG bytes of `filmstrip_image`."""
    return png.encode_png(filmstrip_image(tiles, cell=cell, gap=gap, scale=scale))
