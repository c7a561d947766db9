// Example client of the s5vec HTTP API from TypeScript (type-checked: npx tsc --noEmit -p web/tsconfig.http.json).
import type { CommitResult, ErrorBody, Query, Routes, SearchResult, UpsertBody } from "./http-api.js";

type VideoMeta = { title: string; channel: string };

async function call<R extends keyof Routes>(base: string, route: R, body?: Routes[R]["body"], token?: string,
): Promise<Routes[R]["response"]> {
  const [method, path] = (route as string).split(" ");
  const res = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) {
    const { error } = json as ErrorBody;
    throw Object.assign(new Error(error.message), { name: error.name, status: res.status });
  }
  return json as Routes[R]["response"];
}

export async function searchThenAdd(base: string, token: string, vector: number[]): Promise<string> {
  const q: Query = { vector, k: 5, filter: { channel: { $in: ["cooking-hub"] } }, params: { ef: 64 } };
  const res = (await call(base, "POST /v1/search", q)) as SearchResult<VideoMeta>;
  for (const h of res.hits) console.log(h.id, h.score.toFixed(3), h.metadata.title, res.stats.ms);
  const add: UpsertBody<VideoMeta> = { records: [{ id: "new-1", vector, metadata: { title: "New", channel: "x" } }] };
  await call(base, "POST /v1/records", add, token);
  const commit: CommitResult = await call(base, "POST /v1/commit", undefined, token);
  return commit.manifest;
}
