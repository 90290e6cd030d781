import test from "node:test";
import assert from "node:assert/strict";
import {colormap, colorAt, colorIndex, cssColor, paintValues, COLORMAP_NAMES, MASKED_RGB} from "../../frontend/lib/colormap.js";

// Reference colours of matplotlib's tables (entries 0, 128 and 255), as 8-bit sRGB.
const REFERENCE = {
  viridis: {0: [68, 1, 84], 128: [33, 145, 140], 255: [253, 231, 37]},
  magma: {0: [0, 0, 4], 128: [183, 55, 121], 255: [252, 253, 191]},
};

test("lookup tables hold 256 RGB entries matching the reference colours", () => {
  assert.deepEqual(COLORMAP_NAMES, ["viridis", "magma"]);
  for (const [name, entries] of Object.entries(REFERENCE)) {
    const lut = colormap(name);
    assert.equal(lut.length, 768);
    for (const [index, rgb] of Object.entries(entries)) {
      const got = Array.from(lut.slice(index * 3, index * 3 + 3));
      got.forEach((c, k) => assert.ok(Math.abs(c - rgb[k]) <= 1, `${name}[${index}] = ${got} vs ${rgb}`));
    }
  }
});

test("maps are perceptually ordered: lightness rises monotonically", () => {
  for (const name of COLORMAP_NAMES) {
    const lut = colormap(name);
    let previous = -1;
    for (let i = 0; i < 256; i += 4) {
      const [r, g, b] = lut.slice(i * 3, i * 3 + 3);
      const luma = 0.2126 * r + 0.7152 * g + 0.0722 * b;
      assert.ok(luma > previous, `${name} lightness falls at ${i}`);
      previous = luma;
    }
  }
});

test("unknown map names throw", () => {
  assert.throws(() => colormap("jet"), /unknown colour map "jet"/);
  assert.throws(() => colormap("__proto__"), /unknown colour map/);
});

test("colorIndex clamps and scales to vmax", () => {
  assert.equal(colorIndex(0, 0.5), 0);
  assert.equal(colorIndex(0.5, 0.5), 255);
  assert.equal(colorIndex(0.25, 0.5), 128);
  assert.equal(colorIndex(2, 1), 255);
  assert.equal(colorIndex(-1, 1), 0);
  assert.equal(colorIndex(0.3, 0), 0);
  assert.deepEqual(colorAt(colormap("viridis"), 1), [253, 231, 37]);
});

test("paintValues writes LUT colours and greys out NaN (masked), not zero", () => {
  const lut = colormap("viridis");
  const values = Float32Array.from([0, 0.2, NaN, 0.4]);
  const out = paintValues(values, 0.4, lut, new Uint8ClampedArray(16));
  assert.deepEqual(Array.from(out.slice(0, 4)), [68, 1, 84, 255]);
  assert.deepEqual(Array.from(out.slice(4, 8)), [...colorAt(lut, 0.5), 255]);
  assert.deepEqual(Array.from(out.slice(8, 12)), [...MASKED_RGB, 255]);
  assert.notDeepEqual(Array.from(out.slice(8, 11)), Array.from(out.slice(0, 3)));
  assert.deepEqual(Array.from(out.slice(12, 16)), [253, 231, 37, 255]);
  assert.equal(cssColor(lut, NaN, 1), "rgb(200,200,200)");
  assert.throws(() => paintValues(values, 1, lut, new Uint8ClampedArray(8)), RangeError);
});

test("tileScales: per head, shared across heads, or fixed", async () => {
  const {tileScales} = await import("../../frontend/lib/colormap.js");
  const m = (...v) => ({values: Float32Array.from(v)});
  const matrices = [m(0.1, 0.4), m(0.8, NaN), null, m(0, NaN)];
  assert.deepEqual(tileScales(matrices, "head").map((v) => +v.toFixed(3)), [0.4, 0.8, 1, 1]);
  assert.deepEqual(tileScales(matrices, "shared").map((v) => +v.toFixed(3)), [0.8, 0.8, 0.8, 0.8]);
  assert.deepEqual(tileScales(matrices, "unit"), [1, 1, 1, 1]);
});

test("diverging map: blue below zero, near-white at zero, red above, grey when masked", async () => {
  const {divergingLut, divergingIndex, paintDiverging} = await import("../../frontend/lib/colormap.js");
  const lut = divergingLut();
  assert.equal(lut.length, 768);
  assert.deepEqual(Array.from(lut.slice(0, 3)), [5, 48, 97]);          // RdBu's darkest blue
  assert.deepEqual(Array.from(lut.slice(765, 768)), [103, 0, 31]);     // and darkest red
  assert.equal(divergingIndex(0, 0.5), 128);
  assert.equal(divergingIndex(-0.5, 0.5), 0);
  assert.equal(divergingIndex(2, 0.5), 255);
  assert.equal(divergingIndex(NaN, 0.5), 128);
  const out = paintDiverging(Float32Array.from([-0.4, 0, 0.4, NaN]), 0.4, lut, new Uint8ClampedArray(16));
  const px = (i) => Array.from(out.slice(i * 4, i * 4 + 4));
  assert.ok(px(0)[2] > px(0)[0] + 50, `negative is blue: ${px(0)}`);
  assert.ok(px(2)[0] > px(2)[2] + 50, `positive is red: ${px(2)}`);
  assert.ok(px(1).slice(0, 3).every((c) => c > 235), `zero is near-white: ${px(1)}`);
  assert.deepEqual(px(3), [200, 200, 200, 255]);
  assert.throws(() => paintDiverging(new Float32Array(2), 1, lut, new Uint8ClampedArray(4)), RangeError);
});
