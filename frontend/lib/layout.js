/**
 * Geometry of the views, in CSS pixels, with heatmap cells aligned to whole device pixels so
 * that every cell is a crisp square at any devicePixelRatio. Pure functions, no DOM.
 *
 * Example:
 *
 *   import {heatmapLayout, cellAt} from "./layout.js";
 *   const layout = heatmapLayout({rows: 7, cols: 9, width: 800, height: 600, dpr: 2,
 *                                 left: 90, top: 90});
 *   cellAt(layout, layout.x + 1, layout.y + 1);  // {row: 0, col: 0}
 */

import {matrixRow} from "./decode.js";

/**
 * Places a rows x cols heatmap in a `width` x `height` box after a `left` margin (query labels)
 * and a `top` margin (key labels). Cells get a whole number of device pixels between
 * `minCell` (default 1) and `maxCell` CSS pixels (default 40); with a `minCell` below 1, a
 * matrix larger than the box gets cells of less than a device pixel (drawn averaged).
 *
 * Returns `{x, y, cell, width, height, rows, cols, dpr, cellDevice}`: the heatmap's top-left
 * corner, the cell size and the drawn size, in CSS pixels.
 */
export function heatmapLayout({rows, cols, width, height, dpr = 1, left = 0, top = 0,
                               minCell = 1, maxCell = 40}) {
  if (!(rows > 0 && cols > 0)) throw new RangeError(`bad matrix shape ${rows}x${cols}`);
  const availableW = Math.max(0, width - left);
  const availableH = Math.max(0, height - top);
  const fit = Math.min(availableW / cols, availableH / rows, maxCell);
  if (minCell < 1 && fit * dpr < 1) {
    // A long matrix (e.g. 2048 tokens in 1000 pixels): less than a device pixel per cell, so
    // the drawing averages cells into pixels (resample.js); the cell is not a whole pixel.
    const cell = Math.max(fit, minCell, 1e-3);
    const x = Math.round(left * dpr) / dpr;
    const y = Math.round(top * dpr) / dpr;
    return {x, y, cell, cellDevice: cell * dpr, dpr, rows, cols, width: cell * cols, height: cell * rows};
  }
  let cellDevice = Math.floor(fit * dpr);
  cellDevice = Math.max(cellDevice, Math.ceil(minCell * dpr), 1);
  const cell = cellDevice / dpr;
  // The origin sits on a device pixel too.
  const x = Math.round(left * dpr) / dpr;
  const y = Math.round(top * dpr) / dpr;
  return {x, y, cell, cellDevice, dpr, rows, cols, width: cell * cols, height: cell * rows};
}

/** The `{row, col}` under CSS point (px, py), or null outside the heatmap. */
export function cellAt(layout, px, py) {
  const col = Math.floor((px - layout.x) / layout.cell);
  const row = Math.floor((py - layout.y) / layout.cell);
  if (row < 0 || col < 0 || row >= layout.rows || col >= layout.cols) return null;
  return {row, col};
}

/** CSS centre `{x, y}` of a cell. */
export function cellCenter(layout, row, col) {
  return {x: layout.x + (col + 0.5) * layout.cell, y: layout.y + (row + 0.5) * layout.cell};
}

/** Row index whose query label is under (px, py) (left of the heatmap), or null. */
export function rowLabelAt(layout, px, py) {
  if (px >= layout.x || px < 0) return null;
  const row = Math.floor((py - layout.y) / layout.cell);
  return row >= 0 && row < layout.rows ? row : null;
}

/** Column index whose key label is under (px, py) (above the heatmap), or null. */
export function colLabelAt(layout, px, py) {
  if (py >= layout.y || py < 0) return null;
  const col = Math.floor((px - layout.x) / layout.cell);
  return col >= 0 && col < layout.cols ? col : null;
}

/**
 * Every how many rows a label can be written without overlapping: labels `lineHeight` high on
 * cells `cell` high.
 */
export function labelStride(cell, lineHeight) {
  if (!(cell > 0)) return Infinity;
  return Math.max(1, Math.ceil(lineHeight / cell));
}

/**
 * `text` shortened with an ellipsis so that `measure(result) <= maxWidth`. `measure` returns
 * the drawn width of a string (canvas measureText in the browser). Works on code points, so
 * CJK and emoji are never cut in half.
 */
