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
//
// The bridge checks nothing about a request's content: the query (vector, k, filter, params) and
// "is this database closed" are checked once, in Python, which rejects with a typed error. The one
// exception is the shape limit of protocol.js's checkRequest (depth, size): a request that deep
// could not even be received by the worker, so it is rejected before postMessage.
import { MSG, OPS, STEPS, checkRequest } from "./protocol.js";

export { STEPS };

const DEFAULT_START_TIMEOUT_MS = 60000;
const pageBase = () => globalThis.document?.baseURI ?? globalThis.location?.href;

/** Every error the bridge rejects with. `name` is the Python error class name (DimensionError,
 * IntegrityError, ...) or a bridge name (StartupTimeoutError, StartupError, WorkerError). */
export class S5VecError extends Error {
  constructor(name, message, extra) {
    super(message);
    this.name = name;
    if (extra) Object.assign(this, extra);
  }
}

// ------------------------------------------------------------------ the worker runtime

/** One worker: start-up (INIT -> PROGRESS* -> READY | STARTUP_FAILED), then calls matched to
 * replies by id. Every call awaits `ready`; once the worker failed, calls reject with that
 * failure without posting to it. */
class WorkerRuntime {
  constructor(opts) {
    this.workerUrl = new URL(opts.workerUrl ?? "./worker.js", opts.workerUrl ? pageBase() : import.meta.url).href;
    this.indexUrl = new URL(opts.pyodideIndexUrl ?? "./pyodide/", opts.pyodideIndexUrl ? pageBase() : import.meta.url).href;
    this.timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    this.pending = new Map(); // call id -> {resolve, reject}
    this.nextId = 1;
    this.step = null;         // start-up step in progress
    this.failure = null;      // the S5VecError the worker died with
    this.listeners = new Set();
    this.addProgressListener(opts.onProgress);
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed by callers; avoid unhandled-rejection noise
  }

  addProgressListener(fn) {
    if (typeof fn === "function") this.listeners.add(fn);
  }

  start() {
    this.t0 = performance.now();
    this.worker = new Worker(this.workerUrl, { type: "module", name: "s5vec" });
    this.worker.addEventListener("message", (ev) => this.onMessage(ev.data));
    this.worker.addEventListener("error", (ev) => this.onWorkerError(ev));
    this.worker.addEventListener("messageerror", () =>
      this.fail(new S5VecError("WorkerError", "s5vec worker sent a message that could not be deserialized")));
    this.timer = setTimeout(() => this.onStartTimeout(), this.timeoutMs);
    this.worker.postMessage({ type: MSG.INIT, pyodideIndexUrl: this.indexUrl });
    return this;
  }

  /** Post one rpc call; resolves to its result, rejects with an S5VecError. */
  async call(op, args, transfer = []) {
    const bad = checkRequest(args);
    if (bad) throw new S5VecError(bad.name, bad.message);
    await this.ready;
    if (this.failure) throw this.failure;
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      try {
        this.worker.postMessage({ type: MSG.CALL, id, op, args }, transfer);
      } catch (err) {
        this.pending.delete(id);
        reject(new S5VecError("InvalidArgumentError", `cannot send ${op} request: ${err.message}`));
      }
    });
  }

  // -- messages from the worker

  onMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === MSG.PROGRESS) this.onProgress(msg);
    else if (msg.type === MSG.READY) this.onReady(msg.runtime);
    else if (msg.type === MSG.STARTUP_FAILED) this.onStartupFailed(msg);
    else if (msg.type === MSG.REPLY) this.onReply(msg);
  }

  onProgress({ step, phase, ms }) {
    if (phase === "start") this.step = step;
    for (const fn of this.listeners) {
      try {
        fn({ step, phase, ms });
      } catch (e) {
        console.error(e);
      }
    }
  }

  onReady(runtime) {
    clearTimeout(this.timer);
    this.step = null;
    this.resolveReady({
      numpyVersion: runtime.numpy,
      s5vecVersion: runtime.s5vec,
      pythonVersion: runtime.python,
      platform: runtime.platform,
      pyodideVersion: runtime.pyodide,
      indexURL: runtime.indexURL,
      ops: runtime.ops,
      workerStartupMs: runtime.startupMs,
      startupMs: performance.now() - this.t0,
      steps: runtime.steps,
    });
  }

  onStartupFailed({ step, error }) {
    this.fail(new S5VecError(
      error?.name === "IntegrityError" ? "IntegrityError" : "StartupError",
      `s5vec worker start-up failed in step "${step}": ${error?.name}: ${error?.message}`,
      { step },
    ));
  }

  onReply({ id, ok, result, error }) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (ok) p.resolve(result);
    else p.reject(new S5VecError(error?.name || "InternalError", error?.message || "unknown error"));
  }

  // -- failures

  onStartTimeout() {
    const where = this.step ?? "loading worker.js";
    this.fail(new S5VecError(
      "StartupTimeoutError",
      `s5vec worker start-up timed out after ${this.timeoutMs} ms in step "${where}" (Pyodide from ${this.indexUrl}). ` +
        `If it hangs in load-pyodide, check that the server sends .wasm files as "application/wasm" ` +
        `and .mjs/.js files as "text/javascript" (a wrong wasm MIME type makes loadPyodide hang forever).`,
      { step: where },
    ));
  }

  onWorkerError(ev) {
    ev.preventDefault?.();
    const where = this.step ? ` (during start-up step "${this.step}")` : "";
    this.fail(new S5VecError("WorkerError", `s5vec worker error${where}: ${ev.message || "failed to load " + this.workerUrl}`));
  }

  /** Reject everything waiting and stop the worker; the next S5Vec.open starts a fresh one. */
  fail(error) {
    if (this.failure) return;
    this.failure = error;
    clearTimeout(this.timer);
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    this.rejectReady(error);
    try {
      this.worker.terminate();
    } catch {
      /* already gone */
    }
  }
}

