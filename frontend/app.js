/**
 * The Attention tab: pickers for run, layer (tag), example and head, the step slider with play,
 * the views, and the view state kept in the URL hash and localStorage.
 *
 * Example:
 *
 *   const app = new AttentionApp(document.body, new AttentionApi());
 *   await app.start();
 */

import {AttentionApi, mapLimited} from "./lib/api.js";
import {colormap, COLORMAP_NAMES, tileScales} from "./lib/colormap.js";
import {maxValue} from "./lib/decode.js";
import {legendCanvas} from "./lib/heatmap.js";
import {DEFAULT_STATE, decodeState, encodeState, mergeState, nearestStep, VIEWS} from "./lib/state.js";
import {element, fillSelect, Tooltip, downloadCanvas, safeFilename, loadImage} from "./lib/dom.js";
import {renderHeadView} from "./views/head.js";
import {renderTiles} from "./views/heads.js";
import {renderLinesView} from "./views/lines.js";
import {renderImageView} from "./views/image.js";
import {isolateBidi, tokenLabel} from "./lib/tokens.js";
import {showRunCompare} from "./views/compare.js";
import {showStepDiff} from "./views/diff.js";
import {showStatistics} from "./views/stats.js";
import {showRollout} from "./views/rollout.js";

const STORAGE_KEY = "tb-attention:view-state";
const POLL_MS = 15000;
const PLAY_MS = 800;
const VIEW_LABELS = {
  head: "One head", heads: "All heads", model: "Model overview", lines: "Token lines", image: "Image overlay",
  compare: "Compare runs", diff: "Compare steps", stats: "Head statistics over training", rollout: "Attention rollout",
};
// Views drawn by their own modules: each returns {canvas, legend, rendered} (null when stale).
const MODULE_VIEWS = {compare: showRunCompare, diff: showStepDiff, stats: showStatistics, rollout: showRollout};
const SCALE_LABELS = {head: "per head", shared: "shared across heads", unit: "fixed 0–1"};

function storage() {
  try {
    return window.localStorage;
  } catch (_) {
    return null;  // storage disabled for this frame
  }
}

export class AttentionApp {
  constructor(root, api = new AttentionApi()) {
    this.root = root;
    this.api = api;
    this.state = {...DEFAULT_STATE};
    this.runs = [];
    this.steps = [];
    this.header = null;
    this.generation = 0;
    this.canvas = null;
    this.playTimer = null;
    this.pollTimer = null;
    this.tagSteps = new Map();  // "run\0tag" -> steps, for the model overview and run comparison
    this.renderedExtra = {};    // what a module view adds to #view's data-rendered
  }

  async start() {
    this.buildUi();
    this.restoreState();
    await this.loadRuns();
    await this.refresh({reloadSteps: true});
    this.pollTimer = setInterval(() => this.poll(), POLL_MS);
    window.addEventListener("hashchange", () => {
      // The hash describes the whole view: keys left out mean their defaults.
      this.state = mergeState(DEFAULT_STATE, decodeState(location.hash, {colormaps: COLORMAP_NAMES}));
      this.refresh({reloadSteps: true});
    });
  }

  // ---- UI ---------------------------------------------------------------------------------

