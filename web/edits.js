// Pending edits of a database opened in the tab, kept in IndexedDB until they are committed.
//
// The worker holds the edited index in memory; a reload, a crash of the tab or a failed commit must
// not lose what the page was told had been applied. So every upsert/delete the worker accepted is
// appended to a journal keyed by the manifest CID it applies to; S5Vec.open replays the journal of
// the manifest it opens, and a successful commit drops it (the edits now live in the new manifest).
//
//   IndexedDB "s5vec-edits", object store "journal": manifest CID -> { manifest, ops: [op...], updated }
//   op: { op: "upsert", records: [{id, vector: Float32Array, metadata?, timestamp?}] } | { op: "delete", ids }
const DB_NAME = "s5vec-edits";
const STORE = "journal";

const req = (r) => new Promise((resolve, reject) => {
  r.onsuccess = () => resolve(r.result);
  r.onerror = () => reject(r.error);
});
const done = (tx) => new Promise((resolve, reject) => {
  tx.oncomplete = () => resolve();
  tx.onerror = () => reject(tx.error);
  tx.onabort = () => reject(tx.error || new DOMException("transaction aborted", "AbortError"));
});

let dbPromise = null;

function open() {
  if (!dbPromise) {
    const r = indexedDB.open(DB_NAME, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    dbPromise = req(r).then((db) => {
      db.onversionchange = () => {
        db.close();
        dbPromise = null;
      };
      return db;
    });
    dbPromise.catch(() => (dbPromise = null));
  }
  return dbPromise;
}

/** The pending ops for `manifest` (oldest first); [] when there are none. */
export async function load(manifest) {
  const db = await open();
  const entry = await req(db.transaction(STORE).objectStore(STORE).get(manifest));
  return entry ? entry.ops : [];
}

/** Append one accepted op to the journal of `manifest` (one transaction: all or nothing). */
export async function append(manifest, op) {
  const db = await open();
  const tx = db.transaction(STORE, "readwrite");
  const store = tx.objectStore(STORE);
  const entry = (await req(store.get(manifest))) || { manifest, ops: [] };
  entry.ops.push(op);
  entry.updated = Date.now();
  store.put(entry, manifest);
  await done(tx);
  return entry.ops.length;
}

/** Forget the journal of `manifest` (after its edits were committed into a new manifest). */
export async function drop(manifest) {
  const db = await open();
  const tx = db.transaction(STORE, "readwrite");
  tx.objectStore(STORE).delete(manifest);
  await done(tx);
}

/** Manifests that have pending edits (e.g. to offer them after a crash). */
export async function manifests() {
  const db = await open();
  return req(db.transaction(STORE).objectStore(STORE).getAllKeys());
}

/** Summary of pending ops: { ops, upserted, deleted } (counts of records/ids as sent). */
export function summarize(ops) {
  let upserted = 0;
  let deleted = 0;
  for (const o of ops) {
    if (o.op === "upsert") upserted += o.records.length;
    else if (o.op === "delete") deleted += o.ids.length;
  }
  return { ops: ops.length, upserted, deleted };
}
