// Long sequences: the pooled layout of a step (block ranges and labels, the hover text of a
// block, dragged regions, stored windows, the sentence for a region no window holds), the
// overview's wire dtype 4, the log colour scale and the zoom/log entries of the view state.
import test from "node:test";
import assert from "node:assert/strict";
import {pooledInfo, blockRange, formatRange, rangeLabel, blockLabels, describeBlock, regionOfCells,
        regionOfPositions, windowFor, missingWindowSentence, cropRegion, formatZoom, parseZoom, regionFits,
        describePosition, describeAt, isOverview, strideLabel} from "../../frontend/lib/pooled.js";
import {decodeMatrix, DTYPE_POOLED, WireFormatError} from "../../frontend/lib/decode.js";
import {logDecades, logIndex, logTicks, tickLabel, paintValues, colormap, colorIndex} from "../../frontend/lib/colormap.js";
import {encodeState, decodeState, DEFAULT_STATE, mergeState} from "../../frontend/lib/state.js";
import {heatmapLayout, labelStride} from "../../frontend/lib/layout.js";
import {wireBuffer, faithfulPayload} from "./wire.mjs";

const T = 300;  // not a multiple of the block: the last block is short
const TOKENS = Array.from({length: T}, (_, i) => `t${i}`);
const HEADER = {
  shape: [1, 2, T, T], layout: "pooled",
  pooled: {block: [64, 32], grid: [5, 10]},
  windows: [{name: "last_queries", query: [236, 300], key: [0, 300]},
            {name: "first_queries", query: [0, 64], key: [0, 300]},
            {name: "corner", query: [236, 300], key: [268, 300]}],
  query_tokens: [TOKENS], key_tokens: [TOKENS],
};

test("pooledInfo reads the layout, and null for a full step", () => {
  const info = pooledInfo(HEADER);
  assert.deepEqual(info.block, [64, 32]);
  assert.deepEqual(info.grid, [5, 10]);
  assert.equal(info.windows.length, 3);
  assert.equal(pooledInfo({shape: [1, 1, 4, 4]}), null);
  assert.equal(pooledInfo({shape: [1, 1, 4, 4], layout: "full"}), null);
  assert.throws(() => pooledInfo({...HEADER, pooled: {block: [64, 32], grid: [4, 10]}}), /do not cover 300x300/);
  assert.throws(() => pooledInfo({...HEADER, pooled: {}}), /do not cover/);
});

test("block ranges are half-open, the last one short; labels are first … last token", () => {
  const info = pooledInfo(HEADER);
  assert.deepEqual(blockRange(info, "query", 0), [0, 64]);
  assert.deepEqual(blockRange(info, "query", 4), [256, 300]);
  assert.deepEqual(blockRange(info, "key", 9), [288, 300]);
  assert.equal(formatRange([64, 128]), "64–127");
  assert.equal(formatRange([5, 6]), "5");
  assert.equal(rangeLabel(HEADER, "query", 0, [64, 128]), "t64 … t127");
  assert.equal(rangeLabel(HEADER, "key", 0, [7, 8]), "t7");
  const labels = blockLabels(HEADER, "key", 0, info);
  assert.equal(labels.length, 10);
  assert.equal(labels[0], "t0 … t31");
  assert.equal(labels[9], "t288 … t299");
  // Without tokens: positions.
  assert.equal(rangeLabel({shape: HEADER.shape}, "query", 0, [0, 64]), "#0 … #63");
});

function overview(rows, cols, means, maxes) {
  return {rows, cols, values: Float32Array.from(means), maxes: Float32Array.from(maxes)};
}

test("describeBlock names the position range, its tokens and the block's mean and max", () => {
  const info = pooledInfo(HEADER);
  const means = new Array(50).fill(0.001);
  const maxes = new Array(50).fill(0.5);
  means[1 * 10 + 2] = 0.0123;
  maxes[1 * 10 + 2] = 0.75;
  means[0 * 10 + 9] = NaN;
  maxes[0 * 10 + 9] = NaN;
  const o = overview(5, 10, means, maxes);
  const d = describeBlock(o, HEADER, 0, 1, 2, info);
  assert.deepEqual(d.query, [64, 128]);
  assert.deepEqual(d.key, [64, 96]);
  assert.equal(d.text, "queries 64–127 (t64 … t127) → keys 64–95 (t64 … t95)  mean 0.0123  max 0.7500");
  assert.equal(describeBlock(o, HEADER, 0, 0, 9, info).text, "queries 0–63 (t0 … t63) → keys 288–299 (t288 … t299)  masked");
  assert.equal(describeBlock(o, HEADER, 0, 5, 0, info), null);
  // describeAt picks the block text for an overview, positions for a long or zoomed matrix.
  assert.equal(describeAt(o, HEADER, 0, 1, 2).text, d.text);
  assert.ok(isOverview(o, info));
  const full = {rows: 200, cols: 200, values: new Float32Array(40000).fill(0.25)};
  assert.equal(describeAt(full, {shape: [1, 1, 200, 200]}, 0, 3, 150).text, "query 3 “#3” → key 150 “#150”  0.2500");
  const small = {rows: 2, cols: 2, values: Float32Array.from([0.5, 0, 0.25, NaN])};
  assert.equal(describeAt(small, {shape: [1, 1, 2, 2], query_tokens: [["a", "b"]], key_tokens: [["c", "d"]]}, 0, 1, 1).text,
               "b → d  masked");
});