let shared = null; // the page's WorkerRuntime

function sharedRuntime(opts = {}) {
  if (!shared || shared.failure) shared = new WorkerRuntime(opts).start();
  else shared.addProgressListener(opts.onProgress);
  return shared;
}

/** A number[] (or other array-like) as a private Float32Array whose buffer can be transferred
 * (the caller's array is untouched); anything else is passed on for Python to reject. */
function toTransferable(vector) {
  if (!(Array.isArray(vector) || ArrayBuffer.isView(vector))) return { value: vector, transfer: [] };
  const out = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) {
    const x = vector[i];
    out[i] = typeof x === "number" || typeof x === "bigint" ? Number(x) : NaN;
  }
  return { value: out, transfer: [out.buffer] };
}

// ------------------------------------------------------------------ public API

export class S5Vec {
  /** @private use S5Vec.open */
  constructor(runtime, handle, info) {
    this._runtime = runtime; // the worker that holds this database
    this.handle = handle;
    this.info = info;
    this.lastStats = null;
    this._closed = false;
    this._searchSeq = 0;
    this._statsSeq = 0;
  }

  /** Start (or reuse) the shared worker and return runtime information. */
  static async runtime(opts = {}) {
    return sharedRuntime(opts).ready;
  }

  /** Open the index whose manifest CID is `opts.manifest`, fetched from `opts.portals`. */
  static async open(opts) {
    if (!opts || typeof opts !== "object") throw new S5VecError("InvalidArgumentError", "S5Vec.open needs an options object");
    const runtime = sharedRuntime(opts);
    const args = { manifest: opts.manifest, portals: opts.portals };
    if (opts.cacheBytes !== undefined) args.cacheBytes = opts.cacheBytes;
    if (opts.timeoutMs !== undefined) args.timeoutMs = opts.timeoutMs; // deadline per blob, all portals included
    const res = await runtime.call(OPS.open, args);
    return new S5Vec(runtime, res.handle, res.info);
  }

  /** k nearest neighbours of `vector`: [{id, score, metadata}], best first. */
  async search(vector, options = {}) {
    const { value, transfer } = toTransferable(vector);
    const args = { handle: this.handle, vector: value };
    if (options.k !== undefined) args.k = options.k;
    if (options.filter !== undefined) args.filter = options.filter;
    if (options.params !== undefined) args.params = options.params;
    const n = ++this._searchSeq;
    const res = await this._runtime.call(OPS.search, args, transfer);
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
    const args = { handle: this.handle, text };
    for (const key of ["k", "filter", "mode", "params"]) if (options[key] !== undefined) args[key] = options[key];
    const n = ++this._searchSeq;
    const res = await this._runtime.call(OPS.searchText, args);
    if (n > this._statsSeq) {
      this._statsSeq = n;
      this.lastStats = res.stats;
    }
    return res.hits;
  }

  /** A record without a search: {id, metadata, timestamp}; UnknownIdError if the index does not hold it. */
  async get(id) {
    return this._runtime.call(OPS.get, { handle: this.handle, id });
  }

  /** Cumulative statistics of this database (fetches, cache). */
  async stats() {
    return this._runtime.call(OPS.stats, { handle: this.handle });
  }

  /** Release the database in the worker. Idempotent. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    if (this._runtime.failure) return; // the worker, and the database with it, is gone
    await this._runtime.call(OPS.close, { handle: this.handle });
  }

  get closed() {
    return this._closed;
  }
}

export default S5Vec;
