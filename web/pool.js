// s5vec worker pool: one database opened in n workers (S5Vec.open({ workers: n })).
//
// Why: one worker answers one query at a time (Pyodide is single-threaded); a page with more cores
// can answer n at once, or split one big searchBatch n ways. Each worker holds its own Pyodide and
// its own copy of the open index (manifest, centroids, HNSW part); the chunks they download are
// shared through the service worker's persistent chunk cache (sw.js, chunk-cache.js), which also
// makes concurrent downloads of one chunk by two workers share one request. Without a service worker
// each worker downloads and caches on its own (see README).
//
// Rules (the pool is invisible to results):
// - member 0, the primary, is the page's shared worker (the one a workers: 1 database uses); writes
//   (upsert, delete, commit, the journal replay), pin and refresh go to it;
// - reads (search, searchBatch, searchText, get) go to the least busy member that holds the
//   database's current manifest; while the database has uncommitted edits or a write is running,
//   reads go to the primary (it alone holds the edits), exactly as with one worker;
// - after a commit or refresh the other members open the new manifest in the background and serve
//   again only once they hold it (until then the primary serves); a failed reopen is retried later;
// - a member that dies (worker error) is skipped; a read that was running on it is retried once on
//   another member (reads have no side effects); a dead primary fails every call with its error;
// - a batch of at least 2 x SPLIT_MIN queries is split into contiguous parts, one per free member,
//   and the results are joined in order; lastStats then sums the parts (ms, rounds: the slowest part;
//   `parts`: each part's worker, queries and ms).
import { OPS } from "./protocol.js";
import { S5VecError } from "./s5vec.js"; // a cycle: used only at call time

/** Upper bound of the `workers` option whatever the machine (each worker holds its own Pyodide). */
export const MAX_WORKERS = 8;
/** Smallest part a searchBatch is split into. */
export const SPLIT_MIN = 8;
/** A member whose reopen failed is tried again after this long. */
const RESYNC_DELAY_MS = 2000;

/** The largest `workers` this page accepts: navigator.hardwareConcurrency, at most MAX_WORKERS. */
export function workerCap() {
  const hc = Math.floor(Number(globalThis.navigator?.hardwareConcurrency) || 1);
  return Math.max(1, Math.min(MAX_WORKERS, hc));
}

/** The validated `workers` option (default 1); InvalidArgumentError for anything else. */
export function checkWorkers(value) {
  if (value === undefined) return 1;
  const cap = workerCap();
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > cap) {
    let shown;
    try {
      shown = typeof value === "string" ? JSON.stringify(value) : String(value);
    } catch {
      shown = typeof value;
    }
    throw new S5VecError("InvalidArgumentError",
      `workers must be an integer from 1 to ${cap} (navigator.hardwareConcurrency, at most ${MAX_WORKERS}), got ${shown}`);
  }
  return value;
}

/** One worker of the pool and the database handle it holds. */
class Member {
  constructor(runtime, index) {
    this.runtime = runtime;
    this.index = index;
    this.handle = null;    // the database in this worker
    this.manifest = null;  // the manifest that handle holds
    this.syncing = null;   // promise of a reopen in progress
    this.retryAt = 0;      // after a failed reopen: not before this time
    this.uses = new Map(); // handle -> calls in flight on it
    this.retired = new Set(); // old handles to close once idle
  }

  get alive() {
    return !this.runtime.failure;
  }

  get busy() {
    return this.runtime.pending.size;
  }

  /** One call on this member's database handle. */
  async call(op, args, transfer = [], onProgress = undefined) {
    const handle = this.handle;
    this.uses.set(handle, (this.uses.get(handle) ?? 0) + 1);
    try {
      return await this.runtime.call(op, { handle, ...args }, transfer, onProgress);
    } finally {
      const left = this.uses.get(handle) - 1;
      if (left > 0) this.uses.set(handle, left);
      else {
        this.uses.delete(handle);
        if (this.retired.has(handle)) this.closeHandle(handle);
      }
    }
  }

