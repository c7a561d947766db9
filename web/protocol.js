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
});

// Limits of one request's args, checked by the worker BEFORE converting them to Python (a deep
// object would overflow the stack inside pyodide.toPy and take the worker down). The same numbers
// and rules as s5vec.limits.check_request on the Python side. Returns null or {name, message}.
export const LIMITS = Object.freeze({ requestDepth: 64, requestBytes: 64 * 2 ** 20, filterDepth: 32 });

export function checkRequest(args) {
  const stack = [[args, 1, false]];
  let size = 0;
  while (stack.length) {
    const [value, depth, inFilter] = stack.pop();
    if (typeof value === "string") size += value.length + 2;
    else if (ArrayBuffer.isView(value)) size += value.byteLength;
    else if (value instanceof ArrayBuffer) size += value.byteLength;
    else if (value !== null && typeof value === "object") {
      if (depth > LIMITS.requestDepth) {
        return inFilter
          ? { name: "FilterError", message: `filter nested too deeply (more than ${LIMITS.filterDepth} levels)` }
          : { name: "InvalidArgumentError", message: `request nested too deeply (more than ${LIMITS.requestDepth} levels)` };
      }
      const entries = Array.isArray(value) ? value.map((v) => [null, v]) : Object.entries(value);
      size += 2 + entries.length;
      for (const [k, v] of entries) {
        if (k !== null) size += k.length + 3;
        stack.push([v, depth + 1, inFilter || (depth === 1 && k === "filter")]);
      }
    } else size += 8;
    if (size > LIMITS.requestBytes) {
      return { name: "InvalidArgumentError", message: `request too large (more than ${LIMITS.requestBytes / 2 ** 20} MiB)` };
    }
  }
  return null;
}
