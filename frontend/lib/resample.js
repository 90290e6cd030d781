/**
 * Shrinks a matrix to fewer pixels than it has cells by averaging the weights each pixel
 * covers (area averaging), so a 128x128 head still shows its structure in a 60-pixel tile.
 * Masked cells (NaN) are left out of the averages; a pixel that covers only masked cells stays
 * NaN (drawn as masked). Averaging weights, not colours, keeps the colour scale honest.
 *
 * Example:
 *
 *   import {resample} from "./resample.js";
 *   resample({rows: 4, cols: 4, values}, 2, 2);  // Float32Array of 4 block means
 */

/** Float32Array of `height` x `width` area-averaged values of `matrix` (width <= cols, height <= rows). */
export function resample(matrix, width, height) {
  const {rows, cols, values} = matrix;
  if (!(width >= 1 && height >= 1 && width <= cols && height <= rows)) {
    throw new RangeError(`cannot resample ${rows}x${cols} to ${height}x${width}`);
  }
  // Column spans of each output pixel, computed once.
  const colFrom = new Int32Array(width);
  const colTo = new Int32Array(width);
  for (let x = 0; x < width; x++) {
    colFrom[x] = Math.floor((x * cols) / width);
    colTo[x] = Math.max(colFrom[x] + 1, Math.floor(((x + 1) * cols) / width));
  }
  const sums = new Float64Array(width);
  const counts = new Int32Array(width);
  const out = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    const rowFrom = Math.floor((y * rows) / height);
    const rowTo = Math.max(rowFrom + 1, Math.floor(((y + 1) * rows) / height));
    sums.fill(0);
    counts.fill(0);
    for (let r = rowFrom; r < rowTo; r++) {
      const base = r * cols;
      for (let x = 0; x < width; x++) {
        for (let c = colFrom[x]; c < colTo[x]; c++) {
          const v = values[base + c];
          if (v === v) {  // not NaN
            sums[x] += v;
            counts[x]++;
          }
        }
      }
    }
    for (let x = 0; x < width; x++) out[y * width + x] = counts[x] ? sums[x] / counts[x] : NaN;
  }
  return out;
}
