"""Keyword search: a BM25 inverted index over one text field, stored as chunks a query fetches by term.

Why it exists: an embedding blurs exact words, but a person who types a film's title expects that
film. BM25 (Robertson & Zaragoza) ranks documents by the query words they contain, weighted by
how rare each word is; :mod:`s5vec.api` fuses its ranking with the vector ranking.

Storage (``docs/FORMAT.md``, kinds ``kw_head``, ``kw_ids``, ``kw_postings``, ``kw_docs``), laid out
so that a commit rewrites only what its edits touch:

- Documents are numbered in the order they were added (append order), and a number never changes
  until the index is compacted. A deleted (or re-texted) document becomes a tombstone: listed in
  the head as deleted, skipped at query time; new text is appended under the next number.
- Postings hold raw term frequencies, not BM25 weights; the document lengths, the live document
  count N and their total length are in the head and the ``kw_ids`` chunks, so the weights
  (which depend on the average length) are computed at query time and adding a document does not
  change any stored posting.
- Postings live in *segments*: the documents a commit appends form a new segment, and small recent
  segments merge (dropping deleted documents' postings) while they are comparable in size, so a
  commit rewrites a segment about the size of its own edits and the big old one rarely. Within a
  segment terms are hashed (CRC-32, the same in CPython and Pyodide) into ``buckets``, one
  ``kw_postings`` chunk each, sized to the segment; a term with more than ``big_df`` postings in a
  segment gets a chunk of its own. A query fetches one chunk per word and segment.
- "Exact" terms: the token sequence of each record's ``exact_field`` (the title) is indexed as
  one more term (``"=the matrix"``) in the bucket of its longest word, so a query that *is* a title
  finds that record without any extra fetch and ranks it first.
- Documents (text, metadata, timestamps) are cut into ``kw_docs`` chunks of ``doc_rows`` by
  document number: appending fills the last chunk and adds new ones. They give filtered keyword
  search the metadata it must check, hits their metadata, and ``get(id)`` a one-chunk lookup.
- ``kw_ids`` chunks (every id, length and document-chunk CID of ``id_rows`` documents) and the
  ``kw_head`` (counts, tombstones, segments) are fetched when the index opens: a ranking needs
  only postings.
- When deleted documents reach ``COMPACT_DEAD`` of all numbers, a save renumbers everything (a
  full rewrite, as rare as that).

Like every index this one never fetches: :meth:`KeywordIndex.search_steps` is a generator that
yields the CIDs it needs next and is resumed once the caller has fetched them (see :func:`run`).
"""
from __future__ import annotations

import bisect
import copy
import math
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Mapping, Sequence

import numpy as np

from .errors import FormatError, InvalidArgumentError, UnknownIdError
from .filters import Filter, fields_of
from .index.base import ChunkReader, ChunkWriter

TOKENIZER = "fold-alnum-v1"
# The layout is versioned by the format version (s5vec.layout.FORMAT_VERSION, 2 since this layout);
# format-1 writers put a "version": 1 in the keyword descriptor, which is how a reader recognises one.
ID_ROWS = 2048  # documents per kw_ids chunk (rounded to a multiple of doc_rows)
MERGE_RATIO = 2  # the last two segments merge while the newer has >= 1/MERGE_RATIO of the older's postings
MAX_SEGMENTS = 4  # ... or while there are more than this many (a query fetches one chunk per segment and word)
COMPACT_DEAD = 0.25  # renumber everything once this share of document numbers are deleted documents
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


def _hash(term: str) -> int:
    """Hash of a term's bucket word. An exact term lives with its longest word (the first of equal
    length): usually a rare word, so the query already fetches that bucket and titles that share a
    common first word ("the") do not pile up in one chunk."""
    if term.startswith(EXACT_PREFIX):
        term = max(term[len(EXACT_PREFIX):].split(" "), key=len)
    return zlib.crc32(term.encode("utf-8"))


def _bucket(term: str, buckets: int) -> int:
    """Bucket of a term among ``buckets``: ``_hash(term) mod buckets``."""
    return _hash(term) % buckets


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


class _Chunk:
    """One stored chunk: its CID once written or loaded, its decoded body once built or read.

    Shared between an index and the copies :meth:`KeywordIndex.edited` makes (a chunk's content
    never changes: an edit makes a new ``_Chunk``), so a body read by one is read for all."""

    __slots__ = ("cid", "body")

    def __init__(self, cid: str | None = None, body: dict[str, Any] | None = None) -> None:
        self.cid, self.body = cid, body


