import test from "node:test";
import assert from "node:assert/strict";
import {decodeMatrix, maxValue, matrixRow, WireFormatError} from "../../frontend/lib/decode.js";
import {wireBuffer, float32Payload} from "./wire.mjs";

test("uint8 codes decode to code * scale / 254 with 255 as NaN", () => {
  const codes = Uint8Array.from([0, 127, 254, 255, 1, 200]);
  const m = decodeMatrix(wireBuffer({rows: 2, cols: 3, scale: 0.8, payload: codes}));
  assert.equal(m.rows, 2);
  assert.equal(m.cols, 3);
  assert.equal(m.dtype, 1);
  assert.ok(Math.abs(m.values[0] - 0) < 1e-7);
  assert.ok(Math.abs(m.values[1] - (127 * 0.8) / 254) < 1e-6);
  assert.ok(Math.abs(m.values[2] - 0.8) < 1e-6);
  assert.ok(Number.isNaN(m.values[3]));
  assert.ok(Math.abs(m.values[5] - (200 * 0.8) / 254) < 1e-6);
  assert.ok(Math.abs(maxValue(m.values) - 0.8) < 1e-6);
  const row1 = Array.from(matrixRow(m, 1)).map((v) => (Number.isNaN(v) ? "masked" : Math.round((v * 254) / 0.8)));
  assert.deepEqual(row1, ["masked", 1, 200]);
});

test("float32 payload keeps values and NaN", () => {
  const m = decodeMatrix(wireBuffer({dtype: 2, rows: 1, cols: 4, payload: float32Payload([0.25, NaN, 0.5, 0])}));
  assert.deepEqual(Array.from(m.values).map((v) => (Number.isNaN(v) ? "nan" : v)), [0.25, "nan", 0.5, 0]);
  assert.equal(maxValue(m.values), 0.5);
});

test("a Uint8Array view at an odd offset decodes", () => {
  const inner = new Uint8Array(wireBuffer({dtype: 2, rows: 1, cols: 2, payload: float32Payload([0.125, 0.75])}));
  const outer = new Uint8Array(inner.length + 3);
  outer.set(inner, 3);
  const m = decodeMatrix(outer.subarray(3));
  assert.deepEqual(Array.from(m.values), [0.125, 0.75]);
});

test("short, oversized and malformed buffers are rejected with WireFormatError", () => {
  const good = wireBuffer({rows: 2, cols: 2, payload: Uint8Array.from([1, 2, 3, 4])});
  const cases = {
    "empty": new ArrayBuffer(0),
    "header cut": good.slice(0, 19),
    "payload short": good.slice(0, 23),
    "payload long": wireBuffer({rows: 2, cols: 2, payload: new Uint8Array(5)}),
    "bad magic": wireBuffer({magic: "PNG!", rows: 2, cols: 2}),
    "future version": wireBuffer({version: 2, rows: 2, cols: 2}),
    "unknown dtype": wireBuffer({dtype: 7, rows: 2, cols: 2, payload: new Uint8Array(4)}),
    "zero rows": wireBuffer({rows: 0, cols: 5, payload: new Uint8Array(0)}),
    "huge shape": wireBuffer({rows: 0xffffffff, cols: 0xffffffff, payload: new Uint8Array(8)}),
    "f32 payload short": wireBuffer({dtype: 2, rows: 2, cols: 2, payload: new Uint8Array(15)}),
    "NaN scale": wireBuffer({rows: 1, cols: 1, scale: NaN, payload: new Uint8Array(1)}),
    "negative scale": wireBuffer({rows: 1, cols: 1, scale: -1, payload: new Uint8Array(1)}),
  };
  for (const [name, buffer] of Object.entries(cases)) {
    assert.throws(() => decodeMatrix(buffer), WireFormatError, name);
  }
  assert.throws(() => decodeMatrix("TBAT"), WireFormatError);
  assert.throws(() => decodeMatrix(null), WireFormatError);
});

test("error messages say what is wrong", () => {
  assert.throws(
    () => decodeMatrix(wireBuffer({rows: 3, cols: 3, payload: new Uint8Array(4)})),
    /3x3 needs 29 bytes, the answer has 24/);
  assert.throws(() => decodeMatrix(wireBuffer({version: 9, rows: 1, cols: 1})), /wire version 9/);
});
