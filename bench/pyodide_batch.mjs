// Pyodide in Node (the worker's runtime without the browser) timing single searches and search_batch
// on a published index; CPU time from process.cpuUsage, so the figures hold on a busy machine.
// usage: node bench/pyodide_batch.mjs <pkg dir> <portal url> <json args: cids, queries (.npy path), reps> <wheel>...
import fs from "fs";
import path from "path";
import { boot } from "../tests/fixtures/pyodide_boot.mjs";

const [pkgRoot, portalUrl, argsJson, ...wheels] = process.argv.slice(2);
const args = JSON.parse(argsJson);
const py = await boot({ pkgRoot, portalUrl, argsJson, wheels });
py.registerJsModule("cpu", { ms: () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; } });
py.FS.mkdirTree("/q");
py.FS.mount(py.FS.filesystems.NODEFS, { root: path.dirname(args.queries) }, "/q");
const out = await py.runPythonAsync(`
import json, sys, time
sys.path.insert(0, "/pkg")
import numpy as np
import cpu
from s5vec import api
args = json.loads(ARGS)
Q = np.load("/q/" + args["queries"].split("/")[-1])
rows = []
def same_hits(a, b):  # as bench_batch.same_hits: ids in order, scores within float32 rounding
    return [h["id"] for h in a] == [h["id"] for h in b] and all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a, b))
for kind, cid in args["cids"].items():
    db = await api.Database.open_async(cid, [PORTAL])
    for q in Q:
        await db.search_async(q, 10)
    single_cpu, batch_cpu, batch_wall, lat = [], [], [], []
    for _ in range(args["reps"]):
        c0 = cpu.ms()
        for q in Q:
            t0 = time.perf_counter(); await db.search_async(q, 10); lat.append((time.perf_counter() - t0) * 1e3)
        c1 = cpu.ms(); t1 = time.perf_counter()
        res = await db.search_batch_async(Q, 10)
        batch_wall.append((time.perf_counter() - t1) * 1e3); batch_cpu.append(cpu.ms() - c1)
        single_cpu.append((c1 - c0) / len(Q))
    one = [(await db.search_async(q, 10))["hits"] for q in Q]
    lat = np.array(lat)
    rows.append({"kind": kind, "single_cpu_ms": min(single_cpu), "p50": float(np.median(lat)),
                 "p99": float(np.percentile(lat, 99)), "batch_cpu_ms": min(batch_cpu), "batch_wall_ms": min(batch_wall),
                 "equal": all(map(same_hits, one, res["results"]))})
json.dumps(rows)
`);
console.log(out);
