"""A typed Python client for the HTTP API of ``s5vec serve``, with the method names of ``Database``.

    from s5vec.client import Client
    with Client("http://127.0.0.1:8000", token="...") as db:
        hits = db.search(vector, k=10, filter={"channel": "cooking-hub"})
        db.upsert(records); cid = db.commit()

Errors are raised as the :mod:`s5vec.errors` class the server named in its ``{error: {name,
message}}`` body (``DimensionError``, ``FilterError``, ``UnknownIdError``...), so code written
against :class:`~s5vec.api.Database` handles them unchanged. Differences from ``Database``: a
write returns what the server reports (``commit`` returns the new manifest CID, not a writer),
and ``commit``/``migrate``/``upsert`` take a ``progress`` callback fed by server-sent events.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx

from . import errors
from .errors import S5VecError

Hit = dict[str, Any]
Progress = Callable[[dict[str, Any]], None]


class RemoteError(S5VecError):
    """An error the server named that has no class in :mod:`s5vec.errors` (e.g. ``InternalError``)."""

    def __init__(self, name: str, message: str, status: int) -> None:
        super().__init__(message)
        self.remote_name, self.status = name, status

    @property
    def name(self) -> str:
        return self.remote_name


class ServerUnavailableError(S5VecError):
    """The server could not be reached (refused, timed out, connection dropped)."""


def error_from(name: str, message: str, status: int) -> S5VecError:
    """The exception for an error body: the :mod:`s5vec.errors` class of that name, else RemoteError."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, S5VecError):
        exc = cls(message)
        exc.status = status  # type: ignore[attr-defined]
        return exc
    return RemoteError(name, message, status)


class Client:
    """The HTTP API of one ``s5vec serve`` (``url`` without ``/v1``); ``token`` for writes."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url + "/v1", headers=headers, timeout=timeout, transport=transport)

    # -- plumbing ----------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None) -> Any:
        try:
            r = self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"{method} {self.url}/v1{path}: {exc}") from None
        return _decode(r)

    def _stream(self, path: str, body: Any, progress: Progress) -> Any:
        """POST with ``Accept: text/event-stream``: progress events to ``progress``, then the result."""
        try:
            with self._http.stream("POST", path, json=body, params={"stream": "1"},
                                   headers={"Accept": "text/event-stream"}) as r:
                if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
                    r.read()
                    return _decode(r)
                for event, data in _sse(r.iter_lines()):
                    payload = json.loads(data)
                    if event == "progress":
                        progress(payload)
                    elif event == "result":
                        return payload
                    elif event == "error":
                        e = payload.get("error", {})
                        raise error_from(e.get("name", "InternalError"), e.get("message", ""), 200)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"POST {self.url}/v1{path}: {exc}") from None
        raise RemoteError("InternalError", "the event stream ended without a result", 200)

    # -- reads ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        try:
            r = self._http.get("/health")
        except httpx.TransportError as exc:
            raise ServerUnavailableError(str(exc)) from None
        return r.json()

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/v1/health`` until the index is open; raises the open error if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                h = self.health()
                if h.get("status") == "ready":
                    return h
                if h.get("status") == "failed":
                    e = h.get("error") or {}
                    raise error_from(e.get("name", "InternalError"), e.get("message", ""), 503)
            except ServerUnavailableError:
                pass
            if time.monotonic() > deadline:
                raise ServerUnavailableError(f"{self.url} not ready after {timeout} s")
            time.sleep(0.05)

    def search(self, vector: Any = None, k: int = 10, filter: Any = None, params: Mapping[str, Any] | None = None,
               *, text: str | None = None) -> list[Hit]:
        """Best ``k`` hits ``[{"id", "score", "metadata"}]`` for a vector (or ``text=``)."""
        return self.search_with_stats(vector, k, filter, params, text=text)["hits"]

    def search_with_stats(self, vector: Any = None, k: int = 10, filter: Any = None,
                          params: Mapping[str, Any] | None = None, *, text: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/search", _query(vector, k, filter, params, text))

    def search_text(self, text: str, k: int = 10, filter: Any = None, mode: str | None = None,
                    params: Mapping[str, Any] | None = None) -> list[Hit]:
        q = _query(None, k, filter, params, text)
        if mode is not None:
            q["mode"] = mode
        return self._call("POST", "/search", q)["hits"]

    def search_batch(self, queries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Several queries (``{"vector"|"text", "k", "filter", "params"}``) -> ``[{"hits", "stats"}]``."""
        qs = [dict(q, vector=_listify(q["vector"])) if "vector" in q else dict(q) for q in queries]
        return self._call("POST", "/search/batch", {"queries": qs})["results"]

    def similar(self, id: str, k: int = 10, filter: Any = None, params: Mapping[str, Any] | None = None) -> list[Hit]:
        body: dict[str, Any] = {"k": k}
        if filter is not None:
            body["filter"] = filter
        if params:
            body["params"] = dict(params)
        return self._call("POST", f"/records/{_quote(id)}/similar", body)["hits"]

    def get(self, id: str, *, vector: bool = False) -> dict[str, Any]:
        """``{"id", "metadata", "timestamp"}`` (+ ``"vector"``); UnknownIdError if absent."""
        return self._call("GET", f"/records/{_quote(id)}", params={"vector": "1"} if vector else None)

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def manifest(self) -> dict[str, Any]:
        return self._call("GET", "/manifest")

    # -- writes (need the token) --------------------------------------------------------------
    def upsert(self, records: Sequence[Mapping[str, Any]], progress: Progress | None = None) -> int:
        body = {"records": [dict(r, vector=_listify(r["vector"])) if "vector" in r else dict(r) for r in records]}
        res = self._stream("/records", body, progress) if progress else self._call("POST", "/records", body)
        return int(res["upserted"])

    def delete(self, ids: Sequence[str] | str) -> int:
        if isinstance(ids, str):
            ids = [ids]
        return int(self._call("POST", "/records/delete", {"ids": list(ids)})["deleted"])

    def commit(self, progress: Progress | None = None) -> str:
        """Publish the server's edits as a new snapshot; returns its manifest CID."""
        res = self._stream("/commit", None, progress) if progress else self._call("POST", "/commit")
        return res["manifest"]

    def migrate(self, progress: Progress | None = None) -> int:
        res = self._stream("/migrate", None, progress) if progress else self._call("POST", "/migrate")
        return int(res["moved"])

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _decode(r: httpx.Response) -> Any:
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.is_success and body is not None:
        return body
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and "name" in err:
        raise error_from(str(err["name"]), str(err.get("message", "")), r.status_code)
    raise RemoteError("HTTPError", f"HTTP {r.status_code}: {r.text[:200]}", r.status_code)


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream (comments and pings skipped)."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def _query(vector: Any, k: int, filter: Any, params: Mapping[str, Any] | None, text: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"k": k}
    if text is not None:
        q["text"] = text
    if vector is not None:
        q["vector"] = _listify(vector)
    if filter is not None:
        q["filter"] = filter
    if params:
        q["params"] = dict(params)
    return q


def _listify(vector: Any) -> Any:
    tolist = getattr(vector, "tolist", None)
    return tolist() if callable(tolist) else vector


def _quote(id: str) -> str:
    from urllib.parse import quote

    return quote(id, safe="")
