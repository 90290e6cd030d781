// The pure logic of the head-health view (frontend/lib/health.js) on hand-made /health answers.
import test from "node:test";
import assert from "node:assert/strict";
import {alarmKind, cellAtPoint, cellRect, changeEntries, extraRect, groupCounts, groupLabels, groupText,
        headMarkers, healthGrid, markerAt, massCells, massSeries, measureDomain, measureInfo, readSentence, roleAt,
        roleColor, seriesOf, sparkPoints, stepAtX, stepIndexAtOrBefore, tint, toggleKey,
        MEASURE_NAMES, ROLES} from "../../frontend/lib/health.js";

// Two layers of 3 heads over 4 steps; head 1 of layer "l1" becomes previous-token at step 200.
const BODY = {
  layers: ["model/l0", "model/l1"],
  heads: {"model/l0": 3, "model/l1": 3},
  steps: [0, 100, 200, 300],
  series: {
    "model/l0": {entropy: [[0.9, 0.8, 0.7], [0.9, 0.8, 0.7], [0.9, 0.8, 0.01], [0.9, 0.8, 0.01]],
                 max_logit: [[1, 2, 3], [1, 2, 30], [1, 2, 150], [1, 2, 160]]},
    "model/l1": {entropy: [[0.9, 0.9, 0.9], [0.9, 0.8, 0.9], [0.9, 0.3, null], [0.9, 0.2, 0.9]],
                 previous_token: [[0, 0.1, 0], [0, 0.15, 0], [0, 0.7, 0], [0, 0.8, 0]],
                 monotonic: [[0.2, 0.2, 0.2], [0.2, 0.2, 0.2], [0.2, 0.2, 0.2], [0.2, 0.2, 0.2]]},
  },
  roles: {"model/l0": [["diffuse", "none", "none"], ["diffuse", "none", "none"], ["diffuse", "none", "none"],
                       ["diffuse", "none", "none"]],
          "model/l1": [["diffuse", "none", "diffuse"], ["diffuse", "none", "diffuse"],
                       ["diffuse", "previous-token", "diffuse"], ["diffuse", "previous-token", "diffuse"]]},
  alarms: [{tag: "model/l0", head: 2, step: 200, kind: "entropy_collapse", value: 0.01,
            message: "layer 0 head 2: entropy collapsed below 0.02 at step 200 (0.01)"},
           {tag: "model/l0", head: 2, step: 200, kind: "logit_growth", value: 150,
            message: "layer 0 head 2: max logit passed 100 at step 200 (150)"}],
  emergence: [{tag: "model/l1", head: 1, role: "previous-token", step: 200,
               message: "layer 1 head 1 became a previous-token head at step 200"}],
  changes: ["layer 0 head 2: entropy collapsed below 0.02 at step 200 (0.01)",
            "layer 0 head 2: max logit passed 100 at step 200 (150)",
            "layer 1 head 1 became a previous-token head at step 200"],
  groups: {"model/l0": [[[0], [1], [2]], [[0, 1], [2]], [[0, 1, 2]], [[0, 2], [1]]],
           "model/l1": [[[0, 2], [1]], [[0, 2], [1]], [[0, 2], [1]], [[0], [1], [2]]]},
};

test("the measure picker offers the seven measures of the issue, entropy first", () => {
  assert.deepEqual(MEASURE_NAMES, ["entropy", "max_logit", "previous_token", "diagonal", "first_token",
                                   "induction", "monotonicity"]);
  assert.equal(measureInfo("monotonic").name, "monotonicity");
  assert.equal(measureInfo("<img>").name, "entropy");
});

test("seriesOf reads one head over steps, nulls for missing values, aliases for monotonicity", () => {
  assert.deepEqual(seriesOf(BODY, "model/l1", "entropy", 2), [0.9, 0.9, null, 0.9]);
  assert.deepEqual(seriesOf(BODY, "model/l1", "monotonicity", 0), [0.2, 0.2, 0.2, 0.2]);
  assert.equal(seriesOf(BODY, "model/l1", "induction", 0), null);
  assert.equal(seriesOf(BODY, "nope", "entropy", 0), null);
});

