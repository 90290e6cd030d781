/**
 * The Attention tab: wires the parts together and hosts the views. The parts, one job each:
 * ui/store.js (the view state and its sync with the URL hash and localStorage), ui/source.js
 * (data loading and the one cache), ui/controls.js (pickers, slider, buttons) and the views
 * (views/*.js, one per view key, looked up in VIEWS below). Every view follows one protocol
 * (frontend/README.md, "Views"): the app passes it the state and callbacks, never itself.
 *
 * Example:
 *
 *   const app = new AttentionApp(document.body, new AttentionApi());
 *   await app.start();
 */

import {AttentionApi} from "./ui/api.js";
import {colormap} from "./lib/colormap.js";
import {Controls} from "./ui/controls.js";
import {element, downloadBlob, downloadCanvas, safeFilename, Tooltip} from "./ui/dom.js";
import {DataSource} from "./ui/source.js";
import {latestStepAtOrBefore, VIEWS as VIEW_KEYS} from "./lib/state.js";
import {regionFits} from "./lib/pooled.js";
import {StateStore} from "./ui/store.js";
import {isolateBidi} from "./lib/tokens.js";
import {kvGroupSize} from "./lib/groups.js";
import compare from "./views/compare.js";
import diff from "./views/diff.js";
import head from "./views/head.js";
import heads from "./views/heads.js";
import health from "./views/health.js";
import image from "./views/image.js";
import lines from "./views/lines.js";
import model from "./views/model.js";
import rollout from "./views/rollout.js";
import stats from "./views/stats.js";

/** The views by key, in the view picker's order (that of state.js VIEWS, which the hash accepts). */
export const VIEWS = new Map([head, heads, model, lines, image, compare, diff, stats, rollout, health].map((v) => [v.key, v]));
if ([...VIEWS.keys()].join() !== VIEW_KEYS.join()) {
  throw new Error(`views ${[...VIEWS.keys()]} do not match state.js VIEWS ${VIEW_KEYS}`);
}

const POLL_MS = 15000;
const PLAY_MS = 800;

export class AttentionApp {
  constructor(root, api = new AttentionApi()) {
    this.root = root;
    this.store = new StateStore();
    this.source = new DataSource(api);
    this.steps = [];            // step numbers of the shown (run, tag)
    this.wallTimes = new Map();
    this.stepsKey = null;       // "run\0tag" of this.steps
    this.generation = 0;        // each refresh's number: an older one stops when a newer started
    this.canvas = null;         // what Save PNG saves
    this.playTimer = null;
    this.pollTimer = null;
    this.renderedExtra = {};    // what the view adds to #view's data-rendered
  }

  get state() {
    return this.store.state;
  }

  async start() {
    const box = element("div", {className: "tb-attention"});
    this.controls = new Controls(box, {
      views: [...VIEWS.values()].map((v) => ({value: v.key, label: v.label})),
      set: (partial, options) => this.set(partial, options),
      stepAt: (index) => {
        const step = this.steps[index];
        if (step !== undefined) this.set({step});
      },
      moveStep: (delta) => this.moveStep(delta),
      togglePlay: () => this.togglePlay(),
      reload: () => this.reload(),
      save: () => this.savePng(),
      exportNpy: () => this.download("npy"),
      filmstrip: () => this.download("filmstrip"),
    });
    this.legend = element("div", {id: "legend", className: "legend-box"});
    this.host = element("div", {id: "view", className: "view"});
    box.append(this.legend, this.host);
    this.root.append(box);
    this.tooltip = new Tooltip();
    this.store.restore();
    await this.source.loadRuns();
    await this.refresh({reloadSteps: true});
    this.pollTimer = setInterval(() => this.poll(), POLL_MS);
    this.store.watchHash(() => this.refresh({reloadSteps: true}));
  }

  /** The one way the state changes: applies `partial` and draws again. */
  set(partial, {reloadSteps = false} = {}) {
    this.store.merge(partial);
    return this.refresh({reloadSteps});
  }

  // ---- stepping -------------------------------------------------------------------------------

  moveStep(delta) {
    const index = this.steps.indexOf(this.state.step);
    const next = this.steps[Math.max(0, Math.min(this.steps.length - 1, index + delta))];
    if (next !== undefined && next !== this.state.step) this.set({step: next});
  }

  togglePlay() {
    if (this.playTimer) {
      clearInterval(this.playTimer);
      this.playTimer = null;
      this.controls.showPlaying(false);
      return;
    }
    if (this.steps.indexOf(this.state.step) >= this.steps.length - 1 && this.steps.length) {
      this.set({step: this.steps[0]});  // from the start again
    }
    this.controls.showPlaying(true);
    this.playTimer = setInterval(() => {
      if (this.steps.indexOf(this.state.step) >= this.steps.length - 1) this.togglePlay();
      else this.moveStep(1);
    }, PLAY_MS);
  }

