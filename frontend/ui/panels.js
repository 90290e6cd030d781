/**
 * Heatmaps side by side on one canvas, each with its title and token labels: the run
 * comparison (one panel per run) and the step comparison (reference step, current step and
 * their difference). A panel is drawn on a sequential map (0..vmax) or, for differences, on the
 * diverging map (-limit..+limit). Titles and tokens go in via fillText only.
 *
 * Example:
 *
 *   renderPanels(host, {width: 1200, panels: [
 *     {title: "run a · step 100", matrix, header, example: 0, lut, vmax: 0.8},
 *     {title: "difference", matrix: diff, header, example: 0, lut: divergingLut(), limit: diff.limit,
 *      diverging: true},
 *   ]}, {tooltip, describe: (panel, row, col) => "..."});
 */

import {heatmapLayout, cellAt} from "../lib/layout.js";
import {hiDpiCanvas, drawHeatmap, drawRowLabels, drawColLabels, widestLabel, devicePixelRatio,
        FONT_FAMILY, blit, drawLegendMarks} from "./heatmap.js";
import {paintDiverging} from "../lib/colormap.js";
import {axisLabels, specialIndexes} from "../lib/tokens.js";
import {localPoint} from "./dom.js";

const LABEL_CAP = 110;  // CSS px of a token label; the full token is in the tooltip
const GAP = 28;
const TITLE_HEIGHT = 20;

export function renderPanels(host, {panels, width}, hooks) {
  const probe = hiDpiCanvas(1, 1).ctx;
  const share = Math.max(220, Math.floor((width - GAP * (panels.length - 1)) / panels.length));
  const placed = panels.map((panel) => {
    const queries = axisLabels(panel.header, "query", panel.example, panel.matrix.rows);
    const keys = axisLabels(panel.header, "key", panel.example, panel.matrix.cols);
    const left = Math.ceil(widestLabel(probe, queries, 16, LABEL_CAP)) + 12;
    const top = TITLE_HEIGHT + Math.ceil(widestLabel(probe, keys, 16, LABEL_CAP) * Math.sin(Math.PI / 3)) + 14;
    return {panel, queries, keys, left, top};
  });
  const top = Math.max(...placed.map((p) => p.top));
  let x = 0;
  for (const p of placed) {
    p.layout = heatmapLayout({rows: p.panel.matrix.rows, cols: p.panel.matrix.cols, width: x + share, height: share + top,
                              left: x + p.left, top, dpr: devicePixelRatio(), maxCell: 36});
    p.x0 = x;
    x = Math.max(x + share, p.layout.x + p.layout.width) + GAP;
  }
  const canvasW = Math.ceil(x - GAP + 8);
  const canvasH = Math.ceil(Math.max(...placed.map((p) => p.layout.y + p.layout.height)) + 8);
  const {canvas, ctx, dpr} = hiDpiCanvas(canvasW, canvasH);
  canvas.className = "view-canvas panels-canvas";
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvasW, canvasH);
  for (const {panel, queries, keys, left, layout, x0} of placed) {
    const rect = {x: layout.x, y: layout.y, width: layout.width, height: layout.height};
    if (panel.diverging) drawDiverging(ctx, panel.matrix, rect, panel.limit, panel.lut, dpr);
    else drawHeatmap(ctx, panel.matrix, rect, {vmax: panel.vmax, lut: panel.lut, dpr});
    const special = (axis, length) => new Set(specialIndexes(panel.header, axis, panel.example, 0, length));
    drawRowLabels(ctx, queries, layout, {maxWidth: left - 12, special: special("query", layout.rows)});
    drawColLabels(ctx, keys, layout, {maxWidth: LABEL_CAP, special: special("key", layout.cols)});
    ctx.save();
    ctx.font = `bold 12px ${FONT_FAMILY}`;
    ctx.fillStyle = panel.note ? "#b3261e" : "#212121";
    ctx.textBaseline = "top";
    ctx.fillText(panel.title, x0, 2, Math.max(120, layout.x + layout.width - x0));
    ctx.restore();
  }
  canvas.dataset.panels = JSON.stringify(placed.map(({panel, layout}) => ({
    title: panel.title, x: layout.x, y: layout.y, cell: layout.cell, rows: layout.rows, cols: layout.cols,
    diverging: Boolean(panel.diverging), vmax: panel.diverging ? panel.limit : panel.vmax,
  })));

  const hit = (event) => {
    const {x: px, y: py} = localPoint(canvas, event);
    for (const p of placed) {
      const cell = cellAt(p.layout, px, py);
      if (cell) return {placed: p, ...cell};
    }
    return null;
  };
  canvas.addEventListener("mousemove", (event) => {
    const found = hit(event);
    if (!found) return hooks.tooltip.hide();
    hooks.tooltip.show(hooks.describe(found.placed.panel, found.row, found.col), event);
  });
  canvas.addEventListener("mouseleave", () => hooks.tooltip.hide());
  host.append(canvas);
  return {canvas};
}

/** Paints a difference matrix cell by cell on the diverging map (masked grey). */
function drawDiverging(ctx, matrix, rect, limit, lut, dpr) {
  const image = new ImageData(matrix.cols, matrix.rows);
  paintDiverging(matrix.values, limit, lut, image.data);
  blit(ctx, image, Math.round(rect.x * dpr), Math.round(rect.y * dpr), Math.round(rect.width * dpr),
       Math.round(rect.height * dpr));
}

/** A legend for differences: a bar from -limit through 0 to +limit, plus the masked swatch. */
export function divergingLegend(lut, limit, {width = 260, label = "change in attention weight"} = {}) {
  const {canvas, ctx} = hiDpiCanvas(width + 90, 46);
  canvas.className = "legend legend-diverging";
  const bar = {x: 8, y: 16, width, height: 12};
  for (let i = 0; i < 256; i++) {
    ctx.fillStyle = `rgb(${lut[i * 3]},${lut[i * 3 + 1]},${lut[i * 3 + 2]})`;
    ctx.fillRect(bar.x + (i / 256) * bar.width, bar.y, bar.width / 256 + 0.5, bar.height);
  }
  drawLegendMarks(ctx, bar, label, (t) => {
    const value = (2 * t - 1) * limit;
    return t === 0.5 ? "0" : `${value > 0 ? "+" : "−"}${Math.abs(value).toPrecision(3)}`;
  });
  return canvas;
}
