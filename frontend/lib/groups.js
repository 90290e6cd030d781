/**
 * Key/value groups of grouped-query attention: which key/value head each query head reads, the
 * head labels that say so, and how a grid of heads is laid out by group. Pure functions over
 * the step header (`GET ./step`: `kv_group_size`, null where the step records no groups).
 *
 * Example:
 *
 *   import {headLabel, groupColumns, tileOrder} from "./groups.js";
 *   const header = {shape: [1, 6, 5, 5], kv_group_size: 3};
 *   headLabel(header, 5);        // "head 5 · kv 1"
 *   groupColumns(header, 7);     // 6: two whole groups of 3 fit 7 columns
 *   tileOrder(6, 4);             // [0, 1, 2, 3, 4, 5, null, null, "mean"]
 */

/** Query heads per key/value head: the header's `kv_group_size`, or 1 (no groups). */
export function kvGroupSize(header) {
  const size = header && header.kv_group_size;
  return Number.isInteger(size) && size > 1 ? size : 1;
}

/** The key/value head query head `head` reads, or null when the step records no groups. */
export function kvGroupOf(header, head) {
  const size = kvGroupSize(header);
  return size > 1 && Number.isInteger(head) && head >= 0 ? Math.floor(head / size) : null;
}

/** "head 5 · kv 1" where the step records groups, else "head 5". */
export function headLabel(header, head) {
  const group = kvGroupOf(header, head);
  return group === null ? `head ${head}` : `head ${head} · kv ${group}`;
}

// A group wider than this does not fit one row of readable tiles: the grid flows as usual.
const MAX_GROUP_COLUMNS = 8;

/**
 * Columns of a grid of the step's heads whose rows hold whole key/value groups: the most whole
 * groups that fit in `fit` columns (at least one group), or null where grouping does not read
 * well: no groups, one group only, or groups wider than a row of tiles.
 */
export function groupColumns(header, fit) {
  const size = kvGroupSize(header);
  const heads = header && Array.isArray(header.shape) ? header.shape[1] : 0;
  if (size < 2 || size > MAX_GROUP_COLUMNS || heads <= size) return null;
  return size * Math.max(1, Math.floor(fit / size));
}

/**
 * The tiles of a heads grid in order: heads `0 .. heads-1`, then (with `columns`) null for the
 * blank tiles that complete the last row of heads, then "mean" on a row of its own.
 */
export function tileOrder(heads, columns = null) {
  const order = Array.from({length: heads}, (_, h) => h);
  const blanks = columns ? (columns - (heads % columns)) % columns : 0;
  return [...order, ...new Array(blanks).fill(null), "mean"];
}
