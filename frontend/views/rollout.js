/**
 * Attention rollout (Abnar and Zuidema, 2020) through the stack of layers the current layer
 * belongs to (same name up to the layer number, same size), at the current step: how much each
 * position of the top layer draws on each input token, with the residual identity term unless
 * switched off. Drawn as a map with token labels and, for vision probes, over the image.
 *
 * Example (called by app.js for view "rollout"):
 *
 *   const {canvas, legend, rendered} = await showRollout(app, stale, {lut, width, hooks});
 */

import {maskLike, rolloutStack} from "../lib/compare.js";
import {maxValue} from "../lib/decode.js";
import {legendCanvas} from "../lib/heatmap.js";
import {element, loadImage} from "../lib/dom.js";
import {renderHeadView} from "./head.js";
import {renderImageView} from "./image.js";

export async function showRollout(app, stale, {lut, width, hooks}) {
  const {run, tag, step, example, scale, residual} = app.state;
  const run_ = app.currentRun();
  const stack = rolloutStack(run_ ? run_.tags : [], tag);
  if (!stack.length) {
    const [, , tq, tk] = app.header.shape;
    app.host.replaceChildren(element("p", {className: "empty"},
      `Rollout needs self-attention (as many queries as keys); ${tag} has ${tq} queries and ${tk} keys.`));
    return {canvas: null, legend: null, rendered: {stack: []}};
  }
  const [rollout, bottom, header] = await Promise.all([
    app.api.rollout({run, tags: stack, step, example, residual}),
    app.api.matrix({run, tag: stack[0], step, example, head: "mean"}),
    app.api.step(run, stack[0], step),
  ]);
  // Positions the bottom layer masks (padding, causal future) are drawn masked, not as weights.
  const matrix = maskLike(rollout, bottom);
  const image = header.image
    ? await loadImage(app.api.imageUrl({run, tag: stack[0], step, example})) : null;
  if (stale()) return null;
  const query = Math.min(app.state.query ?? 0, matrix.rows - 1);
  const vmax = scale === "unit" ? 1 : maxValue(matrix.values) || 1;
  const toggle = element("input", {type: "checkbox", id: "residual-toggle", checked: residual});
  toggle.addEventListener("change", () => app.set({residual: toggle.checked}));
  const controls = element("div", {className: "toolbar", id: "rollout-controls"},
    element("span", {className: "hint"},
            `Rollout through ${stack.length} layer${stack.length === 1 ? "" : "s"} (bottom first): ${stack.join(" → ")}`),
    element("label", {className: "control"}, toggle, element("span", {}, "residual term (0.5·A + 0.5·I)")));
  let canvas;
  let legendVmax = vmax;
  if (image) {
    const result = renderImageView(app.host, {matrix, header, example, image, query, lut, scale, width}, hooks);
    canvas = result.canvas;
    legendVmax = result.vmax;
    const map = element("div", {className: "rollout-map"});
    renderHeadView(map, {matrix, header, example, lut, vmax, pinned: null, width: Math.min(width, 700)}, {
      ...hooks, pinRow: (row) => hooks.pickQuery(row),
    });
    app.host.append(element("p", {className: "hint"}, "The rollout as a map (rows: top-layer positions, columns: input patches):"), map);
  } else {
    canvas = renderHeadView(app.host, {matrix, header, example, lut, vmax, pinned: app.state.query, width}, hooks).canvas;
  }
  app.host.prepend(controls);
  return {
    canvas,
    legend: legendCanvas(lut, legendVmax, {label: "rollout weight"}),
    rendered: {stack, residual},
  };
}
