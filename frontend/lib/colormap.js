/**
 * Perceptually uniform colour maps as 256-entry lookup tables, and the loop that paints a
 * matrix of weights into RGBA pixels.
 *
 * The maps are matplotlib's viridis and magma (by Stéfan van der Walt and Nathaniel J. Smith,
 * public domain / CC0), stored as every 8th entry of the 256-entry tables (indices 0, 8, ...,
 * 248, 255) and linearly interpolated back to 256 entries; the interpolation error is below
 * one 8-bit level.
 *
 * Example:
 *
 *   import {colormap, colorAt} from "./colormap.js";
 *   const lut = colormap("viridis");
 *   colorAt(lut, 0.5);  // [33, 145, 140]
 */

import {maxValue} from "./decode.js";

const STOPS = {
  viridis: [
    [0.267004, 0.004874, 0.329415], [0.277018, 0.050344, 0.375715], [0.282327, 0.094955, 0.417331],
    [0.282884, 0.135920, 0.453427], [0.278826, 0.175490, 0.483397], [0.270595, 0.214069, 0.507052],
    [0.258965, 0.251537, 0.524736], [0.244972, 0.287675, 0.537260], [0.229739, 0.322361, 0.545706],
    [0.214298, 0.355619, 0.551184], [0.199430, 0.387607, 0.554642], [0.185556, 0.418570, 0.556753],
    [0.172719, 0.448791, 0.557885], [0.160665, 0.478540, 0.558115], [0.149039, 0.508051, 0.557250],
    [0.137770, 0.537492, 0.554906], [0.127568, 0.566949, 0.550556], [0.120565, 0.596422, 0.543611],
    [0.120638, 0.625828, 0.533488], [0.132268, 0.655014, 0.519661], [0.157851, 0.683765, 0.501686],
    [0.196571, 0.711827, 0.479221], [0.246070, 0.738910, 0.452024], [0.304148, 0.764704, 0.419943],
    [0.369214, 0.788888, 0.382914], [0.440137, 0.811138, 0.340967], [0.515992, 0.831158, 0.294279],
    [0.595839, 0.848717, 0.243329], [0.678489, 0.863742, 0.189503], [0.762373, 0.876424, 0.137064],
    [0.845561, 0.887322, 0.099702], [0.926106, 0.897330, 0.104071], [0.993248, 0.906157, 0.143936],
  ],
  magma: [
    [0.001462, 0.000466, 0.013866], [0.013708, 0.011771, 0.068667], [0.039608, 0.031090, 0.133515],
    [0.074257, 0.052017, 0.202660], [0.113094, 0.065492, 0.276784], [0.159018, 0.068354, 0.352688],
    [0.211718, 0.061992, 0.418647], [0.265447, 0.060237, 0.461840], [0.316654, 0.071690, 0.485380],
    [0.366012, 0.090314, 0.497960], [0.414709, 0.110431, 0.504662], [0.463508, 0.129893, 0.507652],
    [0.512831, 0.148179, 0.507648], [0.562866, 0.165368, 0.504692], [0.613617, 0.181811, 0.498536],
    [0.664915, 0.198075, 0.488836], [0.716387, 0.214982, 0.475290], [0.767398, 0.233705, 0.457755],
    [0.816914, 0.255895, 0.436461], [0.863320, 0.283729, 0.412403], [0.904281, 0.319610, 0.388137],
    [0.937221, 0.364929, 0.368567], [0.960949, 0.418323, 0.359630], [0.976690, 0.476226, 0.364466],
    [0.986700, 0.535582, 0.382210], [0.992785, 0.594891, 0.410283], [0.996096, 0.653659, 0.446213],
    [0.997325, 0.711848, 0.488154], [0.996898, 0.769591, 0.534892], [0.995131, 0.827052, 0.585701],
    [0.992440, 0.884330, 0.640099], [0.989434, 0.941470, 0.697519], [0.987053, 0.991438, 0.749504],
  ],
};

/** Names of the available colour maps, the default first. */
export const COLORMAP_NAMES = Object.freeze(Object.keys(STOPS));

/** Colour of masked positions (padding, causal future): a neutral grey no map contains. */
export const MASKED_RGB = Object.freeze([200, 200, 200]);

function stopIndex(i) {
  return i === STOPS.viridis.length - 1 ? 255 : i * 8;
}

function buildLut(stops) {
  const lut = new Uint8Array(256 * 3);
  for (let s = 0; s + 1 < stops.length; s++) {
    const from = stopIndex(s);
    const to = stopIndex(s + 1);
    for (let i = from; i <= to; i++) {
      const t = (i - from) / (to - from);
      for (let c = 0; c < 3; c++) {
        const value = stops[s][c] + (stops[s + 1][c] - stops[s][c]) * t;
        lut[i * 3 + c] = Math.round(value * 255);
      }
    }
  }
  return lut;
}

