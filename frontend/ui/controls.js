/**
 * The tab's controls: pickers (run filter, run, layer, example, head, view, colour map, scale, linear or log), the step
 * slider with play, reload, save (PNG, .npy, filmstrip) and the permalink, the info line and the error box. It shows
 * what it is given and reports what the user does through callbacks; it keeps no state.
 *
 * Example:
 *
 *   const controls = new Controls(container, {
 *     views: [{value: "head", label: "One head"}],
 *     set: (partial, options) => ..., stepAt: (index) => ..., moveStep: (delta) => ...,
 *     togglePlay: () => ..., reload: () => ..., save: () => ..., exportNpy: () => ..., filmstrip: () => ...,
 *   });
 *   controls.showSteps([0, 100, 200], 100);
 */

import {COLORMAP_NAMES} from "../lib/colormap.js";
import {element, fillSelect} from "./dom.js";
import {tokenLabel} from "../lib/tokens.js";
import {headLabel} from "../lib/groups.js";
import {filterRuns, MAX_RUN_FILTER} from "../lib/runfilter.js";

const SCALE_LABELS = {head: "per head", shared: "shared across heads", unit: "fixed 0–1"};
const NPY_TITLE = "Download the current head's matrix as a NumPy .npy file (float32, NaN = masked)";
const NPZ_TITLE = "Download what this pooled step stores of the current head as a NumPy .npz file: " +
  "block means and maxes with their token ranges, and every exact window (float32, NaN = masked)";

/** The run filter's text box and the status line beside it (matches, or why the filter is invalid). */
function runFilterBox() {
  const input = element("input", {
    id: "run-filter", type: "search", placeholder: "Filter runs (regex)", maxLength: MAX_RUN_FILTER,
    spellcheck: false, autocomplete: "off",
    title: "Regular expression the runs must match (case-insensitive, anywhere in the name), as TensorBoard's " +
           "run selector: narrows the run picker and the compared runs",
  });
  return [input, element("span", {id: "run-filter-status", className: "hint", "aria-live": "polite"})];
}

export class Controls {
  /** Appends the controls to `container`; `actions`: the callbacks of the example above. */
  constructor(container, actions) {
    const control = (label, input) => element("label", {className: "control"}, element("span", {}, label), input);
    [this.runFilter, this.runFilterStatus] = runFilterBox();
    this.runSelect = element("select", {id: "run-select", title: "Run"});
    this.tagSelect = element("select", {id: "tag-select", title: "Layer (tag)"});
    this.exampleSelect = element("select", {id: "example-select", title: "Probe example"});
    this.headSelect = element("select", {id: "head-select", title: "Head"});
    this.viewSelect = element("select", {id: "view-select", title: "View"});
    this.cmapSelect = element("select", {id: "cmap-select", title: "Colour map"});
    this.scaleSelect = element("select", {id: "scale-select", title: "Colour scale"});
    this.logSelect = element("select", {id: "log-select",
                                        title: "Linear colours, or a log scale with the legend in decades (long rows: weights about 1/T)"});
    fillSelect(this.logSelect, [{value: "linear", label: "linear"}, {value: "log", label: "log (decades)"}]);
    fillSelect(this.viewSelect, actions.views);
    fillSelect(this.cmapSelect, COLORMAP_NAMES.map((v) => ({value: v, label: v})));
    fillSelect(this.scaleSelect, Object.entries(SCALE_LABELS).map(([value, label]) => ({value, label})));
    this.slider = element("input", {id: "step-slider", type: "range", min: "0", max: "0", step: "1", value: "0",
                                    title: "Step (arrow keys move one logged step)"});
    this.stepLabel = element("span", {id: "step-label", className: "step-label"});
    this.playButton = element("button", {id: "play-button", type: "button", title: "Play through the steps"}, "▶ Play");
    this.reloadButton = element("button", {id: "reload-button", type: "button", title: "Reload runs and steps"}, "⟳ Reload");
    this.saveButton = element("button", {id: "save-button", type: "button", title: "Download the current view as PNG"}, "Save PNG");
    this.npyButton = element("button", {id: "export-npy", type: "button", title: NPY_TITLE}, "Save .npy");
    this.filmstripButton = element("button", {id: "filmstrip-button", type: "button",
                                              title: "Download the current head across the logged steps as one PNG"},
                                   "Filmstrip PNG");
    this.permalink = element("a", {id: "permalink", target: "_blank", rel: "noopener",
                                   title: "This view on a page of its own; the link reopens it"}, "Link to this view");

    const pickers = element("div", {className: "toolbar"},
      element("span", {className: "control"}, this.runFilter, this.runFilterStatus), control("Run", this.runSelect), control("Layer", this.tagSelect), control("Example", this.exampleSelect),
      control("Head", this.headSelect), control("View", this.viewSelect), control("Colours", this.cmapSelect),
      control("Scale", this.scaleSelect), control("Mapping", this.logSelect));
    const stepper = element("div", {className: "toolbar stepper"},
      this.playButton, element("span", {className: "control"}, element("span", {}, "Step"), this.slider), this.stepLabel,
      this.reloadButton, this.saveButton, this.npyButton, this.filmstripButton, this.permalink);
    this.info = element("div", {id: "info", className: "info"});
    this.errorBox = element("div", {id: "error", className: "error", role: "alert", hidden: true});
    container.append(pickers, stepper, this.info, this.errorBox);

    const {set} = actions;
    this.runFilter.addEventListener("input", () => set({runFilter: this.runFilter.value}));
    this.runSelect.addEventListener("change", () => set({run: this.runSelect.value, query: null, zoom: null}, {reloadSteps: true}));
    this.tagSelect.addEventListener("change", () => set({tag: this.tagSelect.value, query: null, zoom: null}, {reloadSteps: true}));
    this.exampleSelect.addEventListener("change", () => set({example: Number(this.exampleSelect.value)}));
    this.headSelect.addEventListener("change", () => {
      const value = this.headSelect.value;
      set({head: value === "mean" ? "mean" : Number(value)});
    });
    this.viewSelect.addEventListener("change", () => set({view: this.viewSelect.value}));
    this.cmapSelect.addEventListener("change", () => set({cmap: this.cmapSelect.value}));
    this.scaleSelect.addEventListener("change", () => set({scale: this.scaleSelect.value}));
    this.logSelect.addEventListener("change", () => set({log: this.logSelect.value === "log"}));
    this.slider.addEventListener("input", () => actions.stepAt(Number(this.slider.value)));
    this.playButton.addEventListener("click", () => actions.togglePlay());
    this.reloadButton.addEventListener("click", () => actions.reload());
    this.saveButton.addEventListener("click", () => actions.save());
    this.npyButton.addEventListener("click", () => actions.exportNpy());
    this.filmstripButton.addEventListener("click", () => actions.filmstrip());
    document.addEventListener("keydown", (event) => this.onKey(event, actions.moveStep));
  }

