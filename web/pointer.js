// Signed, mutable pointers to the latest manifest: S5 registry entries, page side (WebCrypto Ed25519).
//
// Entry format (S5's, byte for byte; pkg/s5vec/s5/registry.py is the CPython side):
//   signed message = 0x07 | revision (8 bytes LE) | len (1) | data        data = the manifest CID's bytes
//   pk             = 0xed | 32-byte ed25519 public key;  pointer string = base64url (no padding) of pk
// Portal API: GET {portal}/s5/registry?pk=<pointer> -> {pk, revision, data, signature} (base64url);
//             POST {portal}/s5/registry with the same JSON (Authorization: Bearer when the portal wants it).
//
// The client trusts no portal: an entry counts only if it is for the key asked for, its signature
// verifies, and its revision is not lower than the highest this page has already seen for the key
// (a portal serving an old entry cannot roll a database back). Signing keys are WebCrypto keys made
// non-extractable and kept in IndexedDB ("s5vec-keys"): the page can sign, nobody can read them.
import { S5VecError } from "./s5vec.js"; // a cycle: used only at call time

const RECORD_TYPE = 0x07;
const MKEY_ED25519 = 0xed;
const MAX_DATA = 48;
const B32 = "abcdefghijklmnopqrstuvwxyz234567";

// ------------------------------------------------------------------ encodings

