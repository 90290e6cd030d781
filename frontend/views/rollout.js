/**
 * View "rollout": attention rollout (Abnar and Zuidema, 2020) through the stack of layers the
 * current layer belongs to (same name up to the layer number, same size), at the current step:
 * how much each position of the top layer draws on each input token, with the residual
 * identity term unless switched off. Drawn as a map with token labels and, for vision probes,
 * over the image.
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await rollout.load(state, source);
 *   const {canvas, legend, rendered} = rollout.render(host, data, state, {width, lut, tooltip, set});
 */

import {maskLike, rolloutStack} from "../lib/compare.js";
import {maxValue} from "../lib/decode.js";
import {legendCanvas} from "../ui/heatmap.js";
import {element} from "../ui/dom.js";
import {renderHeadView} from "./head.js";
import {renderImageView} from "./image.js";

export default {
  key: "rollout",
  label: "Attention rollout",
  usesHead: false,  // the rollout averages the heads
  async load(state, source) {
    const {run, tag, step, example, residual} = state;
    const entry = source.run(run);
    const stack = rolloutStack(entry ? entry.tags : [], tag);
    if (!stack.length) return {stack, header: await source.header(run, tag, step)};
    const [rollout, bottom, header] = await Promise.all([
      source.rollout({run, tags: stack, step, example, residual}),
      source.matrix({run, tag: stack[0], step, example, head: "mean"}),
      source.header(run, stack[0], step),
    ]);
    // Positions the bottom layer masks (padding, causal future) are drawn masked, not as weights.
    const matrix = maskLike(rollout, bottom);
    const image = header.image ? await source.image({run, tag: stack[0], step, example}) : null;
    return {stack, header, matrix, image};
  },
  render(host, {stack, header, matrix, image}, state, ui) {
    const {tag, example, scale, residual} = state;
    const {lut, width} = ui;
    if (!stack.length) {
      const [, , tq, tk] = header.shape;
      host.replaceChildren(element("p", {className: "empty"},
        `Rollout needs self-attention (as many queries as keys); ${tag} has ${tq} queries and ${tk} keys.`));
      return {canvas: null, legend: null, rendered: {stack: []}};
    }
    const pickQuery = (row) => ui.set({query: row});
    const hooks = {tooltip: ui.tooltip, pinRow: pickQuery, pickQuery};
    const query = Math.min(state.query ?? 0, matrix.rows - 1);
    const vmax = scale === "unit" ? 1 : maxValue(matrix.values) || 1;
    const toggle = element("input", {type: "checkbox", id: "residual-toggle", checked: residual});
    toggle.addEventListener("change", () => ui.set({residual: toggle.checked}));
    const controls = element("div", {className: "toolbar", id: "rollout-controls"},
      element("span", {className: "hint"},
              `Rollout through ${stack.length} layer${stack.length === 1 ? "" : "s"} (bottom first): ${stack.join(" → ")}`),
      element("label", {className: "control"}, toggle, element("span", {}, "residual term (0.5·A + 0.5·I)")));
    let canvas;
    let legendVmax = vmax;
    if (image) {
      const result = renderImageView(host, {matrix, header, example, image, query, lut, scale, width}, hooks);
      canvas = result.canvas;
      legendVmax = result.vmax;
      const map = element("div", {className: "rollout-map"});
      renderHeadView(map, {matrix, header, example, lut, vmax, pinned: null, width: Math.min(width, 700)}, hooks);
      host.append(element("p", {className: "hint"}, "The rollout as a map (rows: top-layer positions, columns: input patches):"), map);
    } else {
      canvas = renderHeadView(host, {matrix, header, example, lut, vmax, pinned: state.query, width}, hooks).canvas;
    }
    host.prepend(controls);
    return {canvas, legend: legendCanvas(lut, legendVmax, {label: "rollout weight"}), rendered: {stack, residual}};
  },
};