  /** Arrow keys move one logged step, except where they mean something else (pickers, inputs). */
  onKey(event, moveStep) {
    const target = event.target;
    if (target === this.slider) return;  // the range input moves itself
    if (target && (target.tagName === "SELECT" || target.tagName === "INPUT" || target.isContentEditable)) return;
    if (event.key === "ArrowRight") moveStep(1);
    else if (event.key === "ArrowLeft") moveStep(-1);
    else return;
    event.preventDefault();
  }

  /**
   * The run picker (the runs the run filter keeps, and the current run), the filter's status
   * and the layer picker; unreadable layers say so.
   */
  showRunsAndTags(runs, tags, state) {
    const names = runs.map((r) => r.run);
    const {runs: matching, error} = filterRuns(names, state.runFilter);
    const kept = new Set(matching);
    const listed = names.filter((name) => kept.has(name) || name === state.run);
    fillSelect(this.runSelect, listed.map((name) => ({value: name, label: name})), state.run);
    this.showRunFilter(state.runFilter, error, matching.length, names.length);
    fillSelect(this.tagSelect, tags.map((t) => ({
      value: t.tag, label: t.error ? `${t.tag} (unreadable)` : t.tag, title: t.error || t.description || t.tag,
    })), state.tag);
  }

  /** The filter box as the state has it (a link may set it), marked invalid with the reason. */
  showRunFilter(filter, error, matching, total) {
    if (this.runFilter.value !== filter) this.runFilter.value = filter;
    this.runFilter.classList.toggle("invalid", Boolean(error));
    this.runFilter.setAttribute("aria-invalid", error ? "true" : "false");
    this.runFilterStatus.classList.toggle("invalid-text", Boolean(error));
    this.runFilterStatus.textContent = error ? `${error}: no run matches`
      : filter ? `${matching} of ${total} runs match` : "";
  }

  /** The slider over `steps` at `step`, and its label. */
  showSteps(steps, step) {
    const index = Math.max(0, steps.indexOf(step));
    this.slider.max = String(Math.max(0, steps.length - 1));
    this.slider.value = String(index);
    this.slider.disabled = steps.length < 2;
    this.stepLabel.textContent = step === null ? "no steps" : `step ${step} (${index + 1} of ${steps.length})`;
  }

  /** The example and head pickers of a step `header`, and the state's view, colours and scale. */
  showPickers(header, state, {usesHead = true} = {}) {
    const [examples, heads] = header.shape;
    fillSelect(this.exampleSelect, Array.from({length: examples}, (_, b) => {
      const first = tokenLabel(header, "query", b, 0);
      return {value: b, label: header.query_tokens ? `${b}: ${first}…` : String(b)};
    }), state.example);
    fillSelect(this.headSelect, [{value: "mean", label: "mean of heads"},
      ...Array.from({length: heads}, (_, h) => ({value: h, label: headLabel(header, h)}))], state.head);
    this.headSelect.disabled = !usesHead;
    this.viewSelect.value = state.view;
    this.cmapSelect.value = state.cmap;
    this.scaleSelect.value = state.scale;
    this.logSelect.value = state.log ? "log" : "linear";
  }

  showPlaying(playing) {
    this.playButton.textContent = playing ? "⏸ Pause" : "▶ Play";
  }

  /**
   * Enables the .npy and filmstrip exports when the view shows one head's matrix; a `pooled`
   * step saves a .npz of its overview and exact windows instead of one matrix.
   */
  showExports(enabled, pooled = false) {
    this.npyButton.disabled = !enabled;
    this.npyButton.textContent = pooled ? "Save .npz" : "Save .npy";
    this.npyButton.title = pooled ? NPZ_TITLE : NPY_TITLE;
    this.filmstripButton.disabled = !enabled;
  }

  showPermalink(href) {
    this.permalink.href = href;
  }

  showInfo(text) {
    this.info.textContent = text;
  }

  /** Shows `error` (an Error or text) in the error box, or hides the box for none. */
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
}
