// s5vec web worker (module worker). Boots Pyodide + numpy + the s5vec wheels, then answers rpc calls.
// Served from web/dist/worker.js; everything it loads resolves relative to its own URL:
//   ./protocol.js (+ ./protocol.json), ./vendor/hash-wasm/index.esm.min.js, ./wheels/manifest.json,
//   ./pyodide/ (default indexURL)
//
// Layout: start-up is a list of named steps (STARTUP) run once by start(); every call awaits the
// one `ready` promise; calls are forwarded to s5vec.rpc.handle, which checks op names and args
// (the worker checks nothing of a request's content); the message listener at the end is the
// only transport code.
import { MSG, OPS, STEPS, checkRequest } from "./protocol.js";
import { createBLAKE3 } from "./vendor/hash-wasm/index.esm.min.js";

const BASE = new URL("./", self.location.href);

/** What start-up builds: set by the steps below, read by callRpc. */
const py = {
  pyodide: null,
  rpcModule: null,    // PyProxy of the s5vec.rpc module (kept alive: handle is borrowed from it)
  handle: null,       // s5vec.rpc.handle (a PyProxy of an async function)
  toMemoryview: null, // Python: JS typed array -> memoryview
  version: null,      // the reply of the version op
  release: null,      // the bundle's release id (wheels/manifest.json, written by web/precache.py)
};
let ready = null;       // Promise of the runtime info; rejected when start-up failed
let currentStep = null; // the start-up step running now (reported with a failure)

function post(msg, transfer) {
  self.postMessage(msg, transfer || []);
}

function errorObject(err, fallbackName = "InternalError") {
  if (err && typeof err === "object") {
    if (err.type) return { name: "InternalError", message: `${err.type}: ${err.message}` }; // a PythonError
    if (err.s5vecName) return { name: err.s5vecName, message: String(err.message) };
    return { name: fallbackName, message: `${err.name || "Error"}: ${err.message || err}` };
  }
  return { name: fallbackName, message: String(err) };
}

// ---------------------------------------------------------------- blake3 for Python

// The Python package's hashing backend (`import s5vec_js; s5vec_js.blake3(data)`): hash-wasm's
// WebAssembly BLAKE3, created once (async: compiles the embedded wasm) during start-up, then reused;
// init()/update()/digest() are synchronous, so s5vec_js.blake3 stays a sync call for Python.
// digest("binary") returns a fresh copy, so reusing the hasher is safe.
let blake3Hasher = null;

function blake3(u8) {
  blake3Hasher.init();
  blake3Hasher.update(u8);
  return blake3Hasher.digest("binary");
}

// Accepts a Uint8Array/TypedArray/ArrayBuffer, or a Python bytes-like object (PyProxy with getBuffer);
// returns the 32-byte digest as a Uint8Array (a JsProxy on the Python side: use .to_bytes()).
function blake3Digest(data) {
  if (data instanceof Uint8Array) return blake3(data);
  if (ArrayBuffer.isView(data)) return blake3(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  if (data instanceof ArrayBuffer) return blake3(new Uint8Array(data));
  if (data && typeof data.getBuffer === "function") {
    const view = data.getBuffer("u8");
    try {
      return blake3(view.data);
    } finally {
      view.release();
    }
  }
  throw new TypeError("s5vec_js.blake3 expects bytes-like data");
}

// ---------------------------------------------------------------- start-up steps

// Pyodide 0.27 turns on stack switching (JSPI) when the engine has it (Chromium >= 137). Then every
// call from JS into Python that may suspend (each asyncio callback of its WebLoop, so a dozen per
// fetched chunk) goes through callPyObjectKwargsPromising, which stackAlloc()s 4 bytes and restores
// the C stack pointer only when the call raised: 16 bytes of the 5 MiB C stack are lost per call
// (pyodide/pyodide#6249, fixed upstream after 0.29). A session of ~800 cold searches (~20k fetched
// chunks) used it all up; the stack then ran into the static data below it and the worker died
// ("table index is out of bounds", "function signature mismatch", "memory access out of bounds").
// s5vec never suspends Python (no run_sync; fetches are awaited on the event loop), so the worker
// hides JSPI from Pyodide before loading it and runs the path every browser without JSPI runs.
function hideJspi() {
  for (const name of ["Suspending", "Suspender"]) {
    if (name in WebAssembly) {
      try {
        delete WebAssembly[name];
      } catch (_) { /* not configurable: checked after the load */ }
    }
  }
}

async function loadPyodide(cfg) {
  hideJspi();
  const mod = await import(cfg.indexURL + "pyodide.mjs");
  py.pyodide = await mod.loadPyodide({
    indexURL: cfg.indexURL,
    stdout: (s) => console.log("[s5vec py]", s),
    stderr: (s) => console.warn("[s5vec py]", s),
  });
  // the call path is chosen per call from this flag: with it off, no call leaks stack
  if (py.pyodide._module.jspiSupported) py.pyodide._module.jspiSupported = false;
}

async function loadNumpy(cfg) {
  const errors = [];
  // by name: from the lock file of whichever distribution indexURL points at (hash-checked by Pyodide)
  await py.pyodide.loadPackage("numpy", { messageCallback: () => {}, errorCallback: (m) => errors.push(m) });
  try {
    py.pyodide.runPython("import numpy");
  } catch (e) {
    throw new Error(`numpy failed to load from ${cfg.indexURL}: ${errors.join("; ") || e.message}`);
  }
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchOk(url) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`GET ${url} -> HTTP ${resp.status}`);
  return resp;
}

