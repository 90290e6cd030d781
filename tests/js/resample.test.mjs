import test from "node:test";
import assert from "node:assert/strict";
import {resample} from "../../frontend/lib/resample.js";

const round = (a) => Array.from(a).map((v) => (Number.isNaN(v) ? "masked" : +v.toFixed(4)));

test("2x2 blocks average, masked cells left out, all-masked blocks stay masked", () => {
  const values = Float32Array.from([
    0.1, 0.3, NaN, NaN,
    0.5, 0.7, NaN, NaN,
    0.2, NaN, 1.0, 0.0,
    NaN, NaN, 0.5, 0.5,
  ]);
  assert.deepEqual(round(resample({rows: 4, cols: 4, values}, 2, 2)), [0.4, "masked", 0.2, 0.5]);
});

test("uneven shrink covers every cell once", () => {
  const values = Float32Array.from({length: 7 * 5}, (_, i) => i);
  const out = resample({rows: 7, cols: 5, values}, 2, 3);
  assert.equal(out.length, 6);
  // Row blocks [0,2) [2,4) [4,7); column blocks [0,2) [2,5).
  assert.equal(out[0], (0 + 1 + 5 + 6) / 4);
  assert.equal(out[5], [22, 23, 24, 27, 28, 29, 32, 33, 34].reduce((a, b) => a + b) / 9);
});

test("identity and bad sizes", () => {
  const values = Float32Array.from([1, 2, 3, 4]);
  assert.deepEqual(Array.from(resample({rows: 2, cols: 2, values}, 2, 2)), [1, 2, 3, 4]);
  assert.throws(() => resample({rows: 2, cols: 2, values}, 3, 1), RangeError);
  assert.throws(() => resample({rows: 2, cols: 2, values}, 0, 1), RangeError);
});
