/**
 * Small DOM helpers. Every string from the logs (run, tag and token names, error messages)
 * goes in as textContent or an attribute value, never as HTML.
 *
 * Example:
 *
 *   const button = element("button", {className: "play", title: "Play"}, "▶");
 *   fillSelect(select, [{value: "train", label: "train"}], "train");
 */

/** A new element with properties (className, title, type, ...) and text/element children. */
export function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces the options of `select` with `options` ([{value, label, disabled, title}]). */
export function fillSelect(select, options, selected) {
  const nodes = options.map((option) => {
    const node = document.createElement("option");
    node.value = String(option.value);
    node.textContent = option.label ?? String(option.value);
    if (option.disabled) node.disabled = true;
    if (option.title) node.title = option.title;
    return node;
  });
  select.replaceChildren(...nodes);
  if (selected !== undefined && selected !== null) select.value = String(selected);
}

/** A floating tooltip that follows the mouse; `show(text, mouseEvent)`, `hide()`. */
export class Tooltip {
  constructor() {
    this.node = element("div", {className: "tooltip", role: "tooltip", hidden: true});
    document.body.append(this.node);
  }
  show(text, event) {
    this.node.textContent = text;
    this.node.hidden = false;
    const margin = 14;
    const {innerWidth, innerHeight} = window;
    const rect = this.node.getBoundingClientRect();
    let x = event.clientX + margin;
    let y = event.clientY + margin;
    if (x + rect.width > innerWidth) x = Math.max(0, event.clientX - rect.width - margin);
    if (y + rect.height > innerHeight) y = Math.max(0, event.clientY - rect.height - margin);
    this.node.style.left = `${x}px`;
    this.node.style.top = `${y}px`;
  }
  hide() {
    this.node.hidden = true;
  }
}

/** Saves a canvas as a PNG file through a temporary <a download> link. */
export function downloadCanvas(canvas, filename) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => {
      if (!blob) return reject(new Error("the browser could not encode the picture as PNG"));
      resolve(downloadBlob(blob, filename));
    }, "image/png");
  });
}

/** Saves a Blob as a file named `filename` through a temporary <a download> link. */
export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = element("a", {href: url, download: filename});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return filename;
}

/** A file name made of `parts` with anything but letters, digits, dot and dash replaced. */
export function safeFilename(parts, extension) {
  const stem = parts.map((p) => String(p)).join("_").replace(/[^\p{L}\p{N}.-]+/gu, "_").slice(0, 150);
  return `${stem}.${extension}`;
}

/** Resolves with a loaded <img> of `url` (rejects with a clear message). */
export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load the probe image ${url}`));
    image.src = url;
  });
}

/** Mouse position in the canvas's CSS pixels. */
export function localPoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return {x: event.clientX - rect.left, y: event.clientY - rect.top};
}

/**
 * The server answers partially while it computes measures (`pending` > 0): draw what came, then
 * ask again (a refresh of the same state) while this drawing is still the one shown.
 */
export function askAgainWhileShown(host, node, ui, ms = 1000) {
  setTimeout(() => {
    if (node && node.isConnected && host.contains(node)) ui.set({});
  }, ms);
}
