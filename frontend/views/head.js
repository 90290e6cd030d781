/**
 * View "head" (1): one head large, query tokens down the left, key tokens along the top. Hover
 * shows query, key and exact weight; clicking a cell or a query label pins that query's row.
 * Long heads: a pooled step draws its block overview; dragging (or clicking a block) zooms into
 * a region (`state.zoom`). Token selection: shift-clicking a cell or clicking a key label toggles
 * that key POSITION in `state.keys` (a zoomed region's columns are offset by its first key), and
 * a layers x heads grid of the mass on the selected keys follows the heatmap. An overview's
 * columns are blocks: there selection is not offered (a hint says to zoom in first).
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

import {heatmapLayout, cellAt, rowLabelAt, colLabelAt, labelStride} from "../lib/layout.js";
import {hiDpiCanvas, drawHeatmap, drawRowLabels, drawColLabels, drawPinnedRow, widestLabel,
        devicePixelRatio, legendCanvas, labelFontSize, drawRegions} from "../ui/heatmap.js";
import {axisLabels, topKeys, formatWeight, specialIndexes, specialPositions} from "../lib/tokens.js";
import {askAgainWhileShown, element, localPoint} from "../ui/dom.js";
import {mapLimited} from "../ui/api.js";
import {tileScales, logDecades} from "../lib/colormap.js";
import {maxValue} from "../lib/decode.js";
import {pooledInfo, blockLabels, describeAt, regionOfCells, regionOfPositions, windowFor, cropRegion,
        missingWindowSentence, describeRegion, regionFits, strideLabel} from "../lib/pooled.js";
import {toggleKey} from "../lib/health.js";
import {massPanel} from "../ui/massgrid.js";

/** The matrix the state picks (its run, tag, step, example and head). */
export function matrixParams({run, tag, step, example, head}) {
  return {run, tag, step, example, head};
}

/**
 * Loads the state's step header and matrix, and the top of its colour scale: 1 (fixed), the
 * largest weight of any head of the layer (shared across heads) or the matrix's own.
 *
 * Long sequences: for a pooled step `matrix` is the head's overview (block means, block maxes);
 * with `state.zoom` (a region of positions) `zoom` is that region at full resolution, cut from
 * the stored window holding it (or from a full step's matrix), or `missing` the sentence saying
 * that no stored window holds it.
 */
export async function loadHead(state, source) {
  const {run, tag, step, example, head, scale} = state;
  const [header, whole] = await Promise.all([source.header(run, tag, step), source.matrix(matrixParams(state))]);
  const info = pooledInfo(header);
  let zoom = null;
  let missing = null;
  let window = null;
  if (state.zoom && regionFits(state.zoom, header.shape)) {
    if (!info) {
      zoom = cropRegion(whole, {query: 0, key: 0}, state.zoom);
    } else if ((window = windowFor(info.windows, state.zoom))) {
      const exact = await source.matrix({...matrixParams(state), window: window.name});
      zoom = cropRegion(exact, {query: window.query[0], key: window.key[0]}, state.zoom);
    } else {
      missing = missingWindowSentence(state.zoom, info);
    }
  }
  const shown = zoom || whole;
  let vmax = maxValue(shown.values) || 1;
  if (scale === "unit") {
    vmax = 1;
  } else if (scale === "shared" && head !== "mean" && !zoom) {
    const all = await mapLimited(Array.from({length: header.shape[1]}, (_, h) => h), 6,
                                 (h) => source.matrix({run, tag, step, example, head: h}));
    vmax = tileScales(all, "shared")[0];
  }
  return {header, matrix: whole, vmax, info, zoom, window, missing};
}

/** The selected key positions of `state` that exist in a matrix of `cols` keys. */
export function selectedKeys(state, cols) {
  return (state.keys || []).filter((k) => k < cols);
}

/** Key positions of the head: the full key axis (a pooled overview's header shape), else the matrix's. */
function keyLength(header, matrix) {
  return header && header.shape ? header.shape[3] : matrix.cols;
}

