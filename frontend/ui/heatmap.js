/**
 * Canvas drawing of heatmaps, token labels and colour legends, crisp at any devicePixelRatio:
 * canvases get a backing store of css size x dpr, and matrices are painted one pixel per cell
 * and scaled by whole device pixels without smoothing. Text (tokens) goes in via fillText only.
 *
 * Example:
 *
 *   import {hiDpiCanvas, drawHeatmap} from "./heatmap.js";
 *   const {canvas, ctx, dpr} = hiDpiCanvas(600, 400);
 *   drawHeatmap(ctx, matrix, {x: 80, y: 80, width: 240, height: 240}, {vmax: 1, lut, dpr});
 */

import {paintValues, colorIndex, logTicks, MASKED_RGB} from "../lib/colormap.js";
import {fitLabel, labelStride} from "../lib/layout.js";
import {resample} from "../lib/resample.js";
import {cellRect} from "../lib/health.js";

export const FONT_FAMILY = 'system-ui, "Noto Sans CJK SC", "Noto Sans", sans-serif';

export function devicePixelRatio() {
  return (typeof window !== "undefined" && window.devicePixelRatio) || 1;
}

/** Sizes `canvas` (new if omitted) to `width` x `height` CSS pixels; returns `{canvas, ctx, dpr}`. */
export function hiDpiCanvas(width, height, canvas = document.createElement("canvas")) {
  const dpr = devicePixelRatio();
  canvas.width = Math.max(1, Math.round(width * dpr));
  canvas.height = Math.max(1, Math.round(height * dpr));
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return {canvas, ctx, dpr};
}

/**
 * A white chart canvas for a grid of cells `grid.width` x `grid.height` (plus a small margin),
 * with the grids' label font set; returns `{canvas, ctx}`.
 *
 *   const {canvas, ctx} = gridCanvas(grid, "view-canvas health-canvas");
 */
export function gridCanvas(grid, className, fontSize = 11) {
  const {canvas, ctx} = hiDpiCanvas(grid.width + 8, grid.height + 4);
  canvas.className = className;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, grid.width + 8, grid.height + 4);
  ctx.font = `${fontSize}px ${FONT_FAMILY}`;
  ctx.textBaseline = "middle";
  return {canvas, ctx};
}

/** Writes "head h" centred above each of the first `heads` columns of `grid`. */
export function drawHeadLabels(ctx, grid, heads) {
  ctx.textAlign = "center";
  ctx.fillStyle = "#424242";
  for (let h = 0; h < heads; h++) {
    const rect = cellRect(grid, 0, h);
    ctx.fillText(`head ${h}`, rect.x + rect.width / 2, grid.top / 2, rect.width);
  }
}

let scratch = null;

/** A reusable canvas of at least `w` x `h` pixels holding the ImageData of one matrix. */
function scratchImage(w, h) {
  if (!scratch) {
    scratch = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(w, h) : document.createElement("canvas");
  }
  if (scratch.width < w || scratch.height < h) {
    scratch.width = Math.max(scratch.width, w);
    scratch.height = Math.max(scratch.height, h);
  }
  return scratch;
}

/**
 * Paints `matrix` into the CSS rectangle `rect` of a context whose transform is dpr:
 * weights through `lut` on a 0..vmax scale (`log`: that many decades below vmax, colormap.js
 * logIndex), masked (NaN) cells grey.
 */
export function drawHeatmap(ctx, matrix, rect, {vmax, lut, dpr = devicePixelRatio(), log = 0}) {
  const {rows, cols} = matrix;
  const dx = Math.round(rect.x * dpr);
  const dy = Math.round(rect.y * dpr);
  const dw = Math.max(1, Math.round(rect.width * dpr));
  const dh = Math.max(1, Math.round(rect.height * dpr));
  if (dw < cols || dh < rows) {
    // Fewer device pixels than cells: average the weights per pixel and write the pixels
    // directly (much cheaper than a smoothed drawImage of every tile).
    const image = new ImageData(Math.min(dw, cols), Math.min(dh, rows));
    paintValues(resample(matrix, image.width, image.height), vmax, lut, image.data, {log});
    if (image.width === dw && image.height === dh) {
      ctx.putImageData(image, dx, dy);
      return;
    }
    return blit(ctx, image, dx, dy, dw, dh);
  }
  const image = new ImageData(cols, rows);
  paintValues(matrix.values, vmax, lut, image.data, {log});
  // Whole device pixels per cell, no smoothing: crisp cell edges.
  blit(ctx, image, dx, dy, dw, dh);
}

