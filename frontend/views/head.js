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
import {askAgainWhileShown, element, localPoint} from "../lib/dom.js";
import {mapLimited} from "../lib/api.js";
import {tileScales} from "../lib/colormap.js";
import {maxValue} from "../lib/decode.js";
import {toggleKey} from "../lib/health.js";
import {massPanel} from "../lib/massgrid.js";

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

/** The selected key positions of `state` that exist in a matrix of `cols` keys. */
export function selectedKeys(state, cols) {
  return (state.keys || []).filter((k) => k < cols);
}

export default {
  key: "head",
  label: "One head",
  prefetch: (state, source) => source.matrix(matrixParams(state)),
  async load(state, source) {
    const data = await loadHead(state, source);
    const keys = selectedKeys(state, data.matrix.cols);
    if (!keys.length) return data;
    const {run, tag, step, example} = state;
    try {  // the heatmap is drawn even when the mass cannot be computed
      data.mass = await source.mass({run, tag, step, example, keys, overSteps: true});
    } catch (error) {
      data.massError = error;
    }
    return data;
  },
  render(host, {header, matrix, vmax, mass = null, massError = null}, state, ui) {
    const keys = selectedKeys(state, matrix.cols);
    const setKeys = (next) => ui.set({keys: next && next.length ? next : null});
    const {canvas} = renderHeadView(host, {matrix, header, example: state.example, lut: ui.lut, vmax,
                                           pinned: state.query, width: ui.width, selectedKeys: keys},
                                    {tooltip: ui.tooltip, pinRow: (row) => ui.set({query: row}),
                                     toggleKey: (col) => setKeys(toggleKey(keys, col))});
    if (keys.length) {
      const labels = axisLabels(header, "key", state.example, matrix.cols);
      const panel = massPanel({body: mass, error: massError, keys, labels, step: state.step, tag: state.tag,
                               lut: ui.lut, width: ui.width},
                              {tooltip: ui.tooltip, setKeys, open: ({tag, head}) => ui.set({tag, head, query: null})});
      host.append(panel.node);
      if (mass && mass.pending > 0) askAgainWhileShown(host, panel.node, ui);
    } else {
      host.append(element("p", {className: "hint", id: "select-hint"},
        "Shift-click a cell or click a key label to select key tokens: a grid then shows how much " +
        "attention every head of every layer puts on them."));
    }
    return {canvas, legend: legendCanvas(ui.lut, vmax),
            rendered: {keys, mass: mass ? mass.mass : null, massStep: mass ? mass.step : null,
                       massPending: mass ? mass.pending || 0 : 0}};
  },
};

const LABEL_CAP = 150;  // CSS px: longer labels are truncated, full text on hover

/** Draws the view into `host` (emptied first); returns `{canvas, layout}`. */
export function renderHeadView(host, data, hooks) {
  const {matrix, header, example, lut, vmax, pinned, width, selectedKeys: selected = []} = data;
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
  drawSelectedKeys(ctx, layout, selected);
  drawRowLabels(ctx, queries, layout, {maxWidth: left - 12, highlight: pinned});
  drawColLabels(ctx, keys, layout, {maxWidth: LABEL_CAP});
  // For tests and tools: where the cells are, in CSS pixels of the canvas.
  canvas.dataset.layout = JSON.stringify({x: layout.x, y: layout.y, cell: layout.cell,
                                          rows: layout.rows, cols: layout.cols, keys: selected});

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
    if (hooks.toggleKey) {  // shift-click on a cell or a click on a key label selects that key
      const col = cell && event.shiftKey ? cell.col : (cell ? null : colLabelAt(layout, x, y));
      if (col !== null) return hooks.toggleKey(col);
    }
    const row = cell ? cell.row : rowLabelAt(layout, x, y);
    if (row !== null) hooks.pinRow(row === pinned ? null : row);
  });

  host.replaceChildren(canvas);
  if (pinned !== null && pinned < matrix.rows) host.append(pinnedSummary(matrix, header, example, pinned, queries));
  return {canvas, layout};
}

const SELECTED = "#e8710a";

/** Marks the selected key columns: an outline around each and a bar between labels and cells. */
function drawSelectedKeys(ctx, layout, selected) {
  if (!selected.length) return;
  ctx.save();
  ctx.strokeStyle = SELECTED;
  ctx.fillStyle = SELECTED;
  ctx.lineWidth = 1.5;
  for (const col of selected) {
    if (col >= layout.cols) continue;
    const x = layout.x + col * layout.cell;
    ctx.fillRect(x, layout.y - 5, layout.cell, 4);
    ctx.strokeRect(x + 0.75, layout.y + 0.75, Math.max(0, layout.cell - 1.5), layout.height - 1.5);
  }
  ctx.restore();
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
