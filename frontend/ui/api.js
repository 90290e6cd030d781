/**
 * Fetch helpers for the plugin's HTTP API (docs/http_api.md). URLs are relative ("./runs"), so
 * they resolve under the plugin base that TensorBoard's iframe page sets, path prefixes included.
 *
 * Example:
 *
 *   import {AttentionApi} from "./api.js";
 *   const api = new AttentionApi();
 *   const {runs} = await api.runs();
 *   const matrix = await api.matrix({run: "train", tag: "enc/l0", step: 100, example: 0, head: 2});
 */

import {decodeMatrix} from "../lib/decode.js";

/** An HTTP answer other than 200, with the server's `{"error": ...}` message. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** Query string of `params`: an object, or `[key, value]` pairs (a key may repeat); order kept. */
export function queryString(params) {
  const pairs = Array.isArray(params) ? params : Object.entries(params);
  return new URLSearchParams(pairs.map(([k, v]) => [k, String(v)])).toString();
}

/** A map that forgets its oldest entries beyond `capacity`. */
class Lru {
  constructor(capacity) {
    this.capacity = capacity;
    this.map = new Map();
  }
  get(key) {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }
  set(key, value) {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value);
  }
  delete(key) {
    this.map.delete(key);
  }
}

export class AttentionApi {
  /** `base`: the plugin route prefix ("./" inside TensorBoard's iframe page). */
  constructor(base = "./", {fetchImpl = (...args) => fetch(...args), cacheSize = 600} = {}) {
    this.base = base;
    this.fetch = fetchImpl;
    // Steps are immutable once written, so their headers and matrices can be cached.
    this.cache = new Lru(cacheSize);
  }

  url(route, params) {
    return this.base + route + (params ? "?" + queryString(params) : "");
  }

  async request(route, params) {
    const url = this.url(route, params);
    const response = await this.fetch(url, {credentials: "same-origin"});
    if (!response.ok) {
      let message = response.statusText;
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") message = body.error;
      } catch (_) {
        // not JSON: keep the status text
      }
      throw new ApiError(`${route}: HTTP ${response.status}: ${message}`, response.status);
    }
    return response;
  }

  async json(route, params) {
    return (await this.request(route, params)).json();
  }

  /** Memoises the promise of an immutable answer; failed requests are not kept. */
  cached(key, load) {
    let promise = this.cache.get(key);
    if (!promise) {
      promise = load();
      this.cache.set(key, promise);
      promise.catch(() => this.cache.delete(key));
    }
    return promise;
  }

  /** `{runs: [{run, tags: [{tag, description, max_step, shape, has_tokens, has_image, error}]}]}`. */
  runs() {
    return this.json("runs");
  }

  /** `{steps: [{step, wall_time}]}` ascending. Not cached: runs grow while training. */
  steps(run, tag) {
    return this.json("steps", {run, tag});
  }

  /** The step header: `{step, shape, query_tokens, key_tokens, image, reduced, ...}`. */
  step(run, tag, step) {
    const params = {run, tag, step};
    return this.cached("step?" + queryString(params), () => this.json("step", params));
  }

  /**
   * One decoded matrix `{rows, cols, values}` (head: an index or "mean"). For a pooled step
   * (long sequences) the head's overview `{rows: nq, cols: nk, values: means, maxes}`, or with
   * `window` the named stored window at full resolution.
   */
  matrix({run, tag, step, example, head, window = null}) {
    const params = {run, tag, step, example, head};
    if (window !== null && window !== undefined) params.window = window;
    return this.cached("matrix?" + queryString(params), async () => {
      const response = await this.request("matrix", params);
      return decodeMatrix(await response.arrayBuffer());
    });
  }

  /**
   * Per-head statistics of every logged step of a tag (`/stats`):
   * `{steps, heads, stats: {entropy: [[per head] per step], ...}, errors}`. Not cached here:
   * runs grow (the server caches per step).
   */
  stats(run, tag) {
    return this.json("stats", {run, tag});
  }

  /** Attention rollout through `tags` (bottom layer first) at one step, decoded `{rows, cols, values}`. */
  rollout({run, tags, step, example, residual = true}) {
    const params = [["run", run], ...tags.map((tag) => ["tag", tag]), ["step", step], ["example", example],
                    ["residual", residual ? 1 : 0]];
    return this.cached("rollout?" + queryString(params), async () => {
      const response = await this.request("rollout", params);
      return decodeMatrix(await response.arrayBuffer());
    });
  }

  /**
   * Head health of every layer of a run over its logged steps (`/health`): `{layers, heads, steps,
   * series, roles, alarms, emergence, changes, groups}` (docs/http_api.md). Not cached here: runs grow.
   */
  health(run) {
    return this.json("health", {run});
  }

  /**
   * Attention mass every head of every layer puts on the key positions `keys` of one example at
   * `step` of `tag`, mean over queries (`/mass`); with `overSteps`, at every logged step.
   */
  mass({run, tag, step, example, keys, overSteps = false}) {
    const params = {run, tag, step, example, keys: keys.join(",")};
    if (overSteps) params.over_steps = 1;
    if (!overSteps) return this.cached("mass?" + queryString(params), () => this.json("mass", params));
    return this.json("mass", params);
  }

  /** URL of the `.npy` file of one matrix (`/export?...&format=npy`). */
  exportUrl({run, tag, step, example, head}) {
    return this.url("export", {run, tag, step, example, head, format: "npy"});
  }

  /** URL of the filmstrip PNG of one head across the logged steps (`/filmstrip`). */
  filmstripUrl({run, tag, example, head}) {
    return this.url("filmstrip", {run, tag, example, head});
  }

  /** URL of an example's probe image (PNG). */
  imageUrl({run, tag, step, example}) {
    return this.url("image", {run, tag, step, example});
  }
}

/** Runs `tasks` (functions returning promises) with at most `limit` in flight; results in order. */
export async function mapLimited(items, limit, task) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index], index);
    }
  }
  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker));
  return results;
}
