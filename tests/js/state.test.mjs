import test from "node:test";
import assert from "node:assert/strict";
import {encodeState, decodeState, DEFAULT_STATE, mergeState} from "../../frontend/lib/state.js";

test("state survives an encode/decode round trip, including unicode and slashes", () => {
  const state = {...DEFAULT_STATE, run: "训练 run&1", tag: "decoder/layer_0/cross#attn", step: 1200,
                 example: 1, head: "mean", view: "heads", cmap: "magma", scale: "shared", query: 3};
  const hash = "#" + encodeState(state);
  assert.deepEqual(mergeState(DEFAULT_STATE, decodeState(hash)), state);
  assert.equal(decodeState(encodeState({...DEFAULT_STATE, head: 7})).head, 7);
});

test("defaults are left out of the hash", () => {
  assert.equal(encodeState({...DEFAULT_STATE, run: "train"}), "run=train");
});

test("invalid entries are dropped, not passed on", () => {
  const state = decodeState("#step=-3&head=two&view=<script>&scale=log&example=1e3&query=x&cmap=jet&run=",
                            {colormaps: ["viridis", "magma"]});
  assert.deepEqual(state, {});
  assert.deepEqual(decodeState(""), {});
  assert.deepEqual(decodeState(undefined), {});
});

test("latestStepAtOrBefore keeps a logged step, else the newest before it, else the oldest", async () => {
  const {latestStepAtOrBefore} = await import("../../frontend/lib/state.js");
  assert.equal(latestStepAtOrBefore([0, 10, 20], 10), 10);
  assert.equal(latestStepAtOrBefore([0, 10, 20], 15), 10);
  assert.equal(latestStepAtOrBefore([5, 10], 2), 5);
  assert.equal(latestStepAtOrBefore([5, 10], null), 10);
  assert.equal(latestStepAtOrBefore([], 3), null);
});

test("compared runs, reference step and rollout residual round-trip through the hash", () => {
  const state = {...DEFAULT_STATE, run: "a", view: "compare", compare: ["a", "b,c/train"], ref: 40, residual: false};
  const hash = encodeState(state);
  assert.equal(hash, "run=a&view=compare&ref=40&compare=a&compare=b%2Cc%2Ftrain&residual=0");
  assert.deepEqual(mergeState(DEFAULT_STATE, decodeState(hash)), state);
  assert.equal(encodeState({...DEFAULT_STATE, view: "rollout", residual: true}), "view=rollout");
  assert.deepEqual(decodeState("#view=diff&ref=-1&residual=maybe&compare="), {view: "diff"});
});

test("the health measure and the selected keys survive the hash; bad ones are dropped", () => {
  const state = {...DEFAULT_STATE, run: "r", view: "health", measure: "induction", keys: [2, 5, 11]};
  const hash = encodeState(state);
  assert.match(hash, /keys=2%2C5%2C11/);
  assert.deepEqual(mergeState(DEFAULT_STATE, decodeState(hash)), state);
  assert.deepEqual(decodeState("#keys=5,2,5").keys, [2, 5]);
  assert.deepEqual(decodeState("#keys=1,x&measure=<b>"), {});
  assert.deepEqual(decodeState("#keys=-1"), {});
  assert.equal(encodeState({...DEFAULT_STATE, keys: []}), "");
  assert.equal(decodeState("#measure=entropy&view=health").view, "health");
});

test("log, zoom, measure and selected keys live together in one hash (long-tab + health-view)", () => {
  const state = {...DEFAULT_STATE, run: "long", tag: "lm/pooled", view: "head", log: true,
                 zoom: {query: [1984, 2048], key: [0, 2048]}, measure: "induction", keys: [3, 2000]};
  const hash = encodeState(state);
  assert.match(hash, /log=1/);
  assert.match(hash, /zoom=1984-2048%2C0-2048/);
  assert.match(hash, /keys=3%2C2000/);
  assert.deepEqual(mergeState(DEFAULT_STATE, decodeState(hash)), state);
  // A bad zoom drops only the zoom, not the keys beside it.
  assert.deepEqual(decodeState("#zoom=3-1,0-1&keys=4&log=1"), {keys: [4], log: true});
});

test("the run filter round-trips through the hash, as typed (invalid ones too)", () => {
  for (const runFilter of ["lr_0\\.0[12]/train", "lr_(", "a&b=c #d"]) {
    const hash = encodeState({...DEFAULT_STATE, run: "a", runFilter});
    assert.equal(decodeState(hash).runFilter, runFilter);
  }
  assert.equal(encodeState({...DEFAULT_STATE, run: "a", runFilter: ""}), "run=a");
  assert.equal(decodeState("#runFilter=").runFilter, "");  // cleared in an edited link
  assert.equal(decodeState("#runFilter=" + "x".repeat(5000)).runFilter.length, 1000);
});
