/**
 * The view state (run, tag, step, example, head, view, colour map, scale, log colour scale,
 * pinned query, zoomed region, compared runs, run filter, reference step, rollout residual, health measure,
 * selected keys)
 * and its encoding in a URL hash, so that a link reopens
 * the same view.
 *
 * The Attention tab lives in TensorBoard's iframe (`/data/plugin_entry.html?name=attention`),
 * so the state goes into the iframe's own `location.hash` and into localStorage (see
 * frontend/README.md); the iframe URL with its hash opens the same view as a page of its own.
 *
 * Example:
 *
 *   import {encodeState, decodeState} from "./state.js";
 *   encodeState({run: "train", tag: "enc/l0", step: 100, head: "mean"});
 *   // "run=train&tag=enc%2Fl0&step=100&head=mean"
 *   decodeState("#run=train&step=100").step;  // 100
 */

import {formatZoom, parseZoom} from "./pooled.js";
import {MAX_RUN_FILTER} from "./runfilter.js";

export const VIEWS = Object.freeze(["head", "heads", "model", "lines", "image", "compare", "diff", "stats", "rollout",
                                    "health"]);
export const SCALES = Object.freeze(["head", "shared", "unit"]);
/** The head-health view's measures (lib/health.js MEASURES). */
export const HEALTH_MEASURES = Object.freeze(["entropy", "max_logit", "previous_token", "diagonal", "first_token",
                                              "induction", "monotonicity"]);
const MAX_KEYS = 256;  // selected key positions kept in the hash

export const DEFAULT_STATE = Object.freeze({
  run: null, tag: null, step: null, example: 0, head: 0, view: "head",
  cmap: "viridis", scale: "head", query: null,
  compare: null,    // runs of the run comparison (null: the current run and the next with the layer)
  runFilter: "",    // regular expression narrowing the run picker and the compared runs (runfilter.js)
  ref: null,        // reference step of the step comparison (null: the first logged step)
  residual: true,   // rollout with the residual identity term
  log: false,       // log colour scale (decades below the top) instead of linear
  zoom: null,       // zoomed region of a long head: {query: [q0, q1), key: [k0, k1)} positions
  measure: "entropy",  // the health view's sparkline measure
  keys: null,       // selected key positions (token selection), ascending; null: none
});

const KEYS = ["run", "tag", "step", "example", "head", "view", "cmap", "scale", "query", "ref", "measure",
              "runFilter"];

function nonNegativeInt(text) {
  return /^\d{1,9}$/.test(text) ? Number(text) : undefined;
}

/** The state as a URL hash without "#"; default values are left out. */
export function encodeState(state) {
  const params = new URLSearchParams();
  for (const key of KEYS) {
    const value = state[key];
    if (value === null || value === undefined || value === DEFAULT_STATE[key]) continue;
    params.set(key, String(value));
  }
  for (const run of state.compare || []) params.append("compare", run);
  if (state.residual === false) params.set("residual", "0");
  if (state.log === true) params.set("log", "1");
  if (state.zoom) params.set("zoom", formatZoom(state.zoom));
  if (state.keys && state.keys.length) params.set("keys", state.keys.join(","));
  return params.toString();
}

/**
 * Parses a hash ("#run=..&..", with or without "#") into a partial state: only the keys that
 * are present and valid (unknown views, negative or non-numeric steps are dropped).
 */
export function decodeState(hash, {colormaps = null} = {}) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const state = {};
  const text = (key) => params.get(key);
  if (text("run")) state.run = text("run");
  if (text("tag")) state.tag = text("tag");
  if (params.has("runFilter")) state.runFilter = text("runFilter").slice(0, MAX_RUN_FILTER);
  for (const key of ["step", "example", "query", "ref"]) {
    if (params.has(key)) {
      const number = nonNegativeInt(text(key));
      if (number !== undefined) state[key] = number;
    }
  }
  if (params.has("head")) {
    const head = text("head");
    if (head === "mean") state.head = "mean";
    else if (nonNegativeInt(head) !== undefined) state.head = Number(head);
  }
  if (VIEWS.includes(text("view"))) state.view = text("view");
  if (SCALES.includes(text("scale"))) state.scale = text("scale");
  if (HEALTH_MEASURES.includes(text("measure"))) state.measure = text("measure");
  if (params.has("keys")) {
    const keys = text("keys").split(",").map(nonNegativeInt);
    if (keys.length <= MAX_KEYS && keys.every((k) => k !== undefined)) {
      state.keys = keys.length && text("keys") ? [...new Set(keys)].sort((a, b) => a - b) : null;
    }
  }
  const compare = params.getAll("compare").filter((run) => run);
  if (compare.length) state.compare = compare;
  if (params.has("residual")) {
    if (text("residual") === "0") state.residual = false;
    else if (text("residual") === "1") state.residual = true;
  }
  if (params.has("log")) {
    if (text("log") === "1") state.log = true;
    else if (text("log") === "0") state.log = false;
  }
  if (params.has("zoom")) {
    const zoom = parseZoom(text("zoom"));
    if (zoom) state.zoom = zoom;
  }
  if (text("cmap") && (!colormaps || colormaps.includes(text("cmap")))) state.cmap = text("cmap");
  return state;
}

/** `base` with the valid entries of `partial` applied (a new object). */
export function mergeState(base, partial) {
  return {...base, ...partial};
}

/**
 * The newest of the ascending `steps` that is <= `wanted`, else the oldest; the newest for no
 * `wanted`; null for no steps. Never a step after `wanted` when there is one before it (the
 * model overview shows each layer as it was at the chosen step); compare.js `closestStep`
 * looks on either side.
 */
export function latestStepAtOrBefore(steps, wanted) {
  if (!steps.length) return null;
  if (wanted === null || wanted === undefined) return steps[steps.length - 1];
  let best = null;
  for (const step of steps) if (step <= wanted) best = step;
  return best === null ? steps[0] : best;
}
