/**
 * View "compare": the same layer of two or more runs side by side at the chosen step, or at
 * each run's logged step closest to it (labelled so), all on one colour scale. Checkboxes pick
 * the runs among those that logged the layer and that the run filter keeps (a sweep of hundreds
 * of runs narrows to a few). Step lists come from the app's one data source.
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await compare.load(state, source);
 *   const {canvas, legend, rendered} = compare.render(host, data, state, {width, lut, tooltip, set});
 */

import {mapLimited} from "../ui/api.js";
import {closestStep, comparedRuns, runsWithTag, sharedMaximum} from "../lib/compare.js";
import {legendCanvas} from "../ui/heatmap.js";
import {isolateBidi} from "../lib/tokens.js";
import {describeAt} from "../lib/pooled.js";
import {filterRuns} from "../lib/runfilter.js";
import {element} from "../ui/dom.js";
import {renderPanels} from "../ui/panels.js";

export default {
  key: "compare",
  label: "Compare runs",
  async load(state, source) {
    const {tag, step, example, head} = state;
    const withTag = runsWithTag(source.runs, tag);
    const {runs: available, error} = filterRuns(withTag, state.runFilter);
    const runs = comparedRuns(available, state.compare, state.run);
    const loaded = await mapLimited(runs, 4, async (run) => {
      const shown = closestStep(await source.stepsOf(run, tag), step);
      const header = await source.header(run, tag, shown);
      const ex = Math.min(example, header.shape[0] - 1);
      const h = head === "mean" ? "mean" : Math.min(head, header.shape[1] - 1);
      const matrix = await source.matrix({run, tag, step: shown, example: ex, head: h});
      return {run, step: shown, header, example: ex, head: h, matrix};
    });
    return {available, runs, loaded, filter: {text: state.runFilter, error, total: withTag.length}};
  },
  render(host, {available, runs, loaded, filter}, state, ui) {
    const {step, head, scale} = state;
    const picker = runPicker(available, runs, filter, (chosen) => ui.set({compare: chosen}));
    if (!loaded.length) {
      host.replaceChildren(picker);
      return {canvas: null, legend: null, rendered: {compare: []}};
    }
    const vmax = scale === "unit" ? 1 : sharedMaximum(loaded.map((l) => l.matrix));
    const panels = loaded.map((l) => ({
      title: `${l.run} · step ${l.step}${l.step !== step ? ` (nearest logged to ${step})` : ""}` +
             `${l.head !== head ? ` · head ${l.head}` : ""}`,
      note: l.step !== step,
      matrix: l.matrix, header: l.header, example: l.example, lut: ui.lut, vmax, source: l,
    }));
    host.replaceChildren(picker);
    const {canvas} = renderPanels(host, {panels, width: ui.width}, {
      tooltip: ui.tooltip,
      describe: (panel, row, col) =>
        `${isolateBidi(panel.source.run)} @${panel.source.step}: ${describeAt(panel.matrix, panel.header, panel.example, row, col).text}`,
    });
    return {
      canvas,
      legend: legendCanvas(ui.lut, vmax, {label: scale === "unit" ? "attention weight" : "attention weight (one scale for all runs)"}),
      rendered: {compare: loaded.map((l) => ({run: l.run, step: l.step}))},
    };
  },
};

/**
 * Checkboxes of the runs that logged the layer and match the run filter; at least one stays
 * checked. `filter`: `{text, error, total}`, the filter and how many runs logged the layer.
 */
function runPicker(available, chosen, filter, onChange) {
  const hint = filter.text ? `Runs with this layer matching the run filter (${available.length} of ${filter.total}):`
    : "Runs with this layer:";
  const box = element("div", {className: "toolbar run-picker", id: "compare-runs"},
                      element("span", {className: "hint"}, hint));
  for (const run of available) {
    const input = element("input", {type: "checkbox", value: run, checked: chosen.includes(run)});
    input.addEventListener("change", () => {
      const next = available.filter((r) => (r === run ? input.checked : chosen.includes(r)));
      if (next.length) onChange(next);
      else input.checked = true;
    });
    box.append(element("label", {className: "control"}, input, element("span", {}, run)));
  }
  if (filter.error) box.append(element("span", {className: "empty invalid-text"}, `the run filter is invalid: ${filter.error}`));
  else if (!available.length) box.append(element("span", {className: "empty"}, "no run with this layer matches the run filter"));
  else if (filter.total < 2) box.append(element("span", {className: "empty"}, "only one run logged this layer"));
  return box;
}
