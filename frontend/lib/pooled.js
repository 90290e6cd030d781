/**
 * Long sequences: the pooled layout of a step (docs/format.md, "pooled"), and zooming.
 *
 * A head too large for the writer's budget is stored POOLED: an overview of blocks of
 * `block = [bq, bk]` query x key positions (each block's mean and max; `/matrix?head=H` answers
 * it, lib/decode.js dtype 4) plus exact detail WINDOWS (`/matrix?head=H&window=NAME`), listed
 * in the step header (`/step`). Pure functions over the header and decoded matrices: block
 * ranges and their token labels, the hover text of a block, a dragged rectangle as position
 * ranges, the stored window holding it, and the sentence saying how to log one that is not
 * stored. Ranges are half-open `[start, end)` as in the header; texts write them inclusive
 * ("queries 64–127").
 *
 * Example:
 *
 *   import {pooledInfo, describeBlock, regionOfCells, windowFor} from "./pooled.js";
 *   const info = pooledInfo(header);            // null for a full step
 *   describeBlock(overview, header, 0, 1, 0, info).text;
 *   // "queries 64–127 (the … cat) → keys 0–63 (<s> … dog)  mean 0.0012  max 0.0450"
 *   const region = regionOfCells(info, {row: 31, col: 0}, {row: 31, col: 31});
 *   windowFor(info.windows, region);            // {name: "last_queries", ...} or null
 */

import {tokenLabel, formatWeight, describeCell} from "./tokens.js";

/**
 * The pooled layout of a step header: `{shape, block: [bq, bk], grid: [nq, nk], windows}`, or
 * null for a full step (`layout` "full" or absent). Throws for a header that says "pooled" but
 * whose block grid does not cover its shape.
 */
export function pooledInfo(header) {
  if (!header || header.layout !== "pooled") return null;
  const pooled = header.pooled || {};
  const [bq, bk] = pooled.block || [];
  const [nq, nk] = pooled.grid || [];
  const [, , tq, tk] = header.shape;
  if (!(bq > 0 && bk > 0 && nq === Math.ceil(tq / bq) && nk === Math.ceil(tk / bk))) {
    throw new Error(`pooled step: block ${JSON.stringify(pooled.block)} and grid ${JSON.stringify(pooled.grid)} do not cover ${tq}x${tk}`);
  }
  const windows = (header.windows || []).map((w) => ({name: String(w.name), query: [w.query[0], w.query[1]], key: [w.key[0], w.key[1]]}));
  return {shape: header.shape, block: [bq, bk], grid: [nq, nk], windows};
}

/** Positions `[start, end)` of block `index` on an axis ("query" or "key"); the last block may be short. */
export function blockRange(info, axis, index) {
  const a = axis === "query" ? 0 : 1;
  const size = info.block[a];
  const length = info.shape[2 + a];
  return [index * size, Math.min(length, (index + 1) * size)];
}

/** "64–127" for the half-open range [64, 128), "5" for [5, 6). */
export function formatRange([start, end]) {
  return end - start <= 1 ? String(start) : `${start}–${end - 1}`;
}

/** The first and last token of positions `[start, end)`: "the … cat" (one token alone). */
export function rangeLabel(header, axis, example, [start, end]) {
  const first = tokenLabel(header, axis, example, start);
  if (end - start <= 1) return first;
  return `${first} … ${tokenLabel(header, axis, example, end - 1)}`;
}

/** The label of every block of an axis, "first … last" token. */
export function blockLabels(header, axis, example, info) {
  const count = info.grid[axis === "query" ? 0 : 1];
  return Array.from({length: count}, (_, i) => rangeLabel(header, axis, example, blockRange(info, axis, i)));
}

/**
 * What block (row, col) of a decoded overview (`values` = means, `maxes`) shows:
 * `{row, col, query: [q0, q1), key: [k0, k1), mean, max, masked, text}`; null outside.
 */
