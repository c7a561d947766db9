"""Keyword search: a BM25 inverted index over one text field, stored as chunks a query fetches by term.

Why it exists: an embedding blurs exact words, but a person who types a film's title expects that
film. BM25 (Robertson & Zaragoza) ranks documents by the query words they contain, weighted by
how rare each word is; :mod:`s5vec.api` fuses its ranking with the vector ranking.

Storage (``docs/FORMAT.md``, kinds ``kw_head``, ``kw_postings``, ``kw_docs``):

- Terms are hashed (CRC-32, the same in CPython and Pyodide) into ``buckets``; each bucket is one
  ``kw_postings`` chunk with the postings of its terms, so a query of three words fetches at most
  three small chunks. A term with more than ``big_df`` postings (a genre word, "the") gets a
  chunk of its own so it does not make every query that shares its bucket pay for it.
- Postings carry the BM25 term weight precomputed at build time (float16), so a query only adds
  ``idf * weight`` per posting: one NumPy scatter-add per term.
- "Exact" terms: the token sequence of each record's ``exact_field`` (the title) is indexed as
  one more term (``"=the matrix"``) in the bucket of its first word, so a query that *is* a title
  finds that record without any extra fetch and ranks it first.
- Documents (ids, metadata, timestamps, text) are ordered by id and cut into ``kw_docs`` chunks at
  content-defined boundaries (a hash of the id), so an edit rewrites only the chunks around it.
  They give filtered keyword search the metadata it must check, hits their metadata, and
  ``get(id)`` a one-chunk lookup. Only the chunks of candidates a query looks at are fetched.
- ``kw_head`` (fetched when the index opens) holds the counts, the bucket and document-chunk CIDs
  and the first id of every document chunk.

Like every index this one never fetches: :meth:`KeywordIndex.search_steps` is a generator that
yields the CIDs it needs next and is resumed once the caller has fetched them (see :func:`run`).
"""
from __future__ import annotations

import bisect
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Mapping, Sequence

import numpy as np

from .errors import FormatError, InvalidArgumentError, UnknownIdError
from .filters import Filter, fields_of
from .index.base import ChunkReader, ChunkWriter

TOKENIZER = "fold-alnum-v1"
DESC_VERSION = 1
_SPLIT = re.compile(r"[\W_]+")
EXACT_PREFIX = "="
MAX_TERMS = 64  # a query uses at most this many distinct words (the first ones)
# Words a *query* does not rank by when it has other words: they match a fifth of all titles, cost
# the biggest posting chunks, and add noise ("documentary about space"). They stay indexed, and
# they count in exact-title matching ("The Matrix" is still an exact title).
STOPWORDS = frozenset("a an and about at by for from in into is it its of on or the to with".split())
Steps = Generator["list[str] | tuple[str, list[str]]", None, Any]  # CIDs to fetch next, maybe labelled