export default {
  key: "head",
  label: "One head",
  prefetch: (state, source) => source.matrix(matrixParams(state)),
  async load(state, source) {
    const data = await loadHead(state, source);
    const keys = selectedKeys(state, keyLength(data.header, data.matrix));
    if (!keys.length) return data;
    const {run, tag, step, example} = state;
    try {  // the heatmap is drawn even when the mass cannot be computed
      data.mass = await source.mass({run, tag, step, example, keys, overSteps: true});
    } catch (error) {
      data.massError = error;
    }
    return data;
  },
  render(host, {header, matrix, vmax, info, zoom, window, missing, mass = null, massError = null}, state, ui) {
    const shown = zoom || matrix;
    const log = state.log ? logDecades(vmax, header.shape[3]) : 0;
    const pooled = Boolean(info && !zoom);
    const keyCount = keyLength(header, matrix);
    const keys = selectedKeys(state, keyCount);
    const setKeys = (next) => ui.set({keys: next && next.length ? next : null});
    const {canvas} = renderHeadView(host, {
      matrix: shown, header, example: state.example, lut: ui.lut, vmax, log, pooled: pooled ? info : null,
      pinned: zoom || pooled ? null : state.query, width: ui.width, selection: missing ? state.zoom : null,
      selectedKeys: keys,
    }, {
      tooltip: ui.tooltip,
      pinRow: (row) => ui.set({query: row}),
      zoom: (region) => ui.set({zoom: region, query: null}),
      // Key positions (not columns): a zoomed region's columns start at its first key. An
      // overview's columns are blocks of keys: selection needs exact positions (hint below).
      toggleKey: pooled ? null : (position) => setKeys(toggleKey(keys, position)),
    });
    const notes = [];
    if (zoom) {
      const where = window ? `stored window “${window.name}”` : "the full matrix";
      notes.push(element("div", {className: "zoom-bar", id: "zoom-bar"},
        `Zoomed: ${describeRegion(state.zoom)}, exact weights from ${where}. Drag to zoom further. `,
        backButton(ui, info ? "Back to the overview" : "Whole matrix")));
    } else if (missing) {
      notes.push(element("div", {className: "zoom-missing", id: "zoom-missing", role: "status"}, missing, " ",
        backButton(ui, "Dismiss")));
    } else if (info) {
      const names = info.windows.map((w) => `“${w.name}” (${describeRegion(w)})`).join(", ") || "none";
      notes.push(element("div", {className: "hint", id: "pooled-hint"},
        `Pooled overview: ${info.block[0]}×${info.block[1]} positions per cell (block mean; hover for the max). ` +
        `Drag or click to zoom into a stored window (dashed) at full resolution. Stored windows: ${names}.`));
    } else if (Math.max(matrix.rows, matrix.cols) > 128) {
      notes.push(element("div", {className: "hint", id: "pooled-hint"}, "Drag over the matrix to zoom in."));
    }
    host.prepend(...notes);
    if (keys.length) {
      const labels = axisLabels(header, "key", state.example, keyCount);
      const panel = massPanel({body: mass, error: massError, keys, labels, step: state.step, tag: state.tag,
                               lut: ui.lut, width: ui.width},
                              {tooltip: ui.tooltip, setKeys, open: ({tag, head}) => ui.set({tag, head, query: null})});
      host.append(panel.node);
      if (mass && mass.pending > 0) askAgainWhileShown(host, panel.node, ui);
    }
    if (pooled) {
      host.append(element("p", {className: "hint", id: "select-hint"},
        "Token selection needs exact key positions: zoom into a stored window (drag or click a block), then " +
        "shift-click a cell or click a key label there." +
        (keys.length ? " The blocks holding the selected keys are marked." : "")));
    } else if (!keys.length) {
      host.append(element("p", {className: "hint", id: "select-hint"},
        "Shift-click a cell or click a key label to select key tokens: a grid then shows how much " +
        "attention every head of every layer puts on them."));
    }
    const rendered = {layout: pooled ? "pooled" : zoom ? "zoom" : "full", log: Boolean(log),
                      window: window ? window.name : null, missing: Boolean(missing),
                      keys, mass: mass ? mass.mass : null, massStep: mass ? mass.step : null,
                      massPending: mass ? mass.pending || 0 : 0};
    return {canvas, legend: legendCanvas(ui.lut, vmax, {log, label: pooled ? "block mean weight" : "attention weight"}),
            rendered};
  },
};

