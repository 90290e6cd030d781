/**
 * The token-selection panel under the one-head view: the selected key tokens (each removable),
 * and a layers x heads grid of the attention mass each head puts on them (mean over queries,
 * `/mass`), coloured at the current step, with a line of the mass over the logged steps in each
 * cell. Clicking a cell opens that head. Tokens go in as text only (bdi-isolated chips).
 *
 * Example:
 *
 *   const panel = massPanel({body, keys: [3, 4], labels, step: 1200, lut, width: 900},
 *                           {tooltip, open: ({tag, head}) => ..., setKeys: (keys) => ...});
 *   host.append(panel.node);
 */

import {cellAtPoint, cellRect, healthGrid, massCells, massSeries, sparkPoints, sparkScales} from "../lib/health.js";
import {FONT_FAMILY, drawHeadLabels, gridCanvas, lutColor} from "./heatmap.js";
import {fitLabel} from "../lib/layout.js";
import {element, localPoint} from "./dom.js";
import {isolateBidi} from "../lib/tokens.js";
import {formatStatistic} from "../lib/chart.js";

/**
 * Builds the panel. `body`: the `/mass?...&over_steps=1` answer (or null while none); `error`: an
 * Error to show instead of the grid. Returns `{node, canvas}`.
 */
export function massPanel({body, error = null, keys, labels, step, tag, lut, width}, {tooltip, open, setKeys}) {
  const chips = keys.map((key) => {
    const remove = element("button", {type: "button", className: "link-button chip-remove",
                                      title: "Remove this key from the selection"}, "×");
    remove.addEventListener("click", () => setKeys(keys.filter((k) => k !== key)));
    const token = element("bdi", {}, labels[key] ?? `#${key}`);
    return element("span", {className: "chip", dataset: {key: String(key)}}, `${key}: `, token, " ", remove);
  });
  const clear = element("button", {type: "button", id: "mass-clear"}, "Clear selection");
  clear.addEventListener("click", () => setKeys(null));
  const node = element("div", {className: "mass-panel", id: "mass-panel"},
    element("div", {className: "pinned-summary"},
      element("strong", {}, `Attention mass on ${keys.length} selected key${keys.length === 1 ? "" : "s"}:`),
      ...chips, clear));
  if (error) {
    node.append(element("div", {className: "error"}, error.message || String(error)));
    return {node, canvas: null};
  }
  if (!body) return {node, canvas: null};
  const {cells, max} = massCells(body);
  const layers = body.layers || [];
  const headsOf = (layer) => ((body.mass || [])[layer] || []).length;
  const maxHeads = Math.max(1, ...layers.map((_, l) => headsOf(l)));
  const grid = healthGrid({layers: layers.length, heads: maxHeads, width, height: 40});
  const steps = body.steps || [];
  const {canvas, ctx} = gridCanvas(grid, "view-canvas mass-canvas");
  drawHeadLabels(ctx, grid, maxHeads);
  const measure = (s) => ctx.measureText(s).width;
  layers.forEach((layerTag, layer) => {
    const first = cellRect(grid, layer, 0);
    ctx.textAlign = "right";
    ctx.fillStyle = layerTag === tag ? "#000" : "#424242";
    ctx.font = `${layerTag === tag ? "bold " : ""}12px ${FONT_FAMILY}`;
    ctx.fillText(fitLabel(isolateBidi(layerTag), grid.left - 12, measure), grid.left - 8, first.y + first.height / 2);
    ctx.font = `11px ${FONT_FAMILY}`;
    if (!(body.mass || [])[layer]) {
      ctx.fillStyle = "#757575";
      ctx.textAlign = "left";
      const note = (body.notes || [])[layer] || "not comparable";
      ctx.fillText(note, first.x + 4, first.y + first.height / 2, grid.width - first.x - 8);
    }
  });
  const line = new Path2D();
  for (const cell of cells) {
    const rect = cellRect(grid, cell.layer, cell.head);
    if (cell.value === null) {
      ctx.fillStyle = "#eeeeee";
      ctx.fillRect(rect.x, rect.y, rect.width, rect.height);
      continue;
    }
    const [r, g, b] = lutColor(lut, cell.value, max);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(rect.x, rect.y, rect.width, rect.height);
    const light = 0.299 * r + 0.587 * g + 0.114 * b < 140;
    ctx.fillStyle = light ? "#fff" : "#000";
    ctx.textAlign = "left";
    ctx.fillText(formatStatistic(cell.value), rect.x + 3, rect.y + 9, rect.width - 6);
    const points = sparkPoints(grid, {...rect, y: rect.y + 14, height: rect.height - 14}, steps,
                               massSeries(body, cell.layer, cell.head), [0, max]);
    points.forEach((p, i) => (i === 0 || p.breakBefore ? line.moveTo(p.x, p.y) : line.lineTo(p.x, p.y)));
  }
  ctx.strokeStyle = "rgba(255,255,255,0.9)";
  ctx.lineWidth = 2.5;
  ctx.stroke(line);
  ctx.strokeStyle = "#e8710a";
  ctx.lineWidth = 1.25;
  ctx.stroke(line);
  canvas.dataset.mass = JSON.stringify({max, step, cells: cells.map((c) => ({...c, ...cellRect(grid, c.layer, c.head)}))});
  canvas.addEventListener("mousemove", (event) => {
    const {x, y} = localPoint(canvas, event);
    const at = cellAtPoint(grid, x, y, headsOf);
    const cell = at && cells.find((c) => c.layer === at.layer && c.head === at.head);
    if (!cell) return tooltip.hide();
    const series = massSeries(body, cell.layer, cell.head);
    const rect = cellRect(grid, cell.layer, cell.head);
    const {x: sx} = sparkScales(grid, rect, steps, [0, 1]);
    let nearest = -1;
    steps.forEach((s, i) => { if (nearest < 0 || Math.abs(sx(s) - x) < Math.abs(sx(steps[nearest]) - x)) nearest = i; });
    const over = nearest >= 0 ? `\nstep ${steps[nearest]}: ${formatStatistic(series[nearest])}` : "";
    tooltip.show(`${isolateBidi(cell.tag)} head ${cell.head}: mass ${formatStatistic(cell.value)} at step ${step}${over}` +
                 "\nclick to open this head", event);
  });
  canvas.addEventListener("mouseleave", () => tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const {x, y} = localPoint(canvas, event);
    const at = cellAtPoint(grid, x, y, headsOf);
    if (at && (body.mass || [])[at.layer]) open({tag: layers[at.layer], head: at.head});
  });
  node.append(element("p", {className: "hint"},
    `Mean over queries of the weight on the selected keys, per head of every layer at step ${step} ` +
    `(colour, 0 to ${formatStatistic(max)}; the line: over the logged steps). Click a head to open it.` +
    (body.pending > 0 ? ` Still reading ${body.pending} layer-step${body.pending === 1 ? "" : "s"}: the lines fill in.` : "")),
    canvas);
  return {node, canvas};
}
