/**
 * View "health", head health over training: a layers x heads grid with one sparkline per head
 * over every logged step (the measure picker: entropy by default), each cell tinted with the
 * head's role at the current step, alarm markers (entropy collapse, logit growth) at their steps,
 * the emergence step of each role marked, similarity groups outlined and lettered, and per layer
 * the number of groups over steps. Above the grid, what changed, in sentences. Clicking a head
 * opens its heatmap at the current step; clicking a marker or a sentence opens that head at
 * that step. The numbers come from `/health` (docs/http_api.md; measures: docs/health.md).
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await health.load(state, source);
 *   const {canvas, legend, rendered} = health.render(host, data, state, {width, lut, tooltip, set});
 *
 *   // the drawing alone (bench/bench_frontend.py):
 *   renderHealth(host, body, {step: 1200, measure: "entropy", width: 1300, tooltip, open});
 */

import {ALARM_COLORS, cellAtPoint, cellRect, changeEntries, extraRect, groupCounts, groupLabels, groupsAt,
        groupText, headMarkers, healthGrid, markerAt, measureDomain, measureInfo, MEASURES, roleAt, roleColor,
        ROLES, seriesOf, sparkPoints, sparkScales, stepAtX, stepIndexAtOrBefore, tint} from "../lib/health.js";
import {FONT_FAMILY, drawHeadLabels, gridCanvas} from "../ui/heatmap.js";
import {fitLabel} from "../lib/layout.js";
import {formatStatistic} from "../lib/chart.js";
import {askAgainWhileShown, element, fillSelect, localPoint} from "../ui/dom.js";
import {isolateBidi} from "../lib/tokens.js";

const LINE = "#263238";
const CURRENT = "#e8710a";
const MAX_CHANGES = 12;  // sentences shown before "show all"

export default {
  key: "health",
  label: "Head health over training",
  usesHead: false,  // every head is drawn
  async load(state, source) {
    return {body: await source.health(state.run)};
  },
  render(host, {body}, state, ui) {
    const open = (partial) => ui.set({view: "head", query: null, ...partial});
    const result = renderHealth(host, body, {step: state.step, tag: state.tag, measure: state.measure, width: ui.width,
                                             tooltip: ui.tooltip, open, pickMeasure: (measure) => ui.set({measure})});
    if (body.pending > 0) askAgainWhileShown(host, result.canvas, ui);
    return result;
  },
};

/**
 * Draws a `/health` answer into `host`: the measure picker, the change list and the grid.
 * `open({tag, head, step?})` runs on a click on a head (no step: the current one), a marker or a
 * sentence; `pickMeasure(name)` on the picker. Returns `{canvas, legend, rendered}`.
 */
