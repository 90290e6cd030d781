// The view protocol (frontend/README.md, "Views"): every view module the app registers has a
// key the hash accepts, a label, load(state, source) and render(host, data, state, ui).
import test from "node:test";
import assert from "node:assert/strict";
import {VIEWS as VIEW_KEYS} from "../../frontend/lib/state.js";

test("the app registers one view module per view key, in the picker's order", async () => {
  const {VIEWS} = await import("../../frontend/app.js");
  assert.deepEqual([...VIEWS.keys()], [...VIEW_KEYS]);
  for (const [key, view] of VIEWS) {
    assert.equal(view.key, key);
    assert.equal(typeof view.label, "string");
    assert.ok(view.label.length > 0, key);
    assert.equal(typeof view.load, "function", key);
    assert.equal(typeof view.render, "function", key);
    assert.equal(view.load.length, 2, `${key}: load(state, source)`);
    assert.equal(view.render.length, 4, `${key}: render(host, data, state, ui)`);
    if ("prefetch" in view) assert.equal(typeof view.prefetch, "function", key);
    if ("usesHead" in view) assert.equal(typeof view.usesHead, "boolean", key);
  }
});

test("each view module is named after its key", async () => {
  for (const key of VIEW_KEYS) {
    const {default: view} = await import(`../../frontend/views/${key}.js`);
    assert.equal(view.key, key);
  }
});