/** The bytes of one wheel listed in the manifest, checked against its sha256. */
async function fetchVerifiedWheel(entry, manifestUrl) {
  if (!/^[A-Za-z0-9_.+-]+\.whl$/.test(entry.file)) throw new Error(`bad wheel name in manifest: ${entry.file}`);
  const bytes = await (await fetchOk(new URL(entry.file, manifestUrl))).arrayBuffer();
  const got = hex(await crypto.subtle.digest("SHA-256", bytes));
  if (got !== String(entry.sha256).toLowerCase()) {
    const e = new Error(`wheel ${entry.file}: sha256 ${got} does not match manifest ${entry.sha256}`);
    e.s5vecName = "IntegrityError";
    throw e;
  }
  return bytes;
}

async function loadWheels() {
  const manifestUrl = new URL("wheels/manifest.json", BASE);
  const manifest = await (await fetchOk(manifestUrl)).json();
  if (!manifest || !Array.isArray(manifest.wheels) || manifest.wheels.length === 0) {
    throw new Error(`${manifestUrl} lists no wheels`);
  }
  py.release = typeof manifest.release === "string" ? manifest.release : null;
  const wheels = await Promise.all(manifest.wheels.map((w) => fetchVerifiedWheel(w, manifestUrl)));
  // install exactly the verified bytes (pure-Python wheels: unpacking into site-packages is installing)
  const sitePackages = py.pyodide.runPython("import site; site.getsitepackages()[0]");
  for (const bytes of wheels) py.pyodide.unpackArchive(bytes, "wheel", { extractDir: sitePackages });
  py.pyodide.runPython("import importlib; importlib.invalidate_caches()");
}

async function importS5vec() {
  if (!blake3Hasher) blake3Hasher = await createBLAKE3();
  py.pyodide.registerJsModule("s5vec_js", { blake3: blake3Digest });
  // sync urllib/http.client -> synchronous XHR, so the package's portal client works in the worker
  await py.pyodide.runPythonAsync("import pyodide_http\npyodide_http.patch_all()");
  py.rpcModule = py.pyodide.pyimport("s5vec.rpc");
  py.handle = py.rpcModule.handle;
  py.toMemoryview = py.pyodide.runPython("lambda buf: buf.to_memoryview()");
  const v = await callRpc("version", {});
  if (!v.ok) throw new Error(`s5vec.rpc version op failed: ${v.error.name}: ${v.error.message}`);
  py.version = v.result;
}

/** The start-up steps, in protocol order (STEPS names them for the page). */
const STARTUP = { "load-pyodide": loadPyodide, "load-numpy": loadNumpy, "load-wheels": loadWheels, "import-s5vec": importS5vec };