function backButton(ui, label) {
  const button = element("button", {type: "button", id: "zoom-out"}, label);
  button.addEventListener("click", () => ui.set({zoom: null}));
  return button;
}

const LABEL_CAP = 150;  // CSS px: longer labels are truncated, full text on hover
const DRAG_PX = 4;      // a press that moves less than this is a click

/**
 * The labels of one axis of what the view draws: block labels ("the … cat") of a pooled
 * overview, else token labels, with their positions when only every n-th fits (long matrices).
 */
function viewLabels(matrix, header, example, pooled, axis, stride) {
  if (pooled) return blockLabels(header, axis, example, pooled);
  const offset = matrix.offset ? matrix.offset[axis] : 0;
  const length = axis === "query" ? matrix.rows : matrix.cols;
  const tokens = axisLabels(header, axis, example, offset + length).slice(offset);
  return tokens.map((label, i) => strideLabel(label, i + offset, stride));
}

/**
 * Draws the view into `host` (emptied first); returns `{canvas, layout}`. `data.pooled`: the
 * pooledInfo of an overview being drawn (labels and hover per block); `data.log`: decades of a
 * log colour scale (0: linear). `hooks.zoom(region)` gets a dragged (or, on an overview, clicked)
 * region of positions; `hooks.pinRow(row)` a clicked query of a full matrix.
 */