export function renderHealth(host, body, {step, tag = null, measure = "entropy", width, tooltip, open,
                                          pickMeasure = () => {}}) {
  const layers = body.layers || [];
  const steps = body.steps || [];
  if (!layers.length || !steps.length) {
    host.replaceChildren(element("p", {className: "empty"},
      "No head-health measures in this run yet: log attention with the AttentionLogger callback " +
      "(it writes them) or with tb_attention_plugin.attention() (the server computes them)."));
    return {canvas: null, legend: null, rendered: {healthSteps: 0, healthLayers: 0}};
  }
  const info = measureInfo(measure);
  const headsOf = (layer) => (body.heads && body.heads[layers[layer]]) || 0;
  const maxHeads = Math.max(1, ...layers.map((_, l) => headsOf(l)));
  const hasGroups = Boolean(body.groups && layers.some((t) => Array.isArray(body.groups[t])));
  const grid = healthGrid({layers: layers.length, heads: maxHeads, width, right: hasGroups ? 90 : 0});
  const index = stepIndexAtOrBefore(steps, step);
  const domain = measureDomain(body, info.name);

  const {canvas, ctx} = gridCanvas(grid, "view-canvas health-canvas");
  drawHeadLabels(ctx, grid, maxHeads);
  if (hasGroups) ctx.fillText("similar groups", grid.extraX + grid.right / 2, grid.top / 2, grid.right);

  const cells = [];
  const allMarkers = [];
  // Shapes are gathered per colour and drawn with one fill or stroke each: 144 heads x 100 steps
  // stay one path for every sparkline, one per role tint, one per marker colour.
  const fills = new Map();    // fillStyle -> Path2D
  const outlines = new Map(); // group colour -> Path2D
  const pathOf = (map, key) => {
    if (!map.has(key)) map.set(key, new Path2D());
    return map.get(key);
  };
  const letters = [];
  const line = new Path2D();
  const current = new Path2D();
  const hasStep = steps[index] !== undefined;
  for (let layer = 0; layer < layers.length; layer++) {
    const layerTag = layers[layer];
    const heads = headsOf(layer);
    const labels = groupLabels(groupsAt(body, layerTag, index), heads);
    const first = cellRect(grid, layer, 0);
    ctx.textAlign = "right";
    ctx.fillStyle = layerTag === tag ? "#000" : "#424242";
    ctx.font = `${layerTag === tag ? "bold " : ""}12px ${FONT_FAMILY}`;
    const measureText = (s) => ctx.measureText(s).width;
    ctx.fillText(fitLabel(isolateBidi(layerTag), grid.left - 12, measureText), grid.left - 8, first.y + first.height / 2);
    ctx.font = `11px ${FONT_FAMILY}`;
    let any = false;
    for (let head = 0; head < heads; head++) {
      const rect = cellRect(grid, layer, head);
      const role = roleAt(body, layerTag, index, head);
      const color = roleColor(role);
      pathOf(fills, tint(color, 0.2)).rect(rect.x, rect.y, rect.width, rect.height);
      pathOf(fills, color).rect(rect.x, rect.y, 3, rect.height);
      const group = labels[head];
      if (group) {
        pathOf(outlines, group.color).rect(rect.x + 1, rect.y + 1, rect.width - 2, rect.height - 2);
        pathOf(fills, group.color).rect(rect.x + rect.width - 13, rect.y, 13, 12);
        letters.push([group.label, rect.x + rect.width - 6.5, rect.y + 6.5]);
      }
      const values = seriesOf(body, layerTag, info.name, head);
      const points = values ? sparkPoints(grid, rect, steps, values, domain) : [];
      if (values) any = true;
      for (let i = 0; i < points.length; i++) {
        const p = points[i];
        if (i === 0 || p.breakBefore) line.moveTo(p.x, p.y);
        else line.lineTo(p.x, p.y);
      }
      if (points.length === 1) line.arc(points[0].x, points[0].y, 1.5, 0, 2 * Math.PI);
      if (hasStep) {
        const cx = sparkScales(grid, rect, steps, domain).x(steps[index]);
        current.moveTo(cx, rect.y + 1);
        current.lineTo(cx, rect.y + rect.height - 1);
      }
      for (const marker of headMarkers(body, layerTag, head, grid, rect)) {
        marker.tag = layerTag;
        marker.head = head;
        allMarkers.push(marker);
      }
      cells.push({layer, head, tag: layerTag, role, group: group ? group.label : null, rect, points, values});
    }
    if (!any) {
      ctx.fillStyle = "#757575";
      ctx.textAlign = "left";
      const unreadable = !heads || (body.sources && body.sources[layerTag] === "unreadable");
      ctx.fillText(unreadable ? "this layer cannot be read (see below the grid)" : `no ${info.label} for this layer`,
                   first.x + 8, first.y + first.height / 2, grid.cellWidth * Math.max(heads, maxHeads) - 16);
    }
    if (hasGroups) drawGroupCount(ctx, grid, extraRect(grid, layer), steps, groupCounts(body, layerTag), index);
  }
  for (const [style, path] of fills) {
    ctx.fillStyle = style;
    ctx.fill(path);
  }
  ctx.lineWidth = 2;
  for (const [style, path] of outlines) {
    ctx.strokeStyle = style;
    ctx.stroke(path);
  }
  ctx.fillStyle = "#fff";
  ctx.textAlign = "center";
  for (const [text, x, y] of letters) ctx.fillText(text, x, y);
  ctx.strokeStyle = CURRENT;
  ctx.lineWidth = 1;
  ctx.stroke(current);
  ctx.strokeStyle = LINE;
  ctx.lineWidth = 1;
  ctx.stroke(line);
  drawMarkers(ctx, allMarkers);

  // For tests and tools: where the cells and markers are, in CSS pixels of the canvas.
  canvas.dataset.grid = JSON.stringify({
    steps, current: hasStep ? steps[index] : null, measure: info.name, domain, pad: grid.pad,
    cells: cells.map(({tag: t, head, role, group, rect}) => ({tag: t, head, role, group, ...rect})),
    markers: allMarkers.map(({tag: t, head, step: s, type, kind, role, x, y}) => ({tag: t, head, step: s, type, kind, role, x, y})),
  });

  const cellUnder = (event) => {
    const {x, y} = localPoint(canvas, event);
    const marker = markerAt(allMarkers, x, y);
    if (marker) return {marker, x, y};
    const at = cellAtPoint(grid, x, y, headsOf);
    if (!at) return null;
    const cell = cells.find((c) => c.layer === at.layer && c.head === at.head);
    return {cell, x, y};
  };
  canvas.addEventListener("mousemove", (event) => {
    const found = cellUnder(event);
    if (!found) {
      const {x, y} = localPoint(canvas, event);
      const layer = Math.floor((y - grid.top) / (grid.cellHeight + grid.gap));
      if (x < grid.left && layer >= 0 && layer < layers.length) {
        const source = body.sources && body.sources[layers[layer]];
        const how = source === "computed" ? "measures computed by the server from the stored steps"
                  : source === "logged" ? "measures logged by the writer over its probe set" : "";
        return tooltip.show(`${isolateBidi(layers[layer])}${how ? `: ${how}` : ""}`, event);
      }
      return tooltip.hide();
    }
    if (found.marker) {
      const m = found.marker;
      return tooltip.show(`${isolateBidi(m.tag)} head ${m.head}: ${m.message}  (click to open this head at step ${m.step})`, event);
    }
    tooltip.show(cellText(body, found.cell, steps, index, grid, found.x, info), event);
  });
  canvas.addEventListener("mouseleave", () => tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const found = cellUnder(event);
    if (!found) return;
    if (found.marker) open({tag: found.marker.tag, head: found.marker.head, step: found.marker.step});
    else open({tag: found.cell.tag, head: found.cell.head});
  });

  const picker = element("select", {id: "health-measure", title: "Measure drawn in the sparklines"});
  fillSelect(picker, MEASURES.map((m) => ({value: m.name, label: m.label, title: m.help})), info.name);
  picker.addEventListener("change", () => pickMeasure(picker.value));
  const note = element("p", {className: "hint", id: "health-note"},
    `${layers.length} layer${layers.length === 1 ? "" : "s"}, ${steps.length} logged step${steps.length === 1 ? "" : "s"}` +
    `${hasStep ? `; roles and groups at step ${steps[index]}` : ""}. ${info.label[0].toUpperCase()}${info.label.slice(1)}: ${info.help} ` +
    `(${info.unit ? "0 to 1" : `${formatStatistic(domain[0])} to ${formatStatistic(domain[1])}`}, one scale for all heads). ` +
    "Click a head to open its heatmap at this step, a marker to open it at the marker's step." +
    (body.pending > 0 ? ` Still computing ${body.pending} layer-step${body.pending === 1 ? "" : "s"} from the stored ` +
                        "attention: the grid fills in as they come." : ""));
  const controls = element("div", {className: "toolbar health-toolbar"},
    element("label", {className: "control"}, element("span", {}, "Measure"), picker));
  const changes = changeList(changeEntries(body), open);
  host.replaceChildren(controls, changes, note, canvas);
  if ((body.errors || []).length) {
    host.append(element("p", {className: "hint", id: "health-errors"},
      `Left out: ${body.errors.map((e) => `${isolateBidi(String(e.tag))} step ${e.step}: ${e.error}`).join("; ")}`));
  }
  return {
    canvas,
    legend: healthLegend(),
    rendered: {healthSteps: steps.length, healthLayers: layers.length, measure: info.name, healthPending: body.pending || 0,
               healthMarkers: allMarkers.length, healthChanges: (body.changes || []).length},
  };
}

