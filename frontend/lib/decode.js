/**
 * Decodes the binary answer of `GET ./matrix` (the wire format of docs/format.md and the team
 * contract) into a matrix of weights.
 *
 * Layout (little-endian): "TBAT" magic, u8 version (1), u8 dtype (1 = uint8 codes, 2 = float32),
 * u16 reserved, u32 rows, u32 cols, f32 scale, then rows*cols codes or floats.
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
export const MASKED_CODE = 255;
export const LEVELS = 254;
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
  if (dtype !== DTYPE_CODES && dtype !== DTYPE_FLOAT32) throw new WireFormatError(`unknown dtype ${dtype}`);
  const rows = view.getUint32(8, true);
  const cols = view.getUint32(12, true);
  const scale = view.getFloat32(16, true);
  if (rows === 0 || cols === 0) throw new WireFormatError(`empty matrix ${rows}x${cols}`);
  if (rows * cols > MAX_CELLS) throw new WireFormatError(`matrix ${rows}x${cols} is larger than ${MAX_CELLS} cells`);
  if (!Number.isFinite(scale) || scale < 0) throw new WireFormatError(`invalid scale ${scale}`);
  const cells = rows * cols;
  const itemBytes = dtype === DTYPE_CODES ? 1 : 4;
  const expected = HEADER_BYTES + cells * itemBytes;
  if (bytes.length !== expected) {
    throw new WireFormatError(
      `matrix ${rows}x${cols} needs ${expected} bytes, the answer has ${bytes.length}`);
  }
  const values = new Float32Array(cells);
  if (dtype === DTYPE_CODES) {
    const step = scale / LEVELS;
    for (let i = 0; i < cells; i++) {
      const code = bytes[HEADER_BYTES + i];
      values[i] = code === MASKED_CODE ? NaN : code * step;
    }
  } else {
    for (let i = 0; i < cells; i++) {
      const value = view.getFloat32(HEADER_BYTES + 4 * i, true);
      // NaN is masked; anything else must be a weight the colour scale can place.
      if (value < 0 || value === Infinity) {
        throw new WireFormatError(
          `weight ${value} at row ${Math.floor(i / cols)}, column ${i % cols} is not a finite non-negative number`);
      }
      values[i] = value;
    }
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