  isAtNewestStep() {
    return this.steps.length > 0 && this.state.step === this.steps[this.steps.length - 1];
  }

  /**
   * Whether a refresh after new data should follow the newest step: asked now (the newest step
   * is shown, not playing), answered later, false when another run, layer or step was chosen
   * meanwhile (that choice's own refresh draws it as asked).
   */
  newestFollower() {
    const {run, tag, step} = this.state;
    const follow = this.isAtNewestStep() && !this.playTimer;
    return () => follow && this.state.run === run && this.state.tag === tag && this.state.step === step;
  }

  // ---- the view host ----------------------------------------------------------------------------

  /** Makes run and tag name existing, readable ones (keeps the user's choice when possible). */
  resolveRunAndTag() {
    const runs = this.source.runs;
    if (!this.source.run(this.state.run)) this.store.merge({run: runs.length ? runs[0].run : null});
    const run = this.source.run(this.state.run);
    const tags = run ? run.tags : [];
    if (!this.source.tag(this.state.run, this.state.tag)) {
      const readable = tags.find((t) => !t.error) || tags[0];
      this.store.merge({tag: readable ? readable.tag : null});
    }
    this.controls.showRunsAndTags(runs, tags, this.state);
  }

  /**
   * Loads what the state needs and draws the view. `reloadSteps` fetches the step list again;
   * `followNewest` then moves to the newest step (the user was watching the newest one).
   */
  async refresh({reloadSteps = false, followNewest = false} = {}) {
    const generation = ++this.generation;
    const stale = () => generation !== this.generation;
    document.documentElement.dataset.busy = "1";
    try {
      this.resolveRunAndTag();
      const {run, tag} = this.state;
      if (!run || !tag) {
        this.host.replaceChildren(element("p", {className: "empty"},
          "No attention data yet. Log some with tb_attention_plugin.attention() or the AttentionLogger callback."));
        this.controls.showInfo("");
        this.controls.showError(null);
        return;
      }
      const tagInfo = this.source.tag(run, tag);
      if (tagInfo && tagInfo.error) throw new Error(`${isolateBidi(tag)}: ${tagInfo.error}`);
      if (reloadSteps || this.stepsKey !== `${run}\0${tag}`) {
        const steps = await this.source.loadSteps(run, tag);
        if (stale()) return;
        this.steps = steps.map((s) => s.step);
        this.wallTimes = new Map(steps.map((s) => [s.step, s.wall_time]));
        this.stepsKey = `${run}\0${tag}`;
      }
      if (followNewest && this.steps.length) this.store.merge({step: this.steps[this.steps.length - 1]});
      if (!this.steps.includes(this.state.step)) {
        this.store.merge({step: latestStepAtOrBefore(this.steps, this.state.step)});
      }
      this.controls.showSteps(this.steps, this.state.step);
      if (this.state.step === null) throw new Error(`${run} / ${tag} has no steps`);
      // The matrix request goes out with the header request, not after it.
      this.prefetch(this.state.step);
      const header = await this.source.header(run, tag, this.state.step);
      if (stale()) return;
      const [examples, heads, queries] = header.shape;
      this.store.merge({
        example: Math.min(this.state.example, examples - 1),
        head: this.state.head === "mean" ? "mean" : Math.min(this.state.head, heads - 1),
        query: this.state.query !== null && this.state.query >= queries ? null : this.state.query,
        zoom: this.state.zoom && !regionFits(this.state.zoom, header.shape) ? null : this.state.zoom,
      });
      const view = VIEWS.get(this.state.view);
      this.controls.showPickers(header, this.state, {usesHead: view.usesHead !== false});
      this.controls.showPermalink(this.store.save());
      this.controls.showExports(view.usesHead !== false, header.layout === "pooled");
      this.controls.showInfo(stepInfo(this.state, header, this.wallTimes.get(this.state.step)));
      await this.draw(view, stale);
      if (stale()) return;
      this.controls.showError(null);
      const {step, example, query} = this.state;
      this.host.dataset.rendered = JSON.stringify({
        run, tag, step, example, head: this.state.head, view: view.key, query, ...this.renderedExtra,
      });
      this.prefetchNeighbours();
    } catch (error) {
      if (!stale()) this.controls.showError(error);
    } finally {
      if (!stale()) document.documentElement.dataset.busy = "0";
    }
  }

  /** Runs the view's protocol: load(state, source), then render(host, data, state, ui). */
  async draw(view, stale) {
    const state = Object.freeze({...this.state});
    this.tooltip.hide();  // it described the picture about to be replaced
    const width = Math.max(420, (this.host.clientWidth || document.body.clientWidth || 900) - 8);
    const data = await view.load(state, this.source);
    if (stale()) return;
    const ui = {
      width,
      lut: colormap(state.cmap),
      tooltip: this.tooltip,
      set: (partial, options) => this.set(partial, options),
    };
    const {canvas = null, legend = null, rendered = {}} = view.render(this.host, data, state, ui);
    this.renderedExtra = rendered;
    this.canvas = canvas;
    if (canvas) canvas.dataset.step = String(state.step);
    this.legend.replaceChildren(...(legend ? [legend] : []));
  }