/** The tooltip of a cell: head, role and group at the current step, the value at the hovered step. */
function cellText(body, cell, steps, index, grid, x, info) {
  const hovered = stepAtX(grid, cell.rect, steps, x);
  const i = steps.indexOf(hovered);
  const value = cell.values ? cell.values[i] : null;
  const hoveredGroups = groupLabels(groupsAt(body, cell.tag, i), body.heads[cell.tag] || 0);
  const parts = [`${isolateBidi(cell.tag)} head ${cell.head}`,
                 `step ${steps[index]}: ${cell.role || "no role"}, ${groupText(groupLabels(groupsAt(body, cell.tag, index),
                   body.heads[cell.tag] || 0), cell.head)}`,
                 `step ${hovered}: ${info.label} ${formatStatistic(value)}, ${roleAt(body, cell.tag, i, cell.head) || "no role"}, ` +
                   groupText(hoveredGroups, cell.head),
                 "click to open this head"];
  return parts.join("\n");
}

/** Alarms as downward triangles at the top edge, emergence as diamonds in the role's colour. */
function drawMarkers(ctx, markers) {
  const byColor = new Map();
  const edges = new Path2D();
  for (const marker of markers) {
    const color = marker.type === "alarm" ? ALARM_COLORS[marker.kind] || ALARM_COLORS.entropy_collapse
                                          : roleColor(marker.role);
    if (!byColor.has(color)) byColor.set(color, new Path2D());
    const {x, y} = marker;
    for (const path of [byColor.get(color), edges]) {
      if (marker.type === "alarm") {
        path.moveTo(x - 4.5, y - 3.5);
        path.lineTo(x + 4.5, y - 3.5);
        path.lineTo(x, y + 4);
      } else {
        path.moveTo(x, y - 4.5);
        path.lineTo(x + 4.5, y);
        path.lineTo(x, y + 4.5);
        path.lineTo(x - 4.5, y);
      }
      path.closePath();
    }
  }
  for (const [color, path] of byColor) {
    ctx.fillStyle = color;
    ctx.fill(path);
  }
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 1;
  ctx.stroke(edges);
}

