// s5vec web worker (module worker). Boots Pyodide + numpy + the s5vec wheels, then answers rpc calls.
// Served from web/dist/worker.js; everything it loads resolves relative to its own URL:
//   ./protocol.js, ./vendor/hash-wasm/index.esm.min.js, ./wheels/manifest.json, ./pyodide/ (default indexURL)
import { MSG, OPS } from "./protocol.js";
import { createBLAKE3 } from "./vendor/hash-wasm/index.esm.min.js";

const BASE = new URL("./", self.location.href);

let pyodide = null;
let rpcModule = null;        // PyProxy of the s5vec.rpc module
let rpcHandle = null;        // s5vec.rpc.handle (a PyProxy of an async function)
let toMemoryview = null;     // Python: JS typed array -> memoryview
let startup = null;          // Promise resolved when ready, rejected when start-up failed
let currentStep = null;
let release = null;          // the bundle's release id (wheels/manifest.json, written by web/precache.py)

// ---------------------------------------------------------------- helpers

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

async function step(name, fn) {
  currentStep = name;
  const t0 = performance.now();
  post({ type: MSG.PROGRESS, step: name, phase: "start", ms: 0 });
  const result = await fn();
  const ms = performance.now() - t0;
  post({ type: MSG.PROGRESS, step: name, phase: "done", ms });
  return { result, ms };
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

// blake3 for the Python package's hashing backend (`import s5vec_js; s5vec_js.blake3(data)`).
// hash-wasm's WebAssembly BLAKE3: created once (async: compiles the embedded wasm) during start-up,
// then reused; init()/update()/digest() are synchronous, so s5vec_js.blake3 stays a sync call for
// Python. digest("binary") returns a fresh copy, so reusing the hasher is safe.
let blake3Hasher = null;

function blake3(u8) {
  if (!blake3Hasher) throw new Error("s5vec_js.blake3 called before the hasher was created");
  blake3Hasher.init();
  blake3Hasher.update(u8);
  return blake3Hasher.digest("binary");
}

// Accepts a Uint8Array/TypedArray/ArrayBuffer, or a Python bytes-like object (PyProxy with getBuffer);
// returns the 32-byte digest as a Uint8Array (a JsProxy on the Python side: use .to_bytes()).
function blake3Digest(data) {
  let u8;
  if (data instanceof Uint8Array) u8 = data;
  else if (ArrayBuffer.isView(data)) u8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else if (data instanceof ArrayBuffer) u8 = new Uint8Array(data);
  else if (data && typeof data.getBuffer === "function") {
    const view = data.getBuffer("u8");
    try {
      return blake3(view.data);
    } finally {
      view.release();
    }
  } else {
    throw new TypeError("s5vec_js.blake3 expects bytes-like data");
  }
  return blake3(u8);
}

// ---------------------------------------------------------------- start-up

async function boot(cfg) {
  const t0 = performance.now();
  const steps = {};
  let indexURL = cfg.pyodideIndexUrl ? new URL(cfg.pyodideIndexUrl, BASE).href : new URL("pyodide/", BASE).href;
  if (!indexURL.endsWith("/")) indexURL += "/";

  steps["load-pyodide"] = (await step("load-pyodide", async () => {
    const mod = await import(indexURL + "pyodide.mjs");
    pyodide = await mod.loadPyodide({
      indexURL,
      stdout: (s) => console.log("[s5vec py]", s),
      stderr: (s) => console.warn("[s5vec py]", s),
    });
  })).ms;

  steps["load-numpy"] = (await step("load-numpy", async () => {
    const errors = [];
    // by name: from the lock file of whichever distribution indexURL points at (hash-checked by Pyodide)
    await pyodide.loadPackage("numpy", { messageCallback: () => {}, errorCallback: (m) => errors.push(m) });
    try {
      pyodide.runPython("import numpy");
    } catch (e) {
      throw new Error(`numpy failed to load from ${indexURL}: ${errors.join("; ") || e.message}`);
    }
  })).ms;

  steps["load-wheels"] = (await step("load-wheels", async () => {
    const manifestUrl = new URL("wheels/manifest.json", BASE);
    const resp = await fetch(manifestUrl);
    if (!resp.ok) throw new Error(`GET ${manifestUrl} -> HTTP ${resp.status}`);
    const manifest = await resp.json();
    release = typeof manifest?.release === "string" ? manifest.release : null;
    if (!manifest || !Array.isArray(manifest.wheels) || manifest.wheels.length === 0) {
      throw new Error(`${manifestUrl} lists no wheels`);
    }
    const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
    const fetched = await Promise.all(manifest.wheels.map(async (w) => {
      if (!/^[A-Za-z0-9_.+-]+\.whl$/.test(w.file)) throw new Error(`bad wheel name in manifest: ${w.file}`);
      const url = new URL(w.file, manifestUrl);
      const r = await fetch(url);
      if (!r.ok) throw new Error(`GET ${url} -> HTTP ${r.status}`);
      const bytes = await r.arrayBuffer();
      const got = hex(await crypto.subtle.digest("SHA-256", bytes));
      if (got !== String(w.sha256).toLowerCase()) {
        const e = new Error(`wheel ${w.file}: sha256 ${got} does not match manifest ${w.sha256}`);
        e.s5vecName = "IntegrityError";
        throw e;
      }
      return { file: w.file, bytes };
    }));
    // install exactly the verified bytes (pure-Python wheels: unpacking into site-packages is installing)
    for (const w of fetched) pyodide.unpackArchive(w.bytes, "wheel", { extractDir: sitePackages });
    pyodide.runPython("import importlib; importlib.invalidate_caches()");
  })).ms;

  const importStep = (await step("import-s5vec", async () => {
    if (!blake3Hasher) blake3Hasher = await createBLAKE3();
    pyodide.registerJsModule("s5vec_js", { blake3: blake3Digest });
    // sync urllib/http.client -> synchronous XHR, so the package's portal client works in the worker
    await pyodide.runPythonAsync("import pyodide_http\npyodide_http.patch_all()");
    rpcModule = pyodide.pyimport("s5vec.rpc"); // kept alive: rpcHandle is borrowed from it
    rpcHandle = rpcModule.handle;
    toMemoryview = pyodide.runPython("lambda buf: buf.to_memoryview()");
    const v = await callRpc(OPS.VERSION, {});
    if (!v.ok) throw new Error(`s5vec.rpc version op failed: ${v.error.name}: ${v.error.message}`);
    return v;
  }));
  const version = importStep.result;
  steps["import-s5vec"] = importStep.ms;
  currentStep = null;
  return {
    ...version.result,
    pyodide: pyodide.version,
    release,
    indexURL,
    startupMs: performance.now() - t0,
    steps,
  };
}

// ---------------------------------------------------------------- rpc

// ops whose handler reports progress: the worker hands Python a callback that posts
// { type: MSG.PROGRESS, id, progress } for the call `id`
const PROGRESS_OPS = new Set([OPS.COMMIT]);

async function callRpc(op, args, id) {
  let pyArgs = null;
  try {
    if (args && args.vector && ArrayBuffer.isView(args.vector)) {
      // hand the Float32Array to Python as a memoryview (format 'f'; one copy into the wasm heap)
      const { vector, ...rest } = args;
      pyArgs = pyodide.toPy(rest);
      const mv = toMemoryview(vector);
      try {
        pyArgs.set("vector", mv);
      } finally {
        mv.destroy();
      }
    } else {
      pyArgs = pyodide.toPy(args ?? {});
    }
    if (id !== undefined && PROGRESS_OPS.has(op)) {
      pyArgs.set("progress", (json) => post({ type: MSG.PROGRESS, id, progress: JSON.parse(json) }));
    }
    const json = await rpcHandle(op, pyArgs);
    return JSON.parse(json);
  } catch (err) {
    // rpc.handle never raises by contract; anything here is a bridge/runtime bug or a conversion error
    return { ok: false, error: errorObject(err) };
  } finally {
    if (pyArgs && typeof pyArgs.destroy === "function") pyArgs.destroy();
  }
}

async function onCall(msg) {
  const id = msg.id;
  let reply;
  try {
    if (!startup) throw new Error("worker not initialised (send init first)");
    await startup;
    if (typeof msg.op !== "string" || !Object.values(OPS).includes(msg.op)) {
      reply = { ok: false, error: { name: "InvalidArgumentError", message: `unknown op ${JSON.stringify(msg.op)}` } };
    } else if (msg.args === null || typeof msg.args !== "object") {
      reply = { ok: false, error: { name: "InvalidArgumentError", message: "args must be an object" } };
    } else {
      reply = await callRpc(msg.op, msg.args, id);
    }
  } catch (err) {
    reply = { ok: false, error: errorObject(err) };
  }
  try {
    post({ type: MSG.REPLY, id, ...reply });
  } catch (err) {
    // result not structured-clonable: still answer
    post({ type: MSG.REPLY, id, ok: false, error: errorObject(err) });
  }
}

self.addEventListener("message", (ev) => {
  const msg = ev.data;
  try {
    if (!msg || typeof msg !== "object") throw new Error("message must be an object");
    if (msg.type === MSG.INIT) {
      if (!startup) {
        startup = boot(msg);
        startup.then(
          (runtime) => post({ type: MSG.READY, runtime }),
          (err) => post({ type: MSG.STARTUP_FAILED, step: currentStep, error: errorObject(err, "StartupError") }),
        );
      }
    } else if (msg.type === MSG.CALL) {
      onCall(msg);
    } else {
      throw new Error(`unknown message type ${JSON.stringify(msg.type)}`);
    }
  } catch (err) {
    post({ type: MSG.REPLY, id: msg && msg.id, ok: false, error: errorObject(err, "InvalidArgumentError") });
  }
});

self.addEventListener("unhandledrejection", (ev) => {
  ev.preventDefault();
  console.error("[s5vec worker] unhandled rejection", ev.reason);
});