const LUTS = new Map();

/** The 256x3 Uint8Array lookup table of the named map; throws for an unknown name. */
export function colormap(name) {
  if (!Object.prototype.hasOwnProperty.call(STOPS, name)) {
    throw new Error(`unknown colour map ${JSON.stringify(name)}; known: ${COLORMAP_NAMES.join(", ")}`);
  }
  if (!LUTS.has(name)) LUTS.set(name, buildLut(STOPS[name]));
  return LUTS.get(name);
}

/** Lookup-table index (0..255) of `value` on a scale from 0 to `vmax`, clamped. */
export function colorIndex(value, vmax) {
  const t = vmax > 0 ? value / vmax : 0;
  if (!(t > 0)) return 0;
  if (t >= 1) return 255;
  return Math.round(t * 255);
}

/** `[r, g, b]` of position `t` in [0, 1] of the map (clamped). */
export function colorAt(lut, t) {
  const i = colorIndex(t, 1);
  return [lut[i * 3], lut[i * 3 + 1], lut[i * 3 + 2]];
}

/** CSS colour string of `value` on a 0..vmax scale; masked grey for NaN. */
export function cssColor(lut, value, vmax) {
  if (Number.isNaN(value)) return `rgb(${MASKED_RGB.join(",")})`;
  const i = colorIndex(value, vmax);
  return `rgb(${lut[i * 3]},${lut[i * 3 + 1]},${lut[i * 3 + 2]})`;
}

/**
 * Writes one RGBA pixel per value into `out` (a Uint8ClampedArray of 4 * values.length):
 * weights through the map on a 0..vmax scale, NaN (masked) as MASKED_RGB. `log`: a number of
 * decades for a log scale from vmax / 10**log up to vmax (see logIndex), 0 for linear.
 */
export function paintValues(values, vmax, lut, out, {log = 0} = {}) {
  if (out.length < values.length * 4) throw new RangeError("pixel buffer too small");
  if (log > 0) return paintLog(values, vmax, log, lut, out);
  const k = vmax > 0 ? 255 / vmax : 0;
  for (let i = 0, p = 0; i < values.length; i++, p += 4) {
    const v = values[i];
    let index = MASKED_INDEX;
    if (v === v) {
      index = Math.round(v * k);
      if (index > 255) index = 255;
      else if (!(index > 0)) index = 0;
    }
    putPixel(out, p, lut, index);
  }
  return out;
}

const MASKED_INDEX = -1;  // lookup index of a masked (NaN) value: drawn MASKED_RGB

/** Writes the RGBA pixel at byte `p` of `out`: `lut` entry `index`, or MASKED_RGB. */
function putPixel(out, p, lut, index) {
  if (index === MASKED_INDEX) {
    out[p] = MASKED_RGB[0];
    out[p + 1] = MASKED_RGB[1];
    out[p + 2] = MASKED_RGB[2];
  } else {
    const c = index * 3;
    out[p] = lut[c];
    out[p + 1] = lut[c + 1];
    out[p + 2] = lut[c + 2];
  }
  out[p + 3] = 255;
}

/**
 * Top of the colour scale (vmax) for each of several matrices: each its own maximum ("head"),
 * the maximum over all of them ("shared") or 1 ("unit"). Missing matrices (null) count as 0.
 */
export function tileScales(matrices, scale) {
  const maxes = matrices.map((m) => (m ? maxValue(m.values) : 0));
  if (scale === "unit") return maxes.map(() => 1);
  if (scale === "shared") {
    const shared = Math.max(0, ...maxes) || 1;
    return maxes.map(() => shared);
  }
  return maxes.map((v) => v || 1);
}

// ColorBrewer RdBu (Cynthia Brewer, Apache-2.0), reversed: blue for less weight, red for more,
// near-white for no change. The 11 class colours, linearly interpolated to 256 entries.
const DIVERGING_STOPS = [
  [5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31],
];

let divergingTable = null;

/** The 256x3 lookup table of the diverging map (index 0 = most negative, 255 = most positive). */
export function divergingLut() {
  if (!divergingTable) {
    divergingTable = new Uint8Array(256 * 3);
    const last = DIVERGING_STOPS.length - 1;
    for (let i = 0; i < 256; i++) {
      const position = (i / 255) * last;
      const s = Math.min(last - 1, Math.floor(position));
      const t = position - s;
      for (let c = 0; c < 3; c++) {
        divergingTable[i * 3 + c] = Math.round(DIVERGING_STOPS[s][c] + (DIVERGING_STOPS[s + 1][c] - DIVERGING_STOPS[s][c]) * t);
      }
    }
  }
  return divergingTable;
}