test("a dragged rectangle of blocks becomes position ranges; the smallest window holding it is found", () => {
  const info = pooledInfo(HEADER);
  // Any corner order; both corner blocks included.
  const region = regionOfCells(info, {row: 4, col: 9}, {row: 4, col: 8});
  assert.deepEqual(region, {query: [256, 300], key: [256, 300]});
  assert.equal(windowFor(info.windows, region).name, "last_queries");
  assert.equal(windowFor(info.windows, {query: [270, 300], key: [270, 290]}).name, "corner");
  assert.equal(windowFor(info.windows, {query: [0, 64], key: [0, 300]}).name, "first_queries");
  assert.equal(windowFor(info.windows, {query: [0, 65], key: [0, 10]}), null);       // one row too many
  assert.equal(windowFor(info.windows, {query: [100, 200], key: [0, 10]}), null);
  assert.equal(windowFor([], region), null);
  assert.deepEqual(regionOfPositions({row: 5, col: 2}, {row: 1, col: 7}, {query: 236, key: 0}),
                   {query: [237, 242], key: [2, 8]});
});

test("the sentence for a region no window holds names what is stored and the windows= argument", () => {
  const info = pooledInfo(HEADER);
  const text = missingWindowSentence({query: [64, 192], key: [0, 64]}, info);
  assert.match(text, /^queries 64–191 × keys 0–63 is not stored at full resolution/);
  assert.match(text, /overview of 64×32 blocks/);
  assert.match(text, /windows= argument of AttentionLogger or of AttentionWriter.attention/);
  assert.ok(text.includes('windows=[("q64_192", (64, 192), (0, 64))]'), text);
  assert.doesNotMatch(text, /overlapping/);
  const partly = missingWindowSentence({query: [200, 300], key: [0, 64]}, info);
  assert.match(partly, /Stored windows overlapping it: “last_queries” \(queries 236–299 × keys 0–299\)/);
  assert.doesNotMatch(partly, /corner/);  // keys 268-299 do not meet 0-63
});

test("cropRegion cuts a region out of a window with its offset; the whole window is kept as is", () => {
  const window = {rows: 4, cols: 5, values: Float32Array.from({length: 20}, (_, i) => i)};
  const origin = {query: 100, key: 10};
  const part = cropRegion(window, origin, {query: [101, 103], key: [12, 15]});
  assert.equal(part.rows, 2);
  assert.equal(part.cols, 3);
  assert.deepEqual(Array.from(part.values), [7, 8, 9, 12, 13, 14]);
  assert.deepEqual(part.offset, {query: 101, key: 12});
  assert.equal(describePosition(part, HEADER, 0, 1, 2).text, "query 102 “t102” → key 14 “t14”  14.0000");
  const whole = cropRegion(window, origin, {query: [100, 104], key: [10, 15]});
  assert.equal(whole.values, window.values);
  assert.throws(() => cropRegion(window, origin, {query: [99, 103], key: [12, 15]}), /outside the matrix/);
  assert.throws(() => cropRegion(window, origin, {query: [101, 105], key: [12, 15]}), /outside the matrix/);
});

test("zoom and log round-trip through the hash; bad zooms are dropped", () => {
  const state = {...DEFAULT_STATE, run: "long", log: true, zoom: {query: [1984, 2048], key: [0, 2048]}};
  const hash = encodeState(state);
  assert.equal(hash, "run=long&log=1&zoom=1984-2048%2C0-2048");
  assert.deepEqual(mergeState(DEFAULT_STATE, decodeState(hash)), state);
  assert.equal(formatZoom(null), null);
  assert.deepEqual(parseZoom("0-64,10-20"), {query: [0, 64], key: [10, 20]});
  for (const bad of ["5-5,0-1", "9-3,0-1", "0-1", "-1-3,0-1", "a-b,c-d", "0-1,0-1,0-1", "0-99999999,0-1"]) {
    assert.equal(parseZoom(bad), undefined, bad);
  }
  assert.deepEqual(decodeState("#zoom=3-1,0-1&log=yes"), {});
  assert.deepEqual(decodeState("#log=0"), {log: false});
  assert.ok(regionFits({query: [0, 300], key: [0, 300]}, HEADER.shape));
  assert.ok(!regionFits({query: [0, 301], key: [0, 300]}, HEADER.shape));
});

