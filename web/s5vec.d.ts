// Types for the s5vec browser bridge (s5vec.js).

/** Start-up steps of the worker, in order. */
export type StartupStep = "load-pyodide" | "load-numpy" | "load-wheels" | "import-s5vec";
export declare const STEPS: readonly StartupStep[];

/** Names an S5VecError can carry: Python error classes plus bridge-side ones. */
export type S5VecErrorName =
  | "DimensionError"
  | "InvalidVectorError"
  | "FilterError"
  | "IntegrityError"
  | "PortalError"
  | "NotFoundError"
  | "FormatError"
  | "CIDError"
  | "InvalidArgumentError"
  | "UnknownIdError"
  | "EmptyQueryError"
  | "NoKnownTokensError"
  | "ClosedError"
  | "EmptyQueryError"
  | "NoKnownTokensError"
  | "InternalError"
  | "StartupTimeoutError"
  | "StartupError"
  | "WorkerError"
  | "OfflineUnavailableError"
  | "ServiceWorkerError"
  | "AuthError"
  | "QuotaError"
  | "NothingToCommitError";

export declare class S5VecError extends Error {
  constructor(name: string, message: string, extra?: Record<string, unknown>);
  name: S5VecErrorName | string;
  /** For StartupTimeoutError / StartupError: the start-up step it happened in. */
  step?: StartupStep | string;
}

export interface ProgressEvent {
  step: StartupStep;
  phase: "start" | "done";
  /** Duration of the step (for phase "done"). */
  ms: number;
  /** With `workers` > 1: which worker of the pool (absent for the first, shared one). */
  worker?: number;
}

export interface RuntimeOptions {
  /** URL of worker.js. Default: ./worker.js next to s5vec.js. */
  workerUrl?: string | URL;
  /** Pyodide distribution (directory with pyodide.mjs and a pyodide-lock.json that has numpy).
   * Default: ./pyodide/ next to s5vec.js. */
  pyodideIndexUrl?: string | URL;
  /** Reject with StartupTimeoutError when the worker is not ready after this long. Default 60000. */
  startTimeoutMs?: number;
  /** Called for every start-up step. */
  onProgress?: (ev: ProgressEvent) => void;
}

export interface OpenOptions extends RuntimeOptions {
  /** CID of the index manifest blob (or give `pointer`). */
  manifest?: string;
  /** A signed pointer (base64url of 0xed + ed25519 public key): the newest verified revision is opened. */
  pointer?: string;
  /** Account token for writes (uploads, pointer updates): sent as Authorization: Bearer. Reads stay anonymous. */
  authToken?: string;
  /** S5 portal base URLs, tried in order. */
  portals: string[];
  /** Byte budget of the in-worker chunk cache: what it holds, counted as held (decoded chunk bodies,
   * one copy each), including what the open index keeps for its life (`stats().resident_bytes`), so a
   * budget below that leaves no room for lazily fetched chunks. Default: sized from the manifest
   * (what the open keeps + up to 256 MiB of lists, refine rows and HNSW base blocks). */
  cacheBytes?: number;
  /** Deadline for fetching one blob, every portal and retry included (default 15000 ms). A slow or
   * hanging portal is also worked around sooner: the next portal is asked after a short delay. */
  timeoutMs?: number;
  /** Workers that serve this database (default 1): an integer from 1 to S5Vec.maxWorkers()
   * (navigator.hardwareConcurrency, at most MAX_WORKERS = 8), else InvalidArgumentError before
   * anything starts. With n > 1 the page's shared worker plus n - 1 more (started side by side, each
   * with its own Pyodide and its own copy of the open index) answer reads at once: each read goes to
   * the least busy worker, a searchBatch of 16+ queries is split across them. Writes, and reads while
   * edits are pending, go to the first worker; after commit/refresh the others reopen the new
   * manifest before serving again. They share the service worker's chunk cache when one is registered. */
  workers?: number;
}

