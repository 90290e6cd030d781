import test from "node:test";
import assert from "node:assert/strict";
import {describeCell, tokenLabel, axisLabels, topKeys, formatWeight, specialPositions,
        specialIndexes} from "../../frontend/lib/tokens.js";

const header = {
  shape: [1, 1, 2, 3],
  query_tokens: [["我", "<img src=x onerror=alert(1)>"]],
  key_tokens: [["i", "have", "books"]],
  image: null,
};
const matrix = {rows: 2, cols: 3, values: Float32Array.from([0.5, 0.25, NaN, 0.1, 0.7, 0.2])};

test("describeCell gives query token, key token and the exact weight", () => {
  const cell = describeCell(matrix, header, 0, 1, 1);
  assert.equal(cell.query, "<img src=x onerror=alert(1)>");
  assert.equal(cell.key, "have");
  assert.ok(Math.abs(cell.value - 0.7) < 1e-6);
  assert.equal(cell.text, "<img src=x onerror=alert(1)> → have  0.7000");
  const masked = describeCell(matrix, header, 0, 0, 2);
  assert.equal(masked.masked, true);
  assert.match(masked.text, /masked$/);
  assert.equal(describeCell(matrix, header, 0, 2, 0), null);
  assert.equal(describeCell(matrix, header, 0, 0, -1), null);
});

test("labels fall back to patches and positions", () => {
  const vision = {query_tokens: null, key_tokens: null, image: {grid: [2, 2], prefix_tokens: 1}};
  assert.deepEqual(axisLabels(vision, "key", 0, 6), ["[cls]", "patch (0,0)", "patch (0,1)", "patch (1,0)", "patch (1,1)", "#5"]);
  assert.equal(tokenLabel({query_tokens: null}, "query", 0, 4), "#4");
  assert.equal(tokenLabel(header, "key", 3, 0), "#0");
});

test("topKeys sorts by weight and skips masked", () => {
  assert.deepEqual(topKeys(matrix, header, 0, 0, 5).map((k) => k.key), ["i", "have"]);
  assert.equal(formatWeight(NaN), "masked");
  assert.equal(formatWeight(0.123456), "0.1235");
});

test("special and padding positions per axis and example", () => {
  const flagged = {shape: [2, 1, 4, 5], query_special: [[0], [0, 3]], key_special: [[0, 4], []]};
  assert.deepEqual([...specialPositions(flagged, "query", 1)], [0, 3]);
  assert.deepEqual([...specialPositions(flagged, "key", 0)], [0, 4]);
  assert.equal(specialPositions(flagged, "key", 1).size, 0);
  // A zoomed region of keys 3..4 draws key 4 as its column 1.
  assert.deepEqual(specialIndexes(flagged, "key", 0, 3, 2), [1]);
  assert.deepEqual(specialIndexes(flagged, "key", 0, 0, 5), [0, 4]);
  // Steps without flags (old logs) mark nothing.
  assert.equal(specialPositions(header, "query", 0).size, 0);
  assert.deepEqual(specialIndexes({query_special: null}, "query", 0, 0, 3), []);
});