  /** Hold `handle` (at `manifest`) from now on; the old handle is closed once its calls are done. */
  swap(handle, manifest) {
    const old = this.handle;
    this.handle = handle;
    this.manifest = manifest;
    if (old === null || old === handle) return;
    if (this.uses.has(old)) this.retired.add(old);
    else this.closeHandle(old);
  }

  closeHandle(handle) {
    this.retired.delete(handle);
    if (this.alive) this.runtime.call(OPS.close, { handle }).catch(() => {});
  }
}

/** Sum of stats objects: numbers added (`ms` and `rounds`: the largest, the parts ran side by side),
 * nested objects added key by key, anything else taken from the first. */
export function mergeStats(list) {
  const out = {};
  for (const s of list) {
    for (const [k, v] of Object.entries(s || {})) {
      if (typeof v === "number") {
        out[k] = k === "ms" || k === "rounds" ? Math.max(out[k] ?? v, v) : (out[k] ?? 0) + v;
      } else if (v && typeof v === "object" && !Array.isArray(v)) {
        out[k] = mergeStats([out[k], v]);
      } else if (!(k in out)) out[k] = v;
    }
  }
  return out;
}

export class Pool {
  /** @param runtimes WorkerRuntimes, the primary first. */
  constructor(runtimes) {
    this.members = runtimes.map((rt, i) => new Member(rt, i));
    this.target = null;   // the manifest every member should hold
    this.openArgs = null; // open args (portals, cacheBytes, timeoutMs, authToken), for reopens
    this.turn = 0;        // rotates ties between equally busy members
    this.closed = false;
  }

  get primary() {
    return this.members[0];
  }

  get size() {
    return this.members.length;
  }

  /** Open `openArgs.manifest` in every member at once. Rejects (with the primary's error, else the
   * first) when any member fails to start or open; the handles that did open are closed again. */
  async open(openArgs) {
    const settled = await Promise.allSettled(this.members.map((m) => m.runtime.call(OPS.open, openArgs)));
    const failed = settled.findIndex((s) => s.status === "rejected");
    if (failed >= 0) {
      settled.forEach((s, i) => {
        if (s.status === "fulfilled") this.members[i].closeHandle(s.value.handle);
      });
      throw settled[0].status === "rejected" ? settled[0].reason : settled[failed].reason;
    }
    settled.forEach((s, i) => this.members[i].swap(s.value.handle, openArgs.manifest));
    this.openArgs = { ...openArgs };
    delete this.openArgs.manifest;
    this.target = openArgs.manifest;
    return settled[0].value;
  }

  /** Every member should now hold `manifest` (the primary does already: a commit or refresh). */
  moveTo(manifest) {
    this.primary.manifest = manifest;
    this.target = manifest;
    this.resync();
  }

  /** Start reopening the members that do not hold the target manifest (in the background). */
  resync() {
    if (this.closed) return;
    const now = Date.now();
    for (const m of this.members.slice(1)) {
      if (m.alive && m.manifest !== this.target && !m.syncing && now >= m.retryAt) m.syncing = this.reopen(m);
    }
  }

  async reopen(m) {
    try {
      while (!this.closed && m.alive && m.manifest !== this.target) {
        const target = this.target;
        const res = await m.runtime.call(OPS.open, { ...this.openArgs, manifest: target });
        if (this.closed) {
          m.closeHandle(res.handle);
          break;
        }
        m.swap(res.handle, target);
      }
    } catch (e) {
      m.retryAt = Date.now() + RESYNC_DELAY_MS;
      if (m.alive) console.warn(`s5vec: worker ${m.index} could not open the new manifest (retried later): ${e.name}: ${e.message}`);
    } finally {
      m.syncing = null;
    }
  }

