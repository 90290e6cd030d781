/**
 * View "model" (3): every layer (tag) of the run x every head at the chosen step, each layer at
 * its newest logged step not after it (labelled "@step" when that is another step); clicking a
 * tile opens that layer's head large.
 *
 * Example (the view protocol, frontend/README.md; the app calls it):
 *
 *   const data = await model.load(state, source);
 *   const {canvas, legend} = model.render(host, data, state, {width, lut, tooltip, set});
 */

import {mapLimited} from "../ui/api.js";
import {latestStepAtOrBefore} from "../lib/state.js";
import {renderTiles, tilesLegend} from "./heads.js";

export default {
  key: "model",
  label: "Model overview",
  async load(state, source) {
    const run = source.run(state.run);
    const tags = run.tags.filter((t) => !t.error);
    const rows = await mapLimited(tags, 4, async (t) => {
      const step = latestStepAtOrBefore(await source.stepsOf(run.run, t.tag), state.step);
      const header = await source.header(run.run, t.tag, step);
      const example = Math.min(state.example, header.shape[0] - 1);
      const matrices = await mapLimited(Array.from({length: header.shape[1]}, (_, h) => h), 6,
        (h) => source.matrix({run: run.run, tag: t.tag, step, example, head: h}).catch(() => null));
      return {tag: t.tag, step, header, example, matrices};
    });
    return {rows};
  },
  render(host, {rows}, state, ui) {
    const columns = Math.max(1, ...rows.map((r) => r.matrices.length));
    const tiles = [];
    const owners = [];
    for (const row of rows) {
      for (let h = 0; h < columns; h++) {
        tiles.push({label: h < row.matrices.length ? `h${h}` : "", matrix: row.matrices[h] || null,
                    blank: h >= row.matrices.length, selected: row.tag === state.tag && h === state.head});
        owners.push({row, head: h});
      }
    }
    const rowLabels = rows.map((r) => (r.step === state.step ? r.tag : `${r.tag} @${r.step}`));
    const {canvas} = renderTiles(host, {
      tiles, lut: ui.lut, scale: state.scale, width: ui.width, columns, rowLabels, minTile: 24, maxTile: 96, log: state.log,
      headerFor: (i) => owners[i].row.header, exampleFor: (i) => owners[i].row.example,
    }, {tooltip: ui.tooltip, pick: (index) => {
      const {row, head} = owners[index];
      if (head < row.matrices.length) ui.set({view: "head", tag: row.tag, head}, {reloadSteps: true});
    }});
    const keys = Math.max(1, ...rows.map((r) => r.header.shape[3]));
    return {canvas, legend: tilesLegend(ui.lut, state.scale, tiles.map((t) => t.matrix), state.log ? keys : 0)};
  },
};