test("wire dtype 4 decodes the overview: block means, then block maxes, one scale", () => {
  // 2x3 blocks; means levels then maxes levels (441 = masked), escapes after both planes.
  const means = [1, 100, 203, 441, 0, 204];
  const maxes = [440, 300, 254, 441, 0, 204];
  const buffer = wireBuffer({dtype: DTYPE_POOLED, rows: 2, cols: 3, scale: 0.5, payload: faithfulPayload([...means, ...maxes])});
  const o = decodeMatrix(buffer);
  assert.equal(o.dtype, 4);
  assert.equal(o.rows, 2);
  assert.equal(o.cols, 3);
  assert.equal(o.values.length, 6);
  assert.equal(o.maxes.length, 6);
  assert.ok(Math.abs(o.values[0] - 0.5e-6) < 1e-12);
  assert.ok(Number.isNaN(o.values[3]) && Number.isNaN(o.maxes[3]));
  assert.equal(o.values[4], 0);
  assert.equal(o.maxes[0], 0.5);                               // level 440 = the scale
  assert.ok(Math.abs(o.maxes[1] - ((300 - 186) / 254) * 0.5) < 1e-6);
  assert.ok(Math.abs(o.values[5] - (18 / 254) * 0.5) < 1e-6);
  // Both planes must be there, with their extension bytes.
  const short = wireBuffer({dtype: DTYPE_POOLED, rows: 2, cols: 3, scale: 0.5, payload: faithfulPayload(means)});
  assert.throws(() => decodeMatrix(short), (e) => e instanceof WireFormatError && /pooled overview 2x3 needs/.test(e.message));
});

test("log scale: decades reach a tenth of the uniform weight 1/T; indices and ticks by decade", () => {
  assert.equal(logDecades(1, 2048), 5);     // 1/2048 = 4.9e-4; floor 1e-5
  assert.equal(logDecades(1, 8192), 5);
  assert.equal(logDecades(1, 10), 2);
  assert.equal(logDecades(1, 1e9), 6);      // at most the codes' 1e-6
  assert.equal(logIndex(1, 1, 3), 255);
  assert.equal(logIndex(1e-3, 1, 3), 0);
  assert.equal(logIndex(1e-4, 1, 3), 0);
  assert.equal(logIndex(0, 1, 3), 0);
  assert.equal(logIndex(0.1, 1, 3), 170);
  assert.equal(logIndex(0.01, 1, 3), 85);
  // Weights around 1/T are spread over the map, not all at its bottom as on a linear scale.
  assert.equal(colorIndex(1 / 2048, 1), 0);
  assert.ok(logIndex(1 / 2048, 1, 5) > 80);
  assert.deepEqual(logTicks(1, 3).map((t) => t.label), ["1e-3", "0.01", "0.1", "1"]);
  assert.deepEqual(logTicks(1, 3).map((t) => t.t), [0, 1 / 3, 2 / 3, 1]);
  assert.deepEqual(logTicks(0.5, 2).map((t) => t.label), ["0.01", "0.1", "0.500"]);
  assert.equal(tickLabel(1e-5), "1e-5");
  // vmax 0.118 over 4 decades: 0.1 would touch the end label "0.118", so it gives way.
  assert.deepEqual(logTicks(0.118, 4).map((t) => t.label), ["1e-4", "1e-3", "0.01", "0.118"]);
  // Painting: same table entries as logIndex; NaN stays the masked grey.
  const lut = colormap("viridis");
  const values = Float32Array.from([1, 0.1, 0.01, 1e-3, NaN, 0]);
  const out = paintValues(values, 1, lut, new Uint8ClampedArray(24), {log: 3});
  [255, 170, 85, 0].forEach((index, i) => assert.deepEqual(Array.from(out.slice(i * 4, i * 4 + 3)), Array.from(lut.slice(index * 3, index * 3 + 3))));
  assert.deepEqual(Array.from(out.slice(16, 19)), [200, 200, 200]);
  assert.deepEqual(Array.from(out.slice(20, 23)), Array.from(lut.slice(0, 3)));
});

test("a long full matrix fits the box with sub-pixel cells and labels every n-th position", () => {
  const layout = heatmapLayout({rows: 2048, cols: 2048, width: 1000, height: 1000, left: 100, top: 100, minCell: 0.05});
  assert.ok(layout.width <= 900 && layout.height <= 900);
  assert.ok(layout.cell < 1);
  const stride = labelStride(layout.cell, 12);
  assert.ok(2048 / stride <= 900 / 12 + 1, `${2048 / stride} labels`);
  assert.equal(strideLabel("the", 512, stride), "512 the");
  assert.equal(strideLabel("the", 5, 1), "the");
  // Short matrices keep whole device pixels per cell, as before.
  assert.equal(heatmapLayout({rows: 7, cols: 9, width: 800, height: 600, dpr: 2}).cellDevice % 1, 0);
});

test("wire dtype 5: the overview as float32 planes (mean of heads)", async () => {
  const {float32Payload} = await import("./wire.mjs");
  const buffer = wireBuffer({dtype: 5, rows: 1, cols: 2, payload: float32Payload([0.25, NaN, 0.5, NaN])});
  const o = decodeMatrix(buffer);
  assert.deepEqual(Array.from(o.values), [0.25, NaN]);
  assert.deepEqual(Array.from(o.maxes), [0.5, NaN]);
  const bad = wireBuffer({dtype: 5, rows: 1, cols: 2, payload: float32Payload([0.25, NaN, -1, NaN])});
  assert.throws(() => decodeMatrix(bad), /weight -1 at row 0, column 0/);
});
