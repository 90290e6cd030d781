/**
 * The tab's one data source: the run list, the step lists of (run, tag) pairs (fetched once per
 * reload and shared by every view), and pass-throughs to the API's cache of immutable answers
 * (step headers, matrices, rollouts). Views get it as the second argument of `load()` and
 * fetch through it only.
 *
 * Example:
 *
 *   const source = new DataSource(new AttentionApi());
 *   await source.loadRuns();
 *   const steps = await source.stepsOf("train", "enc/l0");     // [0, 100, 200], cached
 *   const header = await source.header("train", "enc/l0", 100);
 *   const matrix = await source.matrix({run: "train", tag: "enc/l0", step: 100, example: 0, head: "mean"});
 */

import {AttentionApi} from "./api.js";
import {loadImage} from "./dom.js";

export class DataSource {
  constructor(api = new AttentionApi()) {
    this.api = api;
    this.runs = [];              // /runs: [{run, tags: [{tag, shape, error, ...}]}]
    this.stepLists = new Map();  // "run\0tag" -> ascending step numbers
    this.healthAnswers = new Map();  // run -> promise of its /health answer
  }

  /** Fetches the run list again. */
  async loadRuns() {
    this.runs = (await this.api.runs()).runs;
    return this.runs;
  }

  /** The `/runs` entry of `run`, or null. */
  run(name) {
    return this.runs.find((r) => r.run === name) || null;
  }

  /** The `/runs` entry of `tag` in `run`, or null. */
  tag(run, tag) {
    const entry = this.run(run);
    return entry ? entry.tags.find((t) => t.tag === tag) || null : null;
  }

  /** Fetches the steps of (run, tag) again: `[{step, wall_time}]` ascending; remembered for stepsOf. */
  async loadSteps(run, tag) {
    const {steps} = await this.api.steps(run, tag);
    this.stepLists.set(`${run}\0${tag}`, steps.map((s) => s.step));
    return steps;
  }

  /** The step numbers of (run, tag), fetched once until `forgetSteps()`. */
  async stepsOf(run, tag) {
    const key = `${run}\0${tag}`;
    if (!this.stepLists.has(key)) await this.loadSteps(run, tag);
    return this.stepLists.get(key);
  }

  /** Forgets every step list (training wrote new steps). */
  forgetSteps() {
    this.stepLists.clear();
    this.healthAnswers.clear();
  }

  /** Runs and the step numbers of (run, tag) fresh from the server, for polling. */
  async latest(run, tag) {
    const [{runs}, {steps}] = await Promise.all([this.api.runs(), this.api.steps(run, tag)]);
    this.runs = runs;
    return steps.map((s) => s.step);
  }

  /** The header of one step (cached). */
  header(run, tag, step) {
    return this.api.step(run, tag, step);
  }

  /**
   * One decoded matrix `{rows, cols, values}` (cached); `head`: an index or "mean". A pooled
   * step answers its overview (block means in `values`, block maxes in `maxes`); `window`
   * names one of its stored windows (exact weights).
   */
  matrix({run, tag, step, example, head, window = null}) {
    return this.api.matrix({run, tag, step, example, head, window});
  }

  /** Per-head statistics over every logged step of (run, tag) (`/stats`). */
  stats(run, tag) {
    return this.api.stats(run, tag);
  }

  /** Head health of every layer of `run` (`/health`), fetched once until `forgetSteps()`. */
  health(run) {
    if (!this.healthAnswers.has(run)) {
      const promise = this.api.health(run);
      this.healthAnswers.set(run, promise);
      // A partial answer (the server still computes some steps) is asked for again next time.
      promise.then((body) => { if (body.pending > 0) this.healthAnswers.delete(run); },
                   () => this.healthAnswers.delete(run));
    }
    return this.healthAnswers.get(run);
  }

  /** Mass of every head on the key positions `keys` (`/mass`); `overSteps`: at every step. */
  mass(params) {
    return this.api.mass(params);
  }

  /** The rollout through `tags` (bottom first) at one step, decoded (cached). */
  rollout({run, tags, step, example, residual}) {
    return this.api.rollout({run, tags, step, example, residual});
  }

  /** The loaded probe image (<img>) of one example. */
  image({run, tag, step, example}) {
    return loadImage(this.api.imageUrl({run, tag, step, example}));
  }
}
