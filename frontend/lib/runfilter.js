/**
 * The run filter: which runs a regular expression keeps, matched as TensorBoard's own run
 * selector matches (case-insensitive, anywhere in the name, an empty filter keeps every run, an
 * invalid one keeps none and says why). No DOM; tested under node (tests/js/runfilter.test.mjs).
 *
 * Example:
 *
 *   import {filterRuns} from "./runfilter.js";
 *   filterRuns(["lr_0.1/train", "lr_0.01/train", "base"], "lr_0\\.0");
 *   // {runs: ["lr_0.01/train"], error: null}
 *   filterRuns(["a"], "lr_(").error;  // "Invalid regular expression: /lr_(/i: Unterminated group"
 */

/** Longest filter kept (in the URL hash and the text box); longer text is cut. */
export const MAX_RUN_FILTER = 1000;

/**
 * `{matches(name) -> boolean, error}` for the filter text `pattern`: `error` is null, or the
 * engine's message when `pattern` is not a valid regular expression (then nothing matches).
 */
export function runMatcher(pattern) {
  if (!pattern) return {matches: () => true, error: null};
  let regex;
  try {
    regex = new RegExp(pattern, "i");  // no "g": test() keeps no position between names
  } catch (error) {
    return {matches: () => false, error: error.message};
  }
  return {matches: (name) => regex.test(name), error: null};
}

/** `{runs, error}`: the names among `names` that `pattern` keeps, in their order (see above). */
export function filterRuns(names, pattern) {
  const {matches, error} = runMatcher(pattern);
  return {runs: names.filter((name) => matches(name)), error};
}