export interface RuntimeInfo {
  numpyVersion: string;
  s5vecVersion: string;
  pythonVersion: string;
  platform: string;
  pyodideVersion: string;
  /** Release id of the bundle the worker loaded (wheels/manifest.json); equals OfflineStatus.release
   * when a service worker serves the page. Null for bundles built without web/precache.py. */
  release: string | null;
  indexURL: string;
  /** The rpc ops the worker serves (the table in protocol.json). */
  ops: string[];
  /** Page-side time from creating the worker until it was ready. */
  startupMs: number;
  /** Worker-side time of the whole start-up. */
  workerStartupMs: number;
  steps: Record<StartupStep, number>;
}

export interface IndexInfo {
  kind: string;
  dim: number;
  metric: string;
  count: number;
  manifest: string;
}

/** Metadata filter: {field: value} equality, or {field: {$gte, $gt, $lte, $lt, $eq, $ne, $in, $nin}},
 * combined with $and / $or. */
export type Filter = { [field: string]: unknown };

export interface SearchOptions {
  k?: number;
  filter?: Filter | null;
  /** Index-specific search parameters (e.g. ef, nprobe). */
  params?: Record<string, unknown>;
}

export interface Hit<M = Record<string, unknown>> {
  id: string | number;
  score: number;
  metadata: M;
}

export interface SearchStats {
  bytesFetched: number;
  chunksFetched: number;
  cacheHits: number;
  /** plan -> fetch -> search rounds that fetched (IVF with refine rows: 2 when cold) */
  rounds?: number;
  /** searchBatch: number of queries the stats cover */
  queries?: number;
  /** searchBatch: groups the batch was answered in, one after the other, each expected to fetch at
   * most half the chunk cache (a big batch over a big index would otherwise hold every query's
   * chunks at once); the hits are the same in any grouping. */
  groups?: number;
  /** With a pool (workers > 1): the worker that answered (0 = the first, which takes the writes). */
  worker?: number;
  /** A searchBatch split across a pool: how many workers answered parts of it (the counts are summed
   * over the parts; `ms` and `rounds` are the slowest part's). */
  workers?: number;
  /** A split searchBatch: each part's worker, number of queries and time in that worker. */
  parts?: { worker: number; queries: number; ms: number }[];
  ms: number;
  /** searchText only: chunks the query planned (fetched unless cached), by part. */
  planned?: { model?: number; postings?: number; docs?: number; index?: number };
}

export type TextSearchMode = "hybrid" | "vector" | "keyword";

export interface TextSearchOptions extends SearchOptions {
  /** "hybrid" (default): embedding + BM25 keyword ranking, fused (an exact title comes first);
   * "vector": embedding only; "keyword": BM25 only. */
  mode?: TextSearchMode;
}

export interface GetResult<M = Record<string, unknown>> {
  id: string;
  metadata: M;
  /** Unix seconds (negative before 1970). */
  timestamp: number;
}

/** `db.stats()`: counters over the worker's session (every database opened on the same portals
 * shares one chunk store), and what that store holds. */
export interface DatabaseStats {
  bytes_fetched: number;
  chunks_fetched: number;
  cache_hits: number;
  cache_misses: number;
  evictions: number;
  chunks_uploaded: number;
  chunks_skipped: number;
  bytes_uploaded: number;
  /** Every byte the chunk cache's budget counts: one copy per chunk -- raw bytes until a search
   * decodes it, then the decoded body's footprint (the bytes are dropped) -- resident chunks
   * included. At most `cache_limit`, unless what open indexes keep alone is more. */
  cache_bytes: number;
  cache_entries: number;
  /** The budget (`cacheBytes`, or sized from the manifest: what the open keeps + up to 256 MiB of lazy chunks). */
  cache_limit: number;
  /** The part of `cache_bytes` open databases keep for their life (what open fetched: centroids,
   * summaries, the HNSW part); never evicted, since the index holds it anyway. */
  resident_bytes: number;
  resident_entries: number;
  /** Chunks of the round being read, held beyond the budget until read (0 between searches). */
  pinned_bytes: number;
  pinned_entries: number;
  /** Searches answered by this database. */
  searches: number;
  /** The worker's WebAssembly memory (Pyodide's heap; it only grows, so it is the session's peak). */
  wasmMemoryBytes?: number;
  /** Free bytes of the worker's C stack at a fixed call depth (constant unless the stack leaks). */
  wasmStackFreeBytes?: number;
  /** With a pool: each worker's own stats. */
  workers?: Array<DatabaseStats & { worker: number }>;
  [key: string]: unknown;
}

