/**
 * View "image" (5), for vision probes: the attention of one query (default the class token,
 * query 0) over the key patches, drawn as a translucent patch-grid overlay on the probe image.
 * Clicking a patch makes it the query (self-attention over patches). `renderImageView` draws it
 * (also used by the rollout view).
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await image.load(state, source);
 *   const {canvas, legend} = image.render(host, data, state, {width, lut, tooltip, set});
 *
 *   // the drawing alone:
 *   renderImageView(host, {matrix, header, example, image: htmlImageElement, query: 0, lut,
 *                          scale: "head", width: 900}, {tooltip, pickQuery});
 */

import {patchOfKey, keyOfPoint, patchWeights} from "../lib/layout.js";
import {hiDpiCanvas, FONT_FAMILY, legendCanvas, lutColor} from "../ui/heatmap.js";
import {maxValue} from "../lib/decode.js";
import {tokenLabel, formatWeight} from "../lib/tokens.js";
import {element, localPoint} from "../ui/dom.js";
import {matrixParams} from "./head.js";

export default {
  key: "image",
  label: "Image overlay",
  prefetch: (state, source) => source.matrix(matrixParams(state)),
  async load(state, source) {
    const {run, tag, step, example} = state;
    const header = await source.header(run, tag, step);
    if (!header.image) return {header, matrix: null, image: null};
    const [matrix, image] = await Promise.all([source.matrix(matrixParams(state)),
                                               source.image({run, tag, step, example})]);
    return {header, matrix, image};
  },
  render(host, {header, matrix, image}, state, ui) {
    if (!header.image) {
      host.replaceChildren(element("p", {className: "empty"},
        `${state.tag} has no probe images: the image overlay is for vision probes (logged with images=...).`));
      return {canvas: null, legend: null};
    }
    const {canvas, vmax} = renderImageView(host, {matrix, header, example: state.example, image,
                                                  query: state.query ?? 0, lut: ui.lut, scale: state.scale,
                                                  width: ui.width},
                                           {tooltip: ui.tooltip, pickQuery: (row) => ui.set({query: row})});
    return {canvas, legend: legendCanvas(ui.lut, vmax)};
  },
};

/** Opacity of the weight colours over the greyscale probe image (constant, so colours match the legend). */
export const OVERLAY_ALPHA = 0.7;