export function renderHeadView(host, data, hooks) {
  const {matrix, header, example, lut, vmax, pinned, width, log = 0, pooled = null, selection = null,
         selectedKeys: selected = []} = data;
  const long = Math.max(matrix.rows, matrix.cols) > 128;
  const height = Math.max(240, Math.min(width, 1000));
  // A long matrix fits the box with cells of less than a pixel; labels then go every n-th.
  const minCell = long ? 0.05 : 1;
  const probeLayout = heatmapLayout({rows: matrix.rows, cols: matrix.cols, width: width - 160, height: height - 100,
                                     dpr: devicePixelRatio(), minCell});
  const stride = labelStride(probeLayout.cell, labelFontSize(probeLayout.cell) + 2);
  const queries = viewLabels(matrix, header, example, pooled, "query", stride);
  const keys = viewLabels(matrix, header, example, pooled, "key", stride);
  const keyOffset = matrix.offset ? matrix.offset.key : 0;
  const selectedColumns = keyColumns(selected, {pooled, offset: keyOffset, cols: matrix.cols});
  const probe = hiDpiCanvas(1, 1).ctx;
  // Margins from the labels at the largest cell size; smaller cells only make labels shorter.
  // 10% slack: the pinned query's label is bold.
  const left = Math.ceil(widestLabel(probe, queries, 40, LABEL_CAP) * 1.1) + 14;
  const top = Math.ceil(widestLabel(probe, keys, 40, LABEL_CAP) * Math.sin(Math.PI / 3)) + 16;
  const layout = heatmapLayout({rows: matrix.rows, cols: matrix.cols, width, height, left, top,
                              dpr: devicePixelRatio(), minCell});
  const canvasW = Math.ceil(layout.x + layout.width + 24);
  const canvasH = Math.ceil(layout.y + layout.height + 8);
  const {canvas, ctx} = hiDpiCanvas(canvasW, canvasH);
  canvas.className = "view-canvas head-canvas";
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvasW, canvasH);
  drawHeatmap(ctx, matrix, {x: layout.x, y: layout.y, width: layout.width, height: layout.height},
              {vmax, lut, log});
  if (pinned !== null && pinned < matrix.rows) drawPinnedRow(ctx, layout, pinned);
  if (pooled) {
    // Where the exact windows are (dashed), and a selected region no window holds (orange).
    drawRegions(ctx, layout, pooled.windows, {perCell: pooled.block});
    if (selection) drawRegions(ctx, layout, [selection], {perCell: pooled.block, selected: true});
  }
  drawSelectedKeys(ctx, layout, selectedColumns);
  // An overview's labels name blocks of positions: special tokens are marked on exact ones only.
  const special = pooled ? {query: [], key: []} : {
    query: specialIndexes(header, "query", example, matrix.offset ? matrix.offset.query : 0, matrix.rows),
    key: specialIndexes(header, "key", example, keyOffset, matrix.cols),
  };
  drawRowLabels(ctx, queries, layout, {maxWidth: left - 12, highlight: pinned, special: new Set(special.query)});
  drawColLabels(ctx, keys, layout, {maxWidth: LABEL_CAP, special: new Set(special.key)});
  // For tests and tools: where the cells are, in CSS pixels of the canvas, and the rows and
  // columns whose labels are special tokens.
  canvas.dataset.layout = JSON.stringify({x: layout.x, y: layout.y, cell: layout.cell,
                                          rows: layout.rows, cols: layout.cols, stride,
                                          offset: matrix.offset || null, keys: selectedColumns});
  canvas.dataset.special = JSON.stringify(special);

  // A rubber band: a box over the canvas while the mouse is dragged.
  const frame = element("div", {className: "head-frame"});
  const band = element("div", {className: "zoom-band", hidden: true});
  frame.append(canvas, band);
  let press = null;  // {x, y, cell}
  const clampCell = (x, y) => ({
    row: Math.max(0, Math.min(matrix.rows - 1, Math.floor((y - layout.y) / layout.cell))),
    col: Math.max(0, Math.min(matrix.cols - 1, Math.floor((x - layout.x) / layout.cell))),
  });
  const regionOf = (a, b) => (pooled ? regionOfCells(pooled, a, b) : regionOfPositions(a, b, matrix.offset));
  const showBand = (a, b) => {
    const r0 = Math.min(a.row, b.row);
    const c0 = Math.min(a.col, b.col);
    band.hidden = false;
    band.style.left = `${layout.x + c0 * layout.cell}px`;
    band.style.top = `${layout.y + r0 * layout.cell}px`;
    band.style.width = `${Math.max(2, (Math.abs(a.col - b.col) + 1) * layout.cell)}px`;
    band.style.height = `${Math.max(2, (Math.abs(a.row - b.row) + 1) * layout.cell)}px`;
  };

  canvas.addEventListener("mousedown", (event) => {
    if (event.button !== 0 || !hooks.zoom) return;
    const {x, y} = localPoint(canvas, event);
    const cell = cellAt(layout, x, y);
    if (!cell) return;
    event.preventDefault();  // no text selection while dragging
    press = {x, y, cell};
  });
  canvas.addEventListener("mousemove", (event) => {
    const {x, y} = localPoint(canvas, event);
    if (press && Math.hypot(x - press.x, y - press.y) >= DRAG_PX) {
      const end = clampCell(x, y);
      showBand(press.cell, end);
      hooks.tooltip.show(describeRegion(regionOf(press.cell, end)), event);
      return;
    }
    const cell = cellAt(layout, x, y);
    if (cell) {
      hooks.tooltip.show(describeAt(matrix, header, example, cell.row, cell.col).text, event);
      return;
    }
    const row = rowLabelAt(layout, x, y);
    if (row !== null) return hooks.tooltip.show(`${pooled ? "queries" : "query"} ${axisText(pooled, matrix, "query", row)}: ${queries[row]}`, event);
    const col = colLabelAt(layout, x, y);
    if (col !== null) return hooks.tooltip.show(`${pooled ? "keys" : "key"} ${axisText(pooled, matrix, "key", col)}: ${keys[col]}`, event);
    hooks.tooltip.hide();
  });
  canvas.addEventListener("mouseleave", () => hooks.tooltip.hide());
  const finish = (event) => {
    if (!press) return;
    const start = press;
    press = null;
    band.hidden = true;
    const {x, y} = localPoint(canvas, event);
    if (Math.hypot(x - start.x, y - start.y) >= DRAG_PX) {
      hooks.zoom(regionOf(start.cell, clampCell(x, y)));
      return true;
    }
    return false;
  };
  // The drag may end outside the canvas.
  const onUp = (event) => {
    if (!frame.isConnected) return document.removeEventListener("mouseup", onUp);
    if (press && event.target !== canvas) finish(event);
  };
  document.addEventListener("mouseup", onUp);
  canvas.addEventListener("mouseup", (event) => {
    if (finish(event)) return;
    const {x, y} = localPoint(canvas, event);
    const cell = cellAt(layout, x, y);
    if (pooled) {  // a click on a block zooms into it
      if (cell && hooks.zoom) hooks.zoom(regionOfCells(pooled, cell, cell));
      return;
    }
    if (hooks.toggleKey) {  // shift-click on a cell or a click on a key label selects that key
      const col = cell && event.shiftKey ? cell.col : (cell ? null : colLabelAt(layout, x, y));
      if (col !== null) return hooks.toggleKey(col + keyOffset);
    }
    if (matrix.offset) return;  // a zoomed region: rows are not pinned
    const row = cell ? cell.row : rowLabelAt(layout, x, y);
    if (row !== null) hooks.pinRow(row === pinned ? null : row);
  });

  host.replaceChildren(frame);
  if (pinned !== null && pinned < matrix.rows) host.append(pinnedSummary(matrix, header, example, pinned, queries));
  return {canvas, layout};
}