  /** Starts loading what the current view needs at `step` (errors are left to the real request). */
  prefetch(step) {
    const state = {...this.state, step};
    const ignore = () => {};
    this.source.header(state.run, state.tag, step).catch(ignore);
    const view = VIEWS.get(state.view);
    if (view.prefetch) view.prefetch(state, this.source).catch(ignore);
  }

  /** Loads the steps before and after the shown one while the user looks, so stepping is instant. */
  prefetchNeighbours() {
    const index = this.steps.indexOf(this.state.step);
    for (const neighbour of [this.steps[index + 1], this.steps[index - 1]]) {
      if (neighbour !== undefined) this.prefetch(neighbour);
    }
  }

  // ---- new data ---------------------------------------------------------------------------------

  async reload() {
    try {
      const follow = this.newestFollower();
      await this.source.loadRuns();
      this.source.forgetSteps();
      await this.refresh({reloadSteps: true, followNewest: follow()});
    } catch (error) {
      this.controls.showError(error);
    }
  }

  /** Picks up new steps and runs while training goes on; follows the newest step if shown. */
  async poll() {
    if (document.hidden) return;
    try {
      const {run, tag} = this.state;
      if (!run || !tag) return this.reload();
      const follow = this.newestFollower();
      const steps = await this.source.latest(run, tag);
      // Another run or layer chosen meanwhile: its own refresh draws it, at the step asked for.
      if (this.state.run !== run || this.state.tag !== tag) return;
      if (steps.join() === this.steps.join()) return;
      this.source.forgetSteps();
      await this.refresh({reloadSteps: true, followNewest: follow()});
    } catch (error) {
      this.controls.showError(error);
    }
  }

  /**
   * Downloads the state's head as `.npy` (`/export`; a pooled step's overview and windows as
   * `.npz`) or its filmstrip across the logged steps (`/filmstrip`); the server's errors show in
   * the error box.
   */
  async download(kind) {
    const {run, tag, step, example, head, scale} = this.state;
    const api = this.source.api;
    try {
      const pooled = kind === "npy" && (await this.source.header(run, tag, step)).layout === "pooled";
      const format = pooled ? "npz" : "npy";
      const [route, params, extension] = kind === "npy"
        ? ["export", {run, tag, step, example, head, format}, format]
        : ["filmstrip", {run, tag, example, head, scale: FILMSTRIP_SCALES[scale] || "tile"}, "png"];
      const response = await api.request(route, params);
      const name = kind === "npy" ? [run, tag, `step${step}`, `example${example}`, `head${head}`]
                                  : ["filmstrip", run, tag, `example${example}`, `head${head}`];
      await downloadBlob(await response.blob(), safeFilename(name, extension));
    } catch (error) {
      this.controls.showError(error);
    }
  }

  async savePng() {
    if (!this.canvas) return this.controls.showError(new Error("nothing to save: no view is drawn"));
    const {run, tag, step, head, view} = this.state;
    try {
      await downloadCanvas(this.canvas, safeFilename(["attention", run, tag, `step${step}`, `head-${head}`, view], "png"));
    } catch (error) {
      this.controls.showError(error);
    }
  }
}

const FILMSTRIP_SCALES = {head: "tile", shared: "shared", unit: "unit"};

/**
 * The info line: run / tag, step, wall time, shape, key/value groups and the writer's reduction
 * note.
 */
function stepInfo({run, tag, step}, header, wall) {
  const parts = [`${isolateBidi(run)} / ${isolateBidi(tag)}`, `step ${step}`];
  if (wall) parts.push(new Date(wall * 1000).toLocaleString());
  parts.push(`shape [${header.shape.join(", ")}] (examples, heads, queries, keys)`);
  if (kvGroupSize(header) > 1) parts.push(`grouped-query: ${kvGroupSize(header)} query heads per key/value head`);
  if (header.layout === "pooled" && header.pooled) {
    const [bq, bk] = header.pooled.block;
    const names = (header.windows || []).map((w) => isolateBidi(String(w.name))).join(", ");
    parts.push(`pooled: overview of ${bq}×${bk} blocks${names ? `, exact windows ${names}` : ""}`);
  }
  if (header.reduced) {
    // AttentionLogger explains its reduction in a sentence; other writers may give only keys.
    const note = typeof header.reduced.note === "string" ? header.reduced.note : JSON.stringify(header.reduced);
    parts.push(`reduced by the writer: ${isolateBidi(note)}`);
  }
  return parts.join(" · ");
}