/** Draws ImageData scaled to the device-pixel rectangle (dx, dy, dw, dh) without smoothing. */
export function blit(ctx, image, dx, dy, dw, dh) {
  const source = scratchImage(image.width, image.height);
  source.getContext("2d").putImageData(image, 0, 0);
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(source, 0, 0, image.width, image.height, dx, dy, dw, dh);
  ctx.restore();
}

/** Font size for labels on cells `cell` CSS pixels high. */
export function labelFontSize(cell) {
  return Math.max(10, Math.min(13, Math.floor(cell * 0.75)));
}

// Special and padding tokens (`<s>`, `[CLS]`, `<pad>`) are written muted and in italics.
const SPECIAL_COLOR = "#8a8a8a";

/** The label font of one label: bold when highlighted, italic when a special token. */
function labelFont(size, {bold = false, special = false} = {}) {
  return `${special ? "italic " : ""}${bold ? "bold " : ""}${size}px ${FONT_FAMILY}`;
}

/**
 * Writes the query labels right-aligned left of the heatmap (`layout` of heatmapLayout), every
 * n-th when cells are too small. `highlight`: a row to write in bold; `special`: a Set of rows
 * holding special tokens, written muted and in italics.
 */
export function drawRowLabels(ctx, labels, layout, {maxWidth, highlight = null, color = "#333",
                                                    special = new Set()}) {
  const size = labelFontSize(layout.cell);
  const stride = labelStride(layout.cell, size + 2);
  ctx.save();
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const measure = (s) => ctx.measureText(s).width;
  for (let row = 0; row < layout.rows; row++) {
    if (row % stride !== 0 && row !== highlight) continue;
    const muted = special.has(row);
    ctx.font = labelFont(size, {bold: row === highlight, special: muted});
    ctx.fillStyle = row === highlight ? "#000" : muted ? SPECIAL_COLOR : color;
    const y = layout.y + (row + 0.5) * layout.cell;
    ctx.fillText(fitLabel(labels[row], maxWidth, measure), layout.x - 6, y);
  }
  ctx.restore();
}

/**
 * Writes the key labels above the heatmap, rotated by `angle` (radians, default -60°);
 * `special`: a Set of columns holding special tokens, written muted and in italics.
 */
export function drawColLabels(ctx, labels, layout, {maxWidth, angle = -Math.PI / 3, color = "#333",
                                                    special = new Set()}) {
  const size = labelFontSize(layout.cell);
  // Rotated labels are sin(angle) * cell apart across their baselines.
  const stride = labelStride(layout.cell * Math.abs(Math.sin(angle)), size + 2);
  ctx.save();
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const measure = (s) => ctx.measureText(s).width;
  for (let col = 0; col < layout.cols; col += stride) {
    const x = layout.x + (col + 0.5) * layout.cell;
    const muted = special.has(col);
    ctx.font = labelFont(size, {special: muted});
    ctx.fillStyle = muted ? SPECIAL_COLOR : color;
    ctx.save();
    ctx.translate(x, layout.y - 6);
    ctx.rotate(angle);
    ctx.fillText(fitLabel(labels[col], maxWidth, measure), 0, 0);
    ctx.restore();
  }
  ctx.restore();
}

/** Widest label in pixels at the label font of cells `cell` high (capped at `cap`). */
export function widestLabel(ctx, labels, cell, cap) {
  ctx.save();
  ctx.font = `${labelFontSize(cell)}px ${FONT_FAMILY}`;
  let widest = 0;
  for (const label of labels) {
    widest = Math.max(widest, ctx.measureText(label).width);
    if (widest >= cap) break;
  }
  ctx.restore();
  return Math.min(widest, cap);
}

/** Dims every row except `row` and outlines it (a pinned query). */
export function drawPinnedRow(ctx, layout, row) {
  ctx.save();
  ctx.fillStyle = "rgba(255,255,255,0.6)";
  if (row > 0) ctx.fillRect(layout.x, layout.y, layout.width, row * layout.cell);
  const below = layout.y + (row + 1) * layout.cell;
  ctx.fillRect(layout.x, below, layout.width, layout.y + layout.height - below);
  ctx.strokeStyle = "#e8710a";
  ctx.lineWidth = 2;
  ctx.strokeRect(layout.x - 1, layout.y + row * layout.cell - 1, layout.width + 2, layout.cell + 2);
  ctx.restore();
}