/** Positions of label `index` on an axis: a block's range, or the position of a (zoomed) cell. */
function axisText(pooled, matrix, axis, index) {
  if (pooled) {
    const size = pooled.block[axis === "query" ? 0 : 1];
    const length = pooled.shape[axis === "query" ? 2 : 3];
    const end = Math.min(length, (index + 1) * size) - 1;
    return end > index * size ? `${index * size}–${end}` : String(index * size);
  }
  return String(index + (matrix.offset ? matrix.offset[axis] : 0));
}

/**
 * The drawn columns of the selected key positions: the block holding each on an overview, the
 * column of each inside a zoomed region (those outside it are not drawn), else the position.
 */
function keyColumns(positions, {pooled, offset, cols}) {
  const columns = positions.map((k) => (pooled ? Math.floor(k / pooled.block[1]) : k - offset));
  return [...new Set(columns.filter((c) => c >= 0 && c < cols))];
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
    ctx.fillRect(x, layout.y - 5, Math.max(2, layout.cell), 4);
    ctx.strokeRect(x + 0.75, layout.y + 0.75, Math.max(0, layout.cell - 1.5), layout.height - 1.5);
  }
  ctx.restore();
}

function pinnedSummary(matrix, header, example, row, queries) {
  const box = document.createElement("div");
  box.className = "pinned-summary";
  const specialKeys = specialPositions(header, "key", example);
  // Tokens go in <bdi>: right-to-left text or direction marks in a token must not move the
  // words and weights around it.
  const title = document.createElement("strong");
  title.append(`Query ${row} “`, isolated(queries[row], specialPositions(header, "query", example).has(row)),
               "” attends most to: ");
  box.append(title);
  for (const entry of topKeys(matrix, header, example, row, 8)) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.append(isolated(entry.key, specialKeys.has(entry.col)), ` ${formatWeight(entry.value)}`);
    box.append(chip);
  }
  return box;
}

/** A token as text in a <bdi>; `special` tokens (and padding) get the class "token-special". */
function isolated(text, special = false) {
  const node = document.createElement("bdi");
  node.textContent = text;
  if (special) node.className = "token-special";
  return node;
}
