/**
 * Step comparison: one head (or the mean of heads) of one layer at a reference step and at the
 * current step, on one colour scale, and their difference (current minus reference) on the
 * diverging map: red where a query-key pair gained weight, blue where it lost weight.
 *
 * The difference is computed here from the two `/matrix` answers (docs/http_api.md explains
 * why there is no server route); a cell masked at either step stays masked.
 *
 * Example (called by app.js for view "diff"):
 *
 *   const {canvas, legend, rendered} = await showStepDiff(app, stale, {lut, width});
 */

import {closestStep, differenceMatrix, sharedMaximum} from "../lib/compare.js";
import {divergingLut} from "../lib/colormap.js";
import {describeCell, formatWeight, tokenLabel} from "../lib/tokens.js";
import {element, fillSelect} from "../lib/dom.js";
import {divergingLegend, renderPanels} from "../lib/panels.js";

export async function showStepDiff(app, stale, {lut, width}) {
  const {run, tag, step, example, head, scale} = app.state;
  const steps = app.steps;
  const ref = app.state.ref !== null && steps.includes(app.state.ref) ? app.state.ref
    : closestStep(steps, app.state.ref ?? steps[0]);
  const [refHeader, current, reference] = await Promise.all([
    app.api.step(run, tag, ref),
    app.api.matrix({run, tag, step, example, head}),
    app.api.matrix({run, tag, step: ref, example, head}),
  ]);
  if (stale()) return null;
  const diff = differenceMatrix(current, reference);
  const vmax = scale === "unit" ? 1 : sharedMaximum([current, reference]);
  const headName = head === "mean" ? "mean of heads" : `head ${head}`;
  const panels = [
    {title: `step ${ref} (reference) · ${headName}`, matrix: reference, header: refHeader, example, lut, vmax},
    {title: `step ${step} · ${headName}`, matrix: current, header: app.header, example, lut, vmax},
    {title: `step ${step} − step ${ref}`, matrix: diff, header: app.header, example, lut: divergingLut(),
     limit: diff.limit, diverging: true},
  ];
  const picker = element("select", {id: "ref-select", title: "Reference step"});
  fillSelect(picker, steps.map((s) => ({value: s, label: `step ${s}`})), ref);
  picker.addEventListener("change", () => app.set({ref: Number(picker.value)}));
  app.host.replaceChildren(element("div", {className: "toolbar"},
    element("label", {className: "control"}, element("span", {}, "Reference step"), picker),
    element("span", {className: "hint"},
            "red: more weight at the current step than at the reference; blue: less; grey: masked")));
  const {canvas} = renderPanels(app.host, {panels, width}, {
    tooltip: app.tooltip,
    describe: (panel, row, col) => {
      if (!panel.diverging) return describeCell(panel.matrix, panel.header, example, row, col).text;
      const i = row * diff.cols + col;
      const change = diff.values[i];
      const sign = change > 0 ? "+" : "";
      return `${tokenLabel(app.header, "query", example, row)} → ${tokenLabel(app.header, "key", example, col)}  ` +
             `${Number.isNaN(change) ? "masked" : sign + change.toFixed(4)}  ` +
             `(step ${step}: ${formatWeight(current.values[i])}, step ${ref}: ${formatWeight(reference.values[i])})`;
    },
  });
  return {
    canvas,
    legend: divergingLegend(divergingLut(), diff.limit),
    rendered: {ref},
  };
}