export function fitLabel(text, maxWidth, measure) {
  const full = String(text);
  if (measure(full) <= maxWidth) return full;
  const chars = Array.from(full);
  let lo = 0;
  let hi = chars.length;
  while (lo < hi) {  // longest prefix that fits with the ellipsis
    const mid = Math.ceil((lo + hi) / 2);
    if (measure(chars.slice(0, mid).join("") + "…") <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return lo === 0 ? (measure("…") <= maxWidth ? "…" : "") : chars.slice(0, lo).join("") + "…";
}

/**
 * Arranges `count` equal square tiles in a `width`-wide area: returns
 * `{columns, rows, tile, gap}` with the largest tile (whole device pixels) up to `maxTile`.
 */
export function tileGrid({count, width, dpr = 1, gap = 8, minTile = 48, maxTile = 220}) {
  if (!(count > 0)) return {columns: 0, rows: 0, tile: 0, gap};
  let columns = Math.max(1, Math.floor((width + gap) / (minTile + gap)));
  columns = Math.min(columns, count);
  let tile = Math.min(maxTile, (width + gap) / columns - gap);
  tile = Math.max(1, Math.floor(tile * dpr)) / dpr;
  return {columns, rows: Math.ceil(count / columns), tile, gap};
}

/** Top-left `{x, y}` of tile `index` in a tileGrid placed at (x0, y0) with `labelHeight` above each tile. */
export function tileOrigin(grid, index, x0 = 0, y0 = 0, labelHeight = 0) {
  const column = index % grid.columns;
  const row = Math.floor(index / grid.columns);
  return {
    x: x0 + column * (grid.tile + grid.gap),
    y: y0 + row * (grid.tile + grid.gap + labelHeight) + labelHeight,
  };
}

/** Index of the tile under (px, py), or null. */
export function tileAt(grid, count, px, py, x0 = 0, y0 = 0, labelHeight = 0) {
  const column = Math.floor((px - x0) / (grid.tile + grid.gap));
  const row = Math.floor((py - y0) / (grid.tile + grid.gap + labelHeight));
  if (column < 0 || row < 0 || column >= grid.columns) return null;
  const origin = tileOrigin(grid, row * grid.columns + column, x0, y0, labelHeight);
  if (px > origin.x + grid.tile || py < origin.y || py > origin.y + grid.tile) return null;
  const index = row * grid.columns + column;
  return index < count ? index : null;
}

/**
 * Key positions of a vision probe as patches: key `prefix + r * gridCols + c` is patch (r, c).
 * Returns `{r, c}` for a patch key, null for a prefix (class/register) token.
 */
export function patchOfKey(key, image) {
  const [gridRows, gridCols] = image.grid;
  const patch = key - image.prefix_tokens;
  if (patch < 0 || patch >= gridRows * gridCols) return null;
  return {r: Math.floor(patch / gridCols), c: patch % gridCols};
}

/**
 * Weights of one query over the image patches, as a Float32Array of gridRows*gridCols in
 * row-major patch order (NaN = masked or no such key).
 */
export function patchWeights(matrix, image, query) {
  const [gridRows, gridCols] = image.grid;
  const row = matrixRow(matrix, query);
  const out = new Float32Array(gridRows * gridCols).fill(NaN);
  for (let key = 0; key < matrix.cols; key++) {
    const patch = patchOfKey(key, image);
    if (patch) out[patch.r * gridCols + patch.c] = row[key];
  }
  return out;
}

/** Key index of the patch under (px, py) of an image drawn as `rect` {x, y, width, height}, or null. */
export function keyOfPoint(image, rect, px, py) {
  const [gridRows, gridCols] = image.grid;
  const c = Math.floor(((px - rect.x) / rect.width) * gridCols);
  const r = Math.floor(((py - rect.y) / rect.height) * gridRows);
  if (r < 0 || c < 0 || r >= gridRows || c >= gridCols) return null;
  return image.prefix_tokens + r * gridCols + c;
}

/**
 * Geometry of the token-to-token line view: query tokens in a left column, key tokens in a
 * right column, one line per pair. Returns `{rowHeight, height, leftX, rightX, queryY(i), keyY(j)}`.
 */
export function lineLayout({rows, cols, width, rowHeight = 20, labelWidth = 160, top = 10}) {
  const leftX = labelWidth;
  const rightX = Math.max(leftX + 80, width - labelWidth);
  const height = top * 2 + Math.max(rows, cols) * rowHeight;
  return {
    rowHeight, height, leftX, rightX, top,
    queryY: (i) => top + (i + 0.5) * rowHeight,
    keyY: (j) => top + (j + 0.5) * rowHeight,
  };
}

/** Index of the token row of a line layout under y, or null. */
export function lineTokenAt(layout, count, py) {
  const i = Math.floor((py - layout.top) / layout.rowHeight);
  return i >= 0 && i < count ? i : null;
}