  buildUi() {
    const control = (label, input) => element("label", {className: "control"}, element("span", {}, label), input);
    this.runSelect = element("select", {id: "run-select", title: "Run"});
    this.tagSelect = element("select", {id: "tag-select", title: "Layer (tag)"});
    this.exampleSelect = element("select", {id: "example-select", title: "Probe example"});
    this.headSelect = element("select", {id: "head-select", title: "Head"});
    this.viewSelect = element("select", {id: "view-select", title: "View"});
    this.cmapSelect = element("select", {id: "cmap-select", title: "Colour map"});
    this.scaleSelect = element("select", {id: "scale-select", title: "Colour scale"});
    fillSelect(this.viewSelect, VIEWS.map((v) => ({value: v, label: VIEW_LABELS[v]})));
    fillSelect(this.cmapSelect, COLORMAP_NAMES.map((v) => ({value: v, label: v})));
    fillSelect(this.scaleSelect, Object.entries(SCALE_LABELS).map(([value, label]) => ({value, label})));
    this.slider = element("input", {id: "step-slider", type: "range", min: "0", max: "0", step: "1", value: "0",
                                    title: "Step (arrow keys move one logged step)"});
    this.stepLabel = element("span", {id: "step-label", className: "step-label"});
    this.playButton = element("button", {id: "play-button", type: "button", title: "Play through the steps"}, "▶ Play");
    this.reloadButton = element("button", {id: "reload-button", type: "button", title: "Reload runs and steps"}, "⟳ Reload");
    this.saveButton = element("button", {id: "save-button", type: "button", title: "Download the current view as PNG"}, "Save PNG");
    this.permalink = element("a", {id: "permalink", target: "_blank", rel: "noopener",
                                   title: "This view on a page of its own; the link reopens it"}, "Link to this view");

    const pickers = element("div", {className: "toolbar"},
      control("Run", this.runSelect), control("Layer", this.tagSelect), control("Example", this.exampleSelect),
      control("Head", this.headSelect), control("View", this.viewSelect), control("Colours", this.cmapSelect),
      control("Scale", this.scaleSelect));
    const stepper = element("div", {className: "toolbar stepper"},
      this.playButton, element("span", {className: "control"}, element("span", {}, "Step"), this.slider), this.stepLabel,
      this.reloadButton, this.saveButton, this.permalink);
    this.info = element("div", {id: "info", className: "info"});
    this.errorBox = element("div", {id: "error", className: "error", role: "alert", hidden: true});
    this.legend = element("div", {id: "legend", className: "legend-box"});
    this.host = element("div", {id: "view", className: "view"});
    this.root.append(element("div", {className: "tb-attention"}, pickers, stepper, this.info, this.errorBox,
                             this.legend, this.host));
    this.tooltip = new Tooltip();

    this.runSelect.addEventListener("change", () => this.set({run: this.runSelect.value, query: null}, {reloadSteps: true}));
    this.tagSelect.addEventListener("change", () => this.set({tag: this.tagSelect.value, query: null}, {reloadSteps: true}));
    this.exampleSelect.addEventListener("change", () => this.set({example: Number(this.exampleSelect.value)}));
    this.headSelect.addEventListener("change", () => {
      const value = this.headSelect.value;
      this.set({head: value === "mean" ? "mean" : Number(value)});
    });
    this.viewSelect.addEventListener("change", () => this.set({view: this.viewSelect.value}));
    this.cmapSelect.addEventListener("change", () => this.set({cmap: this.cmapSelect.value}));
    this.scaleSelect.addEventListener("change", () => this.set({scale: this.scaleSelect.value}));
    this.slider.addEventListener("input", () => {
      const step = this.steps[Number(this.slider.value)];
      if (step !== undefined) this.set({step});
    });
    this.playButton.addEventListener("click", () => this.togglePlay());
    this.reloadButton.addEventListener("click", () => this.reload());
    this.saveButton.addEventListener("click", () => this.savePng());
    document.addEventListener("keydown", (event) => this.onKey(event));
  }

  onKey(event) {
    const target = event.target;
    if (target === this.slider) return;  // the range input moves itself
    if (target && (target.tagName === "SELECT" || target.tagName === "INPUT" || target.isContentEditable)) return;
    if (event.key === "ArrowRight") this.moveStep(1);
    else if (event.key === "ArrowLeft") this.moveStep(-1);
    else return;
    event.preventDefault();
  }

  moveStep(delta) {
    const index = this.steps.indexOf(this.state.step);
    const next = this.steps[Math.max(0, Math.min(this.steps.length - 1, index + delta))];
    if (next !== undefined && next !== this.state.step) this.set({step: next});
  }

