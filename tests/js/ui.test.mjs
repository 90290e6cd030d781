import test from "node:test";
import assert from "node:assert/strict";
import {safeFilename} from "../../frontend/ui/dom.js";
import {queryString} from "../../frontend/ui/api.js";

test("download names keep letters (CJK too) and drop path and markup characters", () => {
  assert.equal(safeFilename(["attention", "run/1", "dec/layer 0", "step10"], "png"), "attention_run_1_dec_layer_0_step10.png");
  assert.equal(safeFilename(["训练", "<img src=x>", "../x"], "png"), "训练_img_src_x_.._x.png");
});

test("query strings escape run and tag names", () => {
  assert.equal(queryString({run: "a&b", tag: "x/y#z", step: 3}), "run=a%26b&tag=x%2Fy%23z&step=3");
});
