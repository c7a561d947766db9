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
// S5Vec.open({ workers: n }) opens the database in a pool of n workers (pool.js): the shared one
// plus n - 1 more, started at once with the shared one's workerUrl and Pyodide, shared by every
// database that asks for a pool of that size or more, and terminated when the last one closes.
//
// The bridge checks nothing about a request's content: the query (vector, k, filter, params) and
// "is this database closed" are checked once, in Python, which rejects with a typed error. The one
// exception is the shape limit of protocol.js's checkRequest (depth, size): a request that deep
// could not even be received by the worker, so it is rejected before postMessage.
import { MSG, OPS, STEPS, checkRequest } from "./protocol.js";
import { cache, offline, setRuntimeProbe } from "./offline.js";
import * as journal from "./edits.js";
import * as registry from "./pointer.js";
import { Pool, checkWorkers, workerCap, MAX_WORKERS } from "./pool.js";

export { STEPS, cache, offline, MAX_WORKERS };

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
  constructor(opts, name = "s5vec") {
    this.name = name;
    this.workerUrl = new URL(opts.workerUrl ?? "./worker.js", opts.workerUrl ? pageBase() : import.meta.url).href;
    this.indexUrl = new URL(opts.pyodideIndexUrl ?? "./pyodide/", opts.pyodideIndexUrl ? pageBase() : import.meta.url).href;
    this.timeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
    this.pending = new Map(); // call id -> {resolve, reject, onProgress}
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
    this.worker = new Worker(this.workerUrl, { type: "module", name: this.name });
    this.worker.addEventListener("message", (ev) => this.onMessage(ev.data));
    this.worker.addEventListener("error", (ev) => this.onWorkerError(ev));
    this.worker.addEventListener("messageerror", () =>
      this.fail(new S5VecError("WorkerError", "s5vec worker sent a message that could not be deserialized")));
    this.timer = setTimeout(() => this.onStartTimeout(), this.timeoutMs);
    this.worker.postMessage({ type: MSG.INIT, pyodideIndexUrl: this.indexUrl });
    return this;
  }

  /** Post one rpc call; resolves to its result, rejects with an S5VecError. */
  async call(op, args, transfer = [], onProgress = undefined) {
    const bad = checkRequest(args);
    if (bad) throw new S5VecError(bad.name, bad.message);
    await this.ready;
    if (this.failure) throw this.failure;
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject, onProgress });
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

  onProgress({ id, progress, step, phase, ms }) {
    if (id !== undefined) {
      // progress of one call (a commit's uploads)
      const p = this.pending.get(id);
      if (p && typeof p.onProgress === "function") {
        try {
          p.onProgress(progress);
        } catch (e) {
          console.error(e);
        }
      }
      return;
    }
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
    const swRelease = offline.current();
    if (swRelease && runtime.release && swRelease !== runtime.release) {
      console.warn(`s5vec: the worker runs release ${runtime.release} but the service worker serves ${swRelease}`);
    }
    this.resolveReady({
      numpyVersion: runtime.numpy,
      s5vecVersion: runtime.s5vec,
      pythonVersion: runtime.python,
      platform: runtime.platform,
      pyodideVersion: runtime.pyodide,
      release: runtime.release ?? null,
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

  /** Stop the worker (the last database of a pool closed): calls still waiting reject with ClosedError. */
  terminate() {
    this.fail(new S5VecError("ClosedError", `s5vec worker ${this.name} was terminated (its databases are closed)`));
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
setRuntimeProbe(() => shared !== null && !shared.failure);

function sharedRuntime(opts = {}) {
  if (!shared || shared.failure) shared = new WorkerRuntime(opts).start();
  else shared.addProgressListener(opts.onProgress);
  return shared;
}

// The pool's other workers, by position (extras[i] is worker i + 1): { runtime, refs }. A database
// opened with { workers: n } holds a reference to extras[0 .. n-2]; the last release terminates one.
const extras = [];

/** The runtimes of a pool of n: the shared one, then n - 1 extra ones (started now when missing). */
function poolRuntimes(n, opts) {
  const first = sharedRuntime(opts);
  const out = [first];
  for (let i = 1; i < n; i++) {
    const onProgress = typeof opts.onProgress === "function" ? (ev) => opts.onProgress({ ...ev, worker: i }) : undefined;
    let slot = extras[i - 1];
    if (!slot || slot.runtime.failure) {
      const runtime = new WorkerRuntime({ workerUrl: first.workerUrl, pyodideIndexUrl: first.indexUrl,
        startTimeoutMs: opts.startTimeoutMs ?? first.timeoutMs, onProgress }, `s5vec-${i}`).start();
      slot = extras[i - 1] = { runtime, refs: 0 };
    } else slot.runtime.addProgressListener(onProgress);
    slot.refs++;
    out.push(slot.runtime);
  }
  return out;
}

/** Give back a pool's extra runtimes; one no database holds any more is terminated. */
function releaseRuntimes(runtimes) {
  for (const rt of runtimes.slice(1)) {
    const i = extras.findIndex((slot) => slot && slot.runtime === rt);
    if (i < 0) continue; // it failed and was replaced: already stopped
    if (--extras[i].refs <= 0) {
      extras[i] = null;
      rt.terminate();
    }
  }
}

/** A number[] (or other array-like) as a private Float32Array whose buffer can be transferred
 * (the caller's array is untouched); anything else is passed on for Python to reject. */
function onlineEvent() {
  return new Promise((resolve) => globalThis.addEventListener("online", () => resolve(), { once: true }));
}

function toTransferable(vector) {
  if (!(Array.isArray(vector) || ArrayBuffer.isView(vector))) return { value: vector, transfer: [] };
  const out = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) {
    const x = vector[i];
    out[i] = typeof x === "number" || typeof x === "bigint" ? Number(x) : NaN;
  }
  return { value: out, transfer: [out.buffer] };
}

/** Many vectors of one length as one Float32Array (count x dim, back to back: one transfer);
 * anything else goes as it is, for Python to reject with the right error. */
function toTransferableBatch(vectors, dim) {
  if (!Array.isArray(vectors) || vectors.length === 0) return { value: vectors, count: undefined, transfer: [] };
  if (!vectors.every((v) => (Array.isArray(v) || ArrayBuffer.isView(v)) && v.length === dim)) {
    return { value: vectors.map((v) => (Array.isArray(v) || ArrayBuffer.isView(v) ? Array.from(v, Number) : v)),
             count: undefined, transfer: [] };
  }
  const out = new Float32Array(vectors.length * dim);
  vectors.forEach((v, i) => {
    for (let j = 0; j < dim; j++) {
      const x = v[j];
      out[i * dim + j] = typeof x === "number" || typeof x === "bigint" ? Number(x) : NaN;
    }
  });
  return { value: out, count: vectors.length, transfer: [out.buffer] };
}

// ------------------------------------------------------------------ public API

export class S5Vec {
  /** @private use S5Vec.open */
  constructor(pool, info) {
    this._pool = pool; // the workers that hold this database (pool.js); pool.primary takes the writes
    this.info = info;
    this.lastStats = null;
    this.openStats = null;
    this._closed = false;
    this._searchSeq = 0;
    this._statsSeq = 0;
    this._writing = 0; // writes in flight (reads go to the primary meanwhile)
  }

  /** The database's handle in the primary worker. */
  get handle() {
    return this._pool.primary.handle;
  }

  /** The primary worker (the one that takes the writes; the only one with workers: 1). */
  get _runtime() {
    return this._pool.primary.runtime;
  }

  /** How many workers serve this database (the `workers` option of open). */
  get workers() {
    return this._pool.size;
  }

  /** The largest `workers` value open accepts on this page (navigator.hardwareConcurrency, at most MAX_WORKERS). */
  static maxWorkers() {
    return workerCap();
  }

  /** Reads go to the primary alone while it holds edits the other workers do not have. */
  get _primaryOnly() {
    return this._writing > 0 || (this._pending?.ops ?? 0) > 0;
  }

  /** One read through the pool; resolves its result, with lastStats set from it (newest start wins). */
  async _read(op, args, transfer) {
    const n = ++this._searchSeq;
    const { result, member } = await this._pool.read(op, args, { transfer, primaryOnly: this._primaryOnly });
    if (result && result.stats && n > this._statsSeq) {
      // with overlapping searches, stats of the most recently started one win
      this._statsSeq = n;
      this.lastStats = this._pool.size > 1 ? { ...result.stats, worker: member.index } : result.stats;
    }
    return result;
  }

  async _write(op, args, transfer = [], onProgress = undefined) {
    this._writing++;
    try {
      return await this._pool.primary.call(op, args, transfer, onProgress);
    } finally {
      this._writing--;
    }
  }

  /** Start (or reuse) the shared worker and return runtime information. */
  static async runtime(opts = {}) {
    return sharedRuntime(opts).ready;
  }

  /** Open the index whose manifest CID is `opts.manifest` (or that the signed `opts.pointer` names),
   * fetched from `opts.portals`; edits journaled for it and not committed are applied again.
   * `opts.workers` (default 1, at most S5Vec.maxWorkers()): open it in a pool of that many workers
   * (pool.js), started side by side; rejects with the first start-up or open failure of any of them. */
  static async open(opts) {
    if (!opts || typeof opts !== "object") throw new S5VecError("InvalidArgumentError", "S5Vec.open needs an options object");
    if (opts.pointer !== undefined && opts.manifest !== undefined) {
      throw new S5VecError("InvalidArgumentError", "give manifest or pointer, not both");
    }
    const n = checkWorkers(opts.workers);
    const runtimes = poolRuntimes(n, opts); // all start now, side by side
    const pool = new Pool(runtimes);
    let res;
    let resolved = null;
    try {
      if (opts.pointer !== undefined) resolved = await registry.resolve(opts.pointer, opts.portals);
      const args = { manifest: resolved ? resolved.manifest : opts.manifest, portals: opts.portals };
      if (opts.cacheBytes !== undefined) args.cacheBytes = opts.cacheBytes;
      if (opts.timeoutMs !== undefined) args.timeoutMs = opts.timeoutMs; // deadline per blob, all portals included
      if (opts.authToken !== undefined) args.authToken = opts.authToken;
      res = await pool.open(args);
    } catch (e) {
      releaseRuntimes(runtimes);
      throw e;
    }
    const db = new S5Vec(pool, res.info);
    // bytes/chunks this open downloaded (stats() counts everything the worker's store for these
    // portals fetched, for every database opened on them); null from a worker that predates it
    db.openStats = res.opened || null;
    db._portals = [...opts.portals];
    db._openArgs = { cacheBytes: opts.cacheBytes, timeoutMs: opts.timeoutMs, authToken: opts.authToken };
    db.pointer = resolved ? { pointer: resolved.pointer, revision: resolved.revision } : null;
    await db._restorePending();
    return db;
  }

  // ---------------------------------------------------------------- the signed pointer

  /** Opened by pointer: move to the newest verified revision. Resolves true when it moved. Rejects
   * InvalidArgumentError with pending edits (commit them first) or when not opened by pointer. */
  async refresh() {
    if (this._closed) throw new S5VecError("ClosedError", "database is closed");
    if (!this.pointer) throw new S5VecError("InvalidArgumentError", "refresh() needs a database opened with { pointer }");
    const r = await registry.resolve(this.pointer.pointer, this._portals);
    if (r.revision <= this.pointer.revision && r.manifest === this.info.manifest) return false;
    if (this._pending.ops) {
      throw new S5VecError("InvalidArgumentError",
        `pointer moved to revision ${r.revision}, but this database has ${this._pending.ops} uncommitted edits: commit them first`);
    }
    const args = { manifest: r.manifest, portals: this._portals };
    for (const [k, v] of Object.entries(this._openArgs)) if (v !== undefined) args[k] = v;
    let res;
    this._writing++;
    try {
      res = await this._runtime.call(OPS.open, args);
      // the old handle is closed once the reads still running on it are done
      this._pool.primary.swap(res.handle, r.manifest);
      this.info = res.info;
      this.pointer = { pointer: r.pointer, revision: r.revision };
      this._pool.moveTo(r.manifest); // the other workers follow, and serve again once they hold it
      await this._restorePending();
    } finally {
      this._writing--;
    }
    return true;
  }

  // ---------------------------------------------------------------- writes

  /** Replay the edits journaled for this manifest (made before a reload or a crash, not committed). */
  async _restorePending() {
    this._pending = { ops: 0, upserted: 0, deleted: 0 };
    let ops = [];
    try {
      ops = await journal.load(this.info.manifest);
    } catch (e) {
      console.warn("s5vec: pending edits could not be read from IndexedDB:", e);
      return;
    }
    const kept = [];
    for (const op of ops) {
      try {
        const r = op.op === "upsert"
          ? await this._pool.primary.call(OPS.upsert, { records: op.records })
          : await this._pool.primary.call(OPS.delete, { ids: op.ids });
        this.info = r.info;
        kept.push(op);
      } catch (e) {
        console.warn(`s5vec: a pending ${op.op} no longer applies and is dropped: ${e.name}: ${e.message}`);
      }
    }
    this._pending = journal.summarize(kept);
  }

  /** Edits applied since the last commit (kept in IndexedDB until committed): { ops, upserted, deleted }. */
  get pendingEdits() {
    return { ...this._pending };
  }

  async _edit(op, args, entry) {
    const base = this.info.manifest;
    this._writing++; // until the journal counts it: reads stay on the primary
    try {
      return await this._editJournaled(base, op, args, entry);
    } finally {
      this._writing--;
    }
  }

  async _editJournaled(base, op, args, entry) {
    const res = await this._pool.primary.call(op, args);
    this.info = res.info;
    try {
      await journal.append(base, entry);
      this._pending = journal.summarize(await journal.load(base));
    } catch (e) {
      console.warn("s5vec: the edit is applied but could not be saved in IndexedDB:", e);
      const s = journal.summarize([entry]);
      this._pending = { ops: this._pending.ops + 1, upserted: this._pending.upserted + s.upserted,
        deleted: this._pending.deleted + s.deleted };
    }
    return res.count;
  }

  /** Insert or replace records [{ id, vector, metadata?, timestamp? }]; resolves the number of records.
   * Checked in full before anything changes (DimensionError, InvalidVectorError, InvalidArgumentError). */
  async upsert(records) {
    const plain = Array.isArray(records)
      ? records.map((r) => (r && typeof r === "object" && r.vector && typeof r.vector.length === "number"
        ? { ...r, vector: Array.from(r.vector, Number) } : r))
      : records;
    return this._edit(OPS.upsert, { records: plain }, { op: "upsert", records: plain });
  }

  /** Delete records by id; every id must exist (UnknownIdError, and nothing is deleted). */
  async delete(ids) {
    return this._edit(OPS.delete, { ids }, { op: "delete", ids: Array.isArray(ids) ? [...ids] : ids });
  }

  /** Upload the edits as a new snapshot naming this one as its parent: only changed chunks are
   * uploaded (in parallel), the manifest last. Resolves { manifest, parent, uploaded, skipped,
   * bytesUploaded }; onProgress gets { done, total, bytes, totalBytes, uploaded, skipped }.
   * Rejects NothingToCommitError, AuthError (no/refused token: pass authToken to open or here),
   * QuotaError, PortalError (then this database and its pending edits are unchanged: retry later,
   * or use commitWhenOnline). */
  async commit(options = {}) {
    const base = this.info.manifest;
    const args = {};
    if (options.authToken !== undefined) args.authToken = options.authToken;
    const before = await journal.load(base).then((ops) => ops.length, () => 0);
    const res = await this._write(OPS.commit, args, [], options.onProgress);
    this.info = res.info;
    this._pool.moveTo(res.info.manifest); // the other workers reopen the new snapshot before serving again
    let later = [];
    try {
      // edits journaled while the uploads ran are not in the new snapshot: they move to its journal
      later = (await journal.load(base)).slice(before);
      for (const op of later) await journal.append(res.manifest, op);
      await journal.drop(base);
    } catch (e) {
      console.warn("s5vec: committed, but the journal could not be moved on:", e);
    }
    this._pending = journal.summarize(later);
    const { info, ...result } = res;
    if (options.key !== undefined) {
      // sign the new manifest into the pointer (the chunks and manifest are on the portals already)
      const key = typeof options.key === "string" ? await registry.signingKey(options.key) : options.key;
      const authToken = options.authToken ?? this._openArgs?.authToken;
      let published;
      try {
        published = await registry.publish(key, result.manifest, this._portals, { authToken });
      } catch (e) {
        e.commit = result; // committed (the new manifest is on the portals); only the pointer did not move
        throw e;
      }
      result.pointer = { pointer: published.pointer, revision: published.revision };
      if (!this.pointer || this.pointer.pointer === published.pointer) this.pointer = result.pointer;
    }
    return result;
  }

  /** commit(), waiting for the network when it is down: retries after each "online" event until the
   * commit succeeds or fails for a reason the network cannot fix (auth, quota, nothing to commit). */
  async commitWhenOnline(options = {}) {
    for (;;) {
      if (globalThis.navigator && navigator.onLine === false) await onlineEvent();
      try {
        return await this.commit(options);
      } catch (e) {
        if (e.name !== "PortalError") throw e;
        await onlineEvent();
      }
    }
  }

  /** Keep every chunk of this index (and its manifest) in the service worker's persistent cache,
   * pinned: exempt from LRU eviction until S5Vec.cache.clear(). Resolves { chunks, bytes, downloaded,
   * downloadedBytes }; onProgress gets { done, total, bytes, totalBytes, downloaded, downloadedBytes }. */
  async pin(options = {}) {
    const { chunks } = await this._pool.primary.call(OPS.chunks, {});
    return cache.pin(chunks, this._portals, options.onProgress);
  }

  /** k nearest neighbours of `vector`: [{id, score, metadata}], best first. */
  async search(vector, options = {}) {
    const { value, transfer } = toTransferable(vector);
    const args = { vector: value };
    if (options.k !== undefined) args.k = options.k;
    if (options.filter !== undefined) args.filter = options.filter;
    if (options.params !== undefined) args.params = options.params;
    return (await this._read(OPS.search, args, transfer)).hits;
  }

  /** The k nearest neighbours of every vector in `vectors`, answered together in the worker (one
   * plan and fetch per round for all of them, matrix operations where the index has them):
   * an array of hit arrays, in order, equal to searching them one by one. `lastStats` then covers
   * the whole batch (plus `queries`). With a pool, a batch of 16 or more is split into contiguous
   * parts answered by several workers at once (results joined in order; `lastStats` sums the parts,
   * with `workers` = how many answered). */
  async searchBatch(vectors, options = {}) {
    const dim = this.info && this.info.dim;
    const { value, count, transfer } = toTransferableBatch(vectors, dim);
    const args = { vectors: value };
    if (count !== undefined) args.count = count;
    if (options.k !== undefined) args.k = options.k;
    if (options.filter !== undefined) args.filter = options.filter;
    if (options.params !== undefined) args.params = options.params;
    const n = ++this._searchSeq;
    const flat = count !== undefined ? value : null;
    const res = await this._pool.searchBatch(args, flat, count, dim, { transfer, primaryOnly: this._primaryOnly });
    if (n > this._statsSeq) {
      this._statsSeq = n;
      this.lastStats = res.stats;
    }
    return res.results;
  }

  /** Text search: [{id, score, metadata}], best first. `options.mode`: "hybrid" (default: embedding +
   * keyword, fused), "vector" or "keyword". Empty or word-less text rejects with EmptyQueryError. */
  async searchText(text, options = {}) {
    const args = { text };
    for (const key of ["k", "filter", "mode", "params"]) if (options[key] !== undefined) args[key] = options[key];
    return (await this._read(OPS.searchText, args)).hits;
  }

  /** A record without a search: {id, metadata, timestamp}; UnknownIdError if the index does not hold it. */
  async get(id) {
    return (await this._pool.read(OPS.get, { id }, { primaryOnly: this._primaryOnly })).result;
  }

  /** Cumulative statistics of this database (fetches, cache). With a pool: summed over its workers,
   * each worker's own in `workers`. */
  async stats() {
    return this._pool.stats();
  }

  /** Release the database in its workers. Idempotent. The pool's extra workers that no other open
   * database uses are terminated; the page's shared worker stays (as with workers: 1). */
  async close() {
    if (this._closed) return;
    this._closed = true;
    try {
      await this._pool.close(); // a dead primary: the database is gone with it, nothing to release
    } finally {
      releaseRuntimes(this._pool.members.map((m) => m.runtime));
    }
  }

  get closed() {
    return this._closed;
  }
}

/** Signing keys for pointers: S5Vec.signingKey(name?) -> { name, pointer } (created once, kept in
 * IndexedDB, private key non-extractable); S5Vec.resolvePointer(pointer, portals) -> { revision, manifest }. */
S5Vec.signingKey = async (name) => {
  const k = await registry.signingKey(name);
  return k;
};
S5Vec.resolvePointer = (pointer, portals) => registry.resolve(pointer, portals);
/** Offline support (service worker registration, releases): see offline.js. */
S5Vec.offline = offline;
/** The service worker's persistent chunk cache: usage(), clear(), setBudget(bytes). */
S5Vec.cache = cache;

export default S5Vec;
