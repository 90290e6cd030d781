"""Writes faithful_v2.json: one /matrix answer (wire dtype 3) of a head the real encoder wrote,
with the float32 weights the Python decoder reads from it, so the JS decoder is checked against
the Python one. Run from the repository root: `python tests/js/data/make_faithful_fixture.py`."""

import base64
import json
import pathlib

import numpy as np

from tb_attention_plugin import encoding
from tb_attention_plugin.server import wire_format

rng = np.random.default_rng(11)
logits = rng.standard_normal((12, 16))
logits[:, 0] += 4  # a first-token sink: escaped (extension) codes near the max
weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
weights[0, 3] = 2e-6 * weights.max()  # near the floor of the log levels
weights[1, 4] = 0.0
mask = np.ones(weights.shape, bool)
mask[2, 5:] = False
blobs = encoding.encode_step(weights.astype(np.float32), mask=mask)
header = encoding.decode_header(blobs[0])
codes = encoding.decode_codes(blobs[1], header)
body = wire_format.encode_codes(codes, header["scales"][0])
decoded = wire_format.decode(body).weights()
fixture = {
    "wire_base64": base64.b64encode(body).decode("ascii"),
    "weights": [None if np.isnan(v) else float(v) for v in decoded.ravel()],
    "float32": [None if not m else float(v) for v, m in zip(weights.astype(np.float32).ravel(), mask.ravel())],
}
path = pathlib.Path(__file__).with_name("faithful_v2.json")
path.write_text(json.dumps(fixture) + "\n")
print("wrote", path, "escapes:", int(np.count_nonzero((codes >= 254) & (codes < 441))))
