// Film finder: the s5vec demo page. Type a title or describe a film; results come as you type.
// Reads ./demo-config.json: {"manifest": cid, "portals": [url...], "count": n, "genres": [name...],
// "years": [min, max], "examples": [query...]}. Everything searches through the bridge (db.searchText,
// db.get) in a Pyodide worker; the page itself never sees a vector.
import { S5Vec } from "./s5vec.js";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 180;
const K = 10;
const state = { db: null, seq: 0, timer: 0, view: { kind: "none" }, lastQuery: "", config: null, searches: 0 };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

// ------------------------------------------------------------------ start-up progress

const BOOT = [
  // [worker step or phase, share of the bar at its end, what a person reads]
  ["load-pyodide", 35, "Starting the search engine…"],
  ["load-numpy", 55, "Starting the search engine…"],
  ["load-wheels", 65, "Starting the search engine…"],
  ["import-s5vec", 72, "Starting the search engine…"],
  ["open", 100, "Loading the language model and the film index…"],
];

function bootProgress(step, phase) {
  const i = BOOT.findIndex(([name]) => name === step);
  if (i < 0) return;
  const pct = phase === "done" ? BOOT[i][1] : i ? BOOT[i - 1][1] : 5;
  $("boot-fill").style.width = `${pct}%`;
  $("boot").setAttribute("aria-valuenow", String(pct));
  $("boot-label").textContent = `${BOOT[i][2]} (step ${i < 4 ? 1 : 2} of 2)`;
}

// ------------------------------------------------------------------ filters

function yearValue(id) {
  const v = $(id).value.trim();
  return v === "" || !Number.isFinite(Number(v)) ? null : Math.trunc(Number(v));
}

/** The filter controls as an s5vec filter (null for none); a reversed year range is ignored (and flagged). */
export function currentFilter() {
  const filter = {};
  const genre = $("genre").value;
  if (genre) filter.genres = genre;
  const from = yearValue("year-from");
  const to = yearValue("year-to");
  const reversed = from !== null && to !== null && from > to;
  $("range-warning").hidden = !reversed;
  if (!reversed && (from !== null || to !== null)) {
    filter.year = {};
    if (from !== null) filter.year.$gte = from;
    if (to !== null) filter.year.$lte = to;
  }
  const rating = $("rating").value;
  if (rating) filter.rating = { $gte: Number(rating) };
  const parts = [genre, from !== null || to !== null ? `${from ?? "…"}–${to ?? "…"}` : "", rating ? `★ ${rating}+` : ""];
  $("filter-summary").textContent = parts.filter(Boolean).length ? `(${parts.filter(Boolean).join(", ")})` : "";
  return Object.keys(filter).length ? filter : null;
}

// ------------------------------------------------------------------ results

function filmText(m) {
  // the same text the collection was embedded from: "Title (year), Genre, Genre"
  const genres = (m.genres || []).join(", ");
  return `${m.title} (${m.year})${genres ? `, ${genres}` : ""}`;
}

function filmItem(hit) {
  const m = hit.metadata || {};
  const meta = el("div", { className: "film-meta" });
  for (const g of m.genres || []) meta.append(el("span", { className: "genre", textContent: g }));
  if (typeof m.rating === "number") {
    meta.append(el("span", { className: "rating", textContent: `★ ${m.rating.toFixed(1)}` }));
    if (m.votes) meta.append(` (${m.votes.toLocaleString("en")} votes)`);
  }
  if (m.length) meta.append(` · ${m.length} min`);
  if (m.mpaa) meta.append(` · ${m.mpaa}`);
  return el("li", { dataset: { id: String(hit.id), score: String(hit.score) } },
    el("div", { className: "film-title" }, m.title ?? String(hit.id), el("span", { className: "year", textContent: m.year ?? "" })),
    meta,
    el("button", { type: "button", className: "more", textContent: "More like this", onclick: () => moreLikeThis(hit) }));
}

