/**
 * View "lines" (4), for text: query tokens in a left column, key tokens in a right column, one
 * line per (query, key) pair with opacity proportional to the weight. Hovering a query token
 * shows only its lines; clicking pins it. Loads what view "head" loads.
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await lines.load(state, source);
 *   const {canvas, legend} = lines.render(host, data, state, {width, lut, tooltip, set});
 *
 *   // the drawing alone:
 *   renderLinesView(host, {matrix, header, example, lut, vmax, pinned: null, width: 700},
 *                   {tooltip, pinRow});
 */

import {lineLayout, lineTokenAt, fitLabel} from "../lib/layout.js";
import {hiDpiCanvas, FONT_FAMILY, legendCanvas, lutColor} from "../ui/heatmap.js";
import {axisLabels, formatWeight} from "../lib/tokens.js";
import {localPoint} from "../ui/dom.js";
import {loadHead, matrixParams} from "./head.js";

export default {
  key: "lines",
  label: "Token lines",
  prefetch: (state, source) => source.matrix(matrixParams(state)),
  async load(state, source) {
    const data = await loadHead(state, source);
    if (data.info) {
      // Lines join single positions; a pooled step keeps blocks of them (and exact windows).
      throw new Error(`Token lines need every position, but this step is stored pooled (an overview of ` +
        `${data.info.block[0]}×${data.info.block[1]}-position blocks plus exact windows): open One head to see the ` +
        "overview and zoom into its stored windows.");
    }
    return data;
  },
  render(host, {header, matrix, vmax}, state, ui) {
    const {canvas} = renderLinesView(host, {matrix, header, example: state.example, lut: ui.lut, vmax,
                                            pinned: state.query, width: ui.width},
                                     {tooltip: ui.tooltip, pinRow: (row) => ui.set({query: row})});
    return {canvas, legend: legendCanvas(ui.lut, vmax)};
  },
};

const LABEL_WIDTH = 150;
const MAX_HEIGHT = 8000;  // CSS px: canvases far taller than this fail in browsers
const MAX_LINES = 20000;  // beyond this, only each query's strongest keys are drawn
const TOP_KEYS = 3;

export function renderLinesView(host, data, hooks) {
  const {matrix, header, example, lut, vmax, pinned} = data;
  const width = Math.min(data.width, 760);
  const queries = axisLabels(header, "query", example, matrix.rows);
  const keys = axisLabels(header, "key", example, matrix.cols);
  const longest = Math.max(matrix.rows, matrix.cols);
  const rowHeight = Math.max(2, Math.min(20, Math.floor(MAX_HEIGHT / longest)));
  const layout = lineLayout({rows: matrix.rows, cols: matrix.cols, width, labelWidth: LABEL_WIDTH, rowHeight});
  const labelEvery = Math.ceil(12 / rowHeight);
  const strongest = matrix.rows * matrix.cols > MAX_LINES ? strongestKeys(matrix, TOP_KEYS) : null;
  const {canvas, ctx} = hiDpiCanvas(width, layout.height);
  canvas.className = "view-canvas lines-canvas";
  canvas.dataset.layout = JSON.stringify({leftX: layout.leftX, rightX: layout.rightX, top: layout.top,
                                          rowHeight: layout.rowHeight, rows: matrix.rows, cols: matrix.cols});

  function draw(focus) {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, layout.height);
    ctx.lineWidth = 2;
    for (let i = 0; i < matrix.rows; i++) {
      if (focus !== null && i !== focus) continue;
      const y0 = layout.queryY(i);
      for (let j = 0; j < matrix.cols; j++) {
        if (strongest && focus === null && !strongest[i].includes(j)) continue;
        const v = matrix.values[i * matrix.cols + j];
        if (Number.isNaN(v)) continue;
        const alpha = Math.min(1, v / vmax);
        if (alpha < 0.02) continue;
        const [r, g, b] = lutColor(lut, v, vmax);
        ctx.strokeStyle = `rgba(${r},${g},${b},${alpha.toFixed(3)})`;
        ctx.beginPath();
        ctx.moveTo(layout.leftX + 6, y0);
        ctx.lineTo(layout.rightX - 6, layout.keyY(j));
        ctx.stroke();
      }
    }
    const size = Math.max(9, Math.min(13, layout.rowHeight - 4));
    ctx.font = `${size}px ${FONT_FAMILY}`;
    ctx.textBaseline = "middle";
    const measure = (s) => ctx.measureText(s).width;
    ctx.textAlign = "right";
    queries.forEach((label, i) => {
      if (i % labelEvery !== 0 && i !== focus) return;
      ctx.fillStyle = i === focus ? "#e8710a" : "#333";
      ctx.fillText(fitLabel(label, LABEL_WIDTH - 12, measure), layout.leftX - 4, layout.queryY(i));
    });
    ctx.textAlign = "left";
    ctx.fillStyle = "#333";
    keys.forEach((label, j) => {
      if (j % labelEvery === 0) ctx.fillText(fitLabel(label, LABEL_WIDTH - 12, measure), layout.rightX + 4, layout.keyY(j));
    });
  }
  draw(pinned);

  canvas.addEventListener("mousemove", (event) => {
    const {x, y} = localPoint(canvas, event);
    if (x < layout.leftX) {
      const i = lineTokenAt(layout, matrix.rows, y);
      if (pinned === null) draw(i);
      if (i !== null) hooks.tooltip.show(`query ${i}: ${queries[i]}`, event);
      else hooks.tooltip.hide();
    } else if (x > layout.rightX) {
      const j = lineTokenAt(layout, matrix.cols, y);
      const focus = pinned ?? null;
      if (j !== null) {
        const detail = focus !== null ? `  ← ${queries[focus]} ${formatWeight(matrix.values[focus * matrix.cols + j])}` : "";
        hooks.tooltip.show(`key ${j}: ${keys[j]}${detail}`, event);
      } else hooks.tooltip.hide();
    } else {
      hooks.tooltip.hide();
    }
  });
  canvas.addEventListener("mouseleave", () => {
    hooks.tooltip.hide();
    if (pinned === null) draw(null);
  });
  canvas.addEventListener("click", (event) => {
    const {x, y} = localPoint(canvas, event);
    if (x >= layout.leftX) return;
    const i = lineTokenAt(layout, matrix.rows, y);
    if (i !== null) hooks.pinRow(i === pinned ? null : i);
  });
  host.replaceChildren(canvas);
  return {canvas};
}

/** For each query row, the columns of its `count` largest weights (masked skipped). */
function strongestKeys(matrix, count) {
  const result = [];
  for (let i = 0; i < matrix.rows; i++) {
    const best = [];
    for (let j = 0; j < matrix.cols; j++) {
      const v = matrix.values[i * matrix.cols + j];
      if (Number.isNaN(v)) continue;
      if (best.length < count) best.push([v, j]);
      else if (v > best[count - 1][0]) best[count - 1] = [v, j];
      else continue;
      best.sort((a, b) => b[0] - a[0]);
    }
    result.push(best.map((entry) => entry[1]));
  }
  return result;
}
