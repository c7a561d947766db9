// Messages between the bridge (s5vec.js, page side) and worker.js. The single definition of the protocol.
//
// page -> worker
//   { type: MSG.INIT, pyodideIndexUrl: string|null }                 start the runtime (once)
//   { type: MSG.CALL, id: number, op: string, args: object }          one rpc call; args.vector may be a
//                                                                    Float32Array (its buffer is transferred)
// worker -> page
//   { type: MSG.PROGRESS, step: STEP, phase: "start"|"done", ms: number }   start-up progress
//   { type: MSG.READY, runtime: {numpy, s5vec, python, platform, pyodide, startupMs, steps} }
//   { type: MSG.STARTUP_FAILED, step: STEP, error: {name, message} }
//   { type: MSG.REPLY, id: number, ok: true, result: any }
//   { type: MSG.REPLY, id: number, ok: false, error: {name, message} }
export const MSG = Object.freeze({
  INIT: "init",
  CALL: "call",
  PROGRESS: "progress",
  READY: "ready",
  STARTUP_FAILED: "startup-failed",
  REPLY: "reply",
});

// Start-up steps, in order.
export const STEPS = Object.freeze(["load-pyodide", "load-numpy", "load-wheels", "import-s5vec"]);

// rpc operations understood by s5vec.rpc.handle
export const OPS = Object.freeze({
  VERSION: "version",
  OPEN: "open",
  SEARCH: "search",
  CLOSE: "close",
  STATS: "stats",
  SEARCH_TEXT: "searchText",
  GET: "get",
});