test("measureDomain: bounded measures 0..1, the max logit over every head of every layer", () => {
  assert.deepEqual(measureDomain(BODY, "entropy"), [0, 1]);
  assert.deepEqual(measureDomain(BODY, "max_logit"), [0, 160]);
  assert.deepEqual(measureDomain({layers: [], series: {}}, "max_logit"), [0, 1]);
  assert.deepEqual(measureDomain({layers: ["a"], series: {a: {max_logit: [[-5, 3]]}}}, "max_logit"), [-5, 3]);
});

test("role colours: every role its own colour, '_' or '-' alike, unknown roles one neutral colour", () => {
  const colors = ROLES.map((r) => roleColor(r.name));
  assert.equal(new Set(colors).size, ROLES.length);
  assert.equal(roleColor("previous_token"), roleColor("previous-token"));
  assert.equal(roleColor("something else"), roleColor("another"));
  assert.ok(!colors.includes(roleColor("something else")));
  assert.equal(roleColor(null), roleColor("none"));
  assert.equal(tint("#1e88e5", 0.5), "rgb(143,196,242)");  // half-way to white
  assert.equal(tint("#000000", 1), "rgb(0,0,0)");
});

test("roleAt and stepIndexAtOrBefore pick the role at the current step", () => {
  assert.equal(stepIndexAtOrBefore(BODY.steps, 250), 2);
  assert.equal(stepIndexAtOrBefore(BODY.steps, -5), 0);
  assert.equal(stepIndexAtOrBefore([], 5), -1);
  assert.equal(roleAt(BODY, "model/l1", 1, 1), "none");
  assert.equal(roleAt(BODY, "model/l1", 2, 1), "previous-token");
  assert.equal(roleAt(BODY, "model/l1", 9, 1), null);
});

test("healthGrid places layers x heads cells; cellAtPoint finds them, not labels or gaps", () => {
  const grid = healthGrid({layers: 2, heads: 3, width: 500, left: 100, top: 20, right: 60, gap: 4, height: 40});
  assert.equal(grid.cellWidth, Math.floor((500 - 100 - 60 - 4 - 8) / 3));
  const rect = cellRect(grid, 1, 2);
  assert.deepEqual(rect, {x: 100 + 2 * (grid.cellWidth + 4), y: 20 + 44, width: grid.cellWidth, height: 40});
  assert.deepEqual(cellAtPoint(grid, rect.x + 1, rect.y + 1), {layer: 1, head: 2});
  assert.equal(cellAtPoint(grid, rect.x + grid.cellWidth + 1, rect.y + 1), null);  // gap
  assert.equal(cellAtPoint(grid, 50, 30), null);  // layer labels
  assert.equal(cellAtPoint(grid, rect.x + 1, rect.y + 1, (layer) => (layer === 1 ? 2 : 3)), null);
  const extra = extraRect(grid, 1);
  assert.equal(extra.x, grid.extraX);
  assert.ok(extra.x >= rect.x + rect.width);
  assert.equal(grid.width, extra.x + extra.width);
  const wide = healthGrid({layers: 12, heads: 12, width: 300});
  assert.equal(wide.cellWidth, 44);  // never narrower than minWidth
});