export function renderImageView(host, data, hooks) {
  const {matrix, header, example, image: picture, lut, scale} = data;
  const image = header.image;
  const query = Math.min(data.query ?? 0, matrix.rows - 1);
  const weights = patchWeights(matrix, image, query);
  const vmax = scale === "unit" ? 1 : maxValue(weights) || 1;
  const side = Math.max(160, Math.min(data.width / 2 - 30, 480));
  const aspect = (image.height || picture.naturalHeight || 1) / (image.width || picture.naturalWidth || 1);
  const drawW = side;
  const drawH = Math.round(side * aspect);
  const gap = 24;
  const top = 22;
  const width = Math.ceil(drawW * 2 + gap + 8);
  const height = Math.ceil(drawH + top + 8);
  const {canvas, ctx} = hiDpiCanvas(width, height);
  canvas.className = "view-canvas image-canvas";
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = false;  // probe images are small: show their pixels
  const plain = {x: 0, y: top, width: drawW, height: drawH};
  const overlay = {x: drawW + gap, y: top, width: drawW, height: drawH};
  ctx.drawImage(picture, plain.x, plain.y, plain.width, plain.height);
  // Under the colours the image is grey: its own hues would mix with the colour map's.
  ctx.drawImage(greyscale(picture), overlay.x, overlay.y, overlay.width, overlay.height);
  const [gridRows, gridCols] = image.grid;
  const patchW = overlay.width / gridCols;
  const patchH = overlay.height / gridRows;
  for (let r = 0; r < gridRows; r++) {
    for (let c = 0; c < gridCols; c++) {
      const v = weights[r * gridCols + c];
      if (Number.isNaN(v)) continue;  // masked: the image shows through
      const [R, G, B] = lutColor(lut, v, vmax);
      ctx.fillStyle = `rgba(${R},${G},${B},${OVERLAY_ALPHA})`;
      ctx.fillRect(overlay.x + c * patchW, overlay.y + r * patchH, patchW, patchH);
    }
  }
  const queryPatch = patchOfKey(query, image);
  if (queryPatch && matrix.rows === matrix.cols) {
    ctx.strokeStyle = "#ff2d55";
    ctx.lineWidth = 2;
    ctx.strokeRect(overlay.x + queryPatch.c * patchW, overlay.y + queryPatch.r * patchH, patchW, patchH);
  }
  ctx.font = `12px ${FONT_FAMILY}`;
  ctx.fillStyle = "#333";
  ctx.textBaseline = "top";
  ctx.fillText("probe image", plain.x, 2);
  const queryName = tokenLabel(header, "query", example, query);
  const prefix = [];
  for (let k = 0; k < image.prefix_tokens && k < matrix.cols; k++) {
    prefix.push(`${tokenLabel(header, "key", example, k)} ${formatWeight(matrix.values[query * matrix.cols + k])}`);
  }
  ctx.fillText(`attention of query ${query} ${queryName}${prefix.length ? "  (to " + prefix.join(", ") + ")" : ""}`,
               overlay.x, 2, overlay.width);
  canvas.dataset.overlay = JSON.stringify({...overlay, grid: image.grid, prefix: image.prefix_tokens, query, vmax});

  canvas.addEventListener("mousemove", (event) => {
    const {x, y} = localPoint(canvas, event);
    const key = keyOfPoint(image, overlay, x, y) ?? keyOfPoint(image, plain, x, y);
    if (key === null || key >= matrix.cols) return hooks.tooltip.hide();
    const v = matrix.values[query * matrix.cols + key];
    hooks.tooltip.show(`${queryName} → ${tokenLabel(header, "key", example, key)}  ${formatWeight(v)}`, event);
  });
  canvas.addEventListener("mouseleave", () => hooks.tooltip.hide());
  canvas.addEventListener("click", (event) => {
    const {x, y} = localPoint(canvas, event);
    const key = keyOfPoint(image, overlay, x, y) ?? keyOfPoint(image, plain, x, y);
    // A patch can be a query only when queries and keys are the same patches.
    if (key !== null && matrix.rows === matrix.cols) hooks.pickQuery(key);
  });
  host.replaceChildren(queryPicker(header, example, matrix.rows, query, hooks.pickQuery), canvas);
  return {canvas, vmax};
}

/** A <select> of the query whose attention is drawn (the class token first). */
function queryPicker(header, example, rows, query, pickQuery) {
  const select = document.createElement("select");
  select.id = "query-select";
  for (let q = 0; q < rows; q++) {
    const option = document.createElement("option");
    option.value = String(q);
    option.textContent = `${q}: ${tokenLabel(header, "query", example, q)}`;
    select.append(option);
  }
  select.value = String(query);
  select.addEventListener("change", () => pickQuery(Number(select.value)));
  const label = document.createElement("label");
  label.className = "control query-picker";
  const text = document.createElement("span");
  text.textContent = "Query (click a patch to pick it)";
  label.append(text, select);
  return label;
}

/** A canvas with `image` in greyscale (Rec. 709 luma), at the image's own size. */
function greyscale(image) {
  const width = image.naturalWidth || image.width;
  const height = image.naturalHeight || image.height;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const pixels = ctx.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let p = 0; p < data.length; p += 4) {
    const luma = Math.round(0.2126 * data[p] + 0.7152 * data[p + 1] + 0.0722 * data[p + 2]);
    data[p] = data[p + 1] = data[p + 2] = luma;
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}