@dataclass(frozen=True)
class _Segment:
    """The postings of documents ``lo .. hi-1``, hashed into ``buckets`` (+ chunks of big terms)."""

    lo: int
    hi: int
    postings: int
    buckets: tuple[_Chunk, ...]
    big: Mapping[str, _Chunk]

    def chunk_of(self, term: str, h: int | None = None) -> _Chunk:
        """The chunk holding ``term``'s postings (``h``: its :func:`_hash`, when known)."""
        if self.big and not term.startswith(EXACT_PREFIX):
            c = self.big.get(term)
            if c is not None:
                return c
        return self.buckets[(_hash(term) if h is None else h) % len(self.buckets)]

    def chunks(self) -> list[_Chunk]:
        return list(self.buckets) + [self.big[t] for t in sorted(self.big)]


@dataclass(frozen=True)
class _Layout:
    """What the next save does: renumber everything (``compact``), else merge the segments from
    ``merge_from`` on with the pending documents into one segment."""

    compact: bool
    merge_from: int


_Doc = tuple  # (id, text, metadata, timestamp, term frequencies: Counter[str][, length]) of a document to add


class KeywordIndex:
    """BM25 over one text field; built whole (``build``), loaded lazily (``load``), edited
    incrementally (``edited`` then ``save``)."""

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
        self._fixed_buckets = buckets  # None: each segment sized to its postings
        self.id_rows = doc_rows * max(1, ID_ROWS // doc_rows)
        self._reader: ChunkReader | None = None
        self._reset()

    def _reset(self) -> None:
        self._ids: list[str] = []  # document number -> id (deleted documents keep theirs, see _live)
        self._dl = np.zeros(0, np.int64)  # document number -> length in tokens
        self._live = np.zeros(0, bool)
        self.n_docs = 0  # live documents (N)
        self._total = 0  # sum of the live documents' lengths
        self._segments: list[_Segment] = []
        self._docs: list[_Chunk] = []  # document chunk i holds documents i*doc_rows ..
        self._pending: list[_Doc] = []  # appended, not yet in a segment or a document chunk
        self._head_cid: str | None = None
        self._ids_cids: list[str] = []
        self._forget()

    def _forget(self) -> None:
        """Drop what is derived from the documents (after any change)."""
        self._doc_of: dict[str, int] | None = None  # id -> live document number
        self._rank: np.ndarray | None = None  # document number -> rank of its id (ties break by id)
        self._norm: np.ndarray | None = None  # document number -> k1 * (1 - b + b * dl / avgdl)

    @property
    def avgdl(self) -> float:
        return self._total / self.n_docs if self.n_docs and self._total else 1.0

    @property
    def buckets(self) -> int:
        """Buckets of the first (largest) segment."""
        return len(self._segments[0].buckets) if self._segments else 0

    @property
    def segments(self) -> int:
        return len(self._segments)

    # ------------------------------------------------------------------ building and editing
    def build(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, Any]],
              timestamps: Sequence[float]) -> None:
        """(Re)build from every record; documents are numbered in the order given."""
        n = len(ids)
        if not (len(texts) == len(metadata) == len(timestamps) == n):
            raise InvalidArgumentError("ids, texts, metadata and timestamps differ in length")
        if len(set(ids)) != n:
            raise InvalidArgumentError("duplicate ids")
        docs = self._prepare(ids, texts, metadata, timestamps)
        self._reader = None
        self._reset()
        self._append(docs)
        self._seal()

    def edited(self, edits: Mapping[str, tuple[str, Mapping[str, Any], float] | None]) -> "KeywordIndex":
        """A copy with ``edits`` applied: id -> (text, metadata, timestamp), or None to delete.

        This index is not changed (it keeps answering queries while a commit runs). An edited or
        deleted document is marked deleted where it is (a tombstone, filtered at query time); new
        text is appended under the next document number. Fetch :meth:`plan_save`, then :meth:`save`
        the copy before searching it.
        """
        items = list(edits.items())
        ups = [(i, d) for i, d in items if d is not None]
        docs = self._prepare([i for i, _ in ups], [d[0] for _, d in ups], [d[1] for _, d in ups],
                             [d[2] for _, d in ups])
        if self._pending:
            raise InvalidArgumentError("save the keyword index before editing it again")
        new = copy.copy(self)
        new._ids, new._dl, new._live = list(self._ids), self._dl.copy(), self._live.copy()
        new._segments, new._docs, new._pending = list(self._segments), list(self._docs), list(self._pending)
        new._head_cid, new._ids_cids = None, []
        new._forget()
        new._kill(sorted(d for d in (self.doc_number(i) for i, _ in items) if d is not None))
        new._append(docs)
        return new

    def _prepare(self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, Any]],
                 timestamps: Sequence[float]) -> list[_Doc]:
        """Check and tokenize records (nothing changes if one is bad)."""
        out = []
        for i, t, m, ts in zip(ids, texts, metadata, timestamps):
            if not isinstance(t, str):
                raise InvalidArgumentError(f"the {self.field!r} field must be text, got {type(t).__name__}")
            meta = dict(m or {})
            tf = Counter(tokenize(t))
            dl = sum(tf.values())
            title = meta.get(self.exact_field) if self.exact_field else None
            if isinstance(title, str):
                for key in {exact_key(title), exact_key(f"{title} {meta.get('year', '')}".strip())}:
                    if key:
                        tf[key] = 1
            out.append((str(i), t, meta, float(ts), tf, dl))
        return out  # type: ignore[return-value]

    def _append(self, docs: Sequence[Any]) -> None:
        if not docs:
            return
        dl = np.array([d[5] for d in docs], dtype=np.int64)
        self._ids.extend(d[0] for d in docs)
        self._dl = np.concatenate([self._dl, dl])
        self._live = np.concatenate([self._live, np.ones(len(docs), bool)])
        self.n_docs += len(docs)
        self._total += int(dl.sum())
        self._pending.extend(d[:5] for d in docs)
        self._forget()

    def _kill(self, docs: Sequence[int]) -> None:
        if not docs:
            return
        d = np.asarray(docs, dtype=np.int64)
        self._live[d] = False
        self.n_docs -= len(d)
        self._total -= int(self._dl[d].sum())
        self._forget()

    def _layout(self) -> _Layout:
        """Decide the next save's work from counts alone (so :meth:`plan_save` can fetch first).

        Deleted documents beyond ``COMPACT_DEAD`` of all document numbers: renumber everything.
        Else the pending documents become a segment, and the last two segments merge while the
        newer holds at least 1/``MERGE_RATIO`` of the older's postings or there are more than
        ``MAX_SEGMENTS``: a commit rewrites small, recent segments; the big one rarely."""
        slots = len(self._ids)
        dead = slots - self.n_docs
        if dead and dead >= COMPACT_DEAD * slots:
            return _Layout(True, 0)
        sizes = [s.postings for s in self._segments]
        if self._pending:
            sizes.append(sum(len(p[4]) for p in self._pending))
            while len(sizes) > 1 and (sizes[-1] * MERGE_RATIO >= sizes[-2] or len(sizes) > MAX_SEGMENTS):
                last = sizes.pop()
                sizes[-1] += last
            return _Layout(False, len(sizes) - 1)
        return _Layout(False, len(self._segments))

    def plan_save(self) -> list[str]:
        """CIDs :meth:`save` reads (fetch them in parallel first): the last, partly filled document
        chunk when documents are appended, every chunk of the segments that merge, and every
        document chunk when the index is renumbered."""
        if self._reader is None:
            return []
        lay = self._layout()
        if lay.compact:
            chunks = list(self._docs)
        else:
            chunks = [c for s in self._segments[lay.merge_from:] for c in s.chunks()]
            if self._pending and (len(self._ids) - len(self._pending)) % self.doc_rows:
                chunks.append(self._docs[-1])
        return sorted({c.cid for c in chunks if c.body is None and c.cid is not None})

    def _seal(self) -> None:
        """Put the pending documents into document chunks and a segment (merging as :meth:`_layout` says)."""
        lay = self._layout()
        if lay.compact:
            docs = [(i, t, m, ts) for i, t, m, ts in self.documents()]
            self._reset()
            self._append(self._prepare(*zip(*docs)) if docs else [])
            lay = self._layout()
        if not self._pending:
            return
        lo = len(self._ids) - len(self._pending)
        self._append_doc_chunks(lo, self._pending)
        acc: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for s in self._segments[lay.merge_from:]:
            for c in s.chunks():
                body = self._body(c, "kw_postings")
                off, docs, tf = body["offsets"], body["docs"], body["tf"]
                for j, t in enumerate(body["terms"]):
                    acc.setdefault(t, []).append((docs[off[j]:off[j + 1]], tf[off[j]:off[j + 1]]))
        fresh: dict[str, tuple[list[int], list[int]]] = {}
        for j, p in enumerate(self._pending):
            for t, f in p[4].items():
                e = fresh.get(t)
                if e is None:
                    fresh[t] = e = ([], [])
                e[0].append(lo + j)
                e[1].append(f)
        for t, (d, f) in fresh.items():
            acc.setdefault(t, []).append((np.array(d, np.uint32), np.array(f, np.int64)))
        merged = self._segments[lay.merge_from:]
        postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t, parts in acc.items():
            d = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            f = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            keep = self._live[d]  # a merge drops the postings of deleted documents
            if not keep.all():
                d, f = d[keep], f[keep]
                if not len(d):
                    continue
            postings[t] = (d, f)
        start = merged[0].lo if merged else lo
        self._segments = self._segments[:lay.merge_from] + [self._make_segment(start, len(self._ids), postings)]
        self._pending = []

    def _append_doc_chunks(self, lo: int, docs: Sequence[_Doc]) -> None:
        texts = [d[1] for d in docs]
        metas = [d[2] for d in docs]
        ts = np.array([d[3] for d in docs], dtype=np.float64)
        pos = 0
        if lo % self.doc_rows:  # fill the last chunk up first (a new chunk: the old one may be shared)
            old = self._body(self._docs[-1], "kw_docs")
            pos = min(len(docs), self.doc_rows - lo % self.doc_rows)
            self._docs[-1] = _Chunk(None, {
                "start": old["start"], "texts": list(old["texts"]) + texts[:pos],
                "metadata": list(old["metadata"]) + metas[:pos],
                "timestamps": np.concatenate([np.asarray(old["timestamps"], np.float64), ts[:pos]])})
        while pos < len(docs):
            end = min(len(docs), pos + self.doc_rows)
            self._docs.append(_Chunk(None, {"start": lo + pos, "texts": texts[pos:end], "metadata": metas[pos:end],
                                            "timestamps": ts[pos:end]}))
            pos = end

    def _make_segment(self, lo: int, hi: int, postings: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> _Segment:
        total = sum(len(d) for d, _ in postings.values())
        big = {t for t, (d, _) in postings.items() if len(d) > self.big_df and not t.startswith(EXACT_PREFIX)}
        small = total - sum(len(postings[t][0]) for t in big)
        n = self._fixed_buckets or max(1, 1 << max(0, math.ceil(math.log2(max(1, small / 1024)))))
        groups: list[list[str]] = [[] for _ in range(n)]
        for t in postings:
            if t not in big:
                groups[_bucket(t, n)].append(t)
        return _Segment(lo, hi, total, tuple(_Chunk(None, _postings_body(sorted(g), postings)) for g in groups),
                        {t: _Chunk(None, _postings_body([t], postings)) for t in sorted(big)})

    def documents(self) -> list[tuple[str, str, dict[str, Any], float]]:
        """Every live (id, text, metadata, timestamp), in document order (reads every document chunk)."""
        out = []
        done = len(self._ids) - len(self._pending)
        for i in range(len(self._docs)):
            c = self._body(self._docs[i], "kw_docs")
            for r, d in enumerate(range(c["start"], min(done, c["start"] + len(c["texts"])))):
                if self._live[d]:
                    out.append((self._ids[d], c["texts"][r], c["metadata"][r], float(c["timestamps"][r])))
        for j, p in enumerate(self._pending):
            if self._live[done + j]:
                out.append((p[0], p[1], p[2], p[3]))
        return out

    # ------------------------------------------------------------------ persistence
    def params(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "big_df": self.big_df, "doc_rows": self.doc_rows}

    def save(self, writer: ChunkWriter) -> dict[str, Any]:
        """Write the chunks that changed since this index was loaded or last saved (plus the head
        and the small ``kw_ids`` chunks); returns the descriptor for the manifest. Chunks it does
        not write keep their CIDs: :meth:`chunk_cids` names every chunk the descriptor uses."""
        self._seal()
        segs = []
        for s in self._segments:
            for c in s.chunks():
                if c.cid is None:
                    c.cid = writer.put("kw_postings", _pack_postings(c.body))
            segs.append({"lo": s.lo, "hi": s.hi, "postings": s.postings, "buckets": [c.cid for c in s.buckets],
                         "big": {t: c.cid for t, c in s.big.items()}})
        for c in self._docs:
            if c.cid is None:
                c.cid = writer.put("kw_docs", _pack_docs(c.body))
        per = self.id_rows // self.doc_rows
        self._ids_cids = [writer.put("kw_ids", {
            "start": a, **_pack_ids(self._ids[a:a + self.id_rows]), "dl": _smallest(self._dl[a:a + self.id_rows]),
            "docs": [c.cid for c in self._docs[j * per:(j + 1) * per]]})
            for j, a in enumerate(range(0, len(self._ids), self.id_rows))]
        head = {"n_docs": self.n_docs, "n_slots": len(self._ids), "total_len": self._total, "id_rows": self.id_rows,
                "ids": self._ids_cids, "dead": np.flatnonzero(~self._live).astype(np.uint32), "segments": segs}
        self._head_cid = writer.put("kw_head", head)
        return {"kind": self.kind, "field": self.field, "exact_field": self.exact_field,
                "tokenizer": TOKENIZER, "params": self.params(), "count": self.n_docs, "head": self._head_cid}

    def chunk_cids(self) -> set[str]:
        """Every chunk the last saved or loaded descriptor names (the manifest lists them all)."""
        out = {self._head_cid, *self._ids_cids, *(c.cid for c in self._docs)}
        out.update(c.cid for s in self._segments for c in s.chunks())
        out.discard(None)
        return out  # type: ignore[return-value]

    @classmethod
    def load(cls, desc: Mapping[str, Any], reader: ChunkReader) -> "KeywordIndex":
        """Open from a descriptor: reads the ``kw_head`` and ``kw_ids`` chunks (fetched at open)."""
        if "version" in desc:
            raise FormatError(f"this keyword index has the s5vec format 1 layout (descriptor version "
                              f"{desc.get('version')!r}: precomputed BM25 weights), which this reader no longer "
                              "reads: publish the records again (s5vec publish --text-field ...)")
        try:
            if desc.get("kind") != cls.kind:
                raise FormatError(f"unsupported keyword index kind {desc.get('kind')!r}")
            if desc.get("tokenizer") != TOKENIZER:
                raise FormatError(f"unknown keyword tokenizer {desc.get('tokenizer')!r}")
            p = desc["params"]
            obj = cls(desc["field"], exact_field=desc.get("exact_field"), k1=p["k1"], b=p["b"],
                      big_df=p["big_df"], doc_rows=p["doc_rows"])
            head = reader.get(desc["head"], "kw_head")
            obj._head_cid = str(desc["head"])
            obj.id_rows = int(head["id_rows"])
            if obj.id_rows < 1 or obj.id_rows % obj.doc_rows:
                raise ValueError("id_rows is not a multiple of doc_rows")
            obj._ids_cids = [str(c) for c in head["ids"]]
            ids: list[str] = []
            dls, docs = [], []
            for j, cid in enumerate(obj._ids_cids):
                body = reader.get(cid, "kw_ids")
                part = _unpack_ids(body)
                if int(body["start"]) != j * obj.id_rows or len(part) != len(body["dl"]) or (
                        len(part) != obj.id_rows and j != len(obj._ids_cids) - 1):
                    raise ValueError(f"kw_ids chunk {j} does not cover its documents")
                ids += part
                dls.append(np.asarray(body["dl"], np.int64))
                docs += [_Chunk(str(c)) for c in body["docs"]]
            slots = int(head["n_slots"])
            if len(ids) != slots or len(docs) != -(-slots // obj.doc_rows):
                raise ValueError("the kw_ids chunks do not cover every document")
            obj._ids, obj._docs = ids, docs
            obj._dl = np.concatenate(dls) if dls else np.zeros(0, np.int64)
            obj._live = np.ones(slots, bool)
            dead = np.asarray(head["dead"], np.int64)
            if len(dead) and (dead.min() < 0 or dead.max() >= slots or len(np.unique(dead)) != len(dead)):
                raise ValueError("bad deleted-document list")
            obj._live[dead] = False
            obj.n_docs, obj._total = int(head["n_docs"]), int(head["total_len"])
            if obj.n_docs != slots - len(dead) or obj._total != int(obj._dl[obj._live].sum()):
                raise ValueError("document counts or lengths do not add up")
            lo = 0
            for s in head["segments"]:
                buckets = tuple(_Chunk(str(c)) for c in s["buckets"])
                if int(s["lo"]) != lo or int(s["hi"]) <= lo or not buckets:
                    raise ValueError("segments do not cover the documents in order")
                obj._segments.append(_Segment(lo, int(s["hi"]), int(s["postings"]), buckets,
                                              {str(t): _Chunk(str(c)) for t, c in s["big"].items()}))
                lo = int(s["hi"])
            if lo != slots:
                raise ValueError("segments do not cover the documents")
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, InvalidArgumentError) as exc:
            raise FormatError(f"bad keyword index descriptor: {exc}") from None
        obj._reader = reader
        return obj

    @staticmethod
    def head_cid(desc: Mapping[str, Any]) -> str:
        return str(desc["head"])

    # ------------------------------------------------------------------ chunk access
    def _body(self, chunk: _Chunk, kind: str) -> dict[str, Any]:
        if chunk.body is None:
            if self._reader is None or chunk.cid is None:
                raise FormatError(f"a {kind} chunk is missing")
            raw = self._reader.get(chunk.cid, kind)
            chunk.body = _check_postings(raw) if kind == "kw_postings" else _unpack_docs(raw)
        return chunk.body

    def _term_postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(documents, term frequencies) of ``term`` over every segment, live documents only."""
        h = _hash(term)
        parts = [_term_postings(self._body(s.chunk_of(term, h), "kw_postings"), term) for s in self._segments]
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        docs = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        tf = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        if self.n_docs != len(self._ids):
            keep = self._live[docs]
            if not keep.all():
                docs, tf = docs[keep], tf[keep]
        return docs, tf

    def _doc_chunk_of(self, doc: int) -> int:
        return doc // self.doc_rows

    # ------------------------------------------------------------------ queries
    def prepare(self, text: str) -> KeywordQuery:
        return KeywordQuery.from_text(text)

    def plan(self, query: KeywordQuery) -> list[str]:
        """CIDs of the posting chunks the query's words live in (one per segment) not loaded yet."""
        if self._reader is None:
            return []
        terms = list(query.terms) + ([query.exact] if query.exact and query.terms else [])
        chunks = {s.chunk_of(t, h) for t, h in zip(terms, map(_hash, terms)) for s in self._segments}
        return sorted({c.cid for c in chunks if c.body is None and c.cid is not None})

    def candidates(self, query: KeywordQuery) -> Candidates:
        """Every live document holding a query word, best first (exact-term matches before the rest).

        BM25 from the stored term frequencies and document lengths, over the live documents:
        ``idf * tf*(k1+1) / (tf + k1*(1-b+b*dl/avgdl))`` per word. Needs the chunks :meth:`plan`
        named (reads them through the reader's cache)."""
        n, big_n, norms = len(self._ids), self.n_docs, self._norms()
        scores = np.zeros(n, dtype=np.float32)
        exact = np.zeros(n, dtype=bool)
        hit = np.zeros(n, dtype=bool)
        terms = list(query.terms) + ([query.exact] if query.exact and query.terms else [])
        for t in terms:
            docs, tf = self._term_postings(t)
            if not len(docs):
                continue
            if t.startswith(EXACT_PREFIX):
                exact[docs] = True
                continue
            df = len(docs)
            idf = math.log(1.0 + (big_n - df + 0.5) / (df + 0.5))
            f = tf.astype(np.float32)
            scores[docs] += np.float32(idf) * (f * np.float32(self.k1 + 1) / (f + norms[docs]))
            hit[docs] = True
        found = np.flatnonzero(hit | exact)
        # best first: exact matches, then score; ties by id, so results do not depend on document numbers
        order = np.lexsort((self._ranks()[found], -scores[found], ~exact[found]))
        found = found[order]
        return Candidates(found.astype(np.int64), scores[found], exact[found])

    def _norms(self) -> np.ndarray:
        if self._norm is None:
            self._norm = (self.k1 * (1 - self.b + self.b * self._dl.astype(np.float64) / self.avgdl)).astype(np.float32)
        return self._norm

    def _ranks(self) -> np.ndarray:
        if self._rank is None:
            order = np.argsort(np.array(self._ids, dtype=str), kind="stable")
            self._rank = np.empty(len(order), np.int64)
            self._rank[order] = np.arange(len(order))
        return self._rank

    def doc_plan(self, docs: Iterable[int]) -> list[str]:
        """CIDs of the document chunks holding ``docs`` that are not loaded yet."""
        if self._reader is None:
            return []
        chunks = {self._docs[self._doc_chunk_of(int(d))] for d in docs}
        return sorted({c.cid for c in chunks if c.body is None and c.cid is not None})

    def record(self, doc: int) -> tuple[str, dict[str, Any], float]:
        """(id, metadata, timestamp) of a document number (its chunk must be planned and fetched)."""
        c = self._body(self._docs[self._doc_chunk_of(int(doc))], "kw_docs")
        r = int(doc) - c["start"]
        return self._ids[int(doc)], c["metadata"][r], float(c["timestamps"][r])

    def doc_number(self, id: str) -> int | None:
        """Live document number of ``id`` (ids are in the ``kw_ids`` chunks, so no fetch), or None."""
        if self._doc_of is None:
            live = self._live
            self._doc_of = {i: d for d, i in enumerate(self._ids) if live[d]}
        return self._doc_of.get(id)

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

        Without a filter no document chunk is needed for the ranking (ids are in the ``kw_ids``
        chunks, read at open); with ``metadata=False`` the hits' metadata is ``None`` and nothing
        beyond the postings is read
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
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a, b = int(body["offsets"][i]), int(body["offsets"][i + 1])
    return body["docs"][a:b].astype(np.int64), body["tf"][a:b]


def _smallest(values: np.ndarray) -> np.ndarray:
    """Non-negative integers in the smallest unsigned dtype that holds them."""
    top = int(values.max()) if len(values) else 0
    return values.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32)


