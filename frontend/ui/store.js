/**
 * Where the view state lives: the iframe's URL hash (a link reopens the view) and localStorage
 * (reopening the tab restores the last view). The encoding itself is state.js; this module
 * only syncs it with the browser. See frontend/README.md, "Sharing a view".
 *
 * Example:
 *
 *   const store = new StateStore();
 *   store.restore();                 // from the hash, else from localStorage
 *   store.merge({step: 100});
 *   const permalink = store.save();  // into the hash and localStorage; the link to this view
 *   store.watchHash(() => redraw(store.state));
 */

import {COLORMAP_NAMES} from "../lib/colormap.js";
import {DEFAULT_STATE, decodeState, encodeState, mergeState} from "../lib/state.js";

export const STORAGE_KEY = "tb-attention:view-state";

function storage() {
  try {
    return window.localStorage;
  } catch (_) {
    return null;  // storage disabled for this frame
  }
}

function decode(text) {
  return decodeState(text, {colormaps: COLORMAP_NAMES});
}

export class StateStore {
  constructor() {
    this.state = {...DEFAULT_STATE};
  }

  /** Takes the state from the hash, else from localStorage (keys left out keep their values). */
  restore() {
    let partial = decode(location.hash);
    if (!Object.keys(partial).length) {
      const saved = storage()?.getItem(STORAGE_KEY);
      if (saved) partial = decode(saved);
    }
    this.merge(partial);
  }

  /** Applies `partial` to the state; returns the new state. */
  merge(partial) {
    this.state = mergeState(this.state, partial);
    return this.state;
  }

  /** Writes the state into the hash and localStorage; returns the URL of this view. */
  save() {
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
    return location.href;
  }

  /** Calls `onChange()` after an edited hash replaced the state (keys left out mean their defaults). */
  watchHash(onChange) {
    window.addEventListener("hashchange", () => {
      this.state = mergeState(DEFAULT_STATE, decode(location.hash));
      onChange();
    });
  }
}
