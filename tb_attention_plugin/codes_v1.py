"""Format version 1 codes (`u8-zlib`, still read): one linear byte per weight (numpy only).

Code `c` in 0..254 stands for the weight `c * scale / 254`; 255 marks a masked position
(docs/format.md, "Payload encoding u8-zlib"). Writers write version 1 only for steps whose
version 2 codes would not fit `payload_bound` and for tests of reading old data.

Example:

>>> import numpy as np
>>> codes = quantize_v1(np.array([[1.0, 0.5, 0.0]], np.float32), np.float32(1.0))
>>> codes.tolist(), weights_v1(codes, 1.0).tolist()
([[254, 127, 0]], [[1.0, 0.5, 0.0]])
"""

import numpy as np

MASKED = 255  # the masked code of both versions' stored bytes
LEVELS = 254  # v1: codes 0..254 carry weights code * scale / 254; 255 is "masked"
# Both versions: |decoded - weight| <= scale * MAX_ERROR <= MAX_ERROR for weights in [0, 1].
MAX_ERROR = 1.0 / (2 * LEVELS)


def quantize_v1(matrix, scale, mask=None):
    """uint8 linear codes of float32 weights `matrix` at `scale` (their largest attended
    weight, float32), `MASKED` where `mask` is False."""
    if scale > 0:
        codes = np.rint(matrix * (np.float32(LEVELS) / scale)).astype(np.uint8)
    else:
        codes = np.zeros(matrix.shape, np.uint8)
    if mask is not None:
        codes[~mask] = MASKED
    return codes


def weights_v1(codes, scale):
    """float32 weights of uint8 version 1 codes at `scale`, NaN where masked."""
    weights = codes.astype(np.float32) * (np.float32(scale) / np.float32(LEVELS))
    weights[codes == MASKED] = np.nan
    return weights
