/**
 * View (1): one head large, query tokens down the left, key tokens along the top. Hover shows
 * query, key and exact weight; clicking a cell or a query label pins that query's row.
 *
 * Example:
 *
 *   renderHeadView(host, {matrix, header, example: 0, lut, vmax, pinned: null, width: 900},
 *                  {tooltip, pinRow: (row) => ...});
 */

import {heatmapLayout, cellAt, rowLabelAt, colLabelAt} from "../lib/layout.js";
import {hiDpiCanvas, drawHeatmap, drawRowLabels, drawColLabels, drawPinnedRow, widestLabel,
        devicePixelRatio} from "../lib/heatmap.js";
import {axisLabels, describeCell, topKeys, formatWeight} from "../lib/tokens.js";
import {localPoint} from "../lib/dom.js";

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