  /** Members that may answer a read now. */
  readers(primaryOnly) {
    if (primaryOnly || this.closed || this.size === 1) return [this.primary];
    this.resync();
    return this.members.filter((m) => m === this.primary ||
      (m.alive && m.handle !== null && m.manifest === this.target && !m.syncing));
  }

  /** The least busy of `list` (ties rotate, so sequential reads spread over the pool). */
  pick(list) {
    let best = null;
    for (let j = 0; j < list.length; j++) {
      const m = list[(this.turn + j) % list.length];
      if (best === null || m.busy < best.busy) best = m;
    }
    this.turn = (this.turn + 1) % Math.max(list.length, 1);
    return best;
  }

  /** One read: resolves { result, member }. With a pool the args are copied, not transferred, so a
   * read whose member died on the way can be sent once more to another member. */
  async read(op, args, { transfer = [], primaryOnly = false, prefer = null } = {}) {
    const tried = new Set();
    for (;;) {
      const list = this.readers(primaryOnly).filter((m) => !tried.has(m) && (m === this.primary || m.alive));
      let m = prefer && list.includes(prefer) && !tried.size ? prefer : null;
      if (!m) m = list.length ? this.pick(list) : this.primary;
      try {
        return { result: await m.call(op, args, this.size === 1 ? transfer : []), member: m };
      } catch (e) {
        if (m === this.primary || m.alive || tried.has(m)) throw e;
        tried.add(m); // the member died under this read: ask another
      }
    }
  }

  /** searchBatch: `flat` (Float32Array of count x dim, or null when the input is not in that form)
   * split over the free members when large enough. Resolves { results, stats } in query order. */
  async searchBatch(args, flat, count, dim, { transfer = [], primaryOnly = false } = {}) {
    const list = this.readers(primaryOnly);
    const parts = flat && count ? Math.min(list.length, Math.floor(count / SPLIT_MIN)) : 1;
    if (parts <= 1) {
      const { result, member } = await this.read(OPS.searchBatch, args, { transfer, primaryOnly });
      return { results: result.results, stats: this.size > 1 ? { ...result.stats, worker: member.index } : result.stats };
    }
    const order = [...list].sort((a, b) => a.busy - b.busy).slice(0, parts);
    const outs = await Promise.all(order.map((m, i) => {
      const a = Math.floor((i * count) / parts);
      const b = Math.floor(((i + 1) * count) / parts);
      return this.read(OPS.searchBatch, { ...args, vectors: flat.slice(a * dim, b * dim), count: b - a }, { prefer: m });
    }));
    const stats = mergeStats(outs.map((o) => o.result.stats));
    stats.workers = new Set(outs.map((o) => o.member.index)).size;
    stats.parts = outs.map((o) => ({ worker: o.member.index, queries: o.result.results.length, ms: o.result.stats?.ms }));
    return { results: outs.flatMap((o) => o.result.results), stats };
  }

  /** Cumulative stats: the primary's with one worker; with a pool, summed over the live members
   * (ms-like fields too) with each member's own under `workers`. */
  async stats() {
    if (this.size === 1) return this.primary.call(OPS.stats, {});
    const live = this.members.filter((m) => m === this.primary || (m.alive && m.handle !== null));
    const each = await Promise.all(live.map((m) => m.call(OPS.stats, {}).then((s) => ({ worker: m.index, ...s }))));
    const sum = {};
    for (const s of each) for (const [k, v] of Object.entries(s)) if (typeof v === "number" && k !== "worker") sum[k] = (sum[k] ?? 0) + v;
    return { ...sum, workers: each };
  }

  /** Release the database in every member (the primary's error, if any, is thrown). */
  async close() {
    this.closed = true;
    const rest = this.members.slice(1).filter((m) => m.alive && m.handle !== null)
      .map((m) => m.runtime.call(OPS.close, { handle: m.handle }).catch(() => {}));
    try {
      if (this.primary.alive) await this.primary.runtime.call(OPS.close, { handle: this.primary.handle });
    } finally {
      await Promise.all(rest);
    }
  }
}
