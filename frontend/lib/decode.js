/**
 * Decodes the binary answer of `GET ./matrix` (the wire format of docs/format.md and the team
 * contract) into a matrix of weights.
 *
 * Layout (little-endian): "TBAT" magic, u8 version (1), u8 dtype (1 = uint8 linear codes of
 * format v1, 2 = float32, 3 = faithful codes of format v2), u16 reserved, u32 rows, u32 cols,
 * f32 scale, then rows*cols codes or floats; for dtype 3 rows*cols primary bytes followed by one
 * extension byte per primary byte 254 (docs/format.md, "u8-loglin-zlib"); for dtype 4 (the
 * pooled overview of a long head: rows x cols blocks) the same codes for 2*rows*cols values,
 * the block means then the block maxes, returned as `values` (means) and `maxes`; dtype 5 the
 * same two planes as float32 (the mean of heads of a pooled step).
 *
 * Example:
 *
 *   import {decodeMatrix} from "./decode.js";
 *   const matrix = decodeMatrix(await response.arrayBuffer());
 *   matrix.values[row * matrix.cols + col];  // a weight, or NaN where masked
 */

export const MAGIC = "TBAT";
export const WIRE_VERSION = 1;
export const HEADER_BYTES = 20;
export const DTYPE_CODES = 1;
export const DTYPE_FLOAT32 = 2;
export const DTYPE_FAITHFUL = 3;
/**
 * The pooled overview of a long head (format v2 "pooled" layout): faithful codes (as dtype 3)
 * of two planes of rows x cols blocks, the block MEANS then the block MAXES, one scale for both;
 * the primary bytes of both planes come first, then the extension bytes.
 */
export const DTYPE_POOLED = 4;
/** The same overview as float32 (two planes, means then maxes): the mean of heads of a pooled step. */
export const DTYPE_POOLED_FLOAT32 = 5;
export const MASKED_CODE = 255;
export const LEVELS = 254;
// Faithful codes (format v2), the same constants as tb_attention_plugin/encoding.py.
export const LOG_FLOOR = 1e-6;
export const LINEAR_FROM = 18;
export const LOG_LEVELS = 203;
export const LOG_STEP = Math.log(LINEAR_FROM / LEVELS / LOG_FLOOR) / LOG_LEVELS;
export const ESCAPE = 254;
/** Level indices 0..440; a primary byte 254 is followed (after all primary bytes) by `u - 254`. */
export const V2_LEVELS = 1 + LOG_LEVELS + (LEVELS - LINEAR_FROM + 1);
export const MAX_EXTENSION = V2_LEVELS - 1 - ESCAPE;
/** Largest matrix the viewer accepts (4096 x 4096); anything bigger is a corrupt header. */
export const MAX_CELLS = 4096 * 4096;

/** A buffer that does not follow the wire format. */
export class WireFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = "WireFormatError";
  }
}

function asBytes(buffer) {
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }
  throw new WireFormatError(`expected an ArrayBuffer, got ${Object.prototype.toString.call(buffer)}`);
}

/**
 * The weight of every format v2 level index 0..440 at `scale`, as a Float32Array (441 entries):
 * 0 is exactly 0; 1..203 are `1e-6 * r**(u - 1) * scale` (log domain, r = 1.0566); 204..440
 * are `(u - 186) / 254 * scale` (v1's linear grid from 18/254 up).
 *
 *   faithfulLevels(1)[1] === Math.fround(1e-6);  faithfulLevels(0.5)[440] === 0.5
 */
export function faithfulLevels(scale) {
  const levels = new Float32Array(V2_LEVELS);
  for (let u = 1; u <= LOG_LEVELS; u++) levels[u] = LOG_FLOOR * Math.exp(LOG_STEP * (u - 1)) * scale;
  for (let u = LOG_LEVELS + 1; u < V2_LEVELS; u++) {
    levels[u] = ((u - LOG_LEVELS - 1 + LINEAR_FROM) / LEVELS) * scale;
  }
  return levels;
}

function countEscapes(bytes, start, cells) {
  let escapes = 0;
  for (let i = start, end = start + cells; i < end; i++) if (bytes[i] === ESCAPE) escapes++;
  return escapes;
}

/**
 * Returns `{rows, cols, dtype, scale, values}`; `values` is a row-major Float32Array of
 * `rows * cols` weights with NaN at masked positions.
 *
 * Throws `WireFormatError` for a wrong magic or version, an unknown dtype, a zero or huge
 * shape, a payload shorter or longer than the header announces, or a float32 weight that is
 * infinite or negative.
 */
