// s5vec service worker (classic script): offline-first runtime + a persistent, verified chunk cache.
//
// web/sw.js is a template: build_wheel.sh (web/precache.py) writes web/dist/sw.js with
// the __WB_MANIFEST placeholder replaced by the precache manifest ([{url, revision, integrity}] of every runtime
// file: Pyodide, numpy, the wheels, worker, bridge, demo page) and the release placeholder by the release id
// (a hash of the manifest). Any change to a runtime file changes sw.js, so the browser installs the
// new release next to the old one (Workbox precaches under revisioned keys); it becomes active only
// once every file is in, and the page switches with one reload (S5Vec.offline in s5vec.js). The
// worker and the wheels are therefore never from two releases.
//
// Routes:
//   precached runtime files                cache-only (Workbox precaching)
//   GET {any portal}/s5/blob/<cid>         cache-first from the persistent chunk cache (chunk-cache.js):
//                                          immutable, never revalidated, verified against the CID when
//                                          read back; a rotten entry is dropped and fetched again
//   other same-origin GETs (demo-config.json, pages)   network-first, cached for offline use
//
// Messages (event.data.type, reply on event.ports[0]): s5vec:version, s5vec:usage, s5vec:clear,
// s5vec:budget {bytes}, s5vec:pin {chunks: [cid...], portals: [url...]} (progress messages, then the
// result), s5vec:skip-waiting.
"use strict";

importScripts("./vendor/workbox/workbox-sw.js", "./vendor/hash-wasm/blake3.umd.min.js", "./chunk-cache.js");

const RELEASE = "__S5VEC_RELEASE__";
const PAGES_CACHE = "s5vec-pages";
const BLOB_PATH = /^\/s5\/blob\/([^/]+)$/;
const PIN_PARALLEL = 6;

workbox.setConfig({ modulePathPrefix: "./vendor/workbox/", debug: false });
// workbox-sw loads modules with importScripts, which a service worker may only call while it is first
// evaluated: touch every module used here now.
const { core, precaching, routing, strategies } = workbox;

core.setCacheNameDetails({ prefix: "s5vec", suffix: "" });
core.clientsClaim();

// ------------------------------------------------------------------ runtime (precache)

precaching.precacheAndRoute(self.__WB_MANIFEST, { ignoreURLParametersMatching: [/^__WB_REVISION__$/] });
precaching.cleanupOutdatedCaches();

// ------------------------------------------------------------------ chunks

function chunkResponse(bytes, source) {
  return new Response(bytes, {
    status: 200,
    headers: {
      "Content-Type": "application/octet-stream",
      "Content-Length": String(bytes.byteLength),
      "Cache-Control": "public, max-age=31536000, immutable",
      "X-S5vec-Cache": source,
    },
  });
}

// Downloads in progress, by blob hash: hashHex -> Promise of the verified bytes (null when the download
// failed or did not verify), kept until the bytes are stored. Two requests for one chunk at once (two
// workers of a pool opening the same index, or splitting one batch) share one download, and a request
// that comes while the first one's bytes are being written gets those bytes, not a second download.
const inflight = new Map();

/** Cache-first for immutable, content-addressed chunks; verified on the way in and on the way out. */
class ChunkCacheFirst extends strategies.Strategy {
  async _handle(request, handler) {
    const url = new URL(request.url);
    let cid = null;
    try {
      cid = decodeURIComponent(url.pathname.match(BLOB_PATH)[1]);
    } catch {
      /* malformed escape: let the portal answer */
    }
    const bid = cid && self.S5VecChunkCache.parseCid(cid);
    if (!bid || request.headers.has("Range")) return handler.fetch(request);
    const cache = await self.S5VecChunkCache.open();
    // The portal client asks "past every cache" (?reload=, cache: reload) after bytes failed to verify.
    const bypass = request.cache === "reload" || request.cache === "no-store" || url.searchParams.has("reload");
    if (!bypass) {
      const shared = await this.shared(bid);
      if (shared) return chunkResponse(shared, "shared");
      const data = await cache.get(bid).catch((e) => {
        console.warn("[s5vec sw] chunk cache read failed", e);
        return null;
      });
      if (data) return chunkResponse(data, "hit");
      const late = await this.shared(bid); // another request started downloading it meanwhile
      if (late) return chunkResponse(late, "shared");
    }
    let settle = null;
    const mine = bypass ? null : new Promise((resolve) => (settle = resolve));
    if (mine) inflight.set(bid.hashHex, mine);
    let stored = Promise.resolve();
    let good = null;
    try {
      // past the HTTP cache: this store is the chunk cache (one copy on disk, verified, under its budget)
      const resp = await handler.fetch(new Request(request, { cache: "no-store" }));
      if (resp.status !== 200) return resp;
      const bytes = await resp.arrayBuffer();
      if (await self.S5VecChunkCache.verify(bid, bytes)) {
        good = bytes;
        stored = cache.put(bid, bytes).catch((e) => console.warn("[s5vec sw] chunk cache write failed", e));
        handler.waitUntil(stored);
      }
      // unverified bytes are passed on, never stored: the client rejects them and tries the next portal
      return chunkResponse(bytes, "network");
    } finally {
      if (mine) {
        settle(good);
        stored.then(() => {
          if (inflight.get(bid.hashHex) === mine) inflight.delete(bid.hashHex);
        });
      }
    }
  }

