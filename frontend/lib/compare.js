/**
 * Pure logic of the comparison views: which step of another run matches, which runs share a
 * layer, the difference of two matrices, and which layers form a stack for the rollout.
 * No DOM; tested under node (tests/js/compare.test.mjs).
 *
 * Example:
 *
 *   import {closestStep, differenceMatrix, rolloutStack} from "./compare.js";
 *   closestStep([0, 47, 94], 50);                  // 47
 *   differenceMatrix(later, earlier).limit;        // largest |later - earlier|
 *   rolloutStack(run.tags, "encoder/layer_3/self_attention");  // layer_0 ... layer_N tags
 */

/**
 * The step of the ascending `steps` closest to `wanted` on either side (the earlier one on a
 * tie); the newest for no `wanted`; null if none. state.js `latestStepAtOrBefore` never looks
 * after `wanted`.
 */
export function closestStep(steps, wanted) {
  if (!steps.length) return null;
  if (wanted === null || wanted === undefined) return steps[steps.length - 1];
  let best = steps[0];
  for (const step of steps) if (Math.abs(step - wanted) < Math.abs(best - wanted)) best = step;
  return best;
}

/** Names of the runs that logged `tag` (readable), in the order of `runs`. */
export function runsWithTag(runs, tag) {
  return runs.filter((r) => r.tags.some((t) => t.tag === tag && !t.error)).map((r) => r.run);
}

/**
 * The runs a comparison shows: the `wanted` ones that logged the tag, else (none wanted or
 * none left) the first `fallback` runs that did, the current run first.
 */
export function comparedRuns(available, wanted, current, fallback = 2) {
  const chosen = (wanted || []).filter((run) => available.includes(run));
  if (chosen.length) return chosen;
  const ordered = available.includes(current) ? [current, ...available.filter((r) => r !== current)] : available;
  return ordered.slice(0, fallback);
}

/**
 * `a - b` of two decoded matrices (`{rows, cols, values}`): `{rows, cols, values, limit}` with
 * NaN where either is masked and `limit` the largest absolute difference (1 when there is none),
 * so that a diverging map spans [-limit, limit]. Throws when the shapes differ.
 */
export function differenceMatrix(a, b) {
  if (a.rows !== b.rows || a.cols !== b.cols) {
    throw new Error(`cannot subtract a ${b.rows}x${b.cols} matrix from a ${a.rows}x${a.cols} one`);
  }
  const values = new Float32Array(a.values.length);
  let limit = 0;
  for (let i = 0; i < values.length; i++) {
    const d = a.values[i] - b.values[i];  // NaN when either is masked
    values[i] = d;
    if (Math.abs(d) > limit) limit = Math.abs(d);
  }
  return {rows: a.rows, cols: a.cols, values, limit: limit > 0 ? limit : 1};
}

/** Largest non-NaN value over several matrices (1 when everything is 0 or masked). */
export function sharedMaximum(matrices) {
  let max = 0;
  for (const matrix of matrices) {
    for (let i = 0; i < matrix.values.length; i++) if (matrix.values[i] > max) max = matrix.values[i];
  }
  return max || 1;
}

/**
 * Splits a tag at its last number: "encoder/layer_3/self_attention" -> {family:
 * "encoder/layer/self_attention", index: 3}. Keras names the first instance of a layer without
 * a number ("transformer_encoder/...", then "transformer_encoder_1/..."), so a tag without any
 * number is index 0 of its own family.
 */
export function layerFamily(tag) {
  const match = /^(.*?)_?(\d+)(\D*)$/.exec(tag);
  if (!match) return {family: tag, index: 0};
  return {family: match[1] + match[3], index: Number(match[2])};
}

/**
 * The tags of the stack that `tag` belongs to, bottom layer first: readable square layers of
 * the same family (name without the layer number) and size. `tags`: the `/runs` entries of a
 * run. Empty when `tag` is not square self-attention.
 */
export function rolloutStack(tags, tag) {
  const own = tags.find((t) => t.tag === tag);
  if (!own || !own.shape || own.error) return [];
  const size = own.shape[3];
  if (own.shape[2] !== size) return [];
  const {family} = layerFamily(tag);
  return tags
    .filter((t) => !t.error && t.shape && t.shape[2] === size && t.shape[3] === size)
    .map((t) => ({tag: t.tag, ...layerFamily(t.tag)}))
    .filter((t) => t.family === family)
    .sort((x, y) => x.index - y.index)
    .map((t) => t.tag);
}

/**
 * `matrix` with NaN wherever `mask` (a matrix of the same shape) is NaN: the rollout carries 0
 * for positions the bottom layer masks (padding, causal future), which the map should draw as
 * masked, not as weights (a padded query would otherwise keep all of its weight on itself).
 */
export function maskLike(matrix, mask) {
  if (matrix.rows !== mask.rows || matrix.cols !== mask.cols) {
    throw new Error(`cannot mask a ${matrix.rows}x${matrix.cols} matrix with a ${mask.rows}x${mask.cols} one`);
  }
  const values = Float32Array.from(matrix.values, (v, i) => (Number.isNaN(mask.values[i]) ? NaN : v));
  return {...matrix, values};
}
