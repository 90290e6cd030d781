/**
 * View (2): every head of a layer as small multiples, plus the mean over heads; clicking a
 * tile opens that head large. Also used by view (3), the model overview (layers x heads).
 *
 * Example:
 *
 *   renderHeadsView(host, {tiles: [{label: "head 0", matrix, head: 0}, ...], header, example,
 *                          lut, scale: "head", width: 900}, {tooltip, pickHead: (head) => ...});
 */

import {tileGrid, tileOrigin, tileAt, heatmapLayout, cellAt} from "../lib/layout.js";
import {hiDpiCanvas, drawHeatmap, devicePixelRatio, FONT_FAMILY} from "../lib/heatmap.js";
import {describeCell} from "../lib/tokens.js";
import {tileScales} from "../lib/colormap.js";
import {localPoint} from "../lib/dom.js";

const LABEL_HEIGHT = 16;

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
 * (model overview: one row per layer); `rowLabels` writes a label left of each grid row.
 * Returns `{canvas}`; `hooks.pick(index)` runs on a click on tile `index`.
 */
export function renderTiles(host, data, hooks) {
  const {tiles, lut, scale, width, columns = null, rowLabels = null, headerFor = () => null,
         exampleFor = () => 0, minTile = 72, maxTile = 200} = data;
  const dpr = devicePixelRatio();
  const left = rowLabels ? 170 : 4;  // 4 px: room for the selected tile's outline
  let grid = tileGrid({count: tiles.length, width: width - left, dpr, gap: 10, minTile, maxTile});
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
    drawHeatmap(ctx, tile.matrix, {x: layout.x, y: layout.y, width: layout.width, height: layout.height},
                {vmax: vmaxes[index], lut, dpr});
    if (tile.selected) {
      ctx.strokeStyle = "#e8710a";
      ctx.lineWidth = 2;
      ctx.strokeRect(layout.x - 2, layout.y - 2, layout.width + 4, layout.height + 4);
    }
    layouts.push(layout);
  });
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
    const detail = cell ? describeCell(tile.matrix, headerFor(index), exampleFor(index), cell.row, cell.col) : null;
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
