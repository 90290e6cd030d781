import test from "node:test";
import assert from "node:assert/strict";
import {readFileSync} from "node:fs";
import {decodeMatrix, faithfulLevels, maxValue, matrixRow, WireFormatError} from "../../frontend/lib/decode.js";
import {wireBuffer, float32Payload, faithfulPayload} from "./wire.mjs";

/** The level of format v2 index u at `scale`, from docs/format.md's definition. */
function level(u, scale) {
  if (u === 0) return 0;
  if (u <= 203) return 1e-6 * Math.pow(18 / 254 / 1e-6, (u - 1) / 203) * scale;
  return ((u - 186) / 254) * scale;
}

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

test("faithful codes (dtype 3) decode through the level tables, 255 as NaN", () => {
  const levels = [0, 1, 2, 100, 203, 204, 253, 254, 300, 440, 441, 17];
  const m = decodeMatrix(wireBuffer({dtype: 3, rows: 3, cols: 4, scale: 0.8, payload: faithfulPayload(levels)}));
  assert.equal(m.dtype, 3);
  assert.equal(m.rows, 3);
  levels.forEach((u, i) => {
    if (u === 441) return assert.ok(Number.isNaN(m.values[i]), `index ${i}`);
    const want = level(u, 0.8);
    assert.ok(Math.abs(m.values[i] - want) <= 1e-6 * want + 1e-12, `level ${u}: ${m.values[i]} vs ${want}`);
  });
  assert.equal(m.values[0], 0);
  assert.ok(Math.abs(m.values[9] - 0.8) < 1e-7);  // the head's largest weight is exact
  assert.ok(Math.abs(maxValue(m.values) - 0.8) < 1e-7);
  // Neighbouring levels: at most 5.7% apart in the log part, 1/254 of the scale in the linear part.
  const table = faithfulLevels(1);
  for (let u = 2; u <= 203; u++) assert.ok(table[u] / table[u - 1] < 1.0566 + 1e-6);
  for (let u = 205; u < 441; u++) assert.ok(Math.abs(table[u] - table[u - 1] - 1 / 254) < 1e-6);
  assert.ok(table[204] / table[203] < 1.0566 + 1e-6);
});

test("faithful codes decode exactly as the Python decoder reads a head the real encoder wrote", () => {
  const fixture = JSON.parse(readFileSync(new URL("./data/faithful_v2.json", import.meta.url)));
  const body = Uint8Array.from(Buffer.from(fixture.wire_base64, "base64"));
  const m = decodeMatrix(body);
  assert.equal(m.dtype, 3);
  assert.equal(m.values.length, fixture.weights.length);
  fixture.weights.forEach((want, i) => {
    const got = m.values[i];
    if (want === null) return assert.ok(Number.isNaN(got), `cell ${i} masked`);
    assert.ok(Math.abs(got - want) <= 2e-7 * want, `cell ${i}: ${got} vs python ${want}`);
    // ... and faithful to the float32 weight: 2.8% relative and 1/508 of the scale absolute.
    const original = fixture.float32[i];
    const error = Math.abs(got - original);
    assert.ok(error <= m.scale / 508 + 1e-7, `cell ${i}: absolute error ${error}`);
    if (original >= 1e-6 * m.scale) assert.ok(error <= 0.028 * original, `cell ${i}: relative error ${error / original}`);
  });
});

test("faithful answers with missing, extra or out-of-range extension bytes are rejected", () => {
  const payload = faithfulPayload([254, 300, 5, 441]);  // 4 primary bytes + 2 extension bytes
  assert.equal(payload.length, 6);
  const cases = {
    "extension missing": payload.subarray(0, 5),
    "extension extra": Uint8Array.from([...payload, 0]),
    "no extension at all": payload.subarray(0, 4),
    "primary short": payload.subarray(0, 3),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    assert.throws(() => decodeMatrix(wireBuffer({dtype: 3, rows: 2, cols: 2, payload: bytes})), WireFormatError, name);
  }
  const beyond = Uint8Array.from([254, 0, 0, 0, 187]);
  assert.throws(() => decodeMatrix(wireBuffer({dtype: 3, rows: 2, cols: 2, payload: beyond})),
    /extension byte 187 at row 0, column 0 is beyond the last level/);
  assert.throws(() => decodeMatrix(wireBuffer({dtype: 3, rows: 3, cols: 3, payload: new Uint8Array(4)})),
    /3x3 needs 29 bytes, the answer has 24/);
});
