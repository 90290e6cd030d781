import test from "node:test";
import assert from "node:assert/strict";
import {closestStep, comparedRuns, differenceMatrix, layerFamily, rolloutStack, runsWithTag,
        sharedMaximum} from "../../frontend/lib/compare.js";

const matrix = (rows, cols, values) => ({rows, cols, values: Float32Array.from(values)});

test("closestStep picks the logged step nearest to the wanted one, the earlier on a tie", () => {
  assert.equal(closestStep([0, 47, 94, 100], 50), 47);
  assert.equal(closestStep([0, 47, 94, 100], 98), 100);
  assert.equal(closestStep([0, 47, 94, 100], 97), 94);  // a tie: the earlier
  assert.equal(closestStep([0, 40, 60], 50), 40);
  assert.equal(closestStep([0, 40, 60], 60), 60);
  assert.equal(closestStep([10, 20], 1000), 20);
  assert.equal(closestStep([10, 20], null), 20);
  assert.equal(closestStep([], 5), null);
});

test("runsWithTag and comparedRuns keep runs that logged the layer readably", () => {
  const runs = [
    {run: "a", tags: [{tag: "enc", error: null}]},
    {run: "b", tags: [{tag: "dec", error: null}]},
    {run: "c", tags: [{tag: "enc", error: "newer format"}]},
    {run: "d", tags: [{tag: "enc", error: null}, {tag: "dec", error: null}]},
    {run: "e", tags: [{tag: "enc", error: null}]},
  ];
  const available = runsWithTag(runs, "enc");
  assert.deepEqual(available, ["a", "d", "e"]);
  assert.deepEqual(comparedRuns(available, ["e", "b", "a"], "a"), ["e", "a"]);
  assert.deepEqual(comparedRuns(available, null, "d"), ["d", "a"]);
  assert.deepEqual(comparedRuns(available, ["zzz"], "x", 3), ["a", "d", "e"]);
});

test("differenceMatrix subtracts, keeps masked cells masked and spans the largest change", () => {
  const later = matrix(2, 2, [0.75, 0.25, NaN, 1.0]);
  const earlier = matrix(2, 2, [0.5, 0.5, 0.5, 1.0]);
  const diff = differenceMatrix(later, earlier);
  assert.deepEqual([diff.rows, diff.cols, diff.limit], [2, 2, 0.25]);
  assert.deepEqual(Array.from(diff.values.slice(0, 2)), [0.25, -0.25]);
  assert.ok(Number.isNaN(diff.values[2]));
  assert.equal(diff.values[3], 0);
  assert.equal(differenceMatrix(earlier, earlier).limit, 1);
  assert.throws(() => differenceMatrix(later, matrix(1, 4, [0, 0, 0, 0])), /cannot subtract/);
});

test("sharedMaximum is the top of one colour scale for several matrices", () => {
  assert.equal(sharedMaximum([matrix(1, 2, [0.2, NaN]), matrix(1, 2, [0.6, 0.1])]), Float32Array.from([0.6])[0]);
  assert.equal(sharedMaximum([matrix(1, 1, [NaN])]), 1);
});

test("layerFamily strips the layer number, Keras' unnumbered first layer included", () => {
  assert.deepEqual(layerFamily("encoder/layer_10/self_attention"), {family: "encoder/layer/self_attention", index: 10});
  assert.deepEqual(layerFamily("transformer_encoder_2/multi_head_attention"),
                   {family: "transformer_encoder/multi_head_attention", index: 2});
  assert.deepEqual(layerFamily("transformer_encoder/multi_head_attention"),
                   {family: "transformer_encoder/multi_head_attention", index: 0});
  assert.deepEqual(layerFamily("enc_2/block3/attn"), {family: "enc_2/block/attn", index: 3});
});

test("rolloutStack orders one stack's square layers bottom first and leaves others out", () => {
  const tag = (name, shape, error = null) => ({tag: name, shape, error});
  const tags = [
    tag("encoder/layer_10/self_attention", [2, 4, 9, 9]),
    tag("encoder/layer_2/self_attention", [2, 4, 9, 9]),
    tag("encoder/layer_0/self_attention", [2, 4, 9, 9]),
    tag("encoder/layer_1/self_attention", [2, 4, 9, 9], "unreadable"),
    tag("encoder/layer_3/cross_attention", [2, 4, 9, 9]),
    tag("decoder/layer_0/self_attention", [2, 4, 7, 7]),
    tag("decoder/layer_0/cross_attention", [2, 4, 7, 9]),
    tag("encoder/layer_4/self_attention", [2, 4, 5, 5]),
  ];
  assert.deepEqual(rolloutStack(tags, "encoder/layer_2/self_attention"),
                   ["encoder/layer_0/self_attention", "encoder/layer_2/self_attention",
                    "encoder/layer_10/self_attention"]);
  assert.deepEqual(rolloutStack(tags, "decoder/layer_0/self_attention"), ["decoder/layer_0/self_attention"]);
  assert.deepEqual(rolloutStack(tags, "decoder/layer_0/cross_attention"), []);
  assert.deepEqual(rolloutStack(tags, "missing"), []);
});

test("maskLike masks the rollout where the bottom layer is masked", async () => {
  const {maskLike} = await import("../../frontend/lib/compare.js");
  const rollout = matrix(2, 2, [0.6, 0.4, 0, 1]);
  const bottom = matrix(2, 2, [0.5, 0.5, NaN, NaN]);
  const masked = maskLike(rollout, bottom);
  assert.deepEqual(Array.from(masked.values.slice(0, 2)), [Float32Array.from([0.6])[0], Float32Array.from([0.4])[0]]);
  assert.ok(Number.isNaN(masked.values[2]) && Number.isNaN(masked.values[3]));
  assert.equal(rollout.values[3], 1);  // the input is left as it was
  assert.throws(() => maskLike(rollout, matrix(1, 4, [0, 0, 0, 0])), /cannot mask/);
});
