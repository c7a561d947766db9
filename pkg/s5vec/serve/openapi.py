"""The OpenAPI 3.1 description of the HTTP API, served at ``/v1/openapi.json``.

Written by hand as data (the bodies are plain JSON, not models), joined to the route table of
:mod:`.app` by operation id, so a route without a description fails the test that reads this.
``web/http-api.d.ts`` is the TypeScript view of the same shapes.
"""
from __future__ import annotations

from typing import Any, Sequence

from .. import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "bad input (InvalidArgumentError, InvalidVectorError, DimensionError, "
                                "FilterError, NotSupportedError)"),
    "404": _json(_ref("Error"), "unknown id (UnknownIdError) or CID (NotFoundError)"),
    "413": _json(_ref("Error"), "body over the size limit (PayloadTooLargeError)"),
    "502": _json(_ref("Error"), "portal failure (PortalError, IntegrityError, FormatError)"),
    "503": _json(_ref("Error"), "the index is not open yet (NotReadyError) or failed to open (ClosedError)"),
}
_WRITE_ERRORS = {
    **_ERRORS,
    "401": _json(_ref("Error"), "missing or wrong bearer token (UnauthorizedError)"),
    "403": _json(_ref("Error"), "the server is read-only (ForbiddenError)"),
    "409": _json(_ref("Error"), "the signed pointer moved since it was read (StaleRevisionError)"),
}
_STREAM = {"text/event-stream": {"schema": {
    "type": "string",
    "description": "server-sent events: `progress` (Progress JSON) ..., then one `result` (the JSON body "
                   "of the non-streaming answer) or `error` (Error JSON). Asked for with "
                   "`Accept: text/event-stream` or `?stream=1`."}}}