export function decodeMatrix(buffer) {
  const bytes = asBytes(buffer);
  if (bytes.length < HEADER_BYTES) {
    throw new WireFormatError(`matrix answer has ${bytes.length} bytes, less than the ${HEADER_BYTES}-byte header`);
  }
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== MAGIC) throw new WireFormatError(`bad magic ${JSON.stringify(magic)}, expected "TBAT"`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint8(4);
  if (version !== WIRE_VERSION) {
    throw new WireFormatError(`wire version ${version} is not supported (this viewer reads version ${WIRE_VERSION})`);
  }
  const dtype = view.getUint8(5);
  if (![DTYPE_CODES, DTYPE_FLOAT32, DTYPE_FAITHFUL, DTYPE_POOLED, DTYPE_POOLED_FLOAT32].includes(dtype)) {
    throw new WireFormatError(`unknown dtype ${dtype}`);
  }
  const rows = view.getUint32(8, true);
  const cols = view.getUint32(12, true);
  const scale = view.getFloat32(16, true);
  if (rows === 0 || cols === 0) throw new WireFormatError(`empty matrix ${rows}x${cols}`);
  if (rows * cols > MAX_CELLS) throw new WireFormatError(`matrix ${rows}x${cols} is larger than ${MAX_CELLS} cells`);
  if (!Number.isFinite(scale) || scale < 0) throw new WireFormatError(`invalid scale ${scale}`);
  const planes = dtype === DTYPE_POOLED || dtype === DTYPE_POOLED_FLOAT32 ? 2 : 1;
  const cells = rows * cols * planes;
  const itemBytes = dtype === DTYPE_FLOAT32 || dtype === DTYPE_POOLED_FLOAT32 ? 4 : 1;
  let expected = HEADER_BYTES + cells * itemBytes;
  if ((dtype === DTYPE_FAITHFUL || dtype === DTYPE_POOLED) && bytes.length >= expected) {
    expected += countEscapes(bytes, HEADER_BYTES, cells);  // one extension byte per escape
  }
  if (bytes.length !== expected) {
    throw new WireFormatError(
      `${planes === 2 ? "pooled overview" : "matrix"} ${rows}x${cols} needs ${expected} bytes, the answer has ${bytes.length}`);
  }
  const values = new Float32Array(cells);
  if (dtype === DTYPE_CODES) {
    const step = scale / LEVELS;
    for (let i = 0; i < cells; i++) {
      const code = bytes[HEADER_BYTES + i];
      values[i] = code === MASKED_CODE ? NaN : code * step;
    }
  } else if (dtype === DTYPE_FAITHFUL || dtype === DTYPE_POOLED) {
    // The browser maps codes to weights through tables: 256 entries for the primary byte
    // (254 = escape, 255 = masked) and one per extension byte.
    const levels = faithfulLevels(scale);
    const primary = new Float32Array(256);
    primary.set(levels.subarray(0, ESCAPE));
    primary[ESCAPE] = NaN;
    primary[MASKED_CODE] = NaN;
    let next = HEADER_BYTES + cells;
    for (let i = 0; i < cells; i++) {
      const code = bytes[HEADER_BYTES + i];
      if (code !== ESCAPE) {
        values[i] = primary[code];
        continue;
      }
      const extension = bytes[next++];
      if (extension > MAX_EXTENSION) {
        throw new WireFormatError(
          `extension byte ${extension} at row ${Math.floor((i % (rows * cols)) / cols)}, column ${i % cols} is beyond the last level`);
      }
      values[i] = levels[ESCAPE + extension];
    }
  } else {
    for (let i = 0; i < cells; i++) {
      const value = view.getFloat32(HEADER_BYTES + 4 * i, true);
      // NaN is masked; anything else must be a weight the colour scale can place.
      if (value < 0 || value === Infinity) {
        throw new WireFormatError(
          `weight ${value} at row ${Math.floor((i % (rows * cols)) / cols)}, column ${i % cols} is not a finite non-negative number`);
      }
      values[i] = value;
    }
  }
  if (planes === 2) {
    // Block means (what the heatmap draws) and block maxes (hover, spikes), rows x cols each.
    return {rows, cols, dtype, scale, values: values.subarray(0, rows * cols), maxes: values.subarray(rows * cols)};
  }
  return {rows, cols, dtype, scale, values};
}

/** Largest non-NaN value of a Float32Array (0 when every value is masked). */
export function maxValue(values) {
  let max = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > max) max = v;  // NaN compares false
  }
  return max;
}

/** Row `row` of a matrix as a Float32Array view (no copy). */
export function matrixRow(matrix, row) {
  return matrix.values.subarray(row * matrix.cols, (row + 1) * matrix.cols);
}
