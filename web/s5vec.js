// s5vec browser bridge: search s5vec indexes stored on S5 portals from a web page.
//
//   import { S5Vec } from "./s5vec.js";
//   const db = await S5Vec.open({ manifest: cid, portals: ["https://portal.example"] });
//   const hits = await db.search(vector, { k: 10, filter: { channel: "news" } });
//   await db.close();
//
// All databases on a page share one module web worker running Pyodide + numpy + the s5vec package.
// The worker starts on the first call (open/runtime); its options (workerUrl, pyodideIndexUrl,
// startTimeoutMs) are taken from that first call, later calls reuse the running worker.
import { MSG, OPS, STEPS } from "./protocol.js";

export { STEPS };

const DEFAULT_START_TIMEOUT_MS = 60000;
const pageBase = () => globalThis.document?.baseURI ?? globalThis.location?.href;

/** Every error the bridge rejects with. `name` is the Python error class name (DimensionError,
 * IntegrityError, ...) or a bridge name (StartupTimeoutError, StartupError, WorkerError, ClosedError). */
export class S5VecError extends Error {
  constructor(name, message, extra) {
    super(message);
    this.name = name;
    if (extra) Object.assign(this, extra);
  }
}

// ------------------------------------------------------------------ the shared worker

let rt = null; // { worker, ready, pending, nextId, step, info, listeners }

function failRuntime(state, error) {
  if (rt === state) rt = null; // the next call starts a fresh worker
  for (const { reject } of state.pending.values()) reject(error);
  state.pending.clear();
  state.rejectReady(error);
  try {
    state.worker.terminate();
  } catch {
    /* already gone */
  }
}

function startRuntime(opts = {}) {
  const workerUrl = new URL(opts.workerUrl ?? "./worker.js", opts.workerUrl ? pageBase() : import.meta.url).href;
  const indexUrl = new URL(opts.pyodideIndexUrl ?? "./pyodide/", opts.pyodideIndexUrl ? pageBase() : import.meta.url).href;
  const timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;

  const state = { pending: new Map(), nextId: 1, step: null, info: null, listeners: new Set() };
  if (typeof opts.onProgress === "function") state.listeners.add(opts.onProgress);
  state.ready = new Promise((resolve, reject) => {
    state.resolveReady = resolve;
    state.rejectReady = reject;
  });
  state.ready.catch(() => {}); // observed by callers; avoid unhandled-rejection noise

  const worker = new Worker(workerUrl, { type: "module", name: "s5vec" });
  state.worker = worker;
  const t0 = performance.now();

  const timer = setTimeout(() => {
    const where = state.step ?? "loading worker.js";
    failRuntime(state, new S5VecError(
      "StartupTimeoutError",
      `s5vec worker start-up timed out after ${timeoutMs} ms in step "${where}" (Pyodide from ${indexUrl}). ` +
        `If it hangs in load-pyodide, check that the server sends .wasm files as "application/wasm" ` +
        `and .mjs/.js files as "text/javascript" (a wrong wasm MIME type makes loadPyodide hang forever).`,
      { step: where },
    ));
  }, timeoutMs);

  worker.addEventListener("message", (ev) => {
    const msg = ev.data;
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case MSG.PROGRESS:
        if (msg.phase === "start") state.step = msg.step;
        for (const fn of state.listeners) {
          try {
            fn({ step: msg.step, phase: msg.phase, ms: msg.ms });
          } catch (e) {
            console.error(e);
          }
        }
        break;
      case MSG.READY:
        clearTimeout(timer);
        state.step = null;
        state.info = {
          numpyVersion: msg.runtime.numpy,
          s5vecVersion: msg.runtime.s5vec,
          pythonVersion: msg.runtime.python,
          platform: msg.runtime.platform,
          pyodideVersion: msg.runtime.pyodide,
          indexURL: msg.runtime.indexURL,
          workerStartupMs: msg.runtime.startupMs,
          startupMs: performance.now() - t0,
          steps: msg.runtime.steps,
        };
        state.resolveReady(state.info);
        break;
      case MSG.STARTUP_FAILED:
        clearTimeout(timer);
        failRuntime(state, new S5VecError(
          msg.error?.name === "IntegrityError" ? "IntegrityError" : "StartupError",
          `s5vec worker start-up failed in step "${msg.step}": ${msg.error?.name}: ${msg.error?.message}`,
          { step: msg.step },
        ));
        break;
      case MSG.REPLY: {
        const p = state.pending.get(msg.id);
        if (!p) return;
        state.pending.delete(msg.id);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new S5VecError(msg.error?.name || "InternalError", msg.error?.message || "unknown error"));
        break;
      }
      default:
        break;
    }
  });
  worker.addEventListener("error", (ev) => {
    ev.preventDefault?.();
    clearTimeout(timer);
    const where = state.step ? ` (during start-up step "${state.step}")` : "";
    failRuntime(state, new S5VecError("WorkerError", `s5vec worker error${where}: ${ev.message || "failed to load " + workerUrl}`));
  });
  worker.addEventListener("messageerror", () => {
    failRuntime(state, new S5VecError("WorkerError", "s5vec worker sent a message that could not be deserialized"));
  });

  worker.postMessage({ type: MSG.INIT, pyodideIndexUrl: indexUrl });
  return state;
}