export function describeBlock(overview, header, example, row, col, info) {
  if (!overview || row < 0 || col < 0 || row >= overview.rows || col >= overview.cols) return null;
  const query = blockRange(info, "query", row);
  const key = blockRange(info, "key", col);
  const i = row * overview.cols + col;
  const mean = overview.values[i];
  const max = overview.maxes ? overview.maxes[i] : NaN;
  const masked = Number.isNaN(mean);
  const side = (name, range, axis) =>
    `${name} ${formatRange(range)} (${rangeLabel(header, axis, example, range)})`;
  const values = masked ? "masked" : overview.maxes ? `mean ${formatWeight(mean)}  max ${formatWeight(max)}` : `mean ${formatWeight(mean)}`;
  return {row, col, query, key, mean, max, masked,
          text: `${side(range1(query) ? "query" : "queries", query, "query")} → ${side(range1(key) ? "key" : "keys", key, "key")}  ${values}`};
}

function range1([start, end]) {
  return end - start <= 1;
}

/**
 * The positions covered by the blocks between two overview cells `a` and `b` ({row, col}, in
 * any order, both included): `{query: [q0, q1), key: [k0, k1)}`.
 */
export function regionOfCells(info, a, b) {
  const r0 = Math.min(a.row, b.row);
  const r1 = Math.max(a.row, b.row);
  const c0 = Math.min(a.col, b.col);
  const c1 = Math.max(a.col, b.col);
  return {query: [blockRange(info, "query", r0)[0], blockRange(info, "query", r1)[1]],
          key: [blockRange(info, "key", c0)[0], blockRange(info, "key", c1)[1]]};
}

/**
 * The same for the cells of a full-resolution matrix whose cell (0, 0) is position
 * (`offset.query`, `offset.key`) (a zoomed window; offset 0 for a whole matrix).
 */
export function regionOfPositions(a, b, offset = {query: 0, key: 0}) {
  return {query: [Math.min(a.row, b.row) + offset.query, Math.max(a.row, b.row) + offset.query + 1],
          key: [Math.min(a.col, b.col) + offset.key, Math.max(a.col, b.col) + offset.key + 1]};
}

function inside([s, e], [ws, we]) {
  return s >= ws && e <= we;
}

function overlaps([s, e], [ws, we]) {
  return s < we && ws < e;
}

/** The smallest stored window that holds all of `region` (query and key ranges), or null. */
export function windowFor(windows, region) {
  let best = null;
  for (const w of windows || []) {
    if (!inside(region.query, w.query) || !inside(region.key, w.key)) continue;
    const area = (w.query[1] - w.query[0]) * (w.key[1] - w.key[0]);
    if (!best || area < best.area) best = {window: w, area};
  }
  return best ? best.window : null;
}

/** "queries 100–299 × keys 0–511" (inclusive positions). */
export function describeRegion(region) {
  const q = `${range1(region.query) ? "query" : "queries"} ${formatRange(region.query)}`;
  const k = `${range1(region.key) ? "key" : "keys"} ${formatRange(region.key)}`;
  return `${q} × ${k}`;
}

/**
 * The sentence shown when the selected `region` is not inside a stored window: what is stored
 * there (the overview's blocks), the windows it touches, and the argument that logs it exactly.
 */
export function missingWindowSentence(region, info) {
  const [bq, bk] = info.block;
  const touched = info.windows.filter((w) => overlaps(region.query, w.query) && overlaps(region.key, w.key));
  const name = `q${region.query[0]}_${region.query[1]}`;
  let text = `${describeRegion(region)} is not stored at full resolution: this step keeps it only in the ` +
    `overview of ${bq}×${bk} blocks (mean and max). `;
  if (touched.length) {
    text += `Stored windows overlapping it: ${touched.map((w) => `“${w.name}” (${describeRegion(w)})`).join(", ")}; ` +
      "drag inside one to see it exactly. ";
  }
  text += "To log this region exactly, name it in the windows= argument of AttentionLogger or of " +
    `AttentionWriter.attention: windows=[("${name}", (${region.query[0]}, ${region.query[1]}), ` +
    `(${region.key[0]}, ${region.key[1]}))] (half-open position ranges: queries, then keys).`;
  return text;
}

/**
 * The part `region` of a window's full-resolution matrix (`matrix` covers `window.query` x
 * `window.key`): `{rows, cols, values, offset: {query, key}}` with `offset` the position of
 * its cell (0, 0). Returns `matrix` itself (with the offset) when the region is the window.
 */
