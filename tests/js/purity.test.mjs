// frontend/lib/ holds only PURE modules (issue 14): no DOM, canvas, fetch or storage, and no
// import from frontend/ui/ (the modules that touch the page), so node runs every one of them.
import test from "node:test";
import assert from "node:assert/strict";
import {readdirSync, readFileSync} from "node:fs";

const LIB = new URL("../../frontend/lib/", import.meta.url);
const UI = new URL("../../frontend/ui/", import.meta.url);
const PAGE_APIS = /\b(document\s*\.|fetch\s*\(|localStorage|sessionStorage|getContext\s*\(|addEventListener\s*\(|new\s+Image\s*\(|createElement\s*\()/;

function code(path) {  // the source without comments (docstrings may name page APIs)
  return readFileSync(path, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

test("every lib/ module is pure: imports only lib/ modules and uses no page API", async () => {
  const names = readdirSync(LIB).filter((n) => n.endsWith(".js"));
  assert.ok(names.includes("decode.js") && names.includes("state.js"), names);
  for (const name of names) {
    const source = code(new URL(name, LIB));
    for (const [, target] of source.matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)) {
      assert.match(target, /^\.\/[a-z_]+\.js$/, `lib/${name} imports ${target}: only ./<pure>.js`);
    }
    assert.doesNotMatch(source, PAGE_APIS, `lib/${name} touches the page: it belongs in ui/`);
    await import(new URL(name, LIB));  // loads under node, without a page
  }
});

test("the modules that touch the page live in ui/", () => {
  const names = readdirSync(UI).filter((n) => n.endsWith(".js"));
  for (const name of ["api.js", "controls.js", "dom.js", "heatmap.js", "massgrid.js", "panels.js", "source.js",
                      "store.js"]) {
    assert.ok(names.includes(name), `ui/${name}`);
  }
  // Each of them does touch the page (else it would be pure and belong in lib/), directly or
  // through another ui/ module.
  for (const name of names) {
    const source = code(new URL(name, UI));
    assert.ok(PAGE_APIS.test(source) || /from\s+"\.\/[a-z_]+\.js"/.test(source) || /\bwindow\./.test(source),
              `ui/${name} looks pure: move it to lib/ with a node test`);
  }
});
