// Tokens with right-to-left text or direction controls are isolated inside every label and
// tooltip, so they cannot reorder the weights written next to them.
import test from "node:test";
import assert from "node:assert/strict";
import {describeCell, isolateBidi, tokenLabel} from "../../frontend/lib/tokens.js";

const FSI = "\u2068";
const PDI = "\u2069";

test("right-to-left tokens and direction controls are isolated, others untouched", () => {
  for (const token of ["مرحبا", "שלום", "a\u202eb", "x\u200f", "\u2067y", "ܫܠܡ", "𐤀"]) {
    assert.equal(isolateBidi(token), FSI + token + PDI, token);
  }
  for (const token of ["hello", "我", "<img src=x>", "", "é", "\u0000"]) {
    assert.equal(isolateBidi(token), token, token);
  }
});

test("a tooltip keeps the weight outside an RTL-override token", () => {
  const header = {shape: [1, 1, 1, 2], query_tokens: [["q"]], key_tokens: [["\u202eevil", "ok"]]};
  const matrix = {rows: 1, cols: 2, values: Float32Array.from([0.25, 0.75])};
  assert.equal(tokenLabel(header, "key", 0, 0), FSI + "\u202eevil" + PDI);
  assert.equal(describeCell(matrix, header, 0, 0, 0).text, `q → ${FSI}\u202eevil${PDI}  0.2500`);
  assert.equal(describeCell(matrix, header, 0, 0, 1).text, "q → ok  0.7500");
});
