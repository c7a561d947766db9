// Example app using the s5vec bridge from TypeScript (type-checked: npx tsc --noEmit -p web/tsconfig.json).
// At runtime, import from wherever web/dist is served, e.g. "/s5vec/s5vec.js".
import { S5Vec, S5VecError, type Filter, type Hit, type SearchStats } from "./s5vec.js";

interface VideoMeta {
  title: string;
  channel: string;
  uploaded_ts: number;
}

export async function moreLikeThis(
  manifest: string,
  portals: string[],
  query: Float32Array,
  channel?: string,
): Promise<{ hits: Hit<VideoMeta>[]; stats: SearchStats | null }> {
  const db = await S5Vec.open({
    manifest,
    portals,
    startTimeoutMs: 30_000,
    onProgress: ({ step, phase, ms }) => console.log(`s5vec ${step} ${phase} ${ms.toFixed(0)} ms`),
  });
  try {
    const since = Math.floor(Date.UTC(2024, 0, 1) / 1000);
    const filter: Filter = { uploaded_ts: { $gte: since } };
    if (channel) filter.channel = channel;
    const hits = await db.search<VideoMeta>(query, { k: 10, filter });
    for (const h of hits) console.log(h.id, h.score.toFixed(3), h.metadata.title);
    console.log(`${db.info.count} vectors, ${db.info.dim}-d`, db.lastStats?.bytesFetched, "bytes fetched");
    const held = await db.stats();  // the worker's chunk cache: what it holds against its budget
    const share: number = held.cache_bytes / held.cache_limit;
    console.log(`chunk cache ${(100 * share).toFixed(0)}% of ${held.cache_limit} B, ${held.resident_bytes} B kept by open indexes`);
    return { hits, stats: db.lastStats };
  } catch (err) {
    if (err instanceof S5VecError && err.name === "DimensionError") {
      throw new Error(`query must have ${db.info.dim} dimensions`);
    }
    throw err;
  } finally {
    await db.close();
  }
}

export async function runtimeSummary(): Promise<string> {
  const rt = await S5Vec.runtime();
  return `numpy ${rt.numpyVersion} on Python ${rt.pythonVersion}, ready in ${rt.startupMs.toFixed(0)} ms`;
}

interface FilmMeta {
  title: string;
  year: number;
  genres: string[];
  rating: number;
}

/** Text in, films out: the query is embedded in the worker and fused with a keyword search. */
export async function findFilms(db: S5Vec, text: string): Promise<Hit<FilmMeta>[]> {
  try {
    const hits = await db.searchText<FilmMeta>(text, { k: 10, filter: { genres: "Documentary", year: { $gte: 1990 } } });
    const first = hits[0] && (await db.get<FilmMeta>(String(hits[0].id)));
    if (first) console.log(first.metadata.title, first.metadata.year, db.lastStats?.planned?.postings);
    return hits;
  } catch (err) {
    if (err instanceof S5VecError && err.name === "EmptyQueryError") return [];
    throw err;
  }
}

/** Offline-first: register the service worker before opening, then keep the whole index offline. */
export async function openForOffline(manifest: string, portals: string[]): Promise<S5Vec> {
  const status = await S5Vec.offline.register();
  const db = await S5Vec.open({ manifest, portals });
  if (status.controlled) {
    const pinned = await db.pin({ onProgress: (p) => console.log(`offline copy: ${p.done}/${p.total} chunks`) });
    const usage = await S5Vec.cache.usage();
    console.log(`kept ${pinned.bytes} bytes offline; cache holds ${usage.bytes} of ${usage.quota ?? "?"} bytes`);
  }
  return db;
}

/** Edit in the tab and publish under the page's signing key; readers follow the pointer. */
export async function addVideos(pointer: string, portals: string[], token: string,
                                videos: { id: string; embedding: Float32Array; title: string }[]): Promise<string> {
  const db = await S5Vec.open({ pointer, portals, authToken: token });
  await db.upsert(videos.map((v) => ({ id: v.id, vector: v.embedding, metadata: { title: v.title } })));
  try {
    const res = await db.commit({ key: "editor", onProgress: (p) => console.log(`${p.done}/${p.total} chunks`) });
    console.log(`uploaded ${res.uploaded} chunks, reused ${res.skipped}; pointer revision ${res.pointer?.revision}`);
    return res.manifest;
  } catch (e) {
    if (e instanceof S5VecError && e.name === "PortalError") return (await db.commitWhenOnline({ key: "editor" })).manifest;
    throw e;
  }
}

/** Many queries on every core: a pool of workers (at most S5Vec.maxWorkers()) answers a big batch in parts. */
export async function searchMany(manifest: string, portals: string[], queries: Float32Array[]): Promise<Hit[][]> {
  await S5Vec.offline.register(); // the workers then share one persistent chunk cache
  const db = await S5Vec.open({ manifest, portals, workers: Math.min(2, S5Vec.maxWorkers()) });
  try {
    const results = await db.searchBatch(queries, { k: 10 });
    const s = db.lastStats;
    console.log(`${s?.queries} queries on ${s?.workers ?? 1} of ${db.workers} workers, ${s?.bytesFetched} bytes`);
    return results;
  } finally {
    await db.close(); // the pool's extra worker stops when no other database uses it
  }
}