  togglePlay() {
    if (this.playTimer) {
      clearInterval(this.playTimer);
      this.playTimer = null;
      this.playButton.textContent = "▶ Play";
      return;
    }
    if (this.steps.indexOf(this.state.step) >= this.steps.length - 1 && this.steps.length) {
      this.set({step: this.steps[0]});  // from the start again
    }
    this.playButton.textContent = "⏸ Pause";
    this.playTimer = setInterval(() => {
      if (this.steps.indexOf(this.state.step) >= this.steps.length - 1) this.togglePlay();
      else this.moveStep(1);
    }, PLAY_MS);
  }

  showError(error) {
    if (!error) {
      this.errorBox.hidden = true;
      this.errorBox.textContent = "";
      return;
    }
    this.errorBox.hidden = false;
    this.errorBox.textContent = error instanceof Error ? error.message : String(error);
    console.error(error);
  }

  // ---- state ------------------------------------------------------------------------------

  restoreState() {
    let partial = decodeState(location.hash, {colormaps: COLORMAP_NAMES});
    if (!Object.keys(partial).length) {
      const saved = storage()?.getItem(STORAGE_KEY);
      if (saved) partial = decodeState(saved, {colormaps: COLORMAP_NAMES});
    }
    this.state = mergeState(this.state, partial);
  }

