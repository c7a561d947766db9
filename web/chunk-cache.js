// s5vec persistent chunk cache (classic script, loaded by sw.js with importScripts).
//
// S5 chunks are content-addressed and immutable, so a cached chunk never needs revalidation; but
// storage can rot, so every chunk read back is verified against its CID again (size + BLAKE3, as
// pkg/s5vec/s5/cid.py does) and dropped when it does not match.
//
// Storage: one IndexedDB database, DB_NAME, with two object stores keyed by the blob's BLAKE3 hash
// (lower-case hex, so every multibase spelling of a CID shares one entry):
//   "chunks"  hashHex -> ArrayBuffer                    the bytes
//   "lru"     hashHex -> { size, atime, pinned }         small records: usage and LRU order without
//                                                          touching the bytes (index "atime")
// and "meta" ("budget" -> bytes). Unpinned chunks are evicted least-recently-used first whenever the
// unpinned total exceeds the byte budget; pinned chunks (db.pin()) are kept until cache.clear().
//
// Exposes self.S5VecChunkCache = { parseCid, verify, open, DB_NAME }.
"use strict";

(() => {
  const DB_NAME = "s5vec-chunks";
  const DB_VERSION = 1;
  const MiB = 1024 * 1024;

  // ------------------------------------------------------------------ CIDs (S5 v1 blob ids)

  const MAGIC = 0x5b;
  const BLOB_TYPE_DEFAULT = 0x82;
  const MULTIHASH_BLAKE3 = 0x1e;
  const B32 = "abcdefghijklmnopqrstuvwxyz234567";

  function base32Decode(s) {
    const out = new Uint8Array(Math.floor((s.length * 5) / 8));
    let bits = 0;
    let value = 0;
    let j = 0;
    for (const ch of s) {
      const v = B32.indexOf(ch);
      if (v < 0) return null;
      value = (value << 5) | v;
      bits += 5;
      if (bits >= 8) {
        out[j++] = (value >>> (bits - 8)) & 0xff;
        bits -= 8;
      }
    }
    return out;
  }

  function base64urlDecode(s) {
    try {
      const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
      return Uint8Array.from(bin, (c) => c.charCodeAt(0));
    } catch {
      return null;
    }
  }

  function hexDecode(s) {
    if (s.length % 2 || /[^0-9a-f]/.test(s)) return null;
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    return out;
  }

  const toHex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");

  /** Parse an S5 v1 blob CID string (multibase b / B / u / f / F): {hashHex, size} or null. */
  function parseCid(cid) {
    if (typeof cid !== "string" || cid.length < 2 || cid.length > 256) return null;
    const p = cid[0];
    const body = cid.slice(1);
    let raw = null;
    if (p === "b") raw = base32Decode(body);
    else if (p === "B") raw = base32Decode(body.toLowerCase());
    else if (p === "u") raw = base64urlDecode(body);
    else if (p === "f" || p === "F") raw = hexDecode(body.toLowerCase());
    if (!raw || raw.length < 36 || raw[0] !== MAGIC || raw[1] !== BLOB_TYPE_DEFAULT || raw[2] !== MULTIHASH_BLAKE3) {
      return null;
    }
    const sizeBytes = raw.subarray(35);
    if (sizeBytes.length > 8) return null;
    let size = 0;
    for (let i = sizeBytes.length - 1; i >= 0; i--) size = size * 256 + sizeBytes[i];
    if (!Number.isSafeInteger(size)) return null;
    return { hashHex: toHex(raw.subarray(3, 35)), size };
  }

  // ------------------------------------------------------------------ verification

  let hasherPromise = null;

  /** True when `bytes` (ArrayBuffer/Uint8Array) is exactly the blob `bid` names (size, then BLAKE3). */
  async function verify(bid, bytes) {
    const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    if (u8.byteLength !== bid.size) return false;
    if (!hasherPromise) hasherPromise = self.hashwasm.createBLAKE3();
    const h = await hasherPromise;
    h.init();
    h.update(u8);
    return h.digest("hex") === bid.hashHex;
  }

  // ------------------------------------------------------------------ IndexedDB helpers

  const req = (r) => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const done = (tx) => new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new DOMException("transaction aborted", "AbortError"));
  });

  function openDb() {
    const r = indexedDB.open(DB_NAME, DB_VERSION);
    r.onupgradeneeded = () => {
      const db = r.result;
      if (!db.objectStoreNames.contains("chunks")) db.createObjectStore("chunks");
      if (!db.objectStoreNames.contains("lru")) db.createObjectStore("lru").createIndex("atime", "atime");
      if (!db.objectStoreNames.contains("meta")) db.createObjectStore("meta");
    };
    return req(r);
  }

  // ------------------------------------------------------------------ the cache

  class ChunkCache {
    constructor(db) {
      this.db = db;
      this.budget = null;   // bytes for unpinned chunks; null until loaded
      this.counters = { hits: 0, misses: 0, stored: 0, rejected: 0, evicted: 0 };
      this._atime = 0;
      this._writes = Promise.resolve(); // writes and evictions run one at a time, in order
    }

    /** Run `fn` after every write queued before it; usage() and clear() see all of them. */
    _serial(fn) {
      const run = this._writes.then(fn);
      this._writes = run.catch(() => {});
      return run;
    }

    /** A strictly increasing timestamp (two reads in the same millisecond keep their order). */
    _now() {
      this._atime = Math.max(this._atime + 1, Date.now());
      return this._atime;
    }

    /** The byte budget for unpinned chunks: set explicitly, else a quarter of the origin's quota
     * (at most 1 GiB, at least 64 MiB). */
    async getBudget() {
      if (this.budget !== null) return this.budget;
      const stored = await req(this.db.transaction("meta").objectStore("meta").get("budget"));
      if (typeof stored === "number") return (this.budget = stored);
      let quota = 0;
      try {
        quota = (await navigator.storage.estimate()).quota || 0;
      } catch {
        /* no StorageManager */
      }
      return (this.budget = Math.min(1024 * MiB, Math.max(64 * MiB, Math.floor(quota / 4))));
    }

    async setBudget(bytes) {
      if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError("budget must be a non-negative integer of bytes");
      const tx = this.db.transaction("meta", "readwrite");
      tx.objectStore("meta").put(bytes, "budget");
      await done(tx);
      this.budget = bytes;
      await this.evict();
    }

    /** Verified bytes of `bid` (ArrayBuffer), or null (absent, or rotten: then dropped). */
    async get(bid) {
      const tx = this.db.transaction(["chunks", "lru"], "readwrite");
      const data = await req(tx.objectStore("chunks").get(bid.hashHex));
      if (data === undefined) {
        tx.abort();
        this.counters.misses++;
        return null;
      }
      const lru = tx.objectStore("lru");
      const rec = await req(lru.get(bid.hashHex));
      lru.put({ size: bid.size, pinned: false, ...(rec || {}), atime: this._now() }, bid.hashHex);
      await done(tx).catch(() => {});
      if (!(await verify(bid, data))) {
        this.counters.rejected++;
        console.warn(`[s5vec sw] cached chunk ${bid.hashHex} does not match its CID: dropped`);
        await this.delete(bid.hashHex);
        return null;
      }
      this.counters.hits++;
      return data;
    }

    async has(bid) {
      const key = await req(this.db.transaction("lru").objectStore("lru").getKey(bid.hashHex));
      return key !== undefined;
    }

    /** Store verified bytes (the caller verified them); `pinned` keeps them out of LRU eviction. */
    put(bid, bytes, opts) {
      return this._serial(() => this._put(bid, bytes, opts));
    }

    async _put(bid, bytes, { pinned = false } = {}) {
      const buf = bytes instanceof ArrayBuffer ? bytes : bytes.slice().buffer;
      const tx = this.db.transaction(["chunks", "lru"], "readwrite");
      const lru = tx.objectStore("lru");
      const rec = await req(lru.get(bid.hashHex));
      tx.objectStore("chunks").put(buf, bid.hashHex);
      lru.put({ size: buf.byteLength, atime: this._now(), pinned: pinned || Boolean(rec && rec.pinned) }, bid.hashHex);
      await done(tx);
      this.counters.stored++;
      if (!pinned) await this._evict();
    }

    async pin(bid) {
      const tx = this.db.transaction("lru", "readwrite");
      const lru = tx.objectStore("lru");
      const rec = await req(lru.get(bid.hashHex));
      if (rec) lru.put({ ...rec, pinned: true }, bid.hashHex);
      await done(tx);
      return Boolean(rec);
    }

    async delete(hashHex) {
      const tx = this.db.transaction(["chunks", "lru"], "readwrite");
      tx.objectStore("chunks").delete(hashHex);
      tx.objectStore("lru").delete(hashHex);
      await done(tx);
    }

    /** {chunks, bytes, pinnedChunks, pinnedBytes} from the small LRU records. */
    async totals() {
      const t = { chunks: 0, bytes: 0, pinnedChunks: 0, pinnedBytes: 0 };
      const recs = await req(this.db.transaction("lru").objectStore("lru").getAll());
      for (const r of recs) {
        t.chunks++;
        t.bytes += r.size;
        if (r.pinned) {
          t.pinnedChunks++;
          t.pinnedBytes += r.size;
        }
      }
      return t;
    }

    /** Drop least-recently-used unpinned chunks until their total fits the budget. */
    evict() {
      return this._serial(() => this._evict());
    }

    async _evict() {
      const budget = await this.getBudget();
      const t = await this.totals();
      let over = t.bytes - t.pinnedBytes - budget;
      if (over <= 0) return 0;
      const victims = [];
      const tx = this.db.transaction("lru");
      await new Promise((resolve, reject) => {
        const cur = tx.objectStore("lru").index("atime").openCursor();
        cur.onerror = () => reject(cur.error);
        cur.onsuccess = () => {
          const c = cur.result;
          if (!c || over <= 0) return resolve();
          if (!c.value.pinned) {
            victims.push(c.primaryKey);
            over -= c.value.size;
          }
          c.continue();
        };
      });
      for (const key of victims) await this.delete(key);
      this.counters.evicted += victims.length;
      return victims.length;
    }

    clear() {
      return this._serial(() => this._clear());
    }

    async _clear() {
      const tx = this.db.transaction(["chunks", "lru"], "readwrite");
      tx.objectStore("chunks").clear();
      tx.objectStore("lru").clear();
      await done(tx);
    }

    async usage() {
      await this._serial(() => {});
      const t = await this.totals();
      let estimate = {};
      let persisted = false;
      try {
        estimate = await navigator.storage.estimate();
        persisted = await navigator.storage.persisted();
      } catch {
        /* no StorageManager */
      }
      return {
        ...t,
        budget: await this.getBudget(),
        quota: estimate.quota ?? null,
        originUsage: estimate.usage ?? null,
        persisted,
        counters: { ...this.counters },
      };
    }
  }

  let cachePromise = null;

  /** The one ChunkCache of this service worker (opened on first use). */
  function open() {
    if (!cachePromise) {
      cachePromise = openDb().then((db) => {
        db.onversionchange = () => db.close();
        return new ChunkCache(db);
      });
      cachePromise.catch(() => (cachePromise = null));
    }
    return cachePromise;
  }

  self.S5VecChunkCache = { parseCid, verify, open, DB_NAME };
})();
