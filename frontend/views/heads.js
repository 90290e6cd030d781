/**
 * View "heads" (2): every head of a layer as small multiples, plus the mean over heads; clicking
 * a tile opens that head large. `renderTiles` draws any grid of tiles (also view "model", the
 * layers x heads overview, and bench/bench_frontend.py).
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await heads.load(state, source);
 *   const {canvas, legend} = heads.render(host, data, state, {width, lut, tooltip, set});
 *
 *   // the drawing alone:
 *   renderTiles(host, {tiles: [{label: "head 0", matrix}, ...], lut, scale: "head", width: 900},
 *               {tooltip, pick: (index) => ...});
 */

import {tileGrid, tileOrigin, tileAt, heatmapLayout, cellAt} from "../lib/layout.js";
import {hiDpiCanvas, drawHeatmap, devicePixelRatio, FONT_FAMILY, legendCanvas} from "../ui/heatmap.js";
import {tileScales, logDecades} from "../lib/colormap.js";
import {describeAt} from "../lib/pooled.js";
import {localPoint} from "../ui/dom.js";
import {mapLimited} from "../ui/api.js";
import {headLabel, groupColumns, kvGroupSize, tileOrder} from "../lib/groups.js";

export default {
  key: "heads",
  label: "All heads",
  async load(state, source) {
    const {run, tag, step, example} = state;
    const header = await source.header(run, tag, step);
    const keys = [...Array.from({length: header.shape[1]}, (_, h) => h), "mean"];
    // A tile that cannot be read says so; the other heads still draw.
    const errors = [];
    const matrices = await mapLimited(keys, 6, (head) => source.matrix({run, tag, step, example, head}).catch((error) => {
      errors.push(error);
      return null;
    }));
    if (errors.length === keys.length) throw errors[0];
    return {header, keys, matrices};
  },
  render(host, {header, keys, matrices}, state, ui) {
    // Grouped-query layers: rows hold whole key/value groups (a line between groups), the mean
    // on a row of its own.
    const heads = header.shape[1];
    const columns = groupColumns(header, flowGrid(keys.length, ui.width).columns);
    const order = columns ? tileOrder(heads, columns) : keys;
    const tiles = order.map((h) => {
      if (h === null) return {label: "", blank: true};
      const matrix = matrices[keys.indexOf(h)];
      return {label: h === "mean" ? "mean of heads" : headLabel(header, h), matrix, error: !matrix,
              selected: h === state.head};
    });
    const {canvas} = renderTiles(host, {tiles, lut: ui.lut, scale: state.scale, width: ui.width, log: state.log,
                                        columns, groupSize: columns ? kvGroupSize(header) : null,
                                        headerFor: () => header, exampleFor: () => state.example},
                                 {tooltip: ui.tooltip, pick: (index) => order[index] !== null &&
                                   ui.set({view: "head", head: order[index]})});
    return {canvas, legend: tilesLegend(ui.lut, state.scale, matrices, state.log ? header.shape[3] : 0)};
  },
};

/**
 * The legend of a tile grid: per-head scales show fractions of each tile's maximum. `logKeys`:
 * the key count of a log colour scale (0: linear).
 */
export function tilesLegend(lut, scale, matrices, logKeys = 0) {
  const top = scale === "head" ? 1 : tileScales(matrices, scale)[0];
  const log = logKeys ? logDecades(top, logKeys) : 0;
  if (scale === "head") return legendCanvas(lut, 1, {label: "fraction of each tile's maximum", log});
  return legendCanvas(lut, top, {log});
}

const LABEL_HEIGHT = 16;
const GRID_LEFT = 4;  // room for the selected tile's outline
const TILE_LIMITS = {gap: 10, minTile: 72, maxTile: 200};

/** The grid `renderTiles` flows `count` tiles into, `width` CSS pixels wide, `left` of them margin. */
export function flowGrid(count, width, {left = GRID_LEFT, minTile = TILE_LIMITS.minTile,
                                        maxTile = TILE_LIMITS.maxTile} = {}) {
  return tileGrid({count, width: width - left, dpr: devicePixelRatio(), gap: TILE_LIMITS.gap, minTile, maxTile});
}

/** Places matrix cells inside a square tile so that they stay whole device pixels when possible. */
function tileLayout(matrix, origin, tile, dpr) {
  const fit = tile / Math.max(matrix.rows, matrix.cols);
  if (fit * dpr >= 1) {
    return heatmapLayout({rows: matrix.rows, cols: matrix.cols, width: origin.x + tile,
                          height: origin.y + tile, left: origin.x, top: origin.y, dpr, maxCell: fit});
  }
  // More cells than device pixels: the matrix is shrunk (smoothed) into the tile.
  const cell = fit;
  return {x: origin.x, y: origin.y, cell, rows: matrix.rows, cols: matrix.cols,
          width: cell * matrix.cols, height: cell * matrix.rows};
}

/**
 * Draws `tiles` ([{label, matrix, error}]) in a grid. `columns` forces the number of columns
 * (model overview: one row per layer); `rowLabels` writes a label left of each grid row;
 * `groupSize` draws a line between every `groupSize` columns (key/value groups).
 * Returns `{canvas}`; `hooks.pick(index)` runs on a click on tile `index`.
 */
