import test from "node:test";
import assert from "node:assert/strict";
import {kvGroupSize, kvGroupOf, headLabel, groupColumns, tileOrder} from "../../frontend/lib/groups.js";

const gqa = {shape: [1, 8, 5, 5], kv_group_size: 4};  // 8 query heads over 2 key/value heads

test("a query head reads key/value head head // group size", () => {
  assert.equal(kvGroupSize(gqa), 4);
  assert.deepEqual([0, 3, 4, 7].map((h) => kvGroupOf(gqa, h)), [0, 0, 1, 1]);
  assert.equal(headLabel(gqa, 5), "head 5 · kv 1");
  assert.equal(headLabel(gqa, 0), "head 0 · kv 0");
});

test("steps without groups (old logs, multi-head layers) keep plain head labels", () => {
  for (const header of [{shape: [1, 4, 2, 2]}, {shape: [1, 4, 2, 2], kv_group_size: null},
                        {shape: [1, 4, 2, 2], kv_group_size: 1}, null]) {
    assert.equal(kvGroupSize(header), 1);
    assert.equal(kvGroupOf(header, 3), null);
    assert.equal(headLabel(header, 3), "head 3");
    assert.equal(groupColumns(header, 10), null);
  }
  assert.equal(kvGroupSize({kv_group_size: "4"}), 1);  // not a count: no groups
});

test("grid rows hold whole groups, at least one", () => {
  assert.equal(groupColumns(gqa, 9), 8);   // two groups of 4 fit 9 columns
  assert.equal(groupColumns(gqa, 7), 4);   // one group of 4
  assert.equal(groupColumns(gqa, 3), 4);   // a group is never split over rows
  assert.equal(groupColumns({shape: [1, 8, 5, 5], kv_group_size: 8}, 9), null);  // one group only
  assert.equal(groupColumns({shape: [1, 32, 5, 5], kv_group_size: 16}, 9), null);  // too wide
  // Only the first 4 heads of a layer with groups of 3 kept: heads 0-2 and head 3 of group 1.
  assert.equal(groupColumns({shape: [1, 4, 5, 5], kv_group_size: 3}, 5), 3);
});

test("the mean tile starts a row of its own after blank tiles", () => {
  assert.deepEqual(tileOrder(4, 3), [0, 1, 2, 3, null, null, "mean"]);
  assert.deepEqual(tileOrder(8, 4), [0, 1, 2, 3, 4, 5, 6, 7, "mean"]);
  assert.deepEqual(tileOrder(2), [0, 1, "mean"]);
});
