/**
 * Geometry of the small line charts of per-head statistics over training: one chart per
 * (statistic, head) in a grid, scales from steps and values to CSS pixels, and hit testing of
 * the points. Pure functions, no DOM; tested under node (tests/js/chart.test.mjs).
 *
 * Example:
 *
 *   import {chartGrid, chartRect, chartPoints, nearestPoint} from "./chart.js";
 *   const grid = chartGrid({rows: 4, columns: 2, width: 900});
 *   const rect = chartRect(grid, 0, 1);             // statistic 0, head 1
 *   const points = chartPoints(rect, [0, 100, 200], [0.9, 0.5, null], [0, 1]);
 *   nearestPoint(points, rect.x + 1, rect.y + 1);   // the point of step 0
 */

/** A linear map of `domain` [d0, d1] onto `range` [r0, r1]; `scale.invert(r)` maps back. */
export function linearScale([d0, d1], [r0, r1]) {
  const span = d1 - d0 || 1;
  const scale = (d) => r0 + ((d - d0) / span) * (r1 - r0);
  scale.invert = (r) => d0 + ((r - r0) / (r1 - r0 || 1)) * span;
  return scale;
}

/**
 * The y range of one statistic: [0, 1] for the statistics bounded by 1 (entropy, max weight,
 * first-token share); [0, largest value] otherwise (mean distance), at least [0, 1].
 */
export function valueDomain(name, series) {
  if (name !== "mean_distance") return [0, 1];
  let max = 0;
  for (const values of series) for (const v of values) if (v !== null && v > max) max = v;
  return [0, max > 0 ? max : 1];
}

/**
 * Lays out `rows` x `columns` charts in `width` CSS pixels after a `left` margin (row labels)
 * and a `top` margin (column labels). Charts are at least `minWidth` wide (the grid may then be
 * wider than `width`) and `height` high, `gap` apart; each chart keeps `pad` pixels inside its
 * frame so points at the ends stay visible.
 */
export function chartGrid({rows, columns, width, left = 120, top = 22, height = 90, gap = 10,
                           minWidth = 90, pad = 5}) {
  const chartWidth = Math.max(minWidth, Math.floor((width - left - gap * (columns - 1)) / Math.max(1, columns)));
  return {rows, columns, left, top, gap, pad, chartWidth, chartHeight: height,
          width: left + columns * chartWidth + (columns - 1) * gap,
          height: top + rows * (height + gap)};
}

/** CSS rectangle `{x, y, width, height}` of the chart at grid row `row`, column `column`. */
export function chartRect(grid, row, column) {
  return {
    x: grid.left + column * (grid.chartWidth + grid.gap),
    y: grid.top + row * (grid.chartHeight + grid.gap),
    width: grid.chartWidth,
    height: grid.chartHeight,
  };
}

/** `{row, column}` of the chart under (px, py), or null. */
export function chartAt(grid, px, py) {
  const column = Math.floor((px - grid.left) / (grid.chartWidth + grid.gap));
  const row = Math.floor((py - grid.top) / (grid.chartHeight + grid.gap));
  if (row < 0 || column < 0 || row >= grid.rows || column >= grid.columns) return null;
  const rect = chartRect(grid, row, column);
  if (px > rect.x + rect.width || py > rect.y + rect.height) return null;  // in a gap
  return {row, column};
}

/** Scales of a chart: x from the first to the last step, y over `domain`, inside the padding. */
export function chartScales(rect, steps, domain, pad = 5) {
  const first = steps.length ? steps[0] : 0;
  const last = steps.length ? steps[steps.length - 1] : 1;
  return {
    x: linearScale([first, last === first ? first + 1 : last], [rect.x + pad, rect.x + rect.width - pad]),
    y: linearScale(domain, [rect.y + rect.height - pad, rect.y + pad]),
  };
}

/**
 * The points of one series: `[{x, y, step, index, value}]` for every non-null value
 * (`values[i]` belongs to `steps[i]`). A single step sits in the middle of the chart.
 */
export function chartPoints(rect, steps, values, domain, pad = 5) {
  const {x, y} = chartScales(rect, steps, domain, pad);
  const points = [];
  for (let i = 0; i < steps.length; i++) {
    const value = values[i];
    if (value === null || value === undefined || Number.isNaN(value)) continue;
    const px = steps.length === 1 ? rect.x + rect.width / 2 : x(steps[i]);
    points.push({x: px, y: y(value), step: steps[i], index: i, value});
  }
  return points;
}

/**
 * The point closest to (px, py) within `radius` CSS pixels; else, when `anywhere` is true, the
 * point closest in x (a click anywhere in a chart picks the nearest step). Null if none.
 */
export function nearestPoint(points, px, py, {radius = 8, anywhere = true} = {}) {
  let best = null;
  let bestDistance = Infinity;
  for (const point of points) {
    const distance = Math.hypot(point.x - px, point.y - py);
    if (distance < bestDistance) {
      best = point;
      bestDistance = distance;
    }
  }
  if (best && bestDistance <= radius) return best;
  if (!anywhere) return null;
  best = null;
  bestDistance = Infinity;
  for (const point of points) {
    const distance = Math.abs(point.x - px);
    if (distance < bestDistance) {
      best = point;
      bestDistance = distance;
    }
  }
  return best;
}

/** A statistic's value as the charts write it: 3 significant digits, "—" for none. */
export function formatStatistic(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}