  persistState() {
    const hash = encodeState(this.state);
    // A path-absolute URL: TensorBoard's page sets <base href="plugin/attention/">, against
    // which a bare "#..." would move the frame to another path.
    if (location.hash.replace(/^#/, "") !== hash) {
      history.replaceState(null, "", `${location.pathname}${location.search}#${hash}`);
    }
    try {
      storage()?.setItem(STORAGE_KEY, hash);
    } catch (_) {
      // quota or privacy mode: the hash still holds the state
    }
    this.permalink.href = location.href;
  }

  set(partial, {reloadSteps = false} = {}) {
    this.state = mergeState(this.state, partial);
    return this.refresh({reloadSteps});
  }

  // ---- data -------------------------------------------------------------------------------

  async loadRuns() {
    const {runs} = await this.api.runs();
    this.runs = runs;
  }

  currentRun() {
    return this.runs.find((r) => r.run === this.state.run) || null;
  }

  currentTag() {
    const run = this.currentRun();
    return run ? run.tags.find((t) => t.tag === this.state.tag) || null : null;
  }

  /** Makes run and tag name existing, readable ones (keeps the user's choice when possible). */
  resolveRunAndTag() {
    if (!this.currentRun()) this.state.run = this.runs.length ? this.runs[0].run : null;
    const run = this.currentRun();
    const tags = run ? run.tags : [];
    const tag = this.currentTag();
    if (!tag) {
      const readable = tags.find((t) => !t.error) || tags[0];
      this.state.tag = readable ? readable.tag : null;
    }
    fillSelect(this.runSelect, this.runs.map((r) => ({value: r.run, label: r.run})), this.state.run);
    fillSelect(this.tagSelect, tags.map((t) => ({
      value: t.tag, label: t.error ? `${t.tag} (unreadable)` : t.tag, title: t.error || t.description || t.tag,
    })), this.state.tag);
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
        this.info.textContent = "";
        this.showError(null);
        return;
      }
      const tagInfo = this.currentTag();
      if (tagInfo && tagInfo.error) throw new Error(`${isolateBidi(tag)}: ${tagInfo.error}`);
      if (reloadSteps || this.stepsKey !== `${run}\0${tag}`) {
        const {steps} = await this.api.steps(run, tag);
        if (stale()) return;
        this.steps = steps.map((s) => s.step);
        this.wallTimes = new Map(steps.map((s) => [s.step, s.wall_time]));
        this.stepsKey = `${run}\0${tag}`;
        this.tagSteps.set(this.stepsKey, this.steps);
      }
      if (followNewest && this.steps.length) this.state.step = this.steps[this.steps.length - 1];
      if (!this.steps.includes(this.state.step)) this.state.step = nearestStep(this.steps, this.state.step);
      this.updateSlider();
      if (this.state.step === null) throw new Error(`${run} / ${tag} has no steps`);
      // The matrix request goes out with the header request, not after it.
      this.prefetch(this.state.step);
      const header = await this.api.step(run, tag, this.state.step);
      if (stale()) return;
      this.header = header;
      const [examples, heads] = header.shape;
      this.state.example = Math.min(this.state.example, examples - 1);
      if (this.state.head !== "mean") this.state.head = Math.min(this.state.head, heads - 1);
      if (this.state.query !== null && this.state.query >= header.shape[2]) this.state.query = null;
      this.updatePickers(header);
      this.persistState();
      this.updateInfo(header);
      await this.renderView(stale);
      if (stale()) return;
      this.showError(null);
      this.host.dataset.rendered = JSON.stringify({
        run, tag, step: this.state.step, example: this.state.example, head: this.state.head, view: this.state.view,
        query: this.state.query, ...this.renderedExtra,
      });
      this.prefetchNeighbours();
    } catch (error) {
      if (!stale()) this.showError(error);
    } finally {
      if (!stale()) document.documentElement.dataset.busy = "0";
    }
  }

  updateSlider() {
    const index = Math.max(0, this.steps.indexOf(this.state.step));
    this.slider.max = String(Math.max(0, this.steps.length - 1));
    this.slider.value = String(index);
    this.slider.disabled = this.steps.length < 2;
    this.stepLabel.textContent = this.state.step === null ? "no steps"
      : `step ${this.state.step} (${index + 1} of ${this.steps.length})`;
  }

  updatePickers(header) {
    const [examples, heads] = header.shape;
    const example = this.state.example;
    fillSelect(this.exampleSelect, Array.from({length: examples}, (_, b) => {
      const first = tokenLabel(header, "query", b, 0);
      return {value: b, label: header.query_tokens ? `${b}: ${first}…` : String(b)};
    }), example);
    fillSelect(this.headSelect, [{value: "mean", label: "mean of heads"},
      ...Array.from({length: heads}, (_, h) => ({value: h, label: `head ${h}`}))], this.state.head);
    // Statistics cover every head and the rollout averages them: the head picker does not apply.
    this.headSelect.disabled = this.state.view === "stats" || this.state.view === "rollout";
    this.viewSelect.value = this.state.view;
    this.cmapSelect.value = this.state.cmap;
    this.scaleSelect.value = this.state.scale;
  }

  updateInfo(header) {
    const {run, tag, step} = this.state;
    const wall = this.wallTimes && this.wallTimes.get(step);
    const parts = [`${isolateBidi(run)} / ${isolateBidi(tag)}`, `step ${step}`];
    if (wall) parts.push(new Date(wall * 1000).toLocaleString());
    parts.push(`shape [${header.shape.join(", ")}] (examples, heads, queries, keys)`);
    if (header.reduced) {
      // AttentionLogger explains its reduction in a sentence; other writers may give only keys.
      const note = typeof header.reduced.note === "string" ? header.reduced.note : JSON.stringify(header.reduced);
      parts.push(`reduced by the writer: ${isolateBidi(note)}`);
    }
    this.info.textContent = parts.join(" · ");
  }

  matrixParams(head, tag = this.state.tag, step = this.state.step, example = this.state.example) {
    return {run: this.state.run, tag, step, example, head};
  }

  async headVmax(matrix) {
    const {scale, head} = this.state;
    if (scale === "unit") return 1;
    if (scale === "shared" && head !== "mean") {
      const heads = this.header.shape[1];
      const all = await mapLimited(Array.from({length: heads}, (_, h) => h), 6,
                                   (h) => this.api.matrix(this.matrixParams(h)));
      return tileScales(all, "shared")[0];
    }
    return maxValue(matrix.values) || 1;
  }

  async renderView(stale) {
    const {view, cmap, example, head, query} = this.state;
    this.tooltip.hide();  // it described the picture about to be replaced
    const lut = colormap(cmap);
    const width = Math.max(420, (this.host.clientWidth || document.body.clientWidth || 900) - 8);
    const header = this.header;
    const hooks = {
      tooltip: this.tooltip,
      pinRow: (row) => this.set({query: row}),
      pickQuery: (row) => this.set({query: row}),
    };
    let legendVmax = 1;
    let legendLabel = "attention weight";
    let result;
    this.renderedExtra = {};
    if (MODULE_VIEWS[view]) {
      result = await MODULE_VIEWS[view](this, stale, {lut, width, hooks});
      if (!result) return;
      this.renderedExtra = result.rendered;
      this.canvas = result.canvas;
      if (this.canvas) this.canvas.dataset.step = String(this.state.step);
      this.legend.replaceChildren(...(result.legend ? [result.legend] : []));
      return;
    }
    if (view === "head" || view === "lines") {
      const matrix = await this.api.matrix(this.matrixParams(head));
      const vmax = await this.headVmax(matrix);
      if (stale()) return;
      const data = {matrix, header, example, lut, vmax, pinned: query, width};
      result = view === "head" ? renderHeadView(this.host, data, hooks) : renderLinesView(this.host, data, hooks);
      legendVmax = vmax;
    } else if (view === "heads") {
      const heads = header.shape[1];
      const keys = [...Array.from({length: heads}, (_, h) => h), "mean"];
      const matrices = await mapLimited(keys, 6, (h) => this.api.matrix(this.matrixParams(h)));
      if (stale()) return;
      const tiles = keys.map((h, i) => ({label: h === "mean" ? "mean of heads" : `head ${h}`, matrix: matrices[i],
                                          selected: h === head}));
      result = renderTiles(this.host, {tiles, lut, scale: this.state.scale, width, headerFor: () => header,
                                       exampleFor: () => example},
                           {...hooks, pick: (index) => this.set({view: "head", head: keys[index]})});
      legendVmax = tileScales(matrices, this.state.scale)[0];
      if (this.state.scale === "head") legendLabel = "fraction of each tile's maximum";
    } else if (view === "model") {
      result = await this.renderModel(stale, lut, width, hooks);
      if (!result) return;
      legendVmax = result.vmax;
      if (this.state.scale === "head") legendLabel = "fraction of each tile's maximum";
    } else if (view === "image") {
      if (!header.image) {
        this.host.replaceChildren(element("p", {className: "empty"},
          `${this.state.tag} has no probe images: the image overlay is for vision probes (logged with images=...).`));
        this.legend.replaceChildren();
        this.canvas = null;
        return;
      }
      const [matrix, image] = await Promise.all([
        this.api.matrix(this.matrixParams(head)),
        loadImage(this.api.imageUrl({run: this.state.run, tag: this.state.tag, step: this.state.step, example})),
      ]);
      if (stale()) return;
      result = renderImageView(this.host, {matrix, header, example, image, query: query ?? 0, lut,
                                           scale: this.state.scale, width}, hooks);
      legendVmax = result.vmax;
    }
    this.canvas = result.canvas;
    this.canvas.dataset.step = String(this.state.step);
    this.legend.replaceChildren(legendCanvas(lut, this.state.scale === "head" && legendLabel !== "attention weight" ? 1 : legendVmax,
                                             {label: legendLabel}));
  }

  /** View (3): every layer (tag) of the run x every head, each at its newest step <= the chosen one. */
  async renderModel(stale, lut, width, hooks) {
    const run = this.currentRun();
    const tags = run.tags.filter((t) => !t.error);
    const rows = await mapLimited(tags, 4, async (t) => {
      const key = `${run.run}\0${t.tag}`;
      if (!this.tagSteps.has(key)) this.tagSteps.set(key, (await this.api.steps(run.run, t.tag)).steps.map((s) => s.step));
      const step = nearestStep(this.tagSteps.get(key), this.state.step);
      const header = await this.api.step(run.run, t.tag, step);
      const example = Math.min(this.state.example, header.shape[0] - 1);
      const heads = header.shape[1];
      const matrices = await mapLimited(Array.from({length: heads}, (_, h) => h), 6,
        (h) => this.api.matrix({run: run.run, tag: t.tag, step, example, head: h}).catch(() => null));
      return {tag: t.tag, step, header, example, matrices};
    });
    if (stale()) return null;
    const columns = Math.max(1, ...rows.map((r) => r.matrices.length));
    const tiles = [];
    const owners = [];
    for (const row of rows) {
      for (let h = 0; h < columns; h++) {
        const matrix = row.matrices[h] || null;
        tiles.push({label: h < row.matrices.length ? `h${h}` : "", matrix, blank: h >= row.matrices.length,
                    selected: row.tag === this.state.tag && h === this.state.head});
        owners.push({row, head: h});
      }
    }
    const rowLabels = rows.map((r) => (r.step === this.state.step ? r.tag : `${r.tag} @${r.step}`));
    const result = renderTiles(this.host, {
      tiles, lut, scale: this.state.scale, width, columns, rowLabels, minTile: 24, maxTile: 96,
      headerFor: (i) => owners[i].row.header, exampleFor: (i) => owners[i].row.example,
    }, {...hooks, pick: (index) => {
      const {row, head} = owners[index];
      if (head < row.matrices.length) this.set({view: "head", tag: row.tag, head}, {reloadSteps: true});
    }});
    return {...result, vmax: tileScales(tiles.map((t) => t.matrix), this.state.scale)[0]};
  }

  /** Starts loading what the current view needs at `step` (errors are left to the real request). */
  prefetch(step) {
    const {run, tag, view, head, example} = this.state;
    const ignore = () => {};
    this.api.step(run, tag, step).catch(ignore);
    if (view === "head" || view === "lines" || view === "image") {
      this.api.matrix({run, tag, step, example, head}).catch(ignore);
    }
  }

  /** Loads the steps before and after the shown one while the user looks, so stepping is instant. */
  prefetchNeighbours() {
    const index = this.steps.indexOf(this.state.step);
    for (const neighbour of [this.steps[index + 1], this.steps[index - 1]]) {
      if (neighbour !== undefined) this.prefetch(neighbour);
    }
  }

  isAtNewestStep() {
    return this.steps.length > 0 && this.state.step === this.steps[this.steps.length - 1];
  }

  async reload() {
    try {
      const followNewest = this.isAtNewestStep() && !this.playTimer;
      await this.loadRuns();
      this.tagSteps.clear();
      await this.refresh({reloadSteps: true, followNewest});
    } catch (error) {
      this.showError(error);
    }
  }

  /** Picks up new steps and runs while training goes on; follows the newest step if shown. */
  async poll() {
    if (document.hidden) return;
    try {
      const {run, tag} = this.state;
      if (!run || !tag) return this.reload();
      const followNewest = this.isAtNewestStep() && !this.playTimer;
      const [{runs}, {steps}] = await Promise.all([this.api.runs(), this.api.steps(run, tag)]);
      this.runs = runs;
      const numbers = steps.map((s) => s.step);
      if (numbers.join() === this.steps.join()) return;
      this.tagSteps.clear();
      await this.refresh({reloadSteps: true, followNewest});
    } catch (error) {
      this.showError(error);
    }
  }

  async savePng() {
    if (!this.canvas) return this.showError(new Error("nothing to save: no view is drawn"));
    const {run, tag, step, head, view} = this.state;
    try {
      await downloadCanvas(this.canvas, safeFilename(["attention", run, tag, `step${step}`, `head-${head}`, view], "png"));
    } catch (error) {
      this.showError(error);
    }
  }
}
