// Seeded fuzzing of the /matrix wire decoder: random and mutated buffers either decode to a
// consistent matrix or throw WireFormatError, never anything else. Bounded: a few thousand cases.
import test from "node:test";
import assert from "node:assert/strict";
import {decodeMatrix, WireFormatError, HEADER_BYTES, MAX_CELLS} from "../../frontend/lib/decode.js";
import {wireBuffer, float32Payload, faithfulPayload} from "./wire.mjs";

/** mulberry32: a small seeded PRNG, so a failure reproduces from its seed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function goodBuffer(random) {
  const rows = 1 + Math.floor(random() * 6);
  const cols = 1 + Math.floor(random() * 6);
  const kind = random();
  if (kind < 0.35) {
    const codes = Uint8Array.from({length: rows * cols}, () => Math.floor(random() * 256));
    return wireBuffer({rows, cols, scale: random(), payload: codes});
  }
  if (kind < 0.7) {  // format v2 level indices 0..441 (441 = masked), many escaped
    const levels = Array.from({length: rows * cols}, () => Math.floor(random() * 442));
    return wireBuffer({dtype: 3, rows, cols, scale: random(), payload: faithfulPayload(levels)});
  }
  const values = Array.from({length: rows * cols}, () => (random() < 0.1 ? NaN : random()));
  return wireBuffer({dtype: 2, rows, cols, payload: float32Payload(values)});
}

/** One of several damages: flipped bytes, cut or padded buffers, header fields set at random. */
function mutate(buffer, random) {
  const bytes = new Uint8Array(buffer.slice(0));
  const kind = Math.floor(random() * 6);
  if (kind === 0) {
    const flips = 1 + Math.floor(random() * 4);
    for (let i = 0; i < flips; i++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
    return bytes.buffer;
  }
  if (kind === 1) return bytes.slice(0, Math.floor(random() * bytes.length)).buffer;
  if (kind === 2) {
    const longer = new Uint8Array(bytes.length + 1 + Math.floor(random() * 8));
    longer.set(bytes);
    return longer.buffer;
  }
  const view = new DataView(bytes.buffer);
  if (kind === 3) view.setUint32(8 + 4 * Math.floor(random() * 2), Math.floor(random() * 2 ** 32), true);
  if (kind === 4) view.setUint8(4 + Math.floor(random() * 2), Math.floor(random() * 256));
  if (kind === 5) {
    const specials = [NaN, Infinity, -Infinity, -1, -0, 1e38, 3.4e38, 1e-45];
    if (view.getUint8(5) === 2 && bytes.length > HEADER_BYTES + 3 && random() < 0.5) {
      view.setFloat32(HEADER_BYTES, specials[Math.floor(random() * specials.length)], true);
    } else {
      view.setFloat32(16, specials[Math.floor(random() * specials.length)], true);
    }
  }
  return bytes.buffer;
}

function randomBytes(random) {
  const length = Math.floor(random() * 64);
  const bytes = Uint8Array.from({length}, () => Math.floor(random() * 256));
  if (length >= 5 && random() < 0.7) bytes.set([84, 66, 65, 84, 1], 0);  // "TBAT", version 1
  return bytes.buffer;
}

function checkDecoded(buffer, matrix) {
  assert.ok(matrix.rows >= 1 && matrix.cols >= 1 && matrix.rows * matrix.cols <= MAX_CELLS);
  assert.equal(matrix.values.length, matrix.rows * matrix.cols);
  const cells = matrix.values.length;
  if (matrix.dtype === 3) {
    // One primary byte per value and one extension byte per primary 254.
    const primary = new Uint8Array(buffer instanceof ArrayBuffer ? buffer : buffer.buffer, HEADER_BYTES, cells);
    const escapes = primary.reduce((n, code) => n + (code === 254 ? 1 : 0), 0);
    assert.equal(buffer.byteLength, HEADER_BYTES + cells + escapes);
  } else {
    assert.equal(buffer.byteLength, HEADER_BYTES + cells * (matrix.dtype === 1 ? 1 : 4));
  }
  assert.ok(Number.isFinite(matrix.scale) && matrix.scale >= 0);
  for (const value of matrix.values) {
    // Every weight is masked (NaN) or a finite non-negative number the colour scale can place.
    assert.ok(Number.isNaN(value) || (Number.isFinite(value) && value >= 0), `value ${value}`);
    if (matrix.dtype === 1 && !Number.isNaN(value)) assert.ok(value <= matrix.scale * (255 / 254) + 1e-6);
    if (matrix.dtype === 3 && !Number.isNaN(value)) assert.ok(value <= Math.fround(matrix.scale) * (1 + 1e-6));
  }
}

test("mutated and random buffers decode consistently or throw WireFormatError", () => {
  const outcomes = {decoded: 0, rejected: 0, faithful: 0};
  for (let seed = 1; seed <= 4000; seed++) {
    const random = prng(seed);
    const buffer = seed % 4 === 0 ? randomBytes(random) : mutate(goodBuffer(random), random);
    let matrix;
    try {
      matrix = decodeMatrix(random() < 0.5 ? buffer : new Uint8Array(buffer));
    } catch (error) {
      assert.ok(error instanceof WireFormatError, `seed ${seed}: ${error && error.stack}`);
      assert.ok(error.message.length > 0);
      outcomes.rejected++;
      continue;
    }
    try {
      checkDecoded(buffer, matrix);
    } catch (error) {
      error.message = `seed ${seed}: ${error.message}`;
      throw error;
    }
    outcomes.decoded++;
    if (matrix.dtype === 3) outcomes.faithful++;
  }
  // Both branches are exercised, or the fuzzing proves nothing.
  assert.ok(outcomes.decoded > 200 && outcomes.rejected > 1000, JSON.stringify(outcomes));
  assert.ok(outcomes.faithful > 100, JSON.stringify(outcomes));
});

test("float32 answers with infinite or negative weights are rejected", () => {
  for (const bad of [Infinity, -Infinity, -0.25]) {
    const buffer = wireBuffer({dtype: 2, rows: 1, cols: 2, payload: float32Payload([0.5, bad])});
    assert.throws(() => decodeMatrix(buffer), /weight .* at row 0, column 1/, String(bad));
  }
  const ok = decodeMatrix(wireBuffer({dtype: 2, rows: 1, cols: 2, payload: float32Payload([NaN, -0])}));
  assert.ok(Number.isNaN(ok.values[0]));
});
