// Builds /matrix answers in the wire format for the decoder tests (dtype 3: pass the payload,
// primary bytes then extension bytes, or use faithfulPayload).
export function wireBuffer({magic = "TBAT", version = 1, dtype = 1, rows, cols, scale = 1, payload}) {
  const itemBytes = dtype === 2 ? 4 : 1;
  const length = payload === undefined ? rows * cols * itemBytes : payload.byteLength;
  const buffer = new ArrayBuffer(20 + length);
  const view = new DataView(buffer);
  for (let i = 0; i < 4; i++) view.setUint8(i, magic.charCodeAt(i) || 0);
  view.setUint8(4, version);
  view.setUint8(5, dtype);
  view.setUint16(6, 0, true);
  view.setUint32(8, rows, true);
  view.setUint32(12, cols, true);
  view.setFloat32(16, scale, true);
  if (payload !== undefined) new Uint8Array(buffer, 20).set(new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
  return buffer;
}

export function float32Payload(values) {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return bytes;
}

/** Primary bytes and extension bytes (format v2, wire dtype 3) of level indices 0..440, 441 = masked. */
export function faithfulPayload(levels) {
  const primary = levels.map((u) => (u === 441 ? 255 : Math.min(u, 254)));
  const extension = levels.filter((u) => u >= 254 && u !== 441).map((u) => u - 254);
  return Uint8Array.from([...primary, ...extension]);
}
