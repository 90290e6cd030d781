/**
 * View "head" (1): one head large, query tokens down the left, key tokens along the top. Hover
 * shows query, key and exact weight; clicking a cell or a query label pins that query's row.
 * `renderHeadView` draws it (also used by the rollout view and bench/bench_frontend.py).
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await head.load(state, source);
 *   const {canvas, legend} = head.render(host, data, state, {width, lut, tooltip, set});
 *
 *   // the drawing alone:
 *   renderHeadView(host, {matrix, header, example: 0, lut, vmax, pinned: null, width: 900},
 *                  {tooltip, pinRow: (row) => ...});
 */

import {heatmapLayout, cellAt, rowLabelAt, colLabelAt} from "../lib/layout.js";
import {hiDpiCanvas, drawHeatmap, drawRowLabels, drawColLabels, drawPinnedRow, widestLabel,
        devicePixelRatio, legendCanvas} from "../lib/heatmap.js";
import {axisLabels, describeCell, topKeys, formatWeight} from "../lib/tokens.js";
import {localPoint} from "../lib/dom.js";
import {mapLimited} from "../lib/api.js";
import {tileScales} from "../lib/colormap.js";
import {maxValue} from "../lib/decode.js";

/** The matrix the state picks (its run, tag, step, example and head). */
export function matrixParams({run, tag, step, example, head}) {
  return {run, tag, step, example, head};
}

/**
 * Loads the state's step header and matrix, and the top of its colour scale: 1 (fixed), the
 * largest weight of any head of the layer (shared across heads) or the matrix's own.
 */
export async function loadHead(state, source) {
  const {run, tag, step, example, head, scale} = state;
  const [header, matrix] = await Promise.all([source.header(run, tag, step), source.matrix(matrixParams(state))]);
  let vmax = maxValue(matrix.values) || 1;
  if (scale === "unit") {
    vmax = 1;
  } else if (scale === "shared" && head !== "mean") {
    const all = await mapLimited(Array.from({length: header.shape[1]}, (_, h) => h), 6,
                                 (h) => source.matrix({run, tag, step, example, head: h}));
    vmax = tileScales(all, "shared")[0];
  }
  return {header, matrix, vmax};
}

export default {
  key: "head",
  label: "One head",
  prefetch: (state, source) => source.matrix(matrixParams(state)),
  load: loadHead,
  render(host, {header, matrix, vmax}, state, ui) {
    const {canvas} = renderHeadView(host, {matrix, header, example: state.example, lut: ui.lut, vmax,
                                           pinned: state.query, width: ui.width},
                                    {tooltip: ui.tooltip, pinRow: (row) => ui.set({query: row})});
    return {canvas, legend: legendCanvas(ui.lut, vmax)};
  },
};

const LABEL_CAP = 150;  // CSS px: longer labels are truncated, full text on hover

/** Draws the view into `host` (emptied first); returns `{canvas, layout}`. */
export function renderHeadView(host, data, hooks) {
  const {matrix, header, example, lut, vmax, pinned, width} = data;
  const queries = axisLabels(header, "query", example, matrix.rows);
  const keys = axisLabels(header, "key", example, matrix.cols);
  const probe = hiDpiCanvas(1, 1).ctx;
  // Margins from the labels at the largest cell size; smaller cells only make labels shorter.
  // 10% slack: the pinned query's label is bold.
  const left = Math.ceil(widestLabel(probe, queries, 40, LABEL_CAP) * 1.1) + 14;
  const top = Math.ceil(widestLabel(probe, keys, 40, LABEL_CAP) * Math.sin(Math.PI / 3)) + 16;
  const height = Math.max(240, Math.min(width, 1000));
  const layout = heatmapLayout({rows: matrix.rows, cols: matrix.cols, width, height, left, top,
                              dpr: devicePixelRatio()});
  const canvasW = Math.ceil(layout.x + layout.width + 24);
  const canvasH = Math.ceil(layout.y + layout.height + 8);
  const {canvas, ctx, dpr} = hiDpiCanvas(canvasW, canvasH);
  canvas.className = "view-canvas head-canvas";
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvasW, canvasH);
  drawHeatmap(ctx, matrix, {x: layout.x, y: layout.y, width: layout.width, height: layout.height},
              {vmax, lut, dpr});
  if (pinned !== null && pinned < matrix.rows) drawPinnedRow(ctx, layout, pinned);
  drawRowLabels(ctx, queries, layout, {maxWidth: left - 12, highlight: pinned});
  drawColLabels(ctx, keys, layout, {maxWidth: LABEL_CAP});
  // For tests and tools: where the cells are, in CSS pixels of the canvas.
  canvas.dataset.layout = JSON.stringify({x: layout.x, y: layout.y, cell: layout.cell,
                                          rows: layout.rows, cols: layout.cols});

  canvas.addEventListener("mousemove", (event) => {
    const {x, y} = localPoint(canvas, event);
    const cell = cellAt(layout, x, y);
    if (cell) {
      hooks.tooltip.show(describeCell(matrix, header, example, cell.row, cell.col).text, event);
      return;
    }
    const row = rowLabelAt(layout, x, y);
    if (row !== null) return hooks.tooltip.show(`query ${row}: ${queries[row]}`, event);
    const col = colLabelAt(layout, x, y);
    if (col !== null) return hooks.tooltip.show(`key ${col}: ${keys[col]}`, event);
    hooks.tooltip.hide();
  });
  canvas.addEventListener("mouseleave", () => hooks.tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const {x, y} = localPoint(canvas, event);
    const cell = cellAt(layout, x, y);
    const row = cell ? cell.row : rowLabelAt(layout, x, y);
    if (row !== null) hooks.pinRow(row === pinned ? null : row);
  });

  host.replaceChildren(canvas);
  if (pinned !== null && pinned < matrix.rows) host.append(pinnedSummary(matrix, header, example, pinned, queries));
  return {canvas, layout};
}

function pinnedSummary(matrix, header, example, row, queries) {
  const box = document.createElement("div");
  box.className = "pinned-summary";
  // Tokens go in <bdi>: right-to-left text or direction marks in a token must not move the
  // words and weights around it.
  const title = document.createElement("strong");
  title.append(`Query ${row} “`, isolated(queries[row]), "” attends most to: ");
  box.append(title);
  for (const entry of topKeys(matrix, header, example, row, 8)) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.append(isolated(entry.key), ` ${formatWeight(entry.value)}`);
    box.append(chip);
  }
  return box;
}

function isolated(text) {
  const node = document.createElement("bdi");
  node.textContent = text;
  return node;
}
