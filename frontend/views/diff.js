/**
 * View "diff": one head (or the mean of heads) of one layer at a reference step and at the
 * current step, on one colour scale, and their difference (current minus reference) on the
 * diverging map: red where a query-key pair gained weight, blue where it lost weight.
 *
 * The difference is computed here from the two `/matrix` answers (docs/http_api.md explains
 * why there is no server route); a cell masked at either step stays masked.
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await diff.load(state, source);
 *   const {canvas, legend, rendered} = diff.render(host, data, state, {width, lut, tooltip, set});
 */

import {closestStep, differenceMatrix, sharedMaximum} from "../lib/compare.js";
import {divergingLut} from "../lib/colormap.js";
import {formatWeight, tokenLabel} from "../lib/tokens.js";
import {describeAt} from "../lib/pooled.js";
import {element, fillSelect} from "../ui/dom.js";
import {divergingLegend, renderPanels} from "../ui/panels.js";

export default {
  key: "diff",
  label: "Compare steps",
  async load(state, source) {
    const {run, tag, step, example, head} = state;
    const steps = await source.stepsOf(run, tag);
    const ref = state.ref !== null && steps.includes(state.ref) ? state.ref : closestStep(steps, state.ref ?? steps[0]);
    const [header, refHeader, current, reference] = await Promise.all([
      source.header(run, tag, step),
      source.header(run, tag, ref),
      source.matrix({run, tag, step, example, head}),
      source.matrix({run, tag, step: ref, example, head}),
    ]);
    return {steps, ref, header, refHeader, current, reference};
  },
  render(host, {steps, ref, header, refHeader, current, reference}, state, ui) {
    const {step, example, head, scale} = state;
    const diff = differenceMatrix(current, reference);
    const vmax = scale === "unit" ? 1 : sharedMaximum([current, reference]);
    const headName = head === "mean" ? "mean of heads" : `head ${head}`;
    const panels = [
      {title: `step ${ref} (reference) · ${headName}`, matrix: reference, header: refHeader, example, lut: ui.lut, vmax},
      {title: `step ${step} · ${headName}`, matrix: current, header, example, lut: ui.lut, vmax},
      {title: `step ${step} − step ${ref}`, matrix: diff, header, example, lut: divergingLut(),
       limit: diff.limit, diverging: true},
    ];
    const picker = element("select", {id: "ref-select", title: "Reference step"});
    fillSelect(picker, steps.map((s) => ({value: s, label: `step ${s}`})), ref);
    picker.addEventListener("change", () => ui.set({ref: Number(picker.value)}));
    host.replaceChildren(element("div", {className: "toolbar"},
      element("label", {className: "control"}, element("span", {}, "Reference step"), picker),
      element("span", {className: "hint"},
              "red: more weight at the current step than at the reference; blue: less; grey: masked")));
    const {canvas} = renderPanels(host, {panels, width: ui.width}, {
      tooltip: ui.tooltip,
      describe: (panel, row, col) => {
        if (!panel.diverging) return describeAt(panel.matrix, panel.header, example, row, col).text;
        const i = row * diff.cols + col;
        const change = diff.values[i];
        const sign = change > 0 ? "+" : "";
        return `${tokenLabel(header, "query", example, row)} → ${tokenLabel(header, "key", example, col)}  ` +
               `${Number.isNaN(change) ? "masked" : sign + change.toFixed(4)}  ` +
               `(step ${step}: ${formatWeight(current.values[i])}, step ${ref}: ${formatWeight(reference.values[i])})`;
      },
    });
    return {canvas, legend: divergingLegend(divergingLut(), diff.limit), rendered: {ref}};
  },
};
