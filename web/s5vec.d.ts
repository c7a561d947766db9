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
  | "WorkerError";

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
  /** CID of the index manifest blob. */
  manifest: string;
  /** S5 portal base URLs, tried in order. */
  portals: string[];
  /** Size of the in-worker chunk cache. */
  cacheBytes?: number;
  /** Deadline for fetching one blob, every portal and retry included (default 15000 ms). A slow or
   * hanging portal is also worked around sooner: the next portal is asked after a short delay. */
  timeoutMs?: number;
}

export interface RuntimeInfo {
  numpyVersion: string;
  s5vecVersion: string;
  pythonVersion: string;
  platform: string;
  pyodideVersion: string;
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

export declare class S5Vec {
  private constructor(handle: number, info: IndexInfo);
  static runtime(opts?: RuntimeOptions): Promise<RuntimeInfo>;
  static open(opts: OpenOptions): Promise<S5Vec>;
  readonly handle: number;
  readonly info: IndexInfo;
  /** Stats of the last search, null before the first. */
  readonly lastStats: SearchStats | null;
  readonly closed: boolean;
  search<M = Record<string, unknown>>(vector: Float32Array | ArrayLike<number>, options?: SearchOptions): Promise<Hit<M>[]>;
  /** Text in, hits out (the query is embedded in the worker). Rejects with EmptyQueryError for text
   * without letters or digits; text with no known token is answered by the keyword index alone. */
  searchText<M = Record<string, unknown>>(text: string, options?: TextSearchOptions): Promise<Hit<M>[]>;
  /** A record by id, without a search (UnknownIdError if there is none; one chunk when the index
   * has a text field). */
  get<M = Record<string, unknown>>(id: string): Promise<GetResult<M>>;
  stats(): Promise<Record<string, unknown>>;
  /** Release the database in the worker (idempotent); later search/stats reject with ClosedError. */
  close(): Promise<void>;
}

export default S5Vec;
