// Types of the s5vec HTTP API (`s5vec serve`, under /v1), beside the bridge's (s5vec.d.ts).
// The OpenAPI description of the same shapes is served at GET /v1/openapi.json.
// Reads are open; writes need `Authorization: Bearer <token>`. Every error is an ErrorBody.

import type { Filter, Hit, SearchStats } from "./s5vec.js";

export type { Filter, Hit, SearchStats };

/** Error names: the Python error classes (same as the bridge's) plus the server's own. */
export type HttpErrorName =
  | "InvalidArgumentError" // 400
  | "InvalidVectorError" // 400
  | "DimensionError" // 400
  | "FilterError" // 400
  | "CIDError" // 400
  | "NotSupportedError" // 400 (e.g. a text query without text search)
  | "UnauthorizedError" // 401
  | "ForbiddenError" // 403 (read-only server)
  | "UnknownIdError" // 404
  | "NotFoundError" // 404 (a CID no portal holds)
  | "RouteNotFoundError" // 404
  | "MethodNotAllowedError" // 405
  | "StaleRevisionError" // 409 (the signed pointer moved since it was read)
  | "PayloadTooLargeError" // 413
  | "PortalError" // 502
  | "IntegrityError" // 502
  | "FormatError" // 502
  | "ClosedError" // 503 (the index failed to open)
  | "NotReadyError" // 503 (still opening)
  | "InternalError"; // 500

export interface ErrorBody {
  error: { name: HttpErrorName | string; message: string };
}

/** Index-specific search parameters: ef (HNSW), nprobe and rerank (IVF). */
export type SearchParams = Record<string, number>;

/** One query: exactly one of `vector` and `text`. */
export type Query =
  | { vector: number[]; text?: never; k?: number; filter?: Filter | null; params?: SearchParams | null }
  | { text: string; vector?: never; mode?: string; k?: number; filter?: Filter | null; params?: SearchParams | null };

export interface SearchResult<M = Record<string, unknown>> {
  hits: Hit<M>[];
  stats: SearchStats;
}

export interface BatchQuery {
  queries: Query[];
}

export interface BatchResult<M = Record<string, unknown>> {
  results: SearchResult<M>[];
}

export interface SimilarQuery {
  k?: number;
  filter?: Filter | null;
  params?: SearchParams | null;
}

export interface NewRecord<M = Record<string, unknown>> {
  id: string;
  vector: number[];
  metadata?: M;
  /** Unix seconds. */
  timestamp?: number | null;
}

export interface StoredRecord<M = Record<string, unknown>> {
  id: string;
  metadata: M;
  timestamp: number | null;
  /** Only with ?vector=1: the stored vector (unit length for cosine). */
  vector?: number[];
}

export interface UpsertBody<M = Record<string, unknown>> {
  records: NewRecord<M>[];
}

export interface UpsertResult {
  upserted: number;
  count: number;
}

export interface DeleteBody {
  ids: string[];
}

export interface DeleteResult {
  deleted: number;
  count: number;
}

export interface CommitResult {
  /** The new manifest CID. */
  manifest: string;
  /** The pointer's new revision, when the server moves a signed pointer. */
  revision?: number;
  parent: string;
  uploaded: number;
  chunks: number;
  count: number;
}

export interface MigrateResult {
  moved: number;
  count: number;
}

/** A server-sent `progress` event of a long operation (?stream=1 or Accept: text/event-stream);
 * the stream ends with one `result` event (the non-streaming JSON) or one `error` event (ErrorBody). */
export interface Progress {
  phase: "upsert" | "commit" | "migrate";
  /** upsert: records applied so far; commit/migrate: whether the operation has finished. */
  done: number | boolean;
  total?: number;
  chunks_uploaded?: number;
  bytes_uploaded?: number;
  elapsed_s?: number;
}

export interface Health {
  status: "starting" | "ready" | "failed";
  manifest?: string;
  error?: ErrorBody["error"];
}

export interface Info {
  kind: string;
  spec: string | null;
  dim: number;
  metric: string;
  count: number;
  manifest: string;
  parent: string | null;
  /** When opened by a signed pointer (s5vec serve --pointer). */
  pointer?: { pointer: string; revision: number | null; writable: boolean };
}

export interface Stats {
  queries: number;
  search_requests: number;
  errors: number;
  upserted: number;
  deleted: number;
  commits: number;
  migrated: number;
  latency_ms: { p50: number | null; p99: number | null; window: number };
  store: Record<string, number>;
  cache: { bytes: number | null; limit: number | null; hits: number; misses: number };
  uptime_s: number;
}

/** Every route: "METHOD /path" -> request body and response body (200). */
export interface Routes {
  "GET /v1/health": { body: never; response: Health };
  "GET /v1/info": { body: never; response: Info };
  "GET /v1/stats": { body: never; response: Stats };
  "GET /v1/manifest": { body: never; response: Record<string, unknown> };
  "GET /v1/openapi.json": { body: never; response: Record<string, unknown> };
  "POST /v1/search": { body: Query; response: SearchResult };
  "POST /v1/search/batch": { body: BatchQuery; response: BatchResult };
  "GET /v1/records/{id}": { body: never; response: StoredRecord };
  "POST /v1/records/{id}/similar": { body: SimilarQuery; response: SearchResult };
  "POST /v1/records": { body: UpsertBody; response: UpsertResult };
  "DELETE /v1/records/{id}": { body: never; response: DeleteResult };
  "POST /v1/records/delete": { body: DeleteBody; response: DeleteResult };
  "POST /v1/commit": { body: never; response: CommitResult };
  "POST /v1/migrate": { body: never; response: MigrateResult };
}

export type Route = keyof Routes;