_STREAM_PARAM = {"name": "stream", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1"]},
                 "description": "answer as server-sent events with progress"}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _streaming(schema: dict[str, Any]) -> dict[str, Any]:
    ok = _json(schema)
    ok["content"].update(_STREAM)
    return ok


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["name", "message"],
        "properties": {"name": {"type": "string", "description": "the s5vec.errors class name"},
                       "message": {"type": "string"}}}}},
    "Filter": {"type": "object", "additionalProperties": True, "description":
               "metadata filter: {field: value} or {field: {$eq|$ne|$in|$nin|$gt|$gte|$lt|$lte: ...}}, "
               "$and / $or lists"},
    "SearchParams": {"type": "object", "additionalProperties": {"type": "integer"},
                     "description": "per-kind search parameters: ef (HNSW), nprobe and rerank (IVF)"},
    "Query": {"type": "object", "properties": {
        "vector": {"type": "array", "items": {"type": "number"}, "description": "query embedding (index dim)"},
        "text": {"type": "string", "description": "text query (needs an index with text search)"},
        "mode": {"type": "string", "description": "text search mode (as Database.search_text)"},
        "k": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10},
        "filter": _ref("Filter"), "params": _ref("SearchParams")},
        "oneOf": [{"required": ["vector"]}, {"required": ["text"]}], "additionalProperties": False},
    "Hit": {"type": "object", "required": ["id", "score", "metadata"], "properties": {
        "id": {"type": "string"}, "score": {"type": "number", "description": "higher is better"},
        "metadata": {"type": "object"}}},
    "SearchStats": {"type": "object", "properties": {
        "bytesFetched": {"type": "integer"}, "chunksFetched": {"type": "integer"},
        "cacheHits": {"type": "integer"}, "ms": {"type": "number"}}},
    "SearchResult": {"type": "object", "required": ["hits"], "properties": {
        "hits": {"type": "array", "items": _ref("Hit")}, "stats": _ref("SearchStats")}},
    "BatchQuery": {"type": "object", "required": ["queries"], "properties": {
        "queries": {"type": "array", "items": _ref("Query"), "minItems": 1, "maxItems": 1000}}},
    "BatchResult": {"type": "object", "required": ["results"], "properties": {
        "results": {"type": "array", "items": _ref("SearchResult")}}},
    "SimilarQuery": {"type": "object", "properties": {
        "k": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10},
        "filter": _ref("Filter"), "params": _ref("SearchParams")}, "additionalProperties": False},
    "Record": {"type": "object", "required": ["id", "vector"], "properties": {
        "id": {"type": "string"}, "vector": {"type": "array", "items": {"type": "number"}},
        "metadata": {"type": "object"}, "timestamp": {"type": ["number", "null"], "description": "Unix seconds"}}},
    "StoredRecord": {"type": "object", "required": ["id", "metadata"], "properties": {
        "id": {"type": "string"}, "metadata": {"type": "object"}, "timestamp": {"type": ["number", "null"]},
        "vector": {"type": "array", "items": {"type": "number"}, "description": "only with ?vector=1"}}},
    "Upsert": {"type": "object", "required": ["records"], "properties": {
        "records": {"type": "array", "items": _ref("Record"), "minItems": 1}}},
    "UpsertResult": {"type": "object", "properties": {"upserted": {"type": "integer"}, "count": {"type": "integer"}}},
    "Delete": {"type": "object", "required": ["ids"], "properties": {
        "ids": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    "DeleteResult": {"type": "object", "properties": {"deleted": {"type": "integer"}, "count": {"type": "integer"}}},
    "CommitResult": {"type": "object", "properties": {
        "manifest": {"type": "string", "description": "the new manifest CID"},
        "parent": {"type": "string"}, "uploaded": {"type": "integer"}, "chunks": {"type": "integer"},
        "count": {"type": "integer"},
        "revision": {"type": "integer", "description": "the signed pointer's new revision (with --pointer-key)"}}},
    "MigrateResult": {"type": "object", "properties": {"moved": {"type": "integer"}, "count": {"type": "integer"}}},
    "Progress": {"type": "object", "properties": {
        "phase": {"type": "string", "enum": ["upsert", "commit", "migrate"]},
        "done": {"type": ["integer", "boolean"]}, "total": {"type": "integer"},
        "chunks_uploaded": {"type": "integer"}, "bytes_uploaded": {"type": "integer"},
        "elapsed_s": {"type": "number"}}},
    "Info": {"type": "object", "properties": {
        "kind": {"type": "string"}, "spec": {"type": "string"}, "dim": {"type": "integer"},
        "metric": {"type": "string"}, "count": {"type": "integer"}, "manifest": {"type": "string"},
        "parent": {"type": ["string", "null"]},
        "pointer": {"type": "object", "description": "when opened by a signed pointer", "properties": {
            "pointer": {"type": "string"}, "revision": {"type": ["integer", "null"]}, "writable": {"type": "boolean"}}}}},
    "Stats": {"type": "object", "properties": {
        "queries": {"type": "integer"}, "search_requests": {"type": "integer"}, "errors": {"type": "integer"},
        "upserted": {"type": "integer"}, "deleted": {"type": "integer"}, "commits": {"type": "integer"},
        "migrated": {"type": "integer"},
        "latency_ms": {"type": "object", "properties": {"p50": {"type": ["number", "null"]},
                                                        "p99": {"type": ["number", "null"]},
                                                        "window": {"type": "integer"}}},
        "store": {"type": "object", "description": "chunk store counters (bytes_fetched, cache_hits, ...)"},
        "cache": {"type": "object", "properties": {"bytes": {"type": "integer"}, "limit": {"type": "integer"},
                                                   "hits": {"type": "integer"}, "misses": {"type": "integer"}}},
        "uptime_s": {"type": "number"}}},
    "Health": {"type": "object", "properties": {
        "status": {"type": "string", "enum": ["starting", "ready", "failed"]}, "manifest": {"type": "string"},
        "error": {"type": "object"}}},
}

#: operation id -> the OpenAPI operation (without method/path, which come from the route table)
OPERATIONS: dict[str, dict[str, Any]] = {
    "health": {"summary": "Liveness; 200 and status=ready once the index is open, 503 before",
               "responses": {"200": _json(_ref("Health")), "503": _json(_ref("Health"), "not ready")}},
    "info": {"summary": "kind, dim, metric, count, manifest, parent, spec",
             "responses": {"200": _json(_ref("Info")), **_ERRORS}},
    "stats": {"summary": "queries served, p50/p99 latency, bytes fetched, cache use",
              "responses": {"200": _json(_ref("Stats")), **_ERRORS}},
    "manifest": {"summary": "the decoded manifest of the open snapshot",
                 "responses": {"200": _json({"type": "object"}), **_ERRORS}},
    "search": {"summary": "Best k hits for one vector or text query", "requestBody": _body(_ref("Query")),
               "responses": {"200": _json(_ref("SearchResult")), **_ERRORS}},
    "searchBatch": {"summary": "Several queries in one request; results in order",
                    "requestBody": _body(_ref("BatchQuery")),
                    "responses": {"200": _json(_ref("BatchResult")), **_ERRORS}},
    "getRecord": {"summary": "One record's metadata and timestamp (and vector with ?vector=1)",
                  "parameters": [_ID_PARAM, {"name": "vector", "in": "query", "required": False,
                                             "schema": {"type": "string", "enum": ["1"]}}],
                  "responses": {"200": _json(_ref("StoredRecord")), **_ERRORS}},
    "similar": {"summary": "Records nearest to a stored record's own vector (the record itself left out)",
                "parameters": [_ID_PARAM], "requestBody": _body(_ref("SimilarQuery"), required=False),
                "responses": {"200": _json(_ref("SearchResult")), **_ERRORS}},
    "upsert": {"summary": "Insert or replace a batch of records (validated whole, applied atomically)",
               "security": [{"bearer": []}], "parameters": [_STREAM_PARAM], "requestBody": _body(_ref("Upsert")),
               "responses": {"200": _streaming(_ref("UpsertResult")), **_WRITE_ERRORS}},
    "deleteRecord": {"summary": "Delete one record", "security": [{"bearer": []}], "parameters": [_ID_PARAM],
                     "responses": {"200": _json(_ref("DeleteResult")), **_WRITE_ERRORS}},
    "deleteRecords": {"summary": "Delete several records (all or none: an unknown id changes nothing)",
                      "security": [{"bearer": []}], "requestBody": _body(_ref("Delete")),
                      "responses": {"200": _json(_ref("DeleteResult")), **_WRITE_ERRORS}},
    "commit": {"summary": "Publish the edits as a new snapshot; returns its manifest CID",
               "security": [{"bearer": []}], "parameters": [_STREAM_PARAM],
               "responses": {"200": _streaming(_ref("CommitResult")), **_WRITE_ERRORS}},
    "migrate": {"summary": "Hybrid: move aged records from HNSW to IVF (commit to publish)",
                "security": [{"bearer": []}], "parameters": [_STREAM_PARAM],
                "responses": {"200": _streaming(_ref("MigrateResult")), **_WRITE_ERRORS}},
    "openapi": {"summary": "This document", "responses": {"200": _json({"type": "object"})}},
}


def document(routes: Sequence[tuple[str, str, Any, str]]) -> dict[str, Any]:
    """The OpenAPI document for ``routes`` ((method, path, endpoint, operation id) rows)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, _fn, op in routes:
        oa_path = path.replace(":path}", "}")
        paths.setdefault(oa_path, {})[method.lower()] = {"operationId": op, **OPERATIONS[op]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "s5vec HTTP API", "version": __version__,
                 "description": "Search and edit an s5vec index stored on S5. Reads are open; writes need "
                                "a bearer token. Errors are {error: {name, message}}."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