/**
 * A colour legend: a bar from 0 to `vmax` with three ticks, plus a swatch for masked cells;
 * with `log` (decades), a log bar from vmax / 10**log to vmax with a tick at every decade.
 * Returns the canvas.
 */
export function legendCanvas(lut, vmax, {width = 260, label = "attention weight", log = 0} = {}) {
  const height = 46;
  const {canvas, ctx, dpr} = hiDpiCanvas(width + 90, height);
  canvas.className = "legend";
  canvas.dataset.scale = log > 0 ? "log" : "linear";
  const bar = {x: 8, y: 16, width, height: 12};
  const image = new ImageData(256, 1);
  const ramp = new Float32Array(256).map((_, i) => (log > 0 ? vmax * 10 ** ((i / 255 - 1) * log) : (i / 255) * vmax));
  paintValues(ramp, vmax, lut, image.data, {log});
  // Its own 256x1 canvas: smoothing would blend in whatever lies next to the ramp on a shared one.
  const source = document.createElement("canvas");
  source.width = 256;
  source.height = 1;
  source.getContext("2d").putImageData(image, 0, 0);
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(source, 0, 0, 256, 1, bar.x * dpr, bar.y * dpr, bar.width * dpr, bar.height * dpr);
  ctx.restore();
  if (log > 0) {
    const ticks = logTicks(vmax, log);
    canvas.dataset.ticks = JSON.stringify(ticks.map((t) => t.label));
    drawLegendMarks(ctx, bar, `${label} (log scale)`, ticks);
  } else {
    drawLegendMarks(ctx, bar, label, (t) => (t * vmax).toPrecision(3));
  }
  return canvas;
}

/**
 * Everything of a legend but its colour bar: `label` above the CSS rectangle `bar`, ticks at its
 * start, middle and end labelled `tickText(t)` for t = 0, 0.5, 1 (or the given `[{t, label}]`),
 * and the masked swatch after it.
 */
export function drawLegendMarks(ctx, bar, label, tickText) {
  ctx.font = `11px ${FONT_FAMILY}`;
  ctx.fillStyle = "#333";
  ctx.textBaseline = "top";
  ctx.fillText(label, bar.x, 1);
  const ticks = Array.isArray(tickText) ? tickText : [0, 0.5, 1].map((t) => ({t, label: tickText(t)}));
  for (const {t, label: text} of ticks) {
    const x = bar.x + t * bar.width;
    ctx.fillRect(x - 0.5, bar.y + bar.height, 1, 3);
    ctx.textAlign = t <= 0.02 ? "left" : t >= 0.98 ? "right" : "center";
    ctx.fillText(text, x, bar.y + bar.height + 4);
  }
  const swatch = {x: bar.x + bar.width + 16, y: bar.y};
  ctx.fillStyle = `rgb(${MASKED_RGB.join(",")})`;
  ctx.fillRect(swatch.x, swatch.y, 12, 12);
  ctx.fillStyle = "#333";
  ctx.textAlign = "left";
  ctx.fillText("masked", swatch.x + 16, swatch.y);
}

/** `[r, g, b]` of `value` for overlays drawn with fillRect. */
export function lutColor(lut, value, vmax) {
  const i = colorIndex(value, vmax);
  return [lut[i * 3], lut[i * 3 + 1], lut[i * 3 + 2]];
}

/**
 * Outlines the regions `[{query: [q0, q1), key: [k0, k1)}]` (positions) on a heatmap whose
 * cells are `perCell = [rows, cols]` positions each (a pooled overview's block; [1, 1] for a
 * full matrix): stored windows dashed white, a selected region solid orange (`selected`).
 */
export function drawRegions(ctx, layout, regions, {perCell = [1, 1], selected = false} = {}) {
  ctx.save();
  ctx.lineWidth = selected ? 2 : 1.5;
  ctx.strokeStyle = selected ? "#e8710a" : "rgba(255,255,255,0.9)";
  if (!selected) ctx.setLineDash([4, 3]);
  for (const region of regions) {
    const x0 = layout.x + (region.key[0] / perCell[1]) * layout.cell;
    const x1 = layout.x + (region.key[1] / perCell[1]) * layout.cell;
    const y0 = layout.y + (region.query[0] / perCell[0]) * layout.cell;
    const y1 = layout.y + (region.query[1] / perCell[0]) * layout.cell;
    ctx.strokeRect(x0, y0, Math.max(1, x1 - x0), Math.max(1, y1 - y0));
  }
  ctx.restore();
}