function showDev(stats, what) {
  const rows = [
    ["last query", what],
    ["time in worker", `${stats.ms.toFixed(1)} ms`],
    ["downloaded", `${fmtBytes(stats.bytesFetched)} in ${stats.chunksFetched} chunks`],
    ["cache hits", String(stats.cacheHits)],
  ];
  if (stats.worker !== undefined) rows.push(["answered by", `worker ${stats.worker} of ${state.db.workers}`]);
  if (stats.planned) {
    const p = stats.planned;
    rows.push(["chunks planned", `model ${p.model ?? 0} · postings ${p.postings ?? 0} · index ${p.index ?? 0} · docs ${p.docs ?? 0}`]);
  }
  if (state.startup) rows.push(...state.startup);
  $("dev-stats").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
}

function render(hits, seq, { scroll = false } = {}) {
  if (seq !== state.seq) return;
  $("error").hidden = true;
  $("hint").hidden = true;
  $("results").replaceChildren(...hits.map(filmItem));
  $("empty").hidden = hits.length > 0;
  state.searches += 1;
  document.body.dataset.searches = String(state.searches);
  document.body.dataset.query = state.view.kind === "mlt" ? `mlt:${state.view.id}` : state.view.text ?? "";
  if (scroll) {
    const top = $("mlt").hidden ? $("results") : $("mlt");
    if (top.getBoundingClientRect().top > window.innerHeight * 0.6) top.scrollIntoView({ block: "start" });
  }
}

function renderError(err, seq) {
  if (seq !== state.seq) return;
  $("results").replaceChildren();
  $("empty").hidden = true;
  if (err.name === "EmptyQueryError") {
    // punctuation only: nothing to search for yet, not an error worth shouting about
    $("hint").hidden = false;
    $("hint").textContent = "Type a word or two (letters or digits).";
  } else {
    $("error").hidden = false;
    $("error").textContent = `Sorry, that search failed: ${err.message}`;
  }
  state.searches += 1;
  document.body.dataset.searches = String(state.searches);
  document.body.dataset.query = state.view.text ?? "";
}

async function runSearch({ scroll = false } = {}) {
  const text = $("q").value;
  state.view = { kind: "text", text };
  $("mlt").hidden = true;
  if (!text.trim()) {
    ++state.seq;
    $("results").replaceChildren();
    $("empty").hidden = true;
    $("hint").hidden = false;
    $("hint").textContent = "Type to search. Results appear as you type.";
    return;
  }
  if (!state.db) return; // runs when the index is open
  const seq = ++state.seq;
  const mode = $("mode").value;
  try {
    const hits = await state.db.searchText(text, { k: K, filter: currentFilter(), mode });
    if (seq === state.seq) showDev(state.db.lastStats, `“${text}” (${mode})`);
    render(hits, seq, { scroll });
  } catch (err) {
    renderError(err, seq);
  }
}

async function moreLikeThis(hit) {
  if (!state.db) return;
  const m = hit.metadata || {};
  state.view = { kind: "mlt", id: String(hit.id), hit };
  const seq = ++state.seq;
  $("mlt").hidden = false;
  $("mlt-title").textContent = `${m.title} (${m.year})`;
  try {
    // the film's own text, embedding only; the film itself is left out
    const hits = await state.db.searchText(filmText(m), { k: K + 1, filter: currentFilter(), mode: "vector" });
    if (seq === state.seq) showDev(state.db.lastStats, `more like ${hit.id}`);
    render(hits.filter((h) => String(h.id) !== String(hit.id)).slice(0, K), seq, { scroll: true });
  } catch (err) {
    renderError(err, seq);
  }
}

