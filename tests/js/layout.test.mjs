import test from "node:test";
import assert from "node:assert/strict";
import {heatmapLayout, cellAt, cellCenter, rowLabelAt, colLabelAt, labelStride, fitLabel,
        tileGrid, tileOrigin, tileAt, patchOfKey, keyOfPoint, lineLayout, lineTokenAt} from "../../frontend/lib/layout.js";

test("heatmap cells are whole device pixels at fractional devicePixelRatio", () => {
  for (const dpr of [1, 1.25, 1.5, 2, 3]) {
    const l = heatmapLayout({rows: 7, cols: 9, width: 800, height: 500, dpr, left: 91.3, top: 80});
    assert.equal(Number.isInteger(l.cell * dpr), true, `dpr ${dpr}`);
    assert.ok(Math.abs(l.x * dpr - Math.round(l.x * dpr)) < 1e-9);
    assert.ok(l.x + l.width <= 800 + 1e-9 && l.y + l.height <= 500 + 1e-9);
    assert.ok(l.cell <= 40);
  }
});

test("large matrices get at least one device pixel per cell", () => {
  const l = heatmapLayout({rows: 512, cols: 512, width: 300, height: 300, dpr: 2});
  assert.equal(l.cellDevice, 2);
  assert.equal(l.cell, 1);
});

test("cellAt inverts cellCenter and returns null outside", () => {
  const l = heatmapLayout({rows: 5, cols: 8, width: 600, height: 400, left: 100, top: 60});
  for (let row = 0; row < 5; row++) {
    for (let col = 0; col < 8; col++) {
      const c = cellCenter(l, row, col);
      assert.deepEqual(cellAt(l, c.x, c.y), {row, col});
    }
  }
  assert.equal(cellAt(l, l.x - 1, l.y + 1), null);
  assert.equal(cellAt(l, l.x + 1, l.y + l.height + 0.1), null);
  assert.equal(rowLabelAt(l, 10, cellCenter(l, 3, 0).y), 3);
  assert.equal(rowLabelAt(l, l.x + 5, cellCenter(l, 3, 0).y), null);
  assert.equal(colLabelAt(l, cellCenter(l, 0, 6).x, 5), 6);
  assert.equal(colLabelAt(l, cellCenter(l, 0, 6).x, l.y + 5), null);
});

test("labelStride skips labels that would overlap", () => {
  assert.equal(labelStride(20, 14), 1);
  assert.equal(labelStride(1, 14), 14);
  assert.equal(labelStride(0, 14), Infinity);
});

test("fitLabel truncates by code points with an ellipsis", () => {
  const measure = (s) => Array.from(s).length * 10;
  assert.equal(fitLabel("short", 100, measure), "short");
  assert.equal(fitLabel("abcdefghijkl", 60, measure), "abcde…");
  assert.equal(fitLabel("我有三本书很好", 40, measure), "我有三…");
  assert.equal(fitLabel("😀😀😀😀", 25, measure), "😀…");
  assert.equal(fitLabel("abc", 5, measure), "");
  assert.equal(fitLabel(12345, 100, measure), "12345");
});

test("tileGrid fits tiles in the width and tileAt finds them", () => {
  const g = tileGrid({count: 12, width: 700, gap: 10, minTile: 100, maxTile: 200});
  assert.ok(g.columns * g.tile + (g.columns - 1) * g.gap <= 700);
  assert.equal(g.rows, Math.ceil(12 / g.columns));
  for (let i = 0; i < 12; i++) {
    const o = tileOrigin(g, i, 5, 20, 14);
    assert.equal(tileAt(g, 12, o.x + g.tile / 2, o.y + g.tile / 2, 5, 20, 14), i);
  }
  const last = tileOrigin(g, 11, 5, 20, 14);
  assert.equal(tileAt(g, 12, last.x + g.tile + g.gap / 2, last.y + 2, 5, 20, 14), null);
  assert.deepEqual(tileGrid({count: 0, width: 100}).columns, 0);
});

test("patch geometry of vision probes: prefix tokens are not patches", () => {
  const image = {grid: [2, 3], prefix_tokens: 1};
  assert.equal(patchOfKey(0, image), null);
  assert.deepEqual(patchOfKey(1, image), {r: 0, c: 0});
  assert.deepEqual(patchOfKey(6, image), {r: 1, c: 2});
  assert.equal(patchOfKey(7, image), null);
  const rect = {x: 10, y: 10, width: 300, height: 200};
  assert.equal(keyOfPoint(image, rect, 15, 15), 1);
  assert.equal(keyOfPoint(image, rect, 305, 205), 6);
  assert.equal(keyOfPoint(image, rect, 5, 15), null);
});

test("line view rows", () => {
  const l = lineLayout({rows: 4, cols: 6, width: 600, rowHeight: 20, top: 10});
  assert.equal(l.height, 10 * 2 + 6 * 20);
  assert.equal(lineTokenAt(l, 4, l.queryY(3)), 3);
  assert.equal(lineTokenAt(l, 4, l.queryY(4)), null);
  assert.ok(l.rightX > l.leftX);
});

test("patchWeights puts a query's key weights on the patch grid, prefix keys left out", async () => {
  const {patchWeights} = await import("../../frontend/lib/layout.js");
  const image = {grid: [2, 2], prefix_tokens: 1};
  // 2 queries x 5 keys ([cls] + 4 patches); query 1 row = [0.1, 0.2, NaN, 0.3, 0.4].
  const matrix = {rows: 2, cols: 5, values: Float32Array.from([0, 0, 0, 0, 0, 0.1, 0.2, NaN, 0.3, 0.4])};
  const w = Array.from(patchWeights(matrix, image, 1)).map((v) => (Number.isNaN(v) ? "masked" : +v.toFixed(3)));
  assert.deepEqual(w, [0.2, "masked", 0.3, 0.4]);
});
