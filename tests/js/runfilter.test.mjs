import test from "node:test";
import assert from "node:assert/strict";
import {filterRuns, runMatcher} from "../../frontend/lib/runfilter.js";

const SWEEP = ["lr_0.1/train", "lr_0.01/train", "lr_0.001/train", "LR_0.01/eval", "baseline"];

test("an empty filter keeps every run, in order", () => {
  assert.deepEqual(filterRuns(SWEEP, ""), {runs: SWEEP, error: null});
  assert.deepEqual(filterRuns(SWEEP, undefined), {runs: SWEEP, error: null});
});

test("a filter matches anywhere in the name, ignoring case, as TensorBoard's run selector", () => {
  assert.deepEqual(filterRuns(SWEEP, "0\\.01/").runs, ["lr_0.01/train", "LR_0.01/eval"]);
  assert.deepEqual(filterRuns(SWEEP, "^lr_0\\.0\\d+/train$").runs, ["lr_0.01/train", "lr_0.001/train"]);
  assert.deepEqual(filterRuns(SWEEP, "eval|base").runs, ["LR_0.01/eval", "baseline"]);
  assert.deepEqual(filterRuns(SWEEP, "0.1").runs, ["lr_0.1/train", "lr_0.001/train"]);  // "." is any character
  assert.deepEqual(filterRuns(SWEEP, "nothing").runs, []);
});

test("an invalid filter keeps no run and says why", () => {
  for (const pattern of ["lr_(", "[", "*train", "a{2,1}"]) {
    const {runs, error} = filterRuns(SWEEP, pattern);
    assert.deepEqual(runs, [], pattern);
    assert.match(error, /invalid/i, pattern);
  }
});

test("matching twice gives the same answer (no regex state kept between names)", () => {
  const {matches} = runMatcher("train");
  assert.deepEqual([matches("a/train"), matches("a/train"), matches("b/train")], [true, true, true]);
});

test("run names are text, never patterns", () => {
  const names = ["a(b", "a.b", "axb"];
  assert.deepEqual(filterRuns(names, "a\\(b").runs, ["a(b"]);
  assert.deepEqual(filterRuns(names, "a\\.b").runs, ["a.b"]);
});