export function renderTiles(host, data, hooks) {
  const {tiles, lut, scale, width, columns = null, rowLabels = null, headerFor = () => null,
         exampleFor = () => 0, minTile = TILE_LIMITS.minTile, maxTile = TILE_LIMITS.maxTile, log = false,
         groupSize = null} = data;
  const dpr = devicePixelRatio();
  const left = rowLabels ? 170 : GRID_LEFT;
  let grid = flowGrid(tiles.length, width, {left, minTile, maxTile});
  if (columns) {
    const tile = Math.max(8, Math.min(maxTile, Math.floor(((width - left + 10) / columns - 10) * dpr) / dpr));
    grid = {columns, rows: Math.ceil(tiles.length / columns), tile, gap: 10};
  }
  const vmaxes = tileScales(tiles.map((t) => t.matrix), scale);
  const canvasW = Math.ceil(left + grid.columns * (grid.tile + grid.gap));
  const canvasH = Math.ceil(grid.rows * (grid.tile + grid.gap + LABEL_HEIGHT) + 4);
  const {canvas, ctx} = hiDpiCanvas(canvasW, canvasH);
  canvas.className = "view-canvas tiles-canvas";
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvasW, canvasH);
  const layouts = [];
  ctx.font = `11px ${FONT_FAMILY}`;
  ctx.textBaseline = "bottom";
  tiles.forEach((tile, index) => {
    const origin = tileOrigin(grid, index, left, 0, LABEL_HEIGHT);
    ctx.fillStyle = "#333";
    ctx.fillText(tile.label, origin.x, origin.y - 2, grid.tile);
    if (tile.blank) {  // padding of a layer with fewer heads than others
      layouts.push(null);
      return;
    }
    if (!tile.matrix) {
      ctx.fillStyle = "#f4f4f4";
      ctx.fillRect(origin.x, origin.y, grid.tile, grid.tile);
      ctx.fillStyle = "#a00";
      ctx.fillText(tile.error ? "error" : "no data", origin.x + 4, origin.y + 16, grid.tile - 8);
      layouts.push(null);
      return;
    }
    const layout = tileLayout(tile.matrix, origin, grid.tile, dpr);
    // A log scale spans the same decades for every tile: those of the legend (keys of the step).
    const header = headerFor(index);
    const decades = log ? logDecades(scale === "head" ? 1 : vmaxes[index], header ? header.shape[3] : tile.matrix.cols) : 0;
    drawHeatmap(ctx, tile.matrix, {x: layout.x, y: layout.y, width: layout.width, height: layout.height},
                {vmax: vmaxes[index], lut, dpr, log: decades});
    if (tile.selected) {
      ctx.strokeStyle = "#e8710a";
      ctx.lineWidth = 2;
      ctx.strokeRect(layout.x - 2, layout.y - 2, layout.width + 4, layout.height + 4);
    }
    layouts.push(layout);
  });
  if (groupSize) drawGroupLines(ctx, grid, groupSize, left, tiles);
  if (rowLabels) {
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillStyle = "#333";
    rowLabels.forEach((label, r) => {
      const origin = tileOrigin(grid, r * grid.columns, left, 0, LABEL_HEIGHT);
      ctx.fillText(label, left - 8, origin.y + grid.tile / 2, left - 12);
    });
  }
  canvas.dataset.tiles = JSON.stringify(layouts.map((l) => l && {x: l.x, y: l.y, cell: l.cell, rows: l.rows, cols: l.cols}));
  canvas.dataset.labels = JSON.stringify(tiles.map((t) => t.label));
  canvas.dataset.vmax = JSON.stringify(vmaxes);

  const hit = (event) => {
    const {x, y} = localPoint(canvas, event);
    const index = tileAt(grid, tiles.length, x, y, left, 0, LABEL_HEIGHT);
    return {index, x, y};
  };
  canvas.addEventListener("mousemove", (event) => {
    const {index, x, y} = hit(event);
    if (index === null && rowLabels && x < left) {
      const r = Math.floor(y / (grid.tile + grid.gap + LABEL_HEIGHT));
      if (r >= 0 && r < rowLabels.length) return hooks.tooltip.show(rowLabels[r], event);
    }
    if (index === null || !layouts[index]) return hooks.tooltip.hide();
    const cell = cellAt(layouts[index], x, y);
    const tile = tiles[index];
    const detail = cell ? describeAt(tile.matrix, headerFor(index), exampleFor(index), cell.row, cell.col) : null;
    hooks.tooltip.show(detail ? `${tile.label}: ${detail.text}` : tile.label, event);
  });
  canvas.addEventListener("mouseleave", () => hooks.tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const {index} = hit(event);
    if (index !== null) hooks.pick(index);
  });
  host.replaceChildren(canvas);
  return {canvas};
}

/** A vertical line in the gap before each key/value group that starts inside a row of tiles. */
function drawGroupLines(ctx, grid, groupSize, left, tiles) {
  ctx.save();
  ctx.strokeStyle = "#9e9e9e";
  ctx.lineWidth = 1;
  const rowHeight = grid.tile + grid.gap + LABEL_HEIGHT;
  for (let row = 0; row < grid.rows; row++) {
    for (let column = groupSize; column < grid.columns; column += groupSize) {
      const tile = tiles[row * grid.columns + column];
      if (!tile || tile.blank) continue;
      const x = Math.round(left + column * (grid.tile + grid.gap) - grid.gap / 2) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, row * rowHeight + 2);
      ctx.lineTo(x, row * rowHeight + LABEL_HEIGHT + grid.tile);
      ctx.stroke();
    }
  }
  ctx.restore();
}
