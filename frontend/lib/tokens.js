/**
 * Token labels and the text of the hover tooltip: what a cell of a matrix means.
 * Pure functions over the step header (`GET ./step`) and a decoded matrix.
 *
 * Example:
 *
 *   import {describeCell} from "./tokens.js";
 *   describeCell(matrix, header, 0, 2, 5);
 *   // {row: 2, col: 5, query: "三", key: "books", value: 0.41, masked: false,
 *   //  text: "三 → books  0.4100"}
 *   specialPositions({key_special: [[0, 6]]}, "key", 0);   // Set {0, 6}
 */

import {patchOfKey} from "./layout.js";

// Right-to-left letters (Hebrew, Arabic, Syriac, Thaana, N'Ko, ...) and direction controls.
const BIDI = /[\u0590-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFF\u200E\u200F\u202A-\u202E\u2066-\u2069]|\uD802[\uDC00-\uDFFF]|\uD83A[\uDC00-\uDFFF]/;

/**
 * `text` between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE (both invisible) when it holds
 * right-to-left letters or direction controls, so that it cannot reorder the words and weights
 * written next to it ("مرحبا → x  0.25" would otherwise show the weight before the token, and a
 * U+202E override could show 0.25 as 52.0). Other text is returned as it is.
 */
export function isolateBidi(text) {
  return BIDI.test(text) ? `\u2068${text}\u2069` : text;
}

/**
 * Label of position `index` on an axis ("query" or "key") of example `example`: the logged
 * token (bidi-isolated, see `isolateBidi`), else "patch (r,c)" / "[prefix i]" for vision
 * probes, else "#index".
 */
export function tokenLabel(header, axis, example, index) {
  const lists = header && (axis === "query" ? header.query_tokens : header.key_tokens);
  const list = lists && lists[example];
  if (list && index >= 0 && index < list.length) return isolateBidi(String(list[index]));
  const image = header && header.image;
  if (image && Array.isArray(image.grid)) {
    const patch = patchOfKey(index, image);
    if (patch) return `patch (${patch.r},${patch.c})`;
    if (index >= 0 && index < image.prefix_tokens) return index === 0 ? "[cls]" : `[prefix ${index}]`;
  }
  return `#${index}`;
}

/**
 * The positions of an axis ("query" or "key") of example `example` that hold special tokens
 * (`<s>`, `[CLS]`, padding: the header's `query_special` / `key_special`), as a Set; empty
 * where the step records none.
 */
export function specialPositions(header, axis, example) {
  const lists = header && (axis === "query" ? header.query_special : header.key_special);
  const list = lists && lists[example];
  return new Set(Array.isArray(list) ? list.filter(Number.isInteger) : []);
}

/**
 * The indexes `0 .. length-1` of a drawn axis whose position (`offset + index`: a zoomed
 * region starts at `offset`) holds a special token, ascending.
 */
export function specialIndexes(header, axis, example, offset, length) {
  const result = [];
  for (const position of specialPositions(header, axis, example)) {
    if (position >= offset && position < offset + length) result.push(position - offset);
  }
  return result.sort((a, b) => a - b);
}

/** All labels of one axis as an array of strings. */
export function axisLabels(header, axis, example, length) {
  const labels = new Array(length);
  for (let i = 0; i < length; i++) labels[i] = tokenLabel(header, axis, example, i);
  return labels;
}

/** A weight as the tooltip writes it: 4 decimals, or "masked". */
export function formatWeight(value) {
  return Number.isNaN(value) ? "masked" : value.toFixed(4);
}

/**
 * What the cell (row, col) shows: `{row, col, query, key, value, masked, text}`; null when
 * (row, col) is outside the matrix.
 */
export function describeCell(matrix, header, example, row, col) {
  if (!matrix || row < 0 || col < 0 || row >= matrix.rows || col >= matrix.cols) return null;
  const value = matrix.values[row * matrix.cols + col];
  const query = tokenLabel(header, "query", example, row);
  const key = tokenLabel(header, "key", example, col);
  const masked = Number.isNaN(value);
  return {row, col, query, key, value, masked, text: `${query} → ${key}  ${formatWeight(value)}`};
}

/** The `count` largest weights of a row as `[{col, key, value}]`, largest first (masked skipped). */
export function topKeys(matrix, header, example, row, count = 5) {
  const result = [];
  for (let col = 0; col < matrix.cols; col++) {
    const value = matrix.values[row * matrix.cols + col];
    if (!Number.isNaN(value)) result.push({col, value});
  }
  result.sort((a, b) => b.value - a.value || a.col - b.col);
  return result.slice(0, count).map((entry) => ({...entry, key: tokenLabel(header, "key", example, entry.col)}));
}
