/**
 * View "stats", per-head statistics over training: for each statistic (rows) and head (columns)
 * a small line chart across the logged steps, with the current step marked. Clicking a chart moves the tab
 * to the step of the nearest point. The numbers come from `/stats` (computed and cached on the
 * server), averaged over the probe examples.
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await stats.load(state, source);
 *   const {canvas, rendered} = stats.render(host, data, state, {width, lut, tooltip, set});
 */

import {chartAt, chartGrid, chartPoints, chartRect, chartScales, formatStatistic, nearestPoint,
        valueDomain} from "../lib/chart.js";
import {FONT_FAMILY, gridCanvas} from "../ui/heatmap.js";
import {element, localPoint} from "../ui/dom.js";

export const STATISTICS = Object.freeze([
  {name: "entropy", label: "entropy", help: "normalised: 1 = uniform over the unmasked keys, 0 = one key"},
  {name: "max_weight", label: "max weight", help: "largest weight of a query row"},
  {name: "mean_distance", label: "mean distance", help: "weighted |query − key| (patch distance for images)"},
  {name: "first_token_share", label: "first-token share", help: "weight on key 0"},
]);
const LINE = "#1a73e8";
const CURRENT = "#e8710a";

export default {
  key: "stats",
  label: "Head statistics over training",
  usesHead: false,  // every head is drawn
  async load(state, source) {
    const {run, tag, step} = state;
    const [body, header] = await Promise.all([source.stats(run, tag), source.header(run, tag, step)]);
    return {body, header};
  },
  render(host, {body, header}, state, ui) {
    return renderStatistics(host, body, {tag: state.tag, step: state.step, vision: Boolean(header.image),
                                         width: ui.width, tooltip: ui.tooltip,
                                         pickStep: (step) => ui.set({step})});
  },
};

/**
 * Draws the charts of a `/stats` answer into `host`; `pickStep(step)` runs on a click on a point
 * of another step. Returns `{canvas, legend: null, rendered: {statsSteps}}`.
 */
export function renderStatistics(host, body, {tag, step, vision, width, tooltip, pickStep}) {
  const heads = body.heads || 0;
  const steps = body.steps;
  if (!heads || !steps.length) {
    const reasons = (body.errors || []).map((e) => `step ${e.step}: ${e.error}`).join("; ");
    host.replaceChildren(element("p", {className: "empty"},
      `No readable steps of ${tag} to compute statistics from${reasons ? ` (${reasons})` : ""}.`));
    return {canvas: null, legend: null, rendered: {statsSteps: 0}};
  }
  const grid = chartGrid({rows: STATISTICS.length, columns: Math.max(1, heads), width, left: 150, top: 22});
  const {canvas, ctx} = gridCanvas(grid, "view-canvas stats-canvas", 12);
  const charts = [];
  STATISTICS.forEach((statistic, row) => {
    const series = body.stats[statistic.name] || [];
    const domain = valueDomain(statistic.name, series);
    const first = chartRect(grid, row, 0);
    ctx.fillStyle = "#212121";
    ctx.textAlign = "left";
    const label = statistic.name === "mean_distance" && vision ? "mean patch distance" : statistic.label;
    ctx.fillText(label, 4, first.y + first.height / 2 - 7, grid.left - 40);
    ctx.fillStyle = "#757575";
    ctx.font = `10px ${FONT_FAMILY}`;
    ctx.textAlign = "right";
    ctx.fillText(formatStatistic(domain[1]), grid.left - 4, first.y + grid.pad);
    ctx.fillText(formatStatistic(domain[0]), grid.left - 4, first.y + first.height - grid.pad);
    ctx.font = `12px ${FONT_FAMILY}`;
    for (let head = 0; head < heads; head++) {
      const rect = chartRect(grid, row, head);
      const values = series.map((perHead) => perHead[head]);
      const points = chartPoints(rect, steps, values, domain, grid.pad);
      charts.push({name: statistic.name, head, rect, points, domain});
      drawChart(ctx, rect, points, steps, step, domain, grid.pad);
      if (row === 0) {
        ctx.fillStyle = "#424242";
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.fillText(`head ${head}`, rect.x + rect.width / 2, grid.top / 2);
      }
    }
  });
  canvas.dataset.charts = JSON.stringify({
    steps, pad: grid.pad, current: step,
    charts: charts.map(({name, head, rect, domain}) => ({name, head, ...rect, domain})),
  });

  const chartUnder = (event) => {
    const {x, y} = localPoint(canvas, event);
    const at = chartAt(grid, x, y);
    return at ? {chart: charts[at.row * heads + at.column], x, y} : null;
  };
  canvas.addEventListener("mousemove", (event) => {
    const found = chartUnder(event);
    const point = found && nearestPoint(found.chart.points, found.x, found.y);
    if (!point) return tooltip.hide();
    tooltip.show(`${found.chart.name} · head ${found.chart.head} · step ${point.step}: ` +
                     `${formatStatistic(point.value)}  (click to show this step)`, event);
  });
  canvas.addEventListener("mouseleave", () => tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const found = chartUnder(event);
    const point = found && nearestPoint(found.chart.points, found.x, found.y);
    if (point && point.step !== step) pickStep(point.step);
  });

  const notes = [`${steps.length} logged step${steps.length === 1 ? "" : "s"}, mean over the probe examples; ` +
                 "the orange line is the current step, click a chart to move there."];
  for (const e of body.errors || []) notes.push(`step ${e.step} left out: ${e.error}`);
  const help = element("ul", {className: "stats-help"},
    ...STATISTICS.map((s) => element("li", {}, element("strong", {}, s.label), `: ${s.help}`)));
  host.replaceChildren(element("p", {className: "hint", id: "stats-note"}, notes.join(" ")), canvas, help);
  return {canvas, legend: null, rendered: {statsSteps: steps.length}};
}

function drawChart(ctx, rect, points, steps, current, domain, pad) {
  ctx.save();
  ctx.fillStyle = "#fafafa";
  ctx.fillRect(rect.x, rect.y, rect.width, rect.height);
  ctx.strokeStyle = "#e0e0e0";
  ctx.lineWidth = 1;
  ctx.strokeRect(rect.x + 0.5, rect.y + 0.5, rect.width - 1, rect.height - 1);
  const {x} = chartScales(rect, steps, domain, pad);
  if (steps.includes(current)) {
    const cx = steps.length === 1 ? rect.x + rect.width / 2 : x(current);
    ctx.strokeStyle = CURRENT;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(cx, rect.y + 1);
    ctx.lineTo(cx, rect.y + rect.height - 1);
    ctx.stroke();
  }
  ctx.strokeStyle = LINE;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((p, i) => (i === 0 ? ctx.moveTo(p.x, p.y) : ctx.lineTo(p.x, p.y)));
  ctx.stroke();
  for (const p of points) {
    const here = p.step === current;
    ctx.fillStyle = here ? CURRENT : LINE;
    ctx.beginPath();
    ctx.arc(p.x, p.y, here ? 4 : 2.2, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.restore();
}
