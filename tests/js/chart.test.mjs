import test from "node:test";
import assert from "node:assert/strict";
import {chartAt, chartGrid, chartPoints, chartRect, chartScales, formatStatistic, linearScale,
        nearestPoint, valueDomain} from "../../frontend/lib/chart.js";

test("linearScale maps and inverts", () => {
  const s = linearScale([0, 200], [10, 110]);
  assert.equal(s(0), 10);
  assert.equal(s(100), 60);
  assert.equal(s.invert(110), 200);
  const down = linearScale([0, 1], [90, 10]);  // y grows downwards on a canvas
  assert.equal(down(1), 10);
  assert.equal(down(0.25), 70);
});

test("valueDomain is 0..1 for bounded statistics and 0..max for distances", () => {
  assert.deepEqual(valueDomain("entropy", [[0.2, 3]]), [0, 1]);
  assert.deepEqual(valueDomain("mean_distance", [[0.5, null], [2.5, 1]]), [0, 2.5]);
  assert.deepEqual(valueDomain("mean_distance", [[null]]), [0, 1]);
});

test("chartGrid places rows x columns charts and chartAt finds them, not the gaps", () => {
  const grid = chartGrid({rows: 4, columns: 3, width: 460, left: 100, top: 20, height: 80, gap: 10});
  assert.equal(grid.chartWidth, 113);  // (460 - 100 - 20) / 3
  assert.equal(grid.width, 100 + 3 * 113 + 20);
  const rect = chartRect(grid, 2, 1);
  assert.deepEqual(rect, {x: 223, y: 200, width: 113, height: 80});
  assert.deepEqual(chartAt(grid, rect.x + 5, rect.y + 5), {row: 2, column: 1});
  assert.equal(chartAt(grid, rect.x + rect.width + 3, rect.y + 5), null);  // gap
  assert.equal(chartAt(grid, 50, 50), null);  // row labels
  assert.equal(chartAt(grid, rect.x, grid.height + 50), null);
  const narrow = chartGrid({rows: 1, columns: 12, width: 500, minWidth: 90});
  assert.equal(narrow.chartWidth, 90);
  assert.ok(narrow.width > 500);
});

test("chartPoints skip missing values and put steps on a linear x axis", () => {
  const rect = {x: 0, y: 0, width: 110, height: 60};
  const points = chartPoints(rect, [0, 50, 100], [1, null, 0], [0, 1], 5);
  assert.deepEqual(points.map((p) => [p.x, p.y, p.step, p.index]), [[5, 5, 0, 0], [105, 55, 100, 2]]);
  const single = chartPoints(rect, [7], [0.5], [0, 1], 5);
  assert.deepEqual([single[0].x, single[0].y], [55, 30]);
  const {x} = chartScales(rect, [0, 50, 100], [0, 1], 5);
  assert.equal(x(50), 55);
});

test("nearestPoint hits a point within the radius, else the nearest step in x", () => {
  const points = [{x: 10, y: 50, step: 0}, {x: 60, y: 10, step: 100}, {x: 110, y: 40, step: 200}];
  assert.equal(nearestPoint(points, 58, 13).step, 100);
  assert.equal(nearestPoint(points, 95, 90).step, 200);  // far from all: nearest x
  assert.equal(nearestPoint(points, 95, 90, {anywhere: false}), null);
  assert.equal(nearestPoint([], 1, 1), null);
});

test("formatStatistic", () => {
  assert.equal(formatStatistic(0.123456), "0.123");
  assert.equal(formatStatistic(null), "—");
  assert.equal(formatStatistic(123.4), "123");
});