test("sparkPoints: first and last step at the padded ends, gaps break the line, values clamped", () => {
  const grid = healthGrid({layers: 1, heads: 1, width: 300, left: 0, height: 40, pad: 5});
  const rect = cellRect(grid, 0, 0);
  const points = sparkPoints(grid, rect, BODY.steps, [1, 0, null, 2], [0, 1]);
  assert.equal(points.length, 3);
  assert.equal(points[0].x, rect.x + 5);
  assert.equal(points[0].y, rect.y + 5);  // 1 at the top
  assert.equal(points[1].y, rect.y + rect.height - 5);  // 0 at the bottom
  assert.equal(points[2].x, rect.x + rect.width - 5);
  assert.equal(points[2].y, rect.y + 5);  // 2 clamped to 1
  assert.equal(points[2].breakBefore, true);
  assert.equal(points[1].breakBefore, false);
  // Irregular steps: x proportional to the step, not its index.
  const uneven = sparkPoints(grid, rect, [0, 10, 100], [0.5, 0.5, 0.5], [0, 1]);
  assert.ok(Math.abs(uneven[1].x - (rect.x + 5 + 0.1 * (rect.width - 10))) < 1e-9);
  assert.equal(stepAtX(grid, rect, [0, 10, 100], uneven[1].x + 2), 10);
  const single = sparkPoints(grid, rect, [7], [0.5], [0, 1]);
  assert.equal(single[0].x, rect.x + rect.width / 2);
});

test("headMarkers put alarms at the top and emergence at the bottom, at their steps' x", () => {
  const grid = healthGrid({layers: 2, heads: 3, width: 600, left: 100});
  const rect = cellRect(grid, 0, 2);
  const markers = headMarkers(BODY, "model/l0", 2, grid, rect);
  assert.equal(markers.length, 2);
  const x200 = rect.x + grid.pad + (200 / 300) * (rect.width - 2 * grid.pad);
  const [first, second] = markers;
  assert.ok(Math.abs(first.x - x200) < 1e-9);
  assert.ok(second.x - first.x >= 7 - 1e-9, "markers at one step are nudged apart");
  assert.deepEqual(markers.map((m) => m.kind).sort(), ["entropy_collapse", "logit_growth"]);
  assert.ok(markers.every((m) => m.type === "alarm" && m.y < rect.y + rect.height / 2 && m.step === 200));
  const emerged = headMarkers(BODY, "model/l1", 1, grid, cellRect(grid, 1, 1));
  assert.equal(emerged.length, 1);
  assert.equal(emerged[0].type, "emergence");
  assert.equal(emerged[0].role, "previous-token");
  assert.ok(emerged[0].y > cellRect(grid, 1, 1).y + grid.cellHeight / 2);
  assert.deepEqual(headMarkers(BODY, "model/l1", 0, grid, cellRect(grid, 1, 0)), []);
  assert.equal(markerAt(markers, first.x + 2, first.y + 1), first);
  assert.equal(markerAt(markers, first.x, first.y + 30), null);
  // Out-of-range steps are not drawn; health.py's kind names are understood.
  const odd = {...BODY, alarms: [{tag: "model/l0", head: 0, step: 900, kind: "entropy-floor"}]};
  assert.deepEqual(headMarkers(odd, "model/l0", 0, grid, cellRect(grid, 0, 0)), []);
  assert.equal(alarmKind("max-logit"), "logit_growth");
  assert.equal(alarmKind("entropy-drop"), "entropy_collapse");
});

test("changeEntries: each sentence clickable, with the head and step it names", () => {
  const entries = changeEntries(BODY);
  assert.deepEqual(entries[2], {text: "layer 1 head 1 became a previous-token head at step 200",
                                tag: "model/l1", head: 1, step: 200});
  assert.equal(entries[0].tag, "model/l0");
  // A sentence not matched to an entry is read: by layer number or by tag.
  const read = changeEntries({layers: ["a/head x", "b"], changes: [
    "layer 1 head 4 became an induction head at step 700",
    "a/head x head 2 stopped being a monotonic head at step 30",
    "something else happened",
    {tag: "b", head: 0, step: 5, sentence: "b head 0: entropy dropped"}]});
  assert.deepEqual(read.map(({tag, head, step}) => [tag, head, step]),
                   [["b", 4, 700], ["a/head x", 2, 30], [null, null, null], ["b", 0, 5]]);
  assert.deepEqual(readSentence("layer 9 head 1 at step 3", ["a"]), {tag: null, head: null, step: 3});
  assert.deepEqual(changeEntries({}), []);
});

