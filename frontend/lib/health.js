/**
 * Pure logic of the head-health view (view "health") and of the token-selection mass grid:
 * the measures and their y ranges, role colours, the layers x heads grid geometry, sparkline
 * points, alarm and emergence markers, the "what changed" list, similarity groups and the mass
 * on selected keys. No DOM; tested under node (tests/js/health.test.mjs). The `/health` answer
 * is described in docs/http_api.md.
 *
 * Example:
 *
 *   import {healthGrid, cellRect, sparkPoints, headMarkers, changeEntries} from "./health.js";
 *   const grid = healthGrid({layers: 12, heads: 12, width: 1200});
 *   const rect = cellRect(grid, 3, 5);                    // layer 3, head 5
 *   const points = sparkPoints(grid, rect, body.steps, seriesOf(body, tag, "entropy", 5), [0, 1]);
 *   const markers = headMarkers(body, tag, 5, grid, rect);  // alarms and emergence steps
 *   changeEntries(body)[0].text;  // "layer 3 head 5 became a previous-token head at step 1200"
 */

import {linearScale} from "./chart.js";

/**
 * The measures the picker offers: `name` as the view state and the `/health` series call it
 * (`aliases`: other names an answer may use), and whether the values are bounded by [0, 1].
 */
export const MEASURES = Object.freeze([
  {name: "entropy", label: "entropy", unit: true, help: "normalised entropy: 1 = uniform over the visible keys, 0 = one key"},
  {name: "max_logit", label: "max logit", unit: false, help: "largest pre-softmax logit (attention-logit growth)"},
  {name: "previous_token", label: "previous-token", unit: true, help: "mean weight on the previous token"},
  {name: "diagonal", label: "diagonal", unit: true, help: "mean weight on the query's own position"},
  {name: "first_token", label: "first-token", unit: true, help: "mean weight on the first token (sink)"},
  {name: "induction", label: "induction", unit: true, help: "mean weight on the induction target of a repeated probe"},
  {name: "monotonicity", label: "monotonicity", unit: true, aliases: ["monotonic"],
   help: "share of the mass on one monotonic alignment path (cross-attention)"},
]);
export const MEASURE_NAMES = Object.freeze(MEASURES.map((m) => m.name));

/** Roles (tb_attention_plugin/health.py ROLES, then "diffuse" and "none") and their colours. */
export const ROLES = Object.freeze([
  {name: "induction", color: "#d81b60"},
  {name: "previous-token", color: "#1e88e5"},
  {name: "diagonal", color: "#43a047"},
  {name: "monotonic", color: "#8e24aa"},
  {name: "first-token", color: "#f4511e"},
  {name: "diffuse", color: "#9e9e9e"},
  {name: "none", color: "#e0e0e0"},
]);
const ROLE_COLOR = new Map(ROLES.map((r) => [r.name, r.color]));
const UNKNOWN_ROLE = "#607d8b";

/** The colour of a role (names with "_" or "-" alike); unknown roles get one neutral colour. */
export function roleColor(role) {
  if (role === null || role === undefined) return ROLE_COLOR.get("none");
  return ROLE_COLOR.get(String(role).replace(/_/g, "-")) || UNKNOWN_ROLE;
}

/** `#rrggbb` at `alpha` over white, as an opaque `rgb(r,g,b)` (opaque fills draw faster). */
export function tint(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  const mix = (c) => Math.round(255 - alpha * (255 - c));
  return `rgb(${mix((n >> 16) & 255)},${mix((n >> 8) & 255)},${mix(n & 255)})`;
}

/** "previous_token" -> the MEASURES entry (aliases resolved); unknown names -> entropy's. */
export function measureInfo(name) {
  return MEASURES.find((m) => m.name === name || (m.aliases || []).includes(name)) || MEASURES[0];
}

/**
 * The values of one measure of one head over the answer's steps (null where not measured), or
 * null when the answer has no such series for the tag.
 */
export function seriesOf(body, tag, measure, head) {
  const byMeasure = body.series && body.series[tag];
  if (!byMeasure) return null;
  const info = measureInfo(measure);
  let perStep = null;
  for (const name of [info.name, ...(info.aliases || [])]) {
    if (Array.isArray(byMeasure[name])) {
      perStep = byMeasure[name];
      break;
    }
  }
  if (!perStep) return null;
  return perStep.map((perHead) => (perHead ? finite(perHead[head]) : null));
}