def fold(text: str) -> str:
    """Lower-case and strip accents (NFKD, combining marks dropped): "Amélie" -> "amelie"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokenize(text: str) -> list[str]:
    """Words of ``text``: folded, split on anything that is not a letter or digit (any script).

    No stemming: titles are short and exact words matter more than variants.
    """
    return [t for t in _SPLIT.split(fold(text)) if t]


def exact_key(text: str) -> str | None:
    toks = tokenize(text)
    return EXACT_PREFIX + " ".join(toks) if toks else None


def _bucket(term: str, buckets: int) -> int:
    """Bucket of a term. An exact term lives with its longest word (the first of equal length):
    usually a rare word, so the query already fetches that bucket and titles that share a common
    first word ("the") do not pile up in one chunk."""
    if term.startswith(EXACT_PREFIX):
        term = max(term[len(EXACT_PREFIX):].split(" "), key=len)
    return zlib.crc32(term.encode("utf-8")) % buckets


@dataclass(frozen=True)
class KeywordQuery:
    """A prepared keyword query: distinct words (in query order) and the exact-title term."""

    terms: tuple[str, ...]
    exact: str | None

    @classmethod
    def from_text(cls, text: str) -> "KeywordQuery":
        toks = tokenize(text)
        words = tuple(dict.fromkeys(toks))
        terms = tuple(t for t in words if t not in STOPWORDS) or words
        return cls(terms[:MAX_TERMS], EXACT_PREFIX + " ".join(toks) if toks else None)


@dataclass
class Candidates:
    """Keyword matches best first: doc numbers, BM25 scores, and whether the exact term matched."""

    docs: np.ndarray
    scores: np.ndarray
    exact: np.ndarray

    def __len__(self) -> int:
        return len(self.docs)


class KeywordIndex:
    """BM25 over one text field; built whole (``build``), loaded lazily (``load``)."""

    kind = "bm25"

    def __init__(self, field: str = "text", *, exact_field: str | None = "title", k1: float = 1.2,
                 b: float = 0.75, buckets: int | None = None, big_df: int = 2048, doc_rows: int = 32) -> None:
        if not isinstance(field, str) or not field:
            raise InvalidArgumentError("the keyword field must be a non-empty string")
        for name, v in (("k1", k1), ("b", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10:
                raise InvalidArgumentError(f"{name} must be a number in [0, 10], got {v!r}")
        for name, v in (("big_df", big_df), ("doc_rows", doc_rows)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {v!r}")
        if buckets is not None and (isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1):
            raise InvalidArgumentError(f"buckets must be a positive integer, got {buckets!r}")
        self.field, self.exact_field = field, exact_field
        self.k1, self.b, self.big_df, self.doc_rows = float(k1), float(b), big_df, doc_rows
        self.buckets = buckets or 1
        self._auto = buckets is None
        self.n_docs, self.avgdl = 0, 0.0
        # in memory after build(); after load() these are filled chunk by chunk
        self._postings: dict[int | str, dict[str, Any]] = {}  # bucket number or big term -> body
        self._docs: dict[int, dict[str, Any]] = {}  # doc chunk number -> body
        self._bucket_cids: list[str] = []
        self._big: dict[str, str] = {}  # big term -> cid
        self._doc_cids: list[str] = []
        self._doc_start: list[int] = []  # first doc number of each doc chunk
        self._ids: list[str] = []  # every id, sorted: document number -> id (in kw_head)
        self._doc_of: dict[str, int] | None = None  # id -> document number, built on first use
        self._reader: ChunkReader | None = None

    # ------------------------------------------------------------------ building
    def build(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, Any]],
              timestamps: Sequence[float]) -> None:
        """(Re)build from every record; documents are ordered by id."""
        n = len(ids)
        if not (len(texts) == len(metadata) == len(timestamps) == n):
            raise InvalidArgumentError("ids, texts, metadata and timestamps differ in length")
        for t in texts:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"the {self.field!r} field must be text, got {type(t).__name__}")
        order = sorted(range(n), key=lambda i: ids[i])
        ids = [ids[i] for i in order]
        if len(set(ids)) != n:
            raise InvalidArgumentError("duplicate ids")
        texts = [texts[i] for i in order]
        metas = [dict(metadata[i] or {}) for i in order]
        ts = np.array([timestamps[i] for i in order], dtype=np.float64)
        toks = [tokenize(t) for t in texts]
        dl = np.array([len(t) for t in toks], dtype=np.float64)
        self.n_docs = n
        self.avgdl = float(dl.mean()) if n and dl.sum() else 1.0
        postings: dict[str, dict[int, int]] = {}
        for d, words in enumerate(toks):
            for w in words:
                postings.setdefault(w, {})
                postings[w][d] = postings[w].get(d, 0) + 1
            title = metas[d].get(self.exact_field) if self.exact_field else None
            if isinstance(title, str):
                for key in {exact_key(title), exact_key(f"{title} {metas[d].get('year', '')}".strip())}:
                    if key:
                        postings.setdefault(key, {})[d] = 1
        big = {t for t, p in postings.items() if len(p) > self.big_df and not t.startswith(EXACT_PREFIX)}
        small_total = sum(len(p) for t, p in postings.items() if t not in big)
        if self._auto:
            self.buckets = max(1, 1 << max(0, math.ceil(math.log2(max(1, small_total / 1024)))))
        groups: dict[int | str, list[str]] = {t: [t] for t in big}
        for t in postings:
            if t not in big:
                groups.setdefault(_bucket(t, self.buckets), []).append(t)
        self._postings = {}
        for key, terms in groups.items():
            self._postings[key] = self._postings_body(sorted(terms), postings, dl)
        for b in range(self.buckets):
            self._postings.setdefault(b, self._postings_body([], postings, dl))
        # documents, cut where a hash of the id says so (stable under inserts elsewhere)
        self._ids, self._doc_of = ids, None
        self._docs, self._doc_start = {}, []
        start = 0
        for d in range(1, n + 1):
            size = d - start
            if d == n or (size >= self.doc_rows // 4 and zlib.crc32(ids[d].encode()) % self.doc_rows == 0) \
                    or size >= self.doc_rows * 4:
                self._docs[len(self._doc_start)] = {
                    "start": start, "texts": texts[start:d], "metadata": metas[start:d], "timestamps": ts[start:d]}
                self._doc_start.append(start)
                start = d
        self._reader = None

    def documents(self) -> list[tuple[str, str, dict[str, Any], float]]:
        """Every (id, text, metadata, timestamp), in id order: what an edit rebuilds from."""
        self._load_everything()
        out = []
        for i in range(len(self._doc_start)):
            c = self._doc_chunk(i)
            ids = self._ids[c["start"]:c["start"] + len(c["texts"])]
            out.extend(zip(ids, c["texts"], c["metadata"], (float(t) for t in c["timestamps"])))
        return out

    def _postings_body(self, terms: list[str], postings: Mapping[str, Mapping[int, int]], dl: np.ndarray) -> dict:
        offsets = np.zeros(len(terms) + 1, dtype=np.uint32)
        docs_parts, w_parts = [], []
        for i, t in enumerate(terms):
            p = postings[t]
            docs = np.fromiter(sorted(p), dtype=np.uint32, count=len(p))
            tf = np.array([p[int(x)] for x in docs], dtype=np.float64)
            if t.startswith(EXACT_PREFIX):
                w = np.ones(len(docs))
            else:
                norm = self.k1 * (1 - self.b + self.b * dl[docs] / self.avgdl)
                w = tf * (self.k1 + 1) / (tf + norm)
            docs_parts.append(docs)
            w_parts.append(w.astype(np.float16))
            offsets[i + 1] = offsets[i] + len(docs)
        return {"terms": terms, "offsets": offsets,
                "docs": np.concatenate(docs_parts) if docs_parts else np.empty(0, np.uint32),
                "weights": np.concatenate(w_parts) if w_parts else np.empty(0, np.float16)}

    # ------------------------------------------------------------------ persistence
    def params(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "big_df": self.big_df, "doc_rows": self.doc_rows}

    def save(self, writer: ChunkWriter) -> dict[str, Any]:
        """Write every chunk; returns the descriptor for the manifest (it names the ``kw_head`` chunk)."""
        self._load_everything()
        bucket_cids = [writer.put("kw_postings", _pack_postings(self._postings[b])) for b in range(self.buckets)]
        big = {t: writer.put("kw_postings", _pack_postings(self._postings[t]))
               for t in sorted(k for k in self._postings if isinstance(k, str))}
        doc_cids = [writer.put("kw_docs", _pack_docs(self._docs[i])) for i in range(len(self._doc_start))]
        head = {"n_docs": self.n_docs, "avgdl": self.avgdl, "buckets": bucket_cids, "big": big,
                "docs": doc_cids, "doc_start": np.array(self._doc_start, dtype=np.uint32),
                **_pack_ids(self._ids)}
        self._bucket_cids, self._big, self._doc_cids = bucket_cids, big, doc_cids
        return {"kind": self.kind, "version": DESC_VERSION, "field": self.field, "exact_field": self.exact_field,
                "tokenizer": TOKENIZER, "params": self.params(), "count": self.n_docs,
                "head": writer.put("kw_head", head)}

    @classmethod
    def load(cls, desc: Mapping[str, Any], reader: ChunkReader) -> "KeywordIndex":
        """Open from a descriptor: reads the ``kw_head`` chunk (fetched with the index's eager chunks)."""
        try:
            if desc.get("kind") != cls.kind or desc.get("version") != DESC_VERSION:
                raise FormatError(f"unsupported keyword index {desc.get('kind')!r} v{desc.get('version')!r}")
            if desc.get("tokenizer") != TOKENIZER:
                raise FormatError(f"unknown keyword tokenizer {desc.get('tokenizer')!r}")
            p = desc["params"]
            obj = cls(desc["field"], exact_field=desc.get("exact_field"), k1=p["k1"], b=p["b"],
                      big_df=p["big_df"], doc_rows=p["doc_rows"])
            head = reader.get(desc["head"], "kw_head")
            obj.n_docs, obj.avgdl = int(head["n_docs"]), float(head["avgdl"])
            obj._bucket_cids = [str(c) for c in head["buckets"]]
            obj.buckets = len(obj._bucket_cids)
            obj._big = {str(t): str(c) for t, c in head["big"].items()}
            obj._doc_cids = [str(c) for c in head["docs"]]
            obj._doc_start = [int(x) for x in head["doc_start"]]
            obj._ids = _unpack_ids(head)
        except (KeyError, TypeError, AttributeError, ValueError, InvalidArgumentError) as exc:
            raise FormatError(f"bad keyword index descriptor: {exc}") from None
        if obj.buckets < 1 or len(obj._doc_cids) != len(obj._doc_start) or len(obj._ids) != obj.n_docs:
            raise FormatError("bad keyword index head: bucket or document chunk lists do not match")
        obj._auto = False
        obj._reader = reader
        return obj

    @staticmethod
    def head_cid(desc: Mapping[str, Any]) -> str:
        return str(desc["head"])

    def plan_all(self) -> list[str]:
        """CIDs :meth:`_load_everything` still has to read (fetch them in parallel, then edit or save)."""
        if self._reader is None:
            return []
        need = [self._bucket_cids[b] for b in range(self.buckets) if b not in self._postings]
        need += [self._doc_cids[i] for i in range(len(self._doc_cids)) if i not in self._docs]
        return sorted(set(need))

    def _load_everything(self) -> None:
        """Read every chunk (editing and saving an opened index rebuild from the documents)."""
        if self._reader is None:
            return
        for b in range(self.buckets):
            self._postings_for(b)
        for i in range(len(self._doc_cids)):
            self._doc_chunk(i)

    # ------------------------------------------------------------------ chunk access
    def _key_of(self, term: str) -> int | str:
        return term if term in self._big or term in self._postings else _bucket(term, self.buckets)

    def _cid_of(self, key: int | str) -> str:
        return self._big[key] if isinstance(key, str) else self._bucket_cids[key]

    def _postings_for(self, key: int | str) -> dict[str, Any]:
        body = self._postings.get(key)
        if body is None:
            if self._reader is None:
                return {"terms": [], "offsets": np.zeros(1, np.uint32), "docs": np.empty(0, np.uint32),
                        "weights": np.empty(0, np.float16)}
            body = _check_postings(self._reader.get(self._cid_of(key), "kw_postings"))
            self._postings[key] = body
        return body

    def _doc_chunk(self, i: int) -> dict[str, Any]:
        body = self._docs.get(i)
        if body is None:
            if self._reader is None:
                raise FormatError(f"document chunk {i} is missing")
            body = _unpack_docs(self._reader.get(self._doc_cids[i], "kw_docs"))
            self._docs[i] = body
        return body

    def _doc_chunk_of(self, doc: int) -> int:
        return bisect.bisect_right(self._doc_start, doc) - 1

    # ------------------------------------------------------------------ queries
    def prepare(self, text: str) -> KeywordQuery:
        return KeywordQuery.from_text(text)

    def plan(self, query: KeywordQuery) -> list[str]:
        """CIDs of the posting chunks the query's words live in that are not loaded yet."""
        keys = {self._key_of(t) for t in query.terms}
        if query.exact and query.terms:
            keys.add(_bucket(query.exact, self.buckets))
        return sorted({self._cid_of(k) for k in keys if k not in self._postings}) if self._reader else []

    def candidates(self, query: KeywordQuery) -> Candidates:
        """Every document holding a query word, best first (exact-term matches before the rest).

        Needs the chunks :meth:`plan` named (reads them through the reader's cache)."""
        n = self.n_docs
        scores = np.zeros(n, dtype=np.float32)
        exact = np.zeros(n, dtype=bool)
        hit = np.zeros(n, dtype=bool)
        terms = list(query.terms) + ([query.exact] if query.exact and query.terms else [])
        for t in terms:
            body = self._postings_for(_bucket(t, self.buckets) if t.startswith(EXACT_PREFIX) else self._key_of(t))
            docs, w = _term_postings(body, t)
            if not len(docs):
                continue
            if t.startswith(EXACT_PREFIX):
                exact[docs] = True
                continue
            df = len(docs)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            scores[docs] += np.float32(idf) * w.astype(np.float32)
            hit[docs] = True
        found = np.flatnonzero(hit | exact)
        # best first: exact matches, then score; ties by document number (= id order) so results are stable
        order = np.lexsort((found, -scores[found], ~exact[found]))
        found = found[order]
        return Candidates(found.astype(np.int64), scores[found], exact[found])

    def doc_plan(self, docs: Iterable[int]) -> list[str]:
        """CIDs of the document chunks holding ``docs`` that are not loaded yet."""
        if self._reader is None:
            return []
        chunks = {self._doc_chunk_of(int(d)) for d in docs}
        return sorted({self._doc_cids[c] for c in chunks if c not in self._docs})

    def record(self, doc: int) -> tuple[str, dict[str, Any], float]:
        """(id, metadata, timestamp) of a document number (its chunk must be planned and fetched)."""
        c = self._doc_chunk(self._doc_chunk_of(int(doc)))
        r = int(doc) - c["start"]
        return self._ids[int(doc)], c["metadata"][r], float(c["timestamps"][r])

    def doc_number(self, id: str) -> int | None:
        """Document number of ``id`` (ids are in the head, so no fetch), or None."""
        d = bisect.bisect_left(self._ids, id)
        return d if d < len(self._ids) and self._ids[d] == id else None

    def get_plan(self, id: str) -> list[str]:
        d = self.doc_number(id)
        return [] if d is None else self.doc_plan([d])

    def get(self, id: str) -> tuple[dict[str, Any], float]:
        """(metadata, timestamp) of ``id``; UnknownIdError if the index does not hold it."""
        d = self.doc_number(id)
        if d is None:
            raise UnknownIdError(f"unknown id: {id}")
        _, meta, ts = self.record(d)
        return meta, ts

    def search_steps(self, query: KeywordQuery, k: int, filter: Filter | None = None, *,
                     metadata: bool = True, batch: int | None = None, max_scan: int = 4096) -> Steps:
        """Plan-fetch-search as a generator: yields CID lists to fetch; returns ``[(id, score, exact, metadata)]``.

        Without a filter no document chunk is needed for the ranking (ids are in the head); with
        ``metadata=False`` the hits' metadata is ``None`` and nothing beyond the postings is read
        (the caller fetches metadata for the hits it keeps). With a filter, candidates are checked
        best first, ``batch`` at a time, each batch one round of fetches, until ``k`` match or
        ``max_scan`` candidates were checked (a filter that rejects thousands of keyword matches
        leaves the rest of the ranking to the vector side).
        """
        need = self.plan(query)
        if need:
            yield ("postings", need)
        cands = self.candidates(query)
        if filter is None:
            top = [(self._ids[int(d)], float(s), bool(e)) for d, s, e in
                   zip(cands.docs[:k], cands.scores[:k], cands.exact[:k])]
            if not metadata:
                return [(i, s, e, None) for i, s, e in top]
            need = self.doc_plan(cands.docs[:k])
            if need:
                yield ("docs", need)
            return [(i, s, e, self.record(int(d))[1]) for (i, s, e), d in zip(top, cands.docs[:k])]
        out: list[tuple[str, float, bool, dict[str, Any]]] = []
        batch = batch or max(k, 32)
        pos, limit = 0, min(len(cands), max_scan)
        while len(out) < k and pos < limit:
            docs = cands.docs[pos:min(pos + batch, limit)]
            need = self.doc_plan(docs)
            if need:
                yield ("docs", need)
            for j, d in enumerate(docs, pos):
                id_, meta, ts = self.record(int(d))
                if filter.matches(fields_of(meta, ts if ts == ts else None)):
                    out.append((id_, float(cands.scores[j]), bool(cands.exact[j]), meta))
                    if len(out) == k:
                        break
            pos += len(docs)
        return out

    def metadata_steps(self, ids: Sequence[str]) -> Steps:
        """Fetch the document chunks of ``ids`` (one round); returns ``{id: metadata}`` for those it holds."""
        docs = {i: self.doc_number(i) for i in ids}
        need = self.doc_plan(d for d in docs.values() if d is not None)
        if need:
            yield ("docs", need)
        return {i: self.record(d)[1] for i, d in docs.items() if d is not None}

    def __len__(self) -> int:
        return self.n_docs

    def spec(self) -> str:
        return f"BM25({self.field})"


def run(steps: Steps, fetch: Callable[[list[str]], Any]) -> Any:
    """Drive a plan-fetch-search generator synchronously: ``fetch`` each yielded CID list."""
    try:
        need = next(steps)
        while True:
            fetch(need[1] if isinstance(need, tuple) else need)
            need = steps.send(None)
    except StopIteration as stop:
        return stop.value


async def run_async(steps: Steps, fetch: Callable[[list[str]], Any]) -> Any:
    """Like :func:`run` with an async ``fetch`` (the worker's parallel ``pyfetch``)."""
    try:
        need = next(steps)
        while True:
            await fetch(need[1] if isinstance(need, tuple) else need)
            need = steps.send(None)
    except StopIteration as stop:
        return stop.value


def _term_postings(body: Mapping[str, Any], term: str) -> tuple[np.ndarray, np.ndarray]:
    terms = body["terms"]
    i = bisect.bisect_left(terms, term)
    if i == len(terms) or terms[i] != term:
        return np.empty(0, np.int64), np.empty(0, np.float16)
    a, b = int(body["offsets"][i]), int(body["offsets"][i + 1])
    return body["docs"][a:b].astype(np.int64), body["weights"][a:b]


def _check_postings(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from .layout import unpack_strings

        terms = unpack_strings(body["terms"])
        offsets, docs, weights = body["offsets"], body["docs"], body["weights"]
        if len(offsets) != len(terms) + 1 or int(offsets[-1]) != len(docs) or len(docs) != len(weights):
            raise ValueError("offsets do not cover the postings")
        if any(a > b for a, b in zip(terms, terms[1:])):
            raise ValueError("terms are not sorted")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise FormatError(f"bad kw_postings chunk: {exc}") from None
    return {"terms": terms, "offsets": offsets, "docs": docs, "weights": weights}


def _pack_ids(ids: Sequence[str]) -> dict[str, Any]:
    """All ids in one string plus their lengths in the smallest unsigned dtype (ids are short)."""
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    top = int(lengths.max()) if len(lengths) else 0
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    return {"id_text": "".join(ids), "id_lengths": lengths.astype(dtype)}


def _unpack_ids(head: Mapping[str, Any]) -> list[str]:
    text, lengths = head["id_text"], head["id_lengths"]
    ends = np.cumsum(lengths, dtype=np.int64).tolist()
    if not isinstance(text, str) or (ends[-1] if ends else 0) != len(text):
        raise ValueError("id lengths do not cover the id text")
    ids = [text[a:b] for a, b in zip([0] + ends[:-1], ends)]
    if any(a >= b for a, b in zip(ids, ids[1:])):
        raise ValueError("ids are not sorted and distinct")
    return ids


def _pack_postings(body: Mapping[str, Any]) -> dict[str, Any]:
    from .layout import pack_strings

    return dict(body, terms=pack_strings(body["terms"]))


def _pack_docs(body: Mapping[str, Any]) -> dict[str, Any]:
    from .layout import pack_records, pack_strings

    return {"start": body["start"], "texts": pack_strings(body["texts"]),
            "metadata": pack_records(body["metadata"]), "timestamps": np.asarray(body["timestamps"], np.float64)}


def _unpack_docs(body: Mapping[str, Any]) -> dict[str, Any]:
    from .layout import unpack_records, unpack_strings

    try:
        texts = unpack_strings(body["texts"])
        n = len(texts)
        return {"start": int(body["start"]), "texts": texts,
                "metadata": unpack_records(body["metadata"], n), "timestamps": body["timestamps"][:n]}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise FormatError(f"bad kw_docs chunk: {exc}") from None