test("groupLabels letter the groups of two or more heads; singletons get none", () => {
  const labels = groupLabels([[3, 1], [0], [2, 4, 5]], 6);
  assert.equal(labels[0], null);
  assert.equal(labels[1].label, "A");
  assert.equal(labels[3].label, "A");
  assert.deepEqual(labels[1].members, [1, 3]);
  assert.equal(labels[4].label, "B");
  assert.equal(labels[4].size, 3);
  assert.notEqual(labels[1].color, labels[4].color);
  assert.equal(groupText(labels, 3), "group A with head 1");
  assert.equal(groupText(labels, 2), "group B with heads 4, 5");
  assert.equal(groupText(labels, 0), "no group");
  assert.deepEqual(groupLabels(null, 2), [null, null]);
  assert.deepEqual(groupLabels([[0, 9]], 2).map((l) => l && l.label), ["A", null]);  // 9: out of range
});

test("groupCounts: groups of two or more heads per step, how similarity changes over training", () => {
  assert.deepEqual(groupCounts(BODY, "model/l0"), [0, 1, 1, 1]);
  assert.deepEqual(groupCounts(BODY, "model/l1"), [1, 1, 1, 0]);
  assert.deepEqual(groupCounts(BODY, "none"), [null, null, null, null]);
});

test("toggleKey adds and removes key positions, sorted", () => {
  assert.deepEqual(toggleKey([], 3), [3]);
  assert.deepEqual(toggleKey([5, 3], 1), [1, 3, 5]);
  assert.deepEqual(toggleKey([1, 3, 5], 3), [1, 5]);
  assert.deepEqual(toggleKey(null, 0), [0]);
});

test("massCells: one cell per head of every layer and the scale's top", () => {
  const {cells, max} = massCells({layers: ["a", "b"], mass: [[0.5, 0.25], [null, 0.75, 0.1]]});
  assert.equal(cells.length, 5);
  assert.deepEqual(cells[3], {layer: 1, head: 1, tag: "b", value: 0.75});
  assert.equal(cells[2].value, null);
  assert.equal(max, 0.75);
  assert.ok(massCells({layers: []}).max > 0);
});

test("massSeries reads one head of one layer over the steps of an over_steps answer", () => {
  const body = {layers: ["a", "b"], steps: [0, 10, 20], mass: [[0.4, 0.1], null],
                series: [[[0.3, 0.2], null, [0.4, 0.1]], [null, null, null]]};
  assert.deepEqual(massSeries(body, 0, 1), [0.2, null, 0.1]);
  assert.deepEqual(massSeries(body, 1, 0), [null, null, null]);
  assert.deepEqual(massCells(body).cells.map((c) => c.tag), ["a", "a"]);  // b: not comparable
});

test("the view derives no alarm of its own: a fall the server read as a role is drawn as that role", () => {
  // model/l1 head 1's entropy falls from 0.8 to 0.3 at step 200 as it becomes a previous-token
  // head: the answer lists its emergence and no alarm (docs/health.md, "Alarms read with the
  // head's role"), and the markers and the change list show exactly that.
  const grid = healthGrid({layers: 2, heads: 3, width: 600, left: 100});
  const markers = headMarkers(BODY, "model/l1", 1, grid, cellRect(grid, 1, 1));
  assert.deepEqual(markers.map((m) => [m.type, m.role, m.step]), [["emergence", "previous-token", 200]]);
  const entries = changeEntries(BODY).filter((e) => e.tag === "model/l1" && e.head === 1);
  assert.deepEqual(entries.map((e) => e.text), ["layer 1 head 1 became a previous-token head at step 200"]);
  // The same series with an alarm in the answer: drawn, so the server alone decides.
  const alarmed = {...BODY, alarms: [...BODY.alarms, {tag: "model/l1", head: 1, step: 200, kind: "entropy_collapse",
                                                      message: "layer 1 head 1: entropy dropped to 0.3 at step 200"}]};
  assert.deepEqual(headMarkers(alarmed, "model/l1", 1, grid, cellRect(grid, 1, 1)).map((m) => m.type).sort(),
                   ["alarm", "emergence"]);
});