def _postings_body(terms: list[str], postings: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """One ``kw_postings`` body: ``terms`` (sorted), their documents (ascending) and term frequencies."""
    offsets = np.zeros(len(terms) + 1, dtype=np.uint32)
    if terms:
        np.cumsum([len(postings[t][0]) for t in terms], out=offsets[1:])
    docs = np.concatenate([postings[t][0] for t in terms]).astype(np.uint32) if terms else np.empty(0, np.uint32)
    tf = np.concatenate([postings[t][1] for t in terms]).astype(np.int64) if terms else np.empty(0, np.int64)
    return {"terms": terms, "offsets": offsets, "docs": docs, "tf": _smallest(tf)}


def _check_postings(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from .layout import unpack_strings

        terms = unpack_strings(body["terms"])
        offsets, docs, tf = body["offsets"], body["docs"], body["tf"]
        if len(offsets) != len(terms) + 1 or int(offsets[-1]) != len(docs) or len(docs) != len(tf):
            raise ValueError("offsets do not cover the postings")
        if tf.dtype.kind != "u" or docs.dtype != np.uint32:
            raise ValueError("documents must be uint32 and term frequencies unsigned")
        if any(a > b for a, b in zip(terms, terms[1:])):
            raise ValueError("terms are not sorted")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise FormatError(f"bad kw_postings chunk: {exc}") from None
    return {"terms": terms, "offsets": offsets, "docs": docs, "tf": tf}


def _pack_ids(ids: Sequence[str]) -> dict[str, Any]:
    """Ids in one string plus their lengths in the smallest unsigned dtype (ids are short)."""
    return {"id_text": "".join(ids), "id_lengths": _smallest(np.array([len(i) for i in ids], dtype=np.int64))}


def _unpack_ids(body: Mapping[str, Any]) -> list[str]:
    text, lengths = body["id_text"], body["id_lengths"]
    ends = np.cumsum(lengths, dtype=np.int64).tolist()
    if not isinstance(text, str) or (ends[-1] if ends else 0) != len(text) or 0 in lengths:
        raise ValueError("id lengths do not cover the id text")
    return [text[a:b] for a, b in zip([0] + ends[:-1], ends)]


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