export function b64urlEncode(u8) {
  let s = "";
  for (const b of u8) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function b64urlDecode(s, what = "value") {
  if (typeof s !== "string" || /[^A-Za-z0-9_-]/.test(s.replace(/=+$/, ""))) {
    throw new S5VecError("FormatError", `${what} is not base64url`);
  }
  const body = s.replace(/=+$/, "");
  try {
    const bin = atob(body.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (body.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    throw new S5VecError("FormatError", `${what} is not base64url`);
  }
}

function base32(u8) {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of u8) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

function base32Decode(s) {
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of s) {
    const v = B32.indexOf(ch);
    if (v < 0) return null;
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return new Uint8Array(out);
}

/** CID bytes (0x5b 0x82 0x1e + hash + size) -> the canonical base32 string. */
export function cidToString(bytes) {
  if (bytes.length < 36 || bytes[0] !== 0x5b || bytes[1] !== 0x82 || bytes[2] !== 0x1e) {
    throw new S5VecError("FormatError", "registry entry data is not an S5 blob CID");
  }
  return "b" + base32(bytes);
}

/** Canonical base32 CID string -> its bytes. */
export function cidToBytes(cid) {
  const raw = typeof cid === "string" && cid[0] === "b" ? base32Decode(cid.slice(1)) : null;
  if (!raw || raw.length < 36 || raw.length > MAX_DATA || raw[0] !== 0x5b || raw[1] !== 0x82 || raw[2] !== 0x1e) {
    throw new S5VecError("CIDError", `not a base32 S5 blob CID: ${JSON.stringify(cid)}`);
  }
  return raw;
}

function decodePointer(pointer) {
  const pk = b64urlDecode(pointer, "pointer");
  if (pk.length !== 33 || pk[0] !== MKEY_ED25519) {
    throw new S5VecError("InvalidArgumentError", "a pointer is the base64url of 0xed + a 32-byte ed25519 public key");
  }
  return pk;
}

function revisionBytes(revision) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(revision), true);
  return out;
}

/** The bytes an entry's signature covers: 0x07 | revision (8 LE) | len | data. */
export function signedMessage(revision, data) {
  if (data.length > MAX_DATA) throw new S5VecError("InvalidArgumentError", `registry data is at most ${MAX_DATA} bytes`);
  const msg = new Uint8Array(1 + 8 + 1 + data.length);
  msg[0] = RECORD_TYPE;
  msg.set(revisionBytes(revision), 1);
  msg[9] = data.length;
  msg.set(data, 10);
  return msg;
}

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// ------------------------------------------------------------------ verification

/** Check one JSON entry for `pk`; returns { revision, data, cid } or throws IntegrityError. */
export async function verifyEntry(pk, json) {
  if (!json || typeof json !== "object") throw new S5VecError("FormatError", "registry entry is not an object");
  const entryPk = b64urlDecode(json.pk, "entry pk");
  if (!equal(entryPk, pk)) throw new S5VecError("IntegrityError", "registry entry is for another key");
  const revision = json.revision;
  if (!Number.isSafeInteger(revision) || revision < 0) throw new S5VecError("FormatError", "bad registry revision");
  const data = b64urlDecode(json.data, "entry data");
  const signature = b64urlDecode(json.signature, "entry signature");
  if (signature.length !== 64) throw new S5VecError("IntegrityError", "registry entry signature is not 64 bytes");
  const key = await crypto.subtle.importKey("raw", pk.slice(1), { name: "Ed25519" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, signedMessage(revision, data));
  if (!ok) throw new S5VecError("IntegrityError", `registry entry revision ${revision}: bad signature`);
  return { revision, data, cid: cidToString(data) };
}

// highest verified revision seen per pointer (this page): a portal cannot roll a pointer back
const seen = new Map();

/** Resolve `pointer` on `portals`: the highest verified entry. Rejects NotFoundError (no portal has
 * one), IntegrityError (only forged entries, or every entry older than one already seen). */
export async function resolve(pointer, portals) {
  const pk = decodePointer(pointer);
  if (!Array.isArray(portals) || portals.length === 0) {
    throw new S5VecError("InvalidArgumentError", "portals must be a non-empty list of URLs");
  }
  const failures = [];
  let best = null;
  let forged = 0;
  let missing = 0;
  await Promise.all(portals.map(async (portal) => {
    const url = `${String(portal).replace(/\/+$/, "")}/s5/registry?pk=${pointer}`;
    let resp;
    try {
      resp = await fetch(url, { cache: "no-store" });
    } catch (e) {
      failures.push(`${portal}: unreachable (${e.message || e})`);
      return;
    }
    if (resp.status === 404) {
      missing++;
      failures.push(`${portal}: no entry`);
      return;
    }
    if (!resp.ok) {
      failures.push(`${portal}: HTTP ${resp.status}`);
      return;
    }
    try {
      const entry = await verifyEntry(pk, await resp.json());
      if (!best || entry.revision > best.revision) best = entry;
    } catch (e) {
      forged++;
      failures.push(`${portal}: ${e.message}`);
    }
  }));
  const floor = seen.get(pointer) ?? -1;
  if (best && best.revision < floor) {
    throw new S5VecError("IntegrityError",
      `pointer ${pointer}: portals serve revision ${best.revision}, older than revision ${floor} seen before`);
  }
  if (!best) {
    const detail = failures.join("; ");
    if (forged) throw new S5VecError("IntegrityError", `pointer ${pointer}: no valid entry (${detail})`);
    if (missing === portals.length) throw new S5VecError("NotFoundError", `pointer ${pointer}: no entry on any portal`);
    throw new S5VecError("PortalError", `pointer ${pointer}: could not resolve (${detail})`);
  }
  seen.set(pointer, best.revision);
  return { pointer, revision: best.revision, manifest: best.cid };
}

// ------------------------------------------------------------------ signing keys (IndexedDB)

const KEYS_DB = "s5vec-keys";

function keysDb() {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(KEYS_DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore("keys");
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function idb(mode, fn) {
  const db = await keysDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction("keys", mode);
      const r = fn(tx.objectStore("keys"));
      tx.oncomplete = () => resolve(r && r.result);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** A signing key named `name`: created on first use (Ed25519, private key non-extractable) and kept
 * in IndexedDB. Returns { name, pointer, privateKey, publicKey }. */
export async function signingKey(name = "default") {
  if (typeof name !== "string" || !name) throw new S5VecError("InvalidArgumentError", "key name must be a non-empty string");
  let pair = await idb("readonly", (s) => s.get(name));
  if (!pair) {
    const made = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    pair = { privateKey: made.privateKey, publicKey: made.publicKey };
    await idb("readwrite", (s) => s.add(pair, name)).catch(async () => {
      pair = await idb("readonly", (s) => s.get(name)); // another tab made it first: use theirs
    });
  }
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const pk = new Uint8Array(33);
  pk[0] = MKEY_ED25519;
  pk.set(raw, 1);
  return { name, pointer: b64urlEncode(pk), privateKey: pair.privateKey, publicKey: pair.publicKey };
}

/** Sign and publish `manifest` under `key` (from signingKey) on every portal that takes it; the
 * revision is one above the highest any portal holds. Returns { pointer, revision, manifest }. */
export async function publish(key, manifest, portals, { authToken } = {}) {
  const data = cidToBytes(manifest);
  let current = -1;
  try {
    current = (await resolve(key.pointer, portals)).revision;
  } catch (e) {
    if (e.name !== "NotFoundError") throw e;
  }
  const revision = current < 0 ? 1 : current + 1; // as CPython: the first revision is 1
  const signature = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, signedMessage(revision, data)));
  const body = JSON.stringify({ pk: key.pointer, revision, data: b64urlEncode(data), signature: b64urlEncode(signature) });
  const headers = { "Content-Type": "application/json" };
  if (authToken) headers.Authorization = `Bearer ${authToken}`;
  const failures = [];
  let stored = 0;
  let auth = 0;
  await Promise.all(portals.map(async (portal) => {
    try {
      const resp = await fetch(`${String(portal).replace(/\/+$/, "")}/s5/registry`, { method: "POST", headers, body });
      if (resp.ok) stored++;
      else {
        if (resp.status === 401 || resp.status === 403) auth++;
        failures.push(`${portal}: HTTP ${resp.status} ${(await resp.text()).slice(0, 200)}`);
      }
    } catch (e) {
      failures.push(`${portal}: unreachable (${e.message || e})`);
    }
  }));
  if (!stored) {
    const name = auth === portals.length ? "AuthError" : "PortalError";
    throw new S5VecError(name, `publishing pointer ${key.pointer} revision ${revision} failed (${failures.join("; ")})`);
  }
  seen.set(key.pointer, Math.max(seen.get(key.pointer) ?? -1, revision));
  return { pointer: key.pointer, revision, manifest };
}
