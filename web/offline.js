// s5vec offline support, page side: registers the service worker (sw.js) and talks to it.
//
//   import { S5Vec } from "./s5vec.js";
//   await S5Vec.offline.register();          // before the first S5Vec.open/runtime call
//   const db = await S5Vec.open({ manifest, portals });
//   await db.pin({ onProgress });            // keep every chunk of this index offline
//   await S5Vec.cache.usage();               // { chunks, bytes, pinnedBytes, budget, quota, persisted, ... }
//   await S5Vec.cache.clear();
//
// The service worker precaches the runtime (Pyodide, numpy, wheels, worker, bridge) and keeps S5
// chunks in a persistent, verified, LRU-bounded cache; after one visit, pages load and search with
// the network off. register() resolves once the service worker controls the page, so the worker
// started afterwards (and its chunk fetches) go through it. Releases: a new sw.js installs its whole
// precache next to the old one; register() switches to it with one reload when the runtime has not
// started yet, otherwise it calls onUpdate (default: switch on the next visit).
import { S5VecError } from "./s5vec.js"; // a cycle: used only at call time

const DEFAULT_CONTROL_TIMEOUT_MS = 120000;
const DEFAULT_UPDATE_CHECK_MS = 3000;

const state = { registration: null, release: null, reloading: false, runtimeStarted: () => false };

/** @internal s5vec.js tells us whether its worker is running (then a release switch waits). */
export function setRuntimeProbe(fn) {
  state.runtimeStarted = fn;
}

function supported() {
  return typeof navigator !== "undefined" && "serviceWorker" in navigator;
}

function waitForState(sw, wanted, timeoutMs) {
  return new Promise((resolve) => {
    if (sw.state === wanted || sw.state === "activated") return resolve(true);
    const timer = setTimeout(() => resolve(false), timeoutMs);
    sw.addEventListener("statechange", () => {
      if (sw.state === wanted || sw.state === "activated") {
        clearTimeout(timer);
        resolve(true);
      } else if (sw.state === "redundant") {
        clearTimeout(timer);
        resolve(false);
      }
    });
  });
}

function waitForController(timeoutMs) {
  return new Promise((resolve) => {
    if (navigator.serviceWorker.controller) return resolve(true);
    const timer = setTimeout(() => resolve(false), timeoutMs);
    navigator.serviceWorker.addEventListener("controllerchange", () => {
      clearTimeout(timer);
      resolve(true);
    }, { once: true });
  });
}

/** Send one message to the controlling (or active) service worker; resolves with its result. */
async function request(msg, onProgress) {
  if (!supported()) throw new S5VecError("OfflineUnavailableError", "this browser has no service workers");
  const reg = state.registration || (await navigator.serviceWorker.getRegistration());
  const sw = navigator.serviceWorker.controller || (reg && reg.active);
  if (!sw) {
    throw new S5VecError("OfflineUnavailableError",
      "no s5vec service worker is active for this page (call S5Vec.offline.register() first)");
  }
  const { port1, port2 } = new MessageChannel();
  return new Promise((resolve, reject) => {
    port1.onmessage = (ev) => {
      const m = ev.data || {};
      if (m.type === "progress") {
        if (typeof onProgress === "function") {
          const { type, ...progress } = m;
          try {
            onProgress(progress);
          } catch (e) {
            console.error(e);
          }
        }
        return;
      }
      port1.close();
      if (m.ok) resolve(m.result);
      else reject(new S5VecError(m.error?.name || "ServiceWorkerError", m.error?.message || "service worker error"));
    };
    sw.postMessage(msg, [port2]);
  });
}

/** Activate the waiting release and reload the page once it controls it. */
async function applyUpdate() {
  const reg = state.registration || (await navigator.serviceWorker.getRegistration());
  const waiting = reg && reg.waiting;
  if (!waiting) return false;
  state.reloading = true;
  navigator.serviceWorker.addEventListener("controllerchange", () => location.reload(), { once: true });
  waiting.postMessage({ type: "s5vec:skip-waiting" });
  return true;
}