function finite(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * The y range of a measure over every head of every layer (one scale, so heads compare):
 * [0, 1] for the bounded ones; [min(0, smallest), largest] for the max logit.
 */
export function measureDomain(body, measure) {
  const info = measureInfo(measure);
  if (info.unit) return [0, 1];
  let lo = 0;
  let hi = -Infinity;
  for (const tag of body.layers || []) {
    const byMeasure = (body.series || {})[tag] || {};
    const perStep = byMeasure[info.name] || (info.aliases || []).map((a) => byMeasure[a]).find(Boolean) || [];
    for (const perHead of perStep) {
      for (const v of perHead || []) {
        if (finite(v) === null) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
  }
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

/** Index of the newest of the ascending `steps` at or before `step` (else 0); -1 for none. */
export function stepIndexAtOrBefore(steps, step) {
  if (!steps.length) return -1;
  let best = 0;
  for (let i = 0; i < steps.length; i++) if (steps[i] <= step) best = i;
  return best;
}

/** The role of `head` of `tag` at step index `index`, or null. */
export function roleAt(body, tag, index, head) {
  const perStep = body.roles && body.roles[tag];
  const roles = perStep && perStep[index];
  return roles && roles[head] !== undefined ? roles[head] : null;
}

// ---- geometry -----------------------------------------------------------------------------

/**
 * Layout of a `layers` x `heads` grid of small cells in `width` CSS pixels: `left` for the layer
 * names, `top` for the head numbers, `right` for one extra column (the similarity-group count
 * per layer; 0 for none). Cells are at least `minWidth` wide (the grid may be wider than
 * `width`), `height` high and `gap` apart; `pad` is kept free inside a cell around its line.
 */
export function healthGrid({layers, heads, width, left = 170, top = 20, right = 0, height = 46, gap = 4,
                            minWidth = 44, maxWidth = 140, pad = 5}) {
  const avail = width - left - right - (right ? gap : 0);
  const cellWidth = Math.max(minWidth, Math.min(maxWidth, Math.floor((avail - gap * (heads - 1)) / Math.max(1, heads))));
  const gridWidth = left + heads * cellWidth + Math.max(0, heads - 1) * gap;
  return {layers, heads, left, top, gap, pad, cellWidth, cellHeight: height, right,
          extraX: gridWidth + gap, width: gridWidth + (right ? gap + right : 0),
          height: top + layers * (height + gap)};
}

/** CSS rectangle `{x, y, width, height}` of the cell of `layer` (row) and `head` (column). */
export function cellRect(grid, layer, head) {
  return {x: grid.left + head * (grid.cellWidth + grid.gap), y: grid.top + layer * (grid.cellHeight + grid.gap),
          width: grid.cellWidth, height: grid.cellHeight};
}

/** The rectangle right of layer row `layer` (the group-count line), or null without one. */
export function extraRect(grid, layer) {
  if (!grid.right) return null;
  return {x: grid.extraX, y: grid.top + layer * (grid.cellHeight + grid.gap), width: grid.right, height: grid.cellHeight};
}

/** `{layer, head}` of the cell under (px, py), or null (labels, gaps, outside). */
export function cellAtPoint(grid, px, py, headsOf = null) {
  const head = Math.floor((px - grid.left) / (grid.cellWidth + grid.gap));
  const layer = Math.floor((py - grid.top) / (grid.cellHeight + grid.gap));
  if (layer < 0 || head < 0 || layer >= grid.layers || head >= grid.heads) return null;
  if (headsOf && head >= headsOf(layer)) return null;  // a layer with fewer heads
  const rect = cellRect(grid, layer, head);
  if (px >= rect.x + rect.width || py >= rect.y + rect.height) return null;
  return {layer, head};
}

/** x and y scales of a sparkline in `rect` over `steps` and `domain`, inside the grid's pad. */
export function sparkScales(grid, rect, steps, domain) {
  const first = steps.length ? steps[0] : 0;
  const last = steps.length ? steps[steps.length - 1] : 1;
  const x = linearScale([first, last === first ? first + 1 : last], [rect.x + grid.pad, rect.x + rect.width - grid.pad]);
  const single = steps.length === 1;
  return {
    x: single ? () => rect.x + rect.width / 2 : x,
    y: linearScale(domain, [rect.y + rect.height - grid.pad, rect.y + grid.pad]),
  };
}

/**
 * Points of one sparkline `[{x, y, step, index, value}]`, one per non-null value; values
 * outside `domain` are clamped to the cell. `breakBefore` is true where a gap (null) precedes.
 */
export function sparkPoints(grid, rect, steps, values, domain) {
  const {x, y} = sparkScales(grid, rect, steps, domain);
  const points = [];
  let gap = false;
  for (let i = 0; i < steps.length; i++) {
    const value = values ? values[i] : null;
    if (value === null || value === undefined || Number.isNaN(value)) {
      gap = true;
      continue;
    }
    const clamped = Math.min(Math.max(value, domain[0]), domain[1]);
    points.push({x: x(steps[i]), y: y(clamped), step: steps[i], index: i, value, breakBefore: gap && points.length > 0});
    gap = false;
  }
  return points;
}

/** The step of `steps` whose x is closest to `px` in a sparkline of `rect`. */
export function stepAtX(grid, rect, steps, px) {
  if (!steps.length) return null;
  const {x} = sparkScales(grid, rect, steps, [0, 1]);
  let best = steps[0];
  for (const step of steps) if (Math.abs(x(step) - px) < Math.abs(x(best) - px)) best = step;
  return best;
}

// ---- markers ------------------------------------------------------------------------------

/** "entropy_collapse" (also health.py's "entropy-floor", "entropy-drop") or "logit_growth" ("max-logit"). */
export function alarmKind(kind) {
  const k = String(kind || "");
  if (k === "logit_growth" || k === "max-logit" || k.includes("logit")) return "logit_growth";
  return "entropy_collapse";
}

export const ALARM_COLORS = Object.freeze({entropy_collapse: "#c62828", logit_growth: "#6a1b9a"});

/**
 * The markers of one head: its alarms (at the top edge of the cell) and the emergence of its
 * roles (at the bottom edge), each `{x, y, step, kind, role, message, type}` with type "alarm"
 * or "emergence". A marker of a step outside the answer's steps is left out. Markers at the same
 * place are nudged sideways so that each can be clicked.
 */
export function headMarkers(body, tag, head, grid, rect) {
  const steps = body.steps || [];
  const {x} = sparkScales(grid, rect, steps, [0, 1]);
  const inRange = (step) => steps.length && step >= steps[0] && step <= steps[steps.length - 1];
  const markers = [];
  for (const alarm of body.alarms || []) {
    if (alarm.tag !== tag || alarm.head !== head || !inRange(alarm.step)) continue;
    const kind = alarmKind(alarm.kind);
    markers.push({type: "alarm", kind, step: alarm.step, role: null, x: x(alarm.step), y: rect.y + 4,
                  message: alarm.message || `${kind.replace("_", " ")} at step ${alarm.step}`});
  }
  for (const found of body.emergence || []) {
    if (found.tag !== tag || found.head !== head || !inRange(found.step)) continue;
    markers.push({type: "emergence", kind: "emergence", step: found.step, role: found.role, x: x(found.step),
                  y: rect.y + rect.height - 4, message: found.message || `became a ${found.role} head at step ${found.step}`});
  }
  // Nudge markers that would sit on one another (same row, closer than 7 px).
  for (const row of [markers.filter((m) => m.type === "alarm"), markers.filter((m) => m.type === "emergence")]) {
    row.sort((a, b) => a.x - b.x);
    for (let i = 1; i < row.length; i++) {
      if (row[i].x - row[i - 1].x < 7) row[i].x = Math.min(row[i - 1].x + 7, rect.x + rect.width - 3);
    }
  }
  return markers;
}

/** The marker within `radius` px of (px, py), closest first; null if none. */
export function markerAt(markers, px, py, radius = 6) {
  let best = null;
  let bestDistance = Infinity;
  for (const marker of markers) {
    const distance = Math.hypot(marker.x - px, marker.y - py);
    if (distance <= radius && distance < bestDistance) {
      best = marker;
      bestDistance = distance;
    }
  }
  return best;
}

// ---- what changed -------------------------------------------------------------------------

/**
 * The "what changed" list, each entry `{text, tag, head, step}` (tag/head/step null when the
 * sentence names no head the answer knows). `body.changes` may hold sentences (docs/http_api.md) or
 * objects `{tag, head, step, sentence|message}`; a sentence is matched to the emergence or alarm
 * with the same message, else read ("layer 3 head 5 ... at step 1200", the layer by its number
 * among `body.layers` or by its tag).
 */
export function changeEntries(body) {
  const known = new Map();
  for (const entry of [...(body.emergence || []), ...(body.alarms || [])]) {
    if (entry.message) known.set(entry.message, entry);
  }
  const layers = body.layers || [];
  return (body.changes || []).map((change) => {
    if (change && typeof change === "object") {
      const text = String(change.sentence ?? change.message ?? change.text ?? "");
      return {text, tag: change.tag ?? null, head: numberOrNull(change.head), step: numberOrNull(change.step)};
    }
    const text = String(change);
    const entry = known.get(text);
    if (entry) return {text, tag: entry.tag, head: entry.head, step: entry.step};
    return {text, ...readSentence(text, layers)};
  });
}

function numberOrNull(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** Reads "<layer> head H ... step S" where <layer> is "layer N" (index) or a tag. */
export function readSentence(text, layers) {
  const step = /\bat step (\d+)/.exec(text);
  const stepValue = step ? Number(step[1]) : null;
  // The longest tag the sentence starts with wins (tags may contain "head").
  const byTag = layers.filter((tag) => text.startsWith(`${tag} head `)).sort((a, b) => b.length - a.length)[0];
  if (byTag !== undefined) {
    const head = /^ head (\d+)/.exec(text.slice(byTag.length));
    if (head) return {tag: byTag, head: Number(head[1]), step: stepValue};
  }
  const numbered = /^layer (\d+) head (\d+)\b/.exec(text);
  if (numbered && Number(numbered[1]) < layers.length) {
    return {tag: layers[Number(numbered[1])], head: Number(numbered[2]), step: stepValue};
  }
  return {tag: null, head: null, step: stepValue};
}

// ---- similarity groups --------------------------------------------------------------------

const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
export const GROUP_COLORS = Object.freeze(["#00897b", "#5e35b1", "#c0ca33", "#6d4c41", "#039be5", "#e53935",
                                           "#fdd835", "#3949ab"]);

/**
 * The similarity groups of one layer at one step as labels per head: `[{label, group, size,
 * color, members}]` or null for a head alone in its group (singletons are not drawn). Groups
 * with two or more heads are lettered A, B, ... in order of their first head.
 */
export function groupLabels(groups, heads) {
  const labels = new Array(heads).fill(null);
  const shared = (groups || []).filter((g) => Array.isArray(g) && g.length > 1)
    .map((g) => [...g].sort((a, b) => a - b)).sort((a, b) => a[0] - b[0]);
  shared.forEach((members, group) => {
    const label = group < LETTERS.length ? LETTERS[group] : `G${group + 1}`;
    for (const head of members) {
      if (head >= 0 && head < heads) {
        labels[head] = {label, group, size: members.length, color: GROUP_COLORS[group % GROUP_COLORS.length], members};
      }
    }
  });
  return labels;
}

/** The groups of `tag` at step index `index` (the `/health` answer's `groups`), or null. */
export function groupsAt(body, tag, index) {
  const perStep = body.groups && body.groups[tag];
  return perStep && Array.isArray(perStep[index]) ? perStep[index] : null;
}

/** Per step, the number of groups of two or more heads of `tag` (null where unknown). */
export function groupCounts(body, tag) {
  const perStep = (body.groups && body.groups[tag]) || [];
  return (body.steps || []).map((_, i) => (Array.isArray(perStep[i])
    ? perStep[i].filter((g) => Array.isArray(g) && g.length > 1).length : null));
}

/** The tooltip's words for a head's group: "group B with heads 2, 7" or "no group". */
export function groupText(labels, head) {
  const entry = labels[head];
  if (!entry) return "no group";
  const others = entry.members.filter((h) => h !== head);
  return `group ${entry.label} with head${others.length === 1 ? "" : "s"} ${others.join(", ")}`;
}

// ---- token selection ----------------------------------------------------------------------

/** `keys` (sorted, unique) with `key` added, or removed when present. */
export function toggleKey(keys, key) {
  const set = new Set(keys || []);
  if (set.has(key)) set.delete(key);
  else set.add(key);
  return [...set].sort((a, b) => a - b);
}

/**
 * The mass `{layers, mass}` of a `/mass` answer as grid cells: `[{layer, head, tag, value}]`,
 * and the largest value (the colour scale's top, at least a small positive number).
 */
export function massCells(body) {
  const cells = [];
  let max = 0;
  (body.layers || []).forEach((tag, layer) => {
    const perHead = (body.mass || [])[layer] || [];  // null: a layer not comparable
    perHead.forEach((value, head) => {
      const v = finite(value);
      cells.push({layer, head, tag, value: v});
      if (v !== null && v > max) max = v;
    });
  });
  return {cells, max: max > 0 ? max : 1e-9};
}

/**
 * The mass of layer index `layer`, `head` at each step of a `/mass?...&over_steps=1` answer
 * (`series`: per layer, per step, per head; null where the layer has no such step).
 */
export function massSeries(body, layer, head) {
  const perStep = (body.series || [])[layer];
  return (body.steps || []).map((_, i) => (perStep && perStep[i] ? finite(perStep[i][head]) : null));
}