function refresh() {
  if (state.view.kind === "mlt") moreLikeThis(state.view.hit);
  else runSearch();
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("q").addEventListener("input", () => {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => runSearch(), DEBOUNCE_MS);
  });
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearTimeout(state.timer);
    $("q").blur(); // closes a phone keyboard so the results are in view
    runSearch({ scroll: true });
  });
  for (const id of ["genre", "rating", "mode"]) $(id).addEventListener("change", refresh);
  for (const id of ["year-from", "year-to"]) {
    $(id).addEventListener("input", () => {
      clearTimeout(state.timer);
      state.timer = setTimeout(refresh, DEBOUNCE_MS);
    });
  }
  $("swap").addEventListener("click", () => {
    const a = $("year-from").value;
    $("year-from").value = $("year-to").value;
    $("year-to").value = a;
    refresh();
  });
  $("clear").addEventListener("click", () => {
    for (const id of ["genre", "year-from", "year-to", "rating"]) $(id).value = "";
    refresh();
  });
  $("back").addEventListener("click", () => runSearch());
  if (window.matchMedia("(max-width: 600px)").matches) $("filters").open = false;
}

/** "Keep this index offline": every chunk of the index and its text model pinned in the chunk cache. */
function wirePin(offline) {
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
}

async function main() {
  wire();
  currentFilter();
  const t0 = performance.now();
  // offline-first: the service worker serves the runtime and the chunks already seen (registered
  // before the worker starts, so its fetches go through it); a page without one still works online
  const offline = await S5Vec.offline.register().catch((err) => {
    console.warn("s5vec: no offline support:", err);
    return { controlled: false };
  });
  state.offline = offline;
  document.body.dataset.offlineMs = String(Math.round(performance.now() - t0));
  const resp = await fetch("./demo-config.json");
  if (!resp.ok) throw new Error(`demo-config.json: HTTP ${resp.status} (run ./demo.sh first)`);
  const config = (state.config = await resp.json());
  if (config.count) $("tagline").textContent = `${config.count.toLocaleString("en")} films (IMDb, 2005), searched right in your browser`;
  $("genre").append(...(config.genres || []).map((g) => el("option", { value: g, textContent: g })));
  if (config.years) {
    $("year-from").placeholder = String(config.years[0]);
    $("year-to").placeholder = String(config.years[1]);
  }
  const examples = config.examples || [];
  if (examples.length) {
    $("examples").append("Try:", ...examples.map((q) => el("button", {
      type: "button", textContent: q, onclick: () => { $("q").value = q; runSearch({ scroll: true }); },
    })));
  }
  bootProgress("load-pyodide", "start");
  const runtime = await S5Vec.runtime({ onProgress: ({ step, phase }) => bootProgress(step, phase) });
  bootProgress("open", "start");
  const t1 = performance.now();
  // ?workers=N (dev): a pool of N workers, clamped to what this machine allows
  const asked = Number(new URLSearchParams(location.search).get("workers"));
  const workers = Number.isInteger(asked) && asked > 1 ? Math.min(asked, S5Vec.maxWorkers()) : 1;
  state.db = await S5Vec.open({ manifest: config.manifest, portals: config.portals, workers });
  bootProgress("open", "done");
  const info = state.db.info;
  state.startup = [
    ["index", `${info.count.toLocaleString("en")} records, ${info.dim}-d ${info.metric}, ${info.kind}`],
    ["runtime start-up", `${runtime.startupMs.toFixed(0)} ms (Pyodide ${runtime.pyodideVersion}, numpy ${runtime.numpyVersion})`],
    ["open index + model", `${(performance.now() - t1).toFixed(0)} ms`],
    ["page to ready", `${(performance.now() - t0).toFixed(0)} ms`],
    ["offline", offline.controlled ? `ready (release ${offline.release})` : "not available"],
  ];
  if (workers > 1) state.startup.push(["workers", `${workers} (?workers=N, at most ${S5Vec.maxWorkers()} here)`]);
  $("dev-stats").replaceChildren(...state.startup.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
  $("boot").classList.add("done");
  document.body.dataset.ready = "1";
  document.body.dataset.readyMs = String(Math.round(performance.now() - t0));
  document.body.dataset.offlineReady = offline.controlled ? "1" : "0";
  wirePin(offline);
  if ($("q").value.trim()) runSearch(); // typed while loading
}

main().catch((err) => {
  $("boot").classList.add("failed");
  $("boot-label").textContent = `Could not start: ${err.message}`;
  document.body.dataset.ready = "error";
  console.error(err);
});