export function cropRegion(matrix, origin, region) {
  const r0 = region.query[0] - origin.query;
  const c0 = region.key[0] - origin.key;
  const rows = region.query[1] - region.query[0];
  const cols = region.key[1] - region.key[0];
  if (r0 < 0 || c0 < 0 || r0 + rows > matrix.rows || c0 + cols > matrix.cols || rows <= 0 || cols <= 0) {
    throw new RangeError(`region ${describeRegion(region)} is outside the matrix`);
  }
  const offset = {query: region.query[0], key: region.key[0]};
  if (rows === matrix.rows && cols === matrix.cols) return {...matrix, offset};
  const values = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const from = (r0 + r) * matrix.cols + c0;
    values.set(matrix.values.subarray(from, from + cols), r * cols);
  }
  return {rows, cols, dtype: matrix.dtype, scale: matrix.scale, values, offset};
}

/** The zoom of the view state as hash text: "q0-q1,k0-k1" (half-open); null for none. */
export function formatZoom(zoom) {
  if (!zoom) return null;
  return `${zoom.query[0]}-${zoom.query[1]},${zoom.key[0]}-${zoom.key[1]}`;
}

/** Parses "q0-q1,k0-k1" into `{query, key}`; undefined for anything else (empty ranges too). */
export function parseZoom(text) {
  const match = /^(\d{1,7})-(\d{1,7}),(\d{1,7})-(\d{1,7})$/.exec(String(text));
  if (!match) return undefined;
  const [q0, q1, k0, k1] = match.slice(1).map(Number);
  if (!(q1 > q0 && k1 > k0)) return undefined;
  return {query: [q0, q1], key: [k0, k1]};
}

/** Whether `region` lies within a step of `shape` [B, H, Tq, Tk]. */
export function regionFits(region, shape) {
  return region.query[1] <= shape[2] && region.key[1] <= shape[3];
}

/**
 * Query or key labels of a long axis: with a label every `stride` positions, each says its
 * position too ("512 the"), so that a reader knows where they are; every label when stride is 1.
 */
export function strideLabel(label, index, stride) {
  return stride > 1 ? `${index} ${label}` : label;
}

/**
 * The hover text of cell (row, col) of a full-resolution matrix with its positions:
 * `query 1990 “cat” → key 12 “the”  0.0012`. `matrix.offset` ({query, key}) is the position
 * of cell (0, 0) (a zoomed region), 0 without.
 */
export function describePosition(matrix, header, example, row, col) {
  if (!matrix || row < 0 || col < 0 || row >= matrix.rows || col >= matrix.cols) return null;
  const offset = matrix.offset || {query: 0, key: 0};
  const q = row + offset.query;
  const k = col + offset.key;
  const value = matrix.values[row * matrix.cols + col];
  return {row: q, col: k, value, masked: Number.isNaN(value),
          text: `query ${q} “${tokenLabel(header, "query", example, q)}” → key ${k} “${tokenLabel(header, "key", example, k)}”  ${formatWeight(value)}`};
}

/** Whether a decoded matrix of a step is its pooled overview (rows x cols = the block grid). */
export function isOverview(matrix, info) {
  return Boolean(info && matrix && !matrix.offset && matrix.rows === info.grid[0] && matrix.cols === info.grid[1]);
}

/**
 * The hover text of any matrix the views draw for a step: a block of a pooled overview
 * (describeBlock), a zoomed region or a long matrix with positions (describePosition), or a
 * small full matrix as tokens.js describeCell writes it.
 */
export function describeAt(matrix, header, example, row, col) {
  const info = pooledInfo(header);
  if (isOverview(matrix, info)) return describeBlock(matrix, header, example, row, col, info);
  if (matrix && (matrix.offset || Math.max(matrix.rows, matrix.cols) > LONG)) {
    return describePosition(matrix, header, example, row, col);
  }
  return describeCell(matrix, header, example, row, col);
}

/** Beyond this many positions on an axis, hover texts say positions. */
export const LONG = 128;