/** Diverging lookup index (0..255) of `value` on a scale from -limit to +limit, clamped. */
export function divergingIndex(value, limit) {
  if (!(limit > 0) || !(value === value)) return 128;
  const index = Math.round((value / limit + 1) * 127.5);
  return index < 0 ? 0 : index > 255 ? 255 : index;
}

/**
 * Writes one RGBA pixel per value into `out`: differences through the diverging map on a
 * -limit..+limit scale (0 near-white), NaN (masked in either matrix) as MASKED_RGB.
 */
export function paintDiverging(values, limit, lut, out) {
  if (out.length < values.length * 4) throw new RangeError("pixel buffer too small");
  for (let i = 0, p = 0; i < values.length; i++, p += 4) {
    const v = values[i];
    putPixel(out, p, lut, v !== v ? MASKED_INDEX : divergingIndex(v, limit));
  }
  return out;
}

// ---- log colour scale ---------------------------------------------------------------------------
// Weights of a long row are about 1/T (5e-4 at 2048 tokens): on a linear scale up to a sink's
// weight of 1 they are all the bottom colour. A log scale spans `decades` decades below vmax.

/**
 * Decades a log scale spans for rows of `length` keys: down to a tenth of the uniform weight
 * 1/length below vmax, at least 2 and at most 6 (faithful codes resolve 1e-6 of a head's
 * largest weight).
 *
 *   logDecades(1, 2048) === 5;  logDecades(1, 10) === 2
 */
export function logDecades(vmax, length) {
  const uniform = Math.log10(Math.max(1, length) * (vmax > 0 ? vmax : 1));
  return Math.max(2, Math.min(6, Math.ceil(uniform) + 1));
}

/** Lookup-table index (0..255) of `value` on a log scale of `decades` decades up to `vmax`, clamped (0 for 0). */
export function logIndex(value, vmax, decades) {
  if (!(value > 0) || !(vmax > 0)) return 0;
  const t = (Math.log10(value / vmax) + decades) / decades;
  if (!(t > 0)) return 0;
  if (t >= 1) return 255;
  return Math.round(t * 255);
}

function paintLog(values, vmax, decades, lut, out) {
  // index = (log(v) - log(floor)) * k, with one Math.log per value.
  const k = 255 / (decades * Math.LN10);
  const logFloor = vmax > 0 ? Math.log(vmax) - decades * Math.LN10 : 0;
  for (let i = 0, p = 0; i < values.length; i++, p += 4) {
    const v = values[i];
    let index = MASKED_INDEX;
    if (v === v) {
      index = v > 0 && vmax > 0 ? Math.round((Math.log(v) - logFloor) * k) : 0;
      if (index > 255) index = 255;
      else if (!(index > 0)) index = 0;
    }
    putPixel(out, p, lut, index);
  }
  return out;
}

/** A weight as a legend tick writes it: "1", "0.1", "0.01", "1e-3", ... (3 significant digits otherwise). */
export function tickLabel(value) {
  if (value === 0) return "0";
  const power = Math.log10(value);
  if (Math.abs(power - Math.round(power)) < 1e-9) {
    const p = Math.round(power);
    return p >= -2 ? String(Number(value.toFixed(Math.max(0, -p)))) : `1e${p}`;
  }
  return value < 0.01 ? value.toExponential(2) : value.toPrecision(3);
}

/**
 * Ticks of a log legend of `decades` decades up to `vmax`: `[{t, label}]` at every power of ten
 * in [vmax / 10**decades, vmax] (t in [0, 1] along the bar), plus vmax itself at t = 1 (in
 * place of a power of ten closer than a fifth of the bar to it).
 *
 *   logTicks(1, 3);  // [{t: 0, label: "1e-3"}, {t: 1/3, label: "0.01"}, {t: 2/3, label: "0.1"}, {t: 1, label: "1"}]
 */
export function logTicks(vmax, decades) {
  if (!(vmax > 0)) return [{t: 0, label: "0"}];
  const top = Math.log10(vmax);
  const ticks = [];
  for (let p = Math.ceil(top - decades - 1e-9); p <= Math.floor(top + 1e-9); p++) {
    ticks.push({t: (p - (top - decades)) / decades, label: tickLabel(10 ** p)});
  }
  // vmax itself at the bar's end, unless a decade tick sits so close that the labels would touch.
  const last = ticks[ticks.length - 1];
  if (!last || last.t < 0.999) {
    if (last && last.t > 0.8) ticks.pop();
    ticks.push({t: 1, label: tickLabel(vmax)});
  }
  return ticks;
}