export declare class S5Vec {
  private constructor(handle: number, info: IndexInfo);
  static runtime(opts?: RuntimeOptions): Promise<RuntimeInfo>;
  static open(opts: OpenOptions): Promise<S5Vec>;
  readonly handle: number;
  readonly info: IndexInfo;
  /** How many workers serve this database (OpenOptions.workers). */
  readonly workers: number;
  /** The largest OpenOptions.workers this page accepts (navigator.hardwareConcurrency, at most MAX_WORKERS). */
  static maxWorkers(): number;
  /** Stats of the last search, null before the first. */
  readonly lastStats: SearchStats | null;
  /** What S5Vec.open itself downloaded (the manifest and eager chunks; with a pool, the first
   * worker's). `stats()` instead counts everything the worker fetched for these portals, for
   * every database opened on them. */
  readonly openStats: { bytesFetched: number; chunksFetched: number } | null;
  readonly closed: boolean;
  search<M = Record<string, unknown>>(vector: Float32Array | ArrayLike<number>, options?: SearchOptions): Promise<Hit<M>[]>;
  /** Many queries answered together (one plan/fetch per round, matrix operations); equal to
   * searching them one by one. `lastStats` covers the batch. With a pool, 16+ queries are split into
   * contiguous parts answered by several workers at once, joined in order. */
  searchBatch<M = Record<string, unknown>>(vectors: Array<Float32Array | ArrayLike<number>>,
                                           options?: SearchOptions): Promise<Hit<M>[][]>;
  /** Text in, hits out (the query is embedded in the worker). Rejects with EmptyQueryError for text
   * without letters or digits; text with no known token is answered by the keyword index alone. */
  searchText<M = Record<string, unknown>>(text: string, options?: TextSearchOptions): Promise<Hit<M>[]>;
  /** A record by id, without a search (UnknownIdError if there is none; one chunk when the index
   * has a text field). */
  get<M = Record<string, unknown>>(id: string): Promise<GetResult<M>>;
  /** Cumulative fetch/cache counters and what the worker's chunk cache holds. With a pool: summed
   * over its workers, each worker's own in `workers`. */
  stats(): Promise<DatabaseStats>;
  /** Set when opened by pointer (or after commit({ key })). */
  readonly pointer: PointerState | null;
  /** Edits since the last commit (kept in IndexedDB, replayed by open() after a reload). */
  readonly pendingEdits: PendingEdits;
  /** Insert or replace records; resolves how many. Validated in full first (DimensionError,
   * InvalidVectorError, InvalidArgumentError): a refused batch changes nothing. */
  upsert(records: NewRecord[]): Promise<number>;
  /** Delete by id; UnknownIdError (and nothing deleted) if any id is absent. */
  delete(ids: string[]): Promise<number>;
  /** Upload the edits as a new snapshot (changed chunks only, in parallel, manifest last).
   * With `key` (a signing-key name or S5Vec.signingKey() result) the pointer is moved to it. */
  commit(options?: CommitOptions): Promise<CommitResult>;
  /** commit(), retried after each "online" event while the network is down. */
  commitWhenOnline(options?: CommitOptions): Promise<CommitResult>;
  /** Opened by pointer: move to its newest verified revision; resolves whether it moved. */
  refresh(): Promise<boolean>;
  /** Keep every chunk of this index in the service worker's cache, exempt from eviction (offline use).
   * Rejects with OfflineUnavailableError without a service worker, PortalError/NotFoundError/
   * IntegrityError when a chunk cannot be downloaded. */
  pin(options?: { onProgress?: (p: PinProgress) => void }): Promise<PinResult>;
  /** Release the database in its workers (idempotent); later search/stats reject with ClosedError. A
   * pool's extra workers that no other open database uses are terminated (the page's shared one stays). */
  close(): Promise<void>;
  /** Service worker registration and releases. */
  static readonly offline: Offline;
  /** The service worker's persistent chunk cache. */
  static readonly cache: ChunkCache;
  /** A named Ed25519 signing key (made once; private key non-extractable, kept in IndexedDB). */
  static signingKey(name?: string): Promise<SigningKey>;
  /** Resolve and verify a pointer: its newest revision and the manifest it names. */
  static resolvePointer(pointer: string, portals: string[]): Promise<{ pointer: string; revision: number; manifest: string }>;
}

