/**
 * Entry point of the Attention tab. TensorBoard's plugin iframe imports this module and calls
 * `render()` with no arguments; TensorBoard shows no errors, so they are caught and shown on
 * the page.
 *
 * Example (what TensorBoard's iframe page does):
 *
 *   import {render} from "./index.js";
 *   render();
 */

import {AttentionApp} from "./app.js";

function addStylesheet() {
  const href = new URL("./style.css", import.meta.url).href;
  if (document.querySelector(`link[data-tb-attention]`)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  link.dataset.tbAttention = "1";
  document.head.append(link);
}

function showFatal(error) {
  const box = document.createElement("div");
  box.className = "error fatal";
  box.setAttribute("role", "alert");
  box.style.cssText = "color:#b00020;font:14px sans-serif;padding:12px;white-space:pre-wrap";
  box.textContent = `The Attention tab failed: ${error && error.message ? error.message : error}`;
  document.body.prepend(box);
  console.error(error);
}

/** Builds the tab in document.body; resolves with the app (or null when it failed, shown on the page). */
export async function render() {
  addStylesheet();
  window.addEventListener("unhandledrejection", (event) => showFatal(event.reason));
  try {
    const app = new AttentionApp(document.body);
    await app.start();
    return app;
  } catch (error) {
    showFatal(error);
    return null;
  }
}