/** The number of similarity groups (two or more heads) of a layer over steps, as a small line. */
function drawGroupCount(ctx, grid, rect, steps, counts, index) {
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(rect.x, rect.y, rect.width, rect.height);
  ctx.strokeStyle = "#e0e0e0";
  ctx.lineWidth = 1;
  ctx.strokeRect(rect.x + 0.5, rect.y + 0.5, rect.width - 1, rect.height - 1);
  const top = Math.max(1, ...counts.filter((c) => c !== null));
  const points = sparkPoints(grid, rect, steps, counts, [0, top]);
  ctx.strokeStyle = "#00897b";
  ctx.lineWidth = 1.25;
  ctx.beginPath();
  points.forEach((p, i) => (i === 0 || p.breakBefore ? ctx.moveTo(p.x, p.y) : ctx.lineTo(p.x, p.y)));
  ctx.stroke();
  ctx.fillStyle = "#616161";
  ctx.textAlign = "right";
  const now = counts[index];
  ctx.fillText(now === null || now === undefined ? "—" : String(now), rect.x + rect.width - 3, rect.y + 8);
}

/** The "what changed" list: one button per sentence (text only), the first MAX_CHANGES shown. */
function changeList(entries, open) {
  const box = element("div", {id: "health-changes", className: "health-changes"});
  if (!entries.length) {
    box.append(element("p", {className: "hint"}, "No role changes or alarms over the logged steps."));
    return box;
  }
  box.append(element("strong", {}, "What changed"));
  const list = element("ul", {});
  entries.forEach((entry, i) => {
    const clickable = entry.tag !== null && entry.head !== null;
    const item = clickable
      ? element("button", {type: "button", className: "link-button", title: "Open this head at this step",
                           dataset: {tag: entry.tag, head: String(entry.head), step: String(entry.step ?? "")}},
                entry.text)
      : element("span", {}, entry.text);
    if (clickable) {
      item.addEventListener("click", () => open(entry.step === null ? {tag: entry.tag, head: entry.head}
                                                                    : {tag: entry.tag, head: entry.head, step: entry.step}));
    }
    const li = element("li", {}, item);
    if (i >= MAX_CHANGES) li.hidden = true;
    list.append(li);
  });
  box.append(list);
  if (entries.length > MAX_CHANGES) {
    const more = element("button", {type: "button", className: "link-button", id: "health-more"},
                         `show all ${entries.length}`);
    more.addEventListener("click", () => {
      for (const li of list.children) li.hidden = false;
      more.remove();
    });
    box.append(more);
  }
  return box;
}

/** Legend: role colours, marker shapes, group outlines, the current step. */
function healthLegend() {
  const swatch = (color, text, shape = "box") => {
    const mark = element("span", {className: `swatch swatch-${shape}`});
    mark.style.background = shape === "box" ? tint(color, 0.35) : color;
    if (shape === "box") mark.style.borderLeft = `3px solid ${color}`;
    return element("span", {className: "legend-item"}, mark, text);
  };
  return element("div", {className: "health-legend", id: "health-legend"},
    element("span", {className: "legend-title"}, "Role at this step:"),
    ...ROLES.map((r) => swatch(r.color, r.name)),
    element("span", {className: "legend-title"}, "Markers:"),
    swatch(ALARM_COLORS.entropy_collapse, "entropy collapse", "triangle"),
    swatch(ALARM_COLORS.logit_growth, "logit growth", "triangle"),
    swatch("#424242", "role emerged (its colour)", "diamond"),
    swatch("#00897b", "outline + letter: similar heads", "line"),
    swatch(CURRENT, "current step", "line"));
}
