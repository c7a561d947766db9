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
  | "ClosedError"
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
  /** plan -> fetch -> search rounds that fetched (IVF with refine rows: 2 when cold) */
  rounds?: number;
  /** searchBatch: number of queries the stats cover */
  queries?: number;
  ms: number;
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
  /** Many queries answered together (one plan/fetch per round, matrix operations); equal to
   * searching them one by one. `lastStats` covers the batch. */
  searchBatch<M = Record<string, unknown>>(vectors: Array<Float32Array | ArrayLike<number>>,
                                           options?: SearchOptions): Promise<Hit<M>[][]>;
  stats(): Promise<Record<string, unknown>>;
  /** Release the database in the worker (idempotent); later search/stats reject with ClosedError. */
  close(): Promise<void>;
}

export default S5Vec;