export const offline = {
  /**
   * Register sw.js (default: next to s5vec.js) and wait until it controls the page.
   * Resolves { supported, controlled, release, persisted }; never rejects for lack of support.
   * opts: { url, scope, controlTimeoutMs, updateCheckMs, onUpdate(reg) }.
   */
  async register(opts = {}) {
    if (!supported()) return { supported: false, controlled: false, release: null, persisted: false };
    const url = new URL(opts.url ?? "./sw.js", opts.url ? document.baseURI : import.meta.url).href;
    const reg = await navigator.serviceWorker.register(url, opts.scope ? { scope: opts.scope } : undefined);
    state.registration = reg;
    let persisted = false;
    try {
      persisted = (await navigator.storage.persisted()) || (await navigator.storage.persist());
    } catch {
      /* no StorageManager (or not allowed): the cache is best-effort, evictable by the browser */
    }
    const timeoutMs = opts.controlTimeoutMs ?? DEFAULT_CONTROL_TIMEOUT_MS;
    const onReady = async () => {
      if (!navigator.serviceWorker.controller) return; // first install: nothing to switch from
      if (!state.runtimeStarted()) await applyUpdate();
      else if (typeof opts.onUpdate === "function") opts.onUpdate(reg);
    };
    // a release installed while an earlier page was open: switch now, before the runtime starts
    if (reg.waiting && navigator.serviceWorker.controller) {
      await onReady();
      if (state.reloading) return new Promise(() => {}); // the page is about to reload
    }
    reg.addEventListener("updatefound", () => {
      const sw = reg.installing;
      if (sw) waitForState(sw, "installed", 10 * 60000).then((ok) => ok && reg.waiting === sw && onReady());
    });
    // look for a new release now (the browser's own check after a navigation comes too late to switch
    // before the runtime starts); offline or slow: go on with the release we have
    if (navigator.serviceWorker.controller && !reg.installing && !reg.waiting) {
      const checkMs = opts.updateCheckMs ?? DEFAULT_UPDATE_CHECK_MS;
      await Promise.race([reg.update().catch(() => {}), new Promise((r) => setTimeout(r, checkMs))]);
    }
    // a new release installing: wait for all of it when the runtime has not started yet
    if (reg.installing && navigator.serviceWorker.controller && !state.runtimeStarted()) {
      const sw = reg.installing;
      if ((await waitForState(sw, "installed", timeoutMs)) && reg.waiting === sw) {
        await onReady();
        if (state.reloading) return new Promise(() => {});
      }
    }
    const controlled = await waitForController(timeoutMs);
    let release = null;
    if (controlled) {
      try {
        release = (await request({ type: "s5vec:version" })).release;
      } catch {
        /* an older or foreign service worker */
      }
    }
    state.release = release;
    return { supported: true, controlled, release, persisted };
  },

  /** Switch to a release that is installed and waiting (reloads the page); false when there is none. */
  applyUpdate,

  /** The release id register() found (null before it, or without a service worker). */
  current() {
    return state.release;
  },

  /** The release id of the controlling service worker (null without one). */
  async release() {
    if (!supported() || !navigator.serviceWorker.controller) return null;
    return (await request({ type: "s5vec:version" })).release;
  },
};

export const cache = {
  /** Chunk cache usage: { chunks, bytes, pinnedChunks, pinnedBytes, budget, quota, originUsage,
   * persisted, counters: { hits, misses, stored, rejected, evicted }, release }. */
  usage() {
    return request({ type: "s5vec:usage" });
  },
  /** Drop every cached chunk (pinned ones too; the runtime stays); returns the usage afterwards. */
  clear() {
    return request({ type: "s5vec:clear" });
  },
  /** Set the byte budget for unpinned chunks (evicts least-recently-used ones now if over). */
  setBudget(bytes) {
    return request({ type: "s5vec:budget", bytes });
  },
  /** @internal download (or keep) `chunks` from `portals` and pin them; used by db.pin(). */
  pin(chunks, portals, onProgress) {
    return request({ type: "s5vec:pin", chunks, portals }, onProgress);
  },
};