function runtimeState(opts) {
  if (!rt) rt = startRuntime(opts);
  else if (opts && typeof opts.onProgress === "function") rt.listeners.add(opts.onProgress);
  return rt;
}

async function call(op, args, transfer = [], opts) {
  const state = runtimeState(opts);
  await state.ready;
  return new Promise((resolve, reject) => {
    const id = state.nextId++;
    state.pending.set(id, { resolve, reject });
    try {
      state.worker.postMessage({ type: MSG.CALL, id, op, args }, transfer);
    } catch (err) {
      state.pending.delete(id);
      reject(new S5VecError("InvalidArgumentError", `cannot send ${op} request: ${err.message}`));
    }
  });
}

function toFloat32(vector) {
  // Always a private copy: its buffer is transferred to the worker (zero-copy hand-off, caller's array untouched).
  if (vector instanceof Float32Array) return new Float32Array(vector);
  if (Array.isArray(vector) || ArrayBuffer.isView(vector)) {
    const out = new Float32Array(vector.length);
    for (let i = 0; i < vector.length; i++) {
      const x = vector[i];
      out[i] = typeof x === "number" || typeof x === "bigint" ? Number(x) : NaN;
    }
    return out;
  }
  throw new S5VecError("InvalidVectorError", "vector must be a Float32Array or an array of numbers");
}

// ------------------------------------------------------------------ public API

export class S5Vec {
  /** @private use S5Vec.open */
  constructor(handle, info) {
    this.handle = handle;
    this.info = info;
    this.lastStats = null;
    this._closed = false;
    this._searchSeq = 0;
    this._statsSeq = 0;
  }

  /** Start (or reuse) the shared worker and return runtime information. */
  static async runtime(opts = {}) {
    return runtimeState(opts).ready;
  }

  /** Open the index whose manifest CID is `opts.manifest`, fetched from `opts.portals`. */
  static async open(opts) {
    if (!opts || typeof opts !== "object") throw new S5VecError("InvalidArgumentError", "S5Vec.open needs an options object");
    const args = { manifest: opts.manifest, portals: opts.portals };
    if (opts.cacheBytes !== undefined) args.cacheBytes = opts.cacheBytes;
    const res = await call(OPS.OPEN, args, [], opts);
    return new S5Vec(res.handle, res.info);
  }

  /** k nearest neighbours of `vector`: [{id, score, metadata}], best first. */
  async search(vector, options = {}) {
    if (this._closed) throw new S5VecError("ClosedError", "database is closed");
    const vec = toFloat32(vector);
    const args = { handle: this.handle, vector: vec };
    if (options.k !== undefined) args.k = options.k;
    if (options.filter !== undefined) args.filter = options.filter;
    if (options.params !== undefined) args.params = options.params;
    const n = ++this._searchSeq;
    const res = await call(OPS.SEARCH, args, [vec.buffer]);
    if (n > this._statsSeq) {
      // with overlapping searches, stats of the most recently started one win
      this._statsSeq = n;
      this.lastStats = res.stats;
    }
    return res.hits;
  }

  /** Text search: [{id, score, metadata}], best first. `options.mode`: "hybrid" (default: embedding +
   * keyword, fused), "vector" or "keyword". Empty or word-less text rejects with EmptyQueryError. */
  async searchText(text, options = {}) {
    if (this._closed) throw new S5VecError("ClosedError", "database is closed");
    const args = { handle: this.handle, text };
    for (const key of ["k", "filter", "mode", "params"]) if (options[key] !== undefined) args[key] = options[key];
    const n = ++this._searchSeq;
    const res = await call(OPS.SEARCH_TEXT, args);
    if (n > this._statsSeq) {
      this._statsSeq = n;
      this.lastStats = res.stats;
    }
    return res.hits;
  }

  /** A record's metadata without a search: {id, metadata}; UnknownIdError if the index does not hold it. */
  async get(id) {
    if (this._closed) throw new S5VecError("ClosedError", "database is closed");
    return call(OPS.GET, { handle: this.handle, id });
  }

  /** Cumulative statistics of this database (fetches, cache). */
  async stats() {
    if (this._closed) throw new S5VecError("ClosedError", "database is closed");
    return call(OPS.STATS, { handle: this.handle });
  }

  /** Release the database in the worker. Idempotent. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    await call(OPS.CLOSE, { handle: this.handle });
  }

  get closed() {
    return this._closed;
  }
}

export default S5Vec;
