// Messages between the bridge (s5vec.js, page side) and worker.js, and the ops s5vec.rpc serves.
//
// Everything named here comes from protocol.json, the one table both sides use: it is
// pkg/s5vec/protocol.json (read by s5vec.rpc in Python), copied next to this file into web/dist
// by build_wheel.sh. Add an op there (and its handler in rpc.py), never here.
//
// page -> worker
//   { type: MSG.INIT, pyodideIndexUrl: string }                      start the runtime (once)
//   { type: MSG.CALL, id: number, op: string, args: object }          one rpc call; args.vector may be a
//                                                                    Float32Array (its buffer is transferred)
// worker -> page
//   { type: MSG.PROGRESS, step: STEP, phase: "start"|"done", ms: number }   start-up progress
//   { type: MSG.READY, runtime: {numpy, s5vec, python, platform, ops, pyodide, indexURL, startupMs, steps} }
//   { type: MSG.STARTUP_FAILED, step: STEP, error: {name, message} }
//   { type: MSG.REPLY, id: number, ok: true, result: any }
//   { type: MSG.REPLY, id: number, ok: false, error: {name, message} }
//
// The worker forwards every CALL to s5vec.rpc.handle unchecked; rpc answers an op it does not
// serve with InvalidArgumentError naming the ones it does.
import protocol from "./protocol.json" with { type: "json" };

/** Message types. */
export const MSG = Object.freeze({ ...protocol.messages });

/** Start-up steps, in order. */
export const STEPS = Object.freeze([...protocol.steps]);

/** rpc op names, keyed by themselves: OPS.search === "search". */
export const OPS = Object.freeze(Object.fromEntries(Object.keys(protocol.ops).map((name) => [name, name])));

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
