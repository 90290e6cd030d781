"""The viridis colour map of the frontend (frontend/lib/colormap.js), for images drawn on the server.

The 256-entry table is built exactly as `colormap("viridis")` builds it in the browser: from
every 8th entry of matplotlib's viridis (indices 0, 8, ..., 248, 255; Stéfan van der Walt and
Nathaniel J. Smith, CC0), linearly interpolated and rounded half up. tests/test_export_routes.py
checks that this table equals the JavaScript one, byte for byte, and `paint` equals
`paintValues` (index `round(value * 255 / vmax)`, clamped; NaN = masked grey).

Example:

>>> lut = viridis()
>>> lut.shape, lut[0].tolist(), lut[255].tolist()
((256, 3), [68, 1, 84], [253, 231, 37])
>>> paint(np.array([[0.0, 1.0, np.nan]]), vmax=1.0)[0].tolist()
[[68, 1, 84], [253, 231, 37], [200, 200, 200]]
"""

import math

import numpy as np

# matplotlib's viridis at indices 0, 8, 16, ..., 248 and 255 (as frontend/lib/colormap.js).
VIRIDIS_STOPS = (
    (0.267004, 0.004874, 0.329415), (0.277018, 0.050344, 0.375715), (0.282327, 0.094955, 0.417331),
    (0.282884, 0.135920, 0.453427), (0.278826, 0.175490, 0.483397), (0.270595, 0.214069, 0.507052),
    (0.258965, 0.251537, 0.524736), (0.244972, 0.287675, 0.537260), (0.229739, 0.322361, 0.545706),
    (0.214298, 0.355619, 0.551184), (0.199430, 0.387607, 0.554642), (0.185556, 0.418570, 0.556753),
    (0.172719, 0.448791, 0.557885), (0.160665, 0.478540, 0.558115), (0.149039, 0.508051, 0.557250),
    (0.137770, 0.537492, 0.554906), (0.127568, 0.566949, 0.550556), (0.120565, 0.596422, 0.543611),
    (0.120638, 0.625828, 0.533488), (0.132268, 0.655014, 0.519661), (0.157851, 0.683765, 0.501686),
    (0.196571, 0.711827, 0.479221), (0.246070, 0.738910, 0.452024), (0.304148, 0.764704, 0.419943),
    (0.369214, 0.788888, 0.382914), (0.440137, 0.811138, 0.340967), (0.515992, 0.831158, 0.294279),
    (0.595839, 0.848717, 0.243329), (0.678489, 0.863742, 0.189503), (0.762373, 0.876424, 0.137064),
    (0.845561, 0.887322, 0.099702), (0.926106, 0.897330, 0.104071), (0.993248, 0.906157, 0.143936),
)
# Colour of masked positions (padding, causal future): the frontend's MASKED_RGB.
MASKED_RGB = (200, 200, 200)

_LUT = None


def _stop_index(i):
    return 255 if i == len(VIRIDIS_STOPS) - 1 else i * 8


def _round_half_up(x):
    """JavaScript's Math.round for x >= 0 (ties go up; Python's round() goes to even)."""
    low = math.floor(x)
    return low + 1 if x - low >= 0.5 else low


def viridis():
    """The 256x3 uint8 lookup table (a read-only array)."""
    global _LUT
    if _LUT is None:
        lut = np.zeros((256, 3), np.uint8)
        for s in range(len(VIRIDIS_STOPS) - 1):
            start, stop = _stop_index(s), _stop_index(s + 1)
            for i in range(start, stop + 1):
                t = (i - start) / (stop - start)
                for c in range(3):
                    value = VIRIDIS_STOPS[s][c] + (VIRIDIS_STOPS[s + 1][c] - VIRIDIS_STOPS[s][c]) * t
                    lut[i, c] = _round_half_up(value * 255)
        lut.setflags(write=False)
        _LUT = lut
    return _LUT


def color_indices(values, vmax):
    """Lookup-table index (0..255) of each value on a 0..vmax scale, as the frontend's
    `paintValues`: `round(value * (255 / vmax))`, clamped; 0 for NaN (paint them masked)."""
    values = np.asarray(values, np.float64)
    k = 255.0 / vmax if vmax > 0 else 0.0
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num(values * k, nan=0.0)
        index = np.floor(scaled + 0.5)
    return np.clip(index, 0, 255).astype(np.uint8)


def paint(values, vmax):
    """RGB pixels `[..., 3]` uint8 of `values` through viridis on a 0..vmax scale; NaN grey."""
    values = np.asarray(values, np.float64)
    rgb = viridis()[color_indices(values, vmax)]
    rgb[np.isnan(values)] = MASKED_RGB
    return rgb
