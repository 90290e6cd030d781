/**
 * Run comparison: the same layer of two or more runs side by side at the chosen step, or at
 * each run's logged step nearest to it (labelled so), all on one colour scale. Checkboxes pick
 * the runs among those that logged the layer.
 *
 * Example (called by app.js for view "compare"):
 *
 *   const {canvas, legend, rendered} = await showRunCompare(app, stale, {lut, width});
 */

import {mapLimited} from "../lib/api.js";
import {closestStep, comparedRuns, runsWithTag, sharedMaximum} from "../lib/compare.js";
import {legendCanvas} from "../lib/heatmap.js";
import {describeCell, isolateBidi} from "../lib/tokens.js";
import {element} from "../lib/dom.js";
import {renderPanels} from "../lib/panels.js";

/** Steps of (run, tag), fetched once per refresh of the run list (app.tagSteps). */
export async function stepsOf(app, run, tag) {
  const key = `${run}\0${tag}`;
  if (!app.tagSteps.has(key)) app.tagSteps.set(key, (await app.api.steps(run, tag)).steps.map((s) => s.step));
  return app.tagSteps.get(key);
}

export async function showRunCompare(app, stale, {lut, width}) {
  const {tag, step, example, head, scale} = app.state;
  const available = runsWithTag(app.runs, tag);
  const runs = comparedRuns(available, app.state.compare, app.state.run);
  const loaded = await mapLimited(runs, 4, async (run) => {
    const steps = await stepsOf(app, run, tag);
    const shown = closestStep(steps, step);
    const header = await app.api.step(run, tag, shown);
    const ex = Math.min(example, header.shape[0] - 1);
    const h = head === "mean" ? "mean" : Math.min(head, header.shape[1] - 1);
    const matrix = await app.api.matrix({run, tag, step: shown, example: ex, head: h});
    return {run, step: shown, header, example: ex, head: h, matrix};
  });
  if (stale()) return null;
  const vmax = scale === "unit" ? 1 : sharedMaximum(loaded.map((l) => l.matrix));
  const panels = loaded.map((l) => ({
    title: `${l.run} · step ${l.step}${l.step !== step ? ` (nearest logged to ${step})` : ""}` +
           `${l.head !== head ? ` · head ${l.head}` : ""}`,
    note: l.step !== step,
    matrix: l.matrix, header: l.header, example: l.example, lut, vmax, source: l,
  }));
  app.host.replaceChildren(runPicker(available, runs, (chosen) => app.set({compare: chosen})));
  const {canvas} = renderPanels(app.host, {panels, width}, {
    tooltip: app.tooltip,
    describe: (panel, row, col) =>
      `${isolateBidi(panel.source.run)} @${panel.source.step}: ${describeCell(panel.matrix, panel.header, panel.example, row, col).text}`,
  });
  return {
    canvas,
    legend: legendCanvas(lut, vmax, {label: scale === "unit" ? "attention weight" : "attention weight (one scale for all runs)"}),
    rendered: {compare: loaded.map((l) => ({run: l.run, step: l.step}))},
  };
}

/** Checkboxes of the runs that logged the layer; at least one stays checked. */
function runPicker(available, chosen, onChange) {
  const box = element("div", {className: "toolbar run-picker", id: "compare-runs"},
                      element("span", {className: "hint"}, "Runs with this layer:"));
  for (const run of available) {
    const input = element("input", {type: "checkbox", value: run, checked: chosen.includes(run)});
    input.addEventListener("change", () => {
      const next = available.filter((r) => (r === run ? input.checked : chosen.includes(r)));
      if (next.length) onChange(next);
      else input.checked = true;
    });
    box.append(element("label", {className: "control"}, input, element("span", {}, run)));
  }
  if (available.length < 2) box.append(element("span", {className: "empty"}, "only one run logged this layer"));
  return box;
}
