// s5vec demo page: "more like this" over sample videos, with channel and upload-date filters.
// Reads ./demo-config.json: {"manifest": cid, "portals": [url...], "samples": [{id, title, channel, tags,
// uploaded (ISO string), timestamp (unix seconds), vector: [floats]}], "channels"?: [names], "count"?: n}
import { S5Vec } from "./s5vec.js";

const $ = (id) => document.getElementById(id);
const state = { db: null, samples: [], byId: new Map(), current: null, seq: 0 };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

function dayStartUnix(value) {
  // "YYYY-MM-DD" -> unix seconds at 00:00 UTC
  return Math.floor(Date.parse(`${value}T00:00:00Z`) / 1000);
}

/** The current filter controls as an s5vec filter, or null for none. */
export function currentFilter() {
  const filter = {};
  const channel = $("channel").value;
  if (channel) filter.channel = channel;
  const range = {};
  if ($("from").value) range.$gte = dayStartUnix($("from").value);
  if ($("to").value) range.$lt = dayStartUnix($("to").value) + 86400; // inclusive end day
  if (Object.keys(range).length) filter.uploaded_ts = range;
  return Object.keys(filter).length ? filter : null;
}

function videoItem(v, extra) {
  const meta = [v.channel, (v.uploaded || "").slice(0, 10), (v.tags || []).join(", ")].filter(Boolean).join(" · ");
  const li = el("li", { dataset: { id: String(v.id) } });
  if (extra && extra.score !== undefined) li.append(el("span", { className: "score", textContent: extra.score.toFixed(4) }));
  li.append(el("div", { className: "title", textContent: v.title ?? String(v.id) }), el("div", { className: "meta", textContent: meta }));
  if (v.vector) {
    li.append(el("button", { type: "button", className: "more", textContent: "more like this", onclick: () => moreLikeThis(v) }));
  }
  return li;
}

function renderSamples() {
  const list = $("samples");
  list.replaceChildren(...state.samples.map((v) => videoItem(v)));
}

async function moreLikeThis(video) {
  if (!state.db) return;
  state.current = video;
  const seq = ++state.seq; // only the latest search may render
  $("query-title").textContent = `“${video.title ?? video.id}”`;
  $("error").hidden = true;
  const filter = currentFilter();
  $("search-stats").textContent = "searching…";
  try {
    const hits = await state.db.search(video.vector, { k: 10, filter });
    if (seq !== state.seq) return;
    const s = state.db.lastStats;
    $("search-stats").textContent =
      `${hits.length} results in ${s.ms.toFixed(1)} ms · fetched ${fmtBytes(s.bytesFetched)} in ${s.chunksFetched} chunks` +
      ` · ${s.cacheHits} cache hits` + (filter ? ` · filter ${JSON.stringify(filter)}` : "");
    $("results").replaceChildren(...hits.map((h) => {
      const m = h.metadata || {};
      const known = state.byId.get(String(h.id));
      return videoItem({ id: h.id, title: m.title, channel: m.channel, tags: m.tags, uploaded: m.uploaded,
        vector: known ? known.vector : undefined }, { score: h.score });
    }));
  } catch (err) {
    if (seq !== state.seq) return;
    $("search-stats").textContent = "";
    $("results").replaceChildren();
    $("error").hidden = false;
    $("error").textContent = `${err.name}: ${err.message}`;
  }
}

async function main() {
  const t0 = performance.now();
  // offline-first: the service worker serves the runtime and the chunks already seen (before the
  // worker starts, so its fetches go through it); a page without one still works online
  const offline = await S5Vec.offline.register().catch((err) => {
    console.warn("s5vec: no offline support:", err);
    return { controlled: false };
  });
  state.offline = offline;
  document.body.dataset.offlineMs = String(Math.round(performance.now() - t0));
  const resp = await fetch("./demo-config.json");
  if (!resp.ok) throw new Error(`demo-config.json: HTTP ${resp.status} (run the demo script first)`);
  const config = await resp.json();
  state.samples = config.samples || [];
  for (const v of state.samples) state.byId.set(String(v.id), v);
  const channels = config.channels ?? [...new Set(state.samples.map((v) => v.channel).filter(Boolean))].sort();
  $("channel").append(...channels.map((c) => el("option", { value: c, textContent: c })));
  renderSamples();

  $("status").textContent = "Starting Python (Pyodide + numpy) in a worker…";
  const onProgress = ({ step, phase, ms }) => {
    if (phase === "start") $("steps").append(el("li", { id: `step-${step}`, textContent: `${step}…` }));
    else $(`step-${step}`).textContent = `${step}: ${ms.toFixed(0)} ms`;
  };
  const runtime = await S5Vec.runtime({ onProgress });
  state.db = await S5Vec.open({ manifest: config.manifest, portals: config.portals });
  const total = performance.now() - t0;
  const info = state.db.info;
  $("status").textContent =
    `Ready: ${info.count} vectors (${info.dim}-d ${info.metric}, ${info.kind}) · start-up ${runtime.startupMs.toFixed(0)} ms` +
    ` · page to ready ${total.toFixed(0)} ms · numpy ${runtime.numpyVersion}, Python ${runtime.pythonVersion}` +
    (offline.controlled ? ` · offline-ready (release ${offline.release})` : "");
  document.body.dataset.ready = "1";
  document.body.dataset.readyMs = String(Math.round(total));
  $("pin").hidden = !offline.controlled;
  $("pin").addEventListener("click", async () => {
    $("pin").disabled = true;
    try {
      const r = await state.db.pin({
        onProgress: (p) => ($("pin-state").textContent = `${p.done}/${p.total} chunks (${fmtBytes(p.bytes)})`),
      });
      $("pin-state").textContent = `kept offline: ${r.chunks} chunks, ${fmtBytes(r.bytes)}`;
    } catch (err) {
      $("pin-state").textContent = `${err.name}: ${err.message}`;
    } finally {
      $("pin").disabled = false;
    }
  });
  for (const id of ["channel", "from", "to"]) $(id).addEventListener("change", () => state.current && moreLikeThis(state.current));
  $("clear").addEventListener("click", () => {
    $("channel").value = "";
    $("from").value = "";
    $("to").value = "";
    if (state.current) moreLikeThis(state.current);
  });
}

main().catch((err) => {
  $("status").textContent = `Failed: ${err.name}: ${err.message}`;
  document.body.dataset.ready = "error";
  console.error(err);
});