  /** The verified bytes of a download of `bid` in progress (null: none, or it failed). */
  async shared(bid) {
    return (await inflight.get(bid.hashHex)) ?? null;
  }
}

routing.registerRoute(
  ({ url, request }) => request.method === "GET" && BLOB_PATH.test(url.pathname),
  new ChunkCacheFirst(),
);

// ------------------------------------------------------------------ other same-origin files

routing.registerRoute(
  ({ url, request }) => request.method === "GET" && url.origin === self.location.origin,
  new strategies.NetworkFirst({ cacheName: PAGES_CACHE, networkTimeoutSeconds: 4 }),
);

// ------------------------------------------------------------------ messages from the bridge

class PinError extends Error {
  constructor(name, message) {
    super(message);
    this.s5vecName = name;
  }
}

async function fetchChunk(cid, bid, portals) {
  const failures = [];
  let integrity = false;
  let notFound = 0;
  for (const portal of portals) {
    const url = `${String(portal).replace(/\/+$/, "")}/s5/blob/${encodeURIComponent(cid)}`;
    try {
      const resp = await fetch(url, { cache: "no-store" });
      if (resp.status === 404) notFound++;
      if (resp.status !== 200) {
        failures.push(`${portal}: HTTP ${resp.status}`);
        continue;
      }
      const bytes = await resp.arrayBuffer();
      if (await self.S5VecChunkCache.verify(bid, bytes)) return bytes;
      integrity = true;
      failures.push(`${portal}: bytes do not match the CID`);
    } catch (e) {
      failures.push(`${portal}: unreachable (${e.message || e})`);
    }
  }
  const name = integrity ? "IntegrityError" : notFound === portals.length ? "NotFoundError" : "PortalError";
  throw new PinError(name, `could not download ${cid} (${failures.join("; ") || "no portals"})`);
}

/** Download (or keep) every chunk in `cids` and mark it pinned; reports progress on `port`. */
async function pin(cids, portals, port) {
  if (!Array.isArray(cids) || !Array.isArray(portals) || portals.length === 0) {
    throw new PinError("InvalidArgumentError", "pin needs a list of chunk CIDs and a non-empty list of portals");
  }
  const cache = await self.S5VecChunkCache.open();
  const todo = [];
  for (const cid of new Set(cids)) {
    const bid = self.S5VecChunkCache.parseCid(cid);
    if (!bid) throw new PinError("CIDError", `not an S5 blob CID: ${JSON.stringify(cid)}`);
    todo.push([cid, bid]);
  }
  const total = todo.length;
  const totalBytes = todo.reduce((n, [, bid]) => n + bid.size, 0);
  const progress = { done: 0, total, bytes: 0, totalBytes, downloaded: 0, downloadedBytes: 0 };
  port.postMessage({ type: "progress", ...progress });
  let next = 0;
  async function lane() {
    while (next < todo.length) {
      const [cid, bid] = todo[next++];
      let data = await cache.get(bid); // verified; a rotten entry is dropped and downloaded again
      if (data) {
        await cache.pin(bid);
      } else {
        data = await fetchChunk(cid, bid, portals);
        await cache.put(bid, data, { pinned: true });
        progress.downloaded++;
        progress.downloadedBytes += bid.size;
      }
      progress.done++;
      progress.bytes += bid.size;
      port.postMessage({ type: "progress", ...progress });
    }
  }
  await Promise.all(Array.from({ length: Math.min(PIN_PARALLEL, total) }, lane));
  return { chunks: total, bytes: totalBytes, downloaded: progress.downloaded, downloadedBytes: progress.downloadedBytes };
}

async function onMessage(data, port) {
  const cache = () => self.S5VecChunkCache.open();
  switch (data.type) {
    case "s5vec:version":
      return { release: RELEASE };
    case "s5vec:usage":
      return { release: RELEASE, ...(await (await cache()).usage()) };
    case "s5vec:clear": {
      const c = await cache();
      await c.clear();
      return { release: RELEASE, ...(await c.usage()) };
    }
    case "s5vec:budget": {
      const c = await cache();
      try {
        await c.setBudget(data.bytes);
      } catch (e) {
        throw new PinError("InvalidArgumentError", e.message);
      }
      return c.usage();
    }
    case "s5vec:pin":
      return pin(data.chunks, data.portals, port);
    case "s5vec:skip-waiting":
      await self.skipWaiting();
      return { release: RELEASE };
    default:
      throw new PinError("InvalidArgumentError", `unknown service worker message ${JSON.stringify(data.type)}`);
  }
}

self.addEventListener("message", (event) => {
  const port = event.ports && event.ports[0];
  const data = event.data;
  if (!data || typeof data !== "object" || typeof data.type !== "string" || !data.type.startsWith("s5vec:")) return;
  const reply = port || { postMessage: () => {} };
  const work = onMessage(data, reply).then(
    (result) => reply.postMessage({ type: "done", ok: true, result }),
    (err) => reply.postMessage({
      type: "done", ok: false,
      error: { name: err.s5vecName || "ServiceWorkerError", message: String(err.message || err) },
    }),
  );
  event.waitUntil(work);
});