export interface NewRecord<M = Record<string, unknown>> {
  id: string;
  vector: Float32Array | ArrayLike<number>;
  metadata?: M;
  /** Unix seconds; default: the time of the upsert. */
  timestamp?: number;
}

export interface PendingEdits {
  ops: number;
  upserted: number;
  deleted: number;
}

export interface CommitProgress {
  done: number;
  total: number;
  bytes: number;
  totalBytes: number;
  uploaded: number;
  skipped: number;
}

export interface SigningKey {
  name: string;
  pointer: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

export interface PointerState {
  pointer: string;
  revision: number;
}

export interface CommitOptions {
  onProgress?: (p: CommitProgress) => void;
  /** Overrides the token given to open(). */
  authToken?: string;
  /** Sign and publish the new manifest under this key. */
  key?: string | SigningKey;
}

export interface CommitResult {
  manifest: string;
  parent: string;
  /** Chunks uploaded by this call (the changed ones still missing on the portal). */
  uploaded: number;
  /** Chunks reused unchanged. */
  skipped: number;
  bytesUploaded: number;
  /** With options.key: the pointer's new revision. */
  pointer?: PointerState;
}

export interface PinProgress {
  /** Chunks handled so far / in all (the manifest counts as one). */
  done: number;
  total: number;
  bytes: number;
  totalBytes: number;
  /** Of those, downloaded now (the rest were cached already). */
  downloaded: number;
  downloadedBytes: number;
}

export interface PinResult {
  chunks: number;
  bytes: number;
  downloaded: number;
  downloadedBytes: number;
}

export interface OfflineOptions {
  /** URL of sw.js. Default: ./sw.js next to s5vec.js. */
  url?: string | URL;
  scope?: string;
  /** Give up waiting for the service worker to control the page after this long. Default 120000. */
  controlTimeoutMs?: number;
  /** How long to look for a new release before starting. Default 3000. */
  updateCheckMs?: number;
  /** Called when a new release is installed while the runtime runs (default: it activates on the next
   * visit). Call S5Vec.offline.applyUpdate() to switch now (reloads the page). */
  onUpdate?: (registration: ServiceWorkerRegistration) => void;
}

export interface OfflineStatus {
  supported: boolean;
  /** A service worker controls the page: the runtime and the chunks read are kept for offline use. */
  controlled: boolean;
  release: string | null;
  /** navigator.storage.persist() was granted. */
  persisted: boolean;
}

export interface Offline {
  /** Register the service worker and wait until it controls the page; call before open()/runtime().
   * Switches to a newly installed release (one reload) when the runtime has not started yet. */
  register(opts?: OfflineOptions): Promise<OfflineStatus>;
  /** Activate a waiting release and reload; false when none is waiting. */
  applyUpdate(): Promise<boolean>;
  release(): Promise<string | null>;
  /** The release register() found, without asking the service worker again. */
  current(): string | null;
}

export interface CacheUsage {
  chunks: number;
  bytes: number;
  pinnedChunks: number;
  pinnedBytes: number;
  /** Byte budget for unpinned chunks (LRU-evicted beyond it). */
  budget: number;
  quota: number | null;
  originUsage: number | null;
  persisted: boolean;
  /** Since the service worker started. */
  counters: { hits: number; misses: number; stored: number; rejected: number; evicted: number };
  release?: string;
}

export interface ChunkCache {
  usage(): Promise<CacheUsage>;
  /** Drop every cached chunk, pinned ones too. */
  clear(): Promise<CacheUsage>;
  setBudget(bytes: number): Promise<CacheUsage>;
}

export declare const offline: Offline;
/** Upper bound of OpenOptions.workers on any machine. */
export declare const MAX_WORKERS: number;
export declare const cache: ChunkCache;


export default S5Vec;