async function runStep(name, cfg) {
  currentStep = name;
  const t0 = performance.now();
  post({ type: MSG.PROGRESS, step: name, phase: "start", ms: 0 });
  await STARTUP[name](cfg);
  const ms = performance.now() - t0;
  post({ type: MSG.PROGRESS, step: name, phase: "done", ms });
  return ms;
}

/** Run every start-up step once; resolves to the runtime info the page gets with READY. */
async function start(init) {
  const t0 = performance.now();
  let indexURL = new URL(init.pyodideIndexUrl ?? "pyodide/", BASE).href;
  if (!indexURL.endsWith("/")) indexURL += "/";
  const cfg = { indexURL };
  const steps = {};
  for (const name of STEPS) steps[name] = await runStep(name, cfg);
  currentStep = null;
  return { ...py.version, pyodide: py.pyodide.version, release: py.release, indexURL,
    startupMs: performance.now() - t0, steps };
}

// ---------------------------------------------------------------- rpc

// ops whose handler reports progress: the worker hands Python a callback that posts
// { type: MSG.PROGRESS, id, progress } for the call `id`
const PROGRESS_OPS = new Set([OPS.commit]);

/** Hand one call to s5vec.rpc.handle; resolves to its reply object (never rejects). */
async function callRpc(op, args, id) {
  let pyArgs = null;
  try {
    const key = args && typeof args === "object"
      ? ["vector", "vectors"].find((name) => ArrayBuffer.isView(args[name])) : undefined;
    if (key !== undefined) {
      // hand the Float32Array to Python as a memoryview (format 'f'; one copy into the wasm heap)
      const { [key]: buf, ...rest } = args;
      pyArgs = py.pyodide.toPy(rest);
      const mv = py.toMemoryview(buf);
      try {
        pyArgs.set(key, mv);
      } finally {
        mv.destroy();
      }
    } else {
      pyArgs = py.pyodide.toPy(args);
    }
    if (id !== undefined && PROGRESS_OPS.has(op) && pyArgs && typeof pyArgs.set === "function") {
      pyArgs.set("progress", (json) => post({ type: MSG.PROGRESS, id, progress: JSON.parse(json) }));
    }
    return JSON.parse(await py.handle(op, pyArgs));
  } catch (err) {
    // rpc.handle never raises by contract; anything here is a bridge/runtime bug or a conversion error
    return { ok: false, error: errorObject(err) };
  } finally {
    if (pyArgs && typeof pyArgs.destroy === "function") pyArgs.destroy();
  }
}

async function onCall(msg) {
  let reply;
  try {
    if (!ready) throw new Error("worker not initialised (send init first)");
    await ready;
    // the one check before Python: a request too deep would overflow the stack inside toPy
    const tooBig = checkRequest(msg.args);
    reply = tooBig ? { ok: false, error: tooBig } : await callRpc(msg.op, msg.args, msg.id);
  } catch (err) {
    reply = { ok: false, error: errorObject(err) };
  }
  try {
    post({ type: MSG.REPLY, id: msg.id, ...reply });
  } catch (err) {
    // result not structured-clonable: still answer
    post({ type: MSG.REPLY, id: msg.id, ok: false, error: errorObject(err) });
  }
}

function onInit(msg) {
  if (ready) return; // start-up runs once
  ready = start(msg);
  ready.then(
    (runtime) => post({ type: MSG.READY, runtime }),
    (err) => post({ type: MSG.STARTUP_FAILED, step: currentStep, error: errorObject(err, "StartupError") }),
  );
}

// ---------------------------------------------------------------- transport

self.addEventListener("message", (ev) => {
  const msg = ev.data;
  if (msg && msg.type === MSG.INIT) onInit(msg);
  else if (msg && msg.type === MSG.CALL) onCall(msg);
  else post({ type: MSG.REPLY, id: msg && msg.id, ok: false,
              error: { name: "InvalidArgumentError", message: `unknown message type ${JSON.stringify(msg && msg.type)}` } });
});

self.addEventListener("unhandledrejection", (ev) => {
  ev.preventDefault();
  console.error("[s5vec worker] unhandled rejection", ev.reason);
});
