"""IVF persistence and lazy loading (a mixin of :class:`s5vec.index.ivf.IVFIndex`).

Chunks
    ``save(writer)`` writes one ``"ivf_centroids"`` chunk (params, centroids, codec state), one
    ``"ivf_summaries"`` chunk (per-list metadata summaries for filtered probes) and one
    ``"ivf_list"`` chunk per group of ``lists_per_chunk`` lists (plus one ``"ivf_list"`` chunk
    for the pending buffer of an untrained index). Chunk bodies depend only on content, so
    unchanged lists keep their CID and an incremental save re-uploads only changed lists.

Lazy loading, without fetching
    ``load(desc, reader)`` reads the centroids, summaries and pending chunks (fetched by the
    request layer when it opened the manifest); the lists stay on the portal. An index never
    fetches: ``plan`` names the list chunks a query needs, the request layer fetches them through
    the store (which owns the one cache and its byte budget), and ``search`` reads them from the
    ``chunks`` it is handed. Decoded lists are memoised *on the decoded chunk body*, so they live
    exactly as long as the store keeps that chunk. A lazy index is read-only until
    ``load_all(chunks)`` (chunks named by ``plan_all()``) makes every list resident.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import kernels
from .. import quantizers as qz
from ..errors import FormatError, InvalidArgumentError
from ..query import Chunks
from .base import ChunkReader, ChunkWriter
from .ivf_lists import PENDING, IVFList, IVFParams

CENTROIDS_KIND = "ivf_centroids"
SUMMARIES_KIND = "ivf_summaries"
LIST_KIND = "ivf_list"
REFINE_KIND = "ivf_refine"
_MEMO = "__ivf_lists__"  # key under which decoded lists are memoised on a chunk body

CENTROID_F16_TOL = 1e-3
"""Largest relative error (per centroid, in norm) float16 storage may add; beyond it (values
outside float16's range, or so small they become subnormal) the centroids are stored as float32."""


def storable_centroids(c: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(centroids, float16)``: trained centroids as the index keeps them (float32) and whether the
    centroids chunk stores them as float16.

    Why float16: the centroids are what every open downloads (25 MB of float32 at the 10M default,
    16,384 x 384); float16 halves that at no measurable recall cost. Why rounded here, right after
    k-means: the lists are assigned, residuals encoded and queries probed against the *rounded*
    values, so a resident index, a bulk build and a reloaded one agree exactly (the float16 array
    written is lossless). Data whose centroids float16 cannot hold within :data:`CENTROID_F16_TOL`
    (huge or tiny l2/ip magnitudes) keep float32."""
    c = np.ascontiguousarray(c, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        r = c.astype(np.float16).astype(np.float32)
        err = np.linalg.norm(r - c, axis=1)
        ok = bool(np.isfinite(r).all() and (err <= CENTROID_F16_TOL * np.linalg.norm(c, axis=1)).all())
    return (r, True) if ok else (c, False)


def centroid_itemsize(float16: bool = True) -> int:
    """Bytes per stored centroid component (the one place that knows; see ``ivf_tune.centroid_bytes``)."""
    return 2 if float16 else 4


@dataclass(frozen=True, eq=False)
class RefineState:
    """A search's candidates after the PQ pass, waiting for their refine chunks (``Query.state``).

    ``sources``/``numbers``/``exact``: the lists scored (their list numbers, whether their
    distances are exact); ``src``/``rows``/``dist``: each candidate's source, row and approximate
    distance."""

    sources: list[IVFList]
    numbers: list[int]
    exact: list[bool]
    src: np.ndarray
    rows: np.ndarray
    dist: np.ndarray


class IVFStorage:
    """Chunk bookkeeping, save/load and the lazy list hand-over of an IVF index."""

    # provided by IVFIndex
    dim: int
    metric: str
    nlist: int
    lists_per_chunk: int
    codec: qz.Codec
    codec_name: str
    vectors_dtype: str
    centroids: np.ndarray | None
    _centroids_f16: bool
    _lists: list[IVFList | None]
    _counts: np.ndarray
    _pending: IVFList
    _summaries: list[dict[str, Any] | None]
    _loc: dict[str, tuple[int, int]] | None

    def _init_storage(self) -> None:
        self._lazy = False
        self._staged_refine: list[str] = []
        self._chunk_cids: list[str | None] = [None] * self._nchunks
        self._centroids_cid: str | None = None
        self._pending_cid: str | None = None

    @property
    def lazy(self) -> bool:
        return self._lazy

    @property
    def _nchunks(self) -> int:
        return -(-self.nlist // self.lists_per_chunk)

    def _require_resident(self, what: str) -> None:
        if self._lazy:
            raise InvalidArgumentError(
                f"cannot {what} a lazily loaded IVF index: make it resident with load_all() first "
                "(Database does this before an edit; Database.get reads one record)")

    # ------------------------------------------------------------------ the hand-over

    def _chunks_of_lists(self, lists: Iterable[int]) -> list[str]:
        """CIDs of the chunks holding the given non-empty, non-resident lists (first-seen order)."""
        out: dict[str, None] = {}
        for l in lists:
            l = int(l)
            if self._counts[l] == 0 or self._lists[l] is not None:
                continue
            cid = self._chunk_cids[l // self.lists_per_chunk]
            assert cid is not None
            out[cid] = None
        return list(out)

    def plan_all(self) -> list[str]:
        """Every list chunk a lazy index has not made resident (what ``load_all`` needs); with
        separate refine data, once ``load_all`` has seen the lists, their refine chunks too."""
        if not self._lazy:
            return []
        return [c for c in dict.fromkeys(self._chunk_cids) if c is not None] + list(self._staged_refine)

    # -- separate refine data

    def _refine_plan(self, st: "RefineState") -> list[str]:
        """The refine chunks of the candidates whose lists hold no vectors (first-seen order)."""
        out: dict[str, None] = {}
        approx = ~np.asarray(st.exact)[st.src]
        R = self.refine_rows  # type: ignore[attr-defined]
        # one entry per (source, block), first-seen order
        key = st.src[approx].astype(np.int64) * (1 << 32) + st.rows[approx] // R
        _, first = np.unique(key, return_index=True)
        for k in key[np.sort(first)].tolist():
            s, b = k >> 32, k & 0xFFFFFFFF
            lst = st.sources[s]
            if lst.vectors is None:
                if lst.refine_cids is None:
                    raise FormatError("IVF list without vectors or refine chunks")
                out[lst.refine_cids[b]] = None
        return list(out)

    def _refine_block(self, l: int, lst: IVFList, block: int, chunks: Chunks) -> tuple[int, np.ndarray]:
        """``(start, codes)`` of one refine block of list ``l``: the stored rows, not decoded.

        Nothing decoded is kept on the chunk body: the store's byte budget counts a chunk's raw
        bytes, and a decoded PQ refine row is 16x its code (a 1M index's cache of refine chunks
        grew the tab's heap to 1 GB that way). Callers decode only the rows they score."""
        assert lst.refine_cids is not None
        cid = lst.refine_cids[block]
        if cid not in chunks:
            raise RuntimeError(f"IVF refine block {block} of list {l} was read without its chunk")
        body = chunks[cid]
        R = self.refine_rows  # type: ignore[attr-defined]
        try:
            start, data = int(body["start"]), np.asarray(body["data"])
            if int(body["list"]) != l or start != block * R:
                raise FormatError(f"IVF refine chunk holds list {body['list']} rows from {start}")
            n = min(R, len(lst) - start)
            data = data.reshape(n, -1)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed ivf_refine chunk: {exc}") from None
        return start, data

    def _refine_distances(self, query: np.ndarray, ls: np.ndarray, lists: Sequence[IVFList], rows: np.ndarray,
                          data: np.ndarray) -> np.ndarray:
        """Distances of ``query`` to the re-rank vectors of rows ``rows`` of lists ``lists`` (list
        numbers ``ls``) from their refine codes ``data``: decoded, then ``kernels.scan``. For cosine / inner product with a PQ refine over PQ codes the dots
        are taken without decoding (``Refiner.dots``: the query is rotated once per codec instead
        of every row back): the default at 100k in Pyodide spent 2.6 ms a query rotating 20 rows."""
        codes = None
        if lists[0].codes is not None:
            codes = np.stack([lst.codes[r] for lst, r in zip(lists, rows.tolist())])
        cents = self.centroids[ls] if self.residual else None  # type: ignore[index,attr-defined]
        metric = self.metric  # type: ignore[attr-defined]
        dots = None if metric == "l2" else self.refiner.dots(query, data, cents, codes)  # type: ignore[attr-defined]
        if dots is None:
            return kernels.scan(query, self.refiner.decode(data, cents, codes), metric)  # type: ignore[attr-defined]
        return kernels.dot_distances(dots, metric)

    def _refine_rows(self, l: int, lst: IVFList, block: int, chunks: Chunks) -> np.ndarray:
        """All decoded re-rank vectors of one refine block of list ``l`` (making a list resident)."""
        start, data = self._refine_block(l, lst, block, chunks)
        n = data.shape[0]
        codes = lst.codes[start: start + n] if lst.codes is not None else None
        cents = None
        if self.residual:  # type: ignore[attr-defined]
            cents = np.broadcast_to(self.centroids[l], (n, self.dim))  # type: ignore[index]
        return self.refiner.decode(data, cents, codes)  # type: ignore[attr-defined]

    def _refine_bodies(self, l: int, lst: IVFList) -> Iterable[dict[str, Any]]:
        """The ``ivf_refine`` chunk bodies of resident list ``l``, ``refine_rows`` rows each."""
        R = self.refine_rows  # type: ignore[attr-defined]
        for start in range(0, len(lst), R):
            sl = slice(start, start + R)
            cents = None
            if self.residual:  # type: ignore[attr-defined]
                cents = np.broadcast_to(self.centroids[l], (len(lst.ids[sl]), self.dim))  # type: ignore[index]
            assert lst.vectors is not None
            data = self.refiner.encode(lst.vectors[sl], cents, lst.codes[sl])  # type: ignore[attr-defined]
            yield {"list": l, "start": start, "data": np.ascontiguousarray(data)}

    def _list(self, l: int, chunks: Chunks) -> IVFList:
        """List ``l``: resident, or decoded from the chunk the request layer handed over."""
        lst = self._lists[l]
        if lst is not None:
            return lst
        c = l // self.lists_per_chunk
        if self._chunk_cids[c] not in chunks:
            raise RuntimeError(f"IVF list {l} was searched without its chunk: plan and search disagree")
        return self._chunk_lists(c, chunks)[l]

    def _chunk_lists(self, c: int, chunks: Chunks) -> dict[int, IVFList]:
        body = chunks[self._chunk_cids[c]]  # type: ignore[index]
        memo = body.get(_MEMO)
        if memo is None:
            memo = self._lists_from_body(body, c)
            if isinstance(body, dict):
                body[_MEMO] = memo
        return memo

    def _lists_from_body(self, body: Mapping[str, Any], c: int) -> dict[int, IVFList]:
        g = self.lists_per_chunk
        shared = self.codec_name == "flat"
        out: dict[int, IVFList] = {}
        try:
            entries = body["lists"]
        except (KeyError, TypeError):
            raise FormatError("IVF list chunk without lists") from None
        for entry in entries:
            l = int(entry["list"])
            if not c * g <= l < min((c + 1) * g, self.nlist):
                raise FormatError(f"IVF list chunk {c} holds list {l}")
            lst = IVFList.from_body(entry, self.dim, self.codec.code_size,
                                    None if shared else self.codec.code_dtype, shared)
            if len(lst) != self._counts[l]:
                raise FormatError(f"IVF list {l} has {len(lst)} records, descriptor says {int(self._counts[l])}")
            out[l] = lst
        for l in range(c * g, min((c + 1) * g, self.nlist)):
            out.setdefault(l, self._new_list())  # type: ignore[attr-defined]
        return out

    def load_all(self, chunks: Chunks) -> None:
        """Make every list resident (and the index writable) from the chunks ``plan_all()`` named.

        With separate refine data the first call only learns the refine CIDs from the lists (the
        index stays lazy and ``plan_all()`` names them); the next call reads them too."""
        if not self._lazy:
            return
        if getattr(self, "refiner", None) is not None:
            need = [cid for c in range(self._nchunks) for lst in self._chunk_lists(c, chunks).values()
                    for cid in (lst.refine_cids or ())]
            if any(cid not in chunks for cid in need):
                self._staged_refine = list(dict.fromkeys(need))
                return
        R = getattr(self, "refine_rows", 1)
        for c in range(self._nchunks):
            for l, lst in self._chunk_lists(c, chunks).items():
                own = lst.copy()  # the decoded ones stay with the store's cached chunk
                if own.vectors is None and lst.refine_cids is not None:
                    blocks = [self._refine_rows(l, lst, b, chunks) for b in range(len(lst.refine_cids))]
                    own.vectors = (np.concatenate(blocks) if blocks else np.empty((0, self.dim), np.float32))[: len(lst)]
                    assert own.vectors.shape[0] == len(lst) and R > 0
                self._lists[l] = own
        self._staged_refine = []
        self._lazy = False
        self._loc = {}
        self._register(PENDING, self._pending, 0)  # type: ignore[attr-defined]
        for l, lst in enumerate(self._lists):
            assert lst is not None
            self._register(l, lst, 0)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ save

    def _centroids_body(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "metric": self.metric,
            "params": self.params(),  # type: ignore[attr-defined]
            "trained": self.centroids is not None,
            "centroids": self._stored_centroids(),
            "codec": self.codec.state() if self.centroids is not None else None,
            "refine": self.refiner.state() if self.refiner is not None and self.centroids is not None else None,  # type: ignore[attr-defined]
        }

    def _stored_centroids(self) -> np.ndarray:
        """The centroids as the chunk stores them: float16 for indexes trained by this version
        (exact: :func:`storable_centroids` rounded them), float32 for older ones (kept as read, so
        their residual codes still match)."""
        if self.centroids is None:
            return np.empty((0, self.dim), np.float32)
        if self._centroids_f16:
            return np.ascontiguousarray(self.centroids.astype(np.float16))
        return self.centroids

    def write_list_chunk(self, writer: ChunkWriter, c: int) -> str:
        """Write list chunk ``c`` (lists ``c*g .. c*g+g-1``, resident) and, with separate refine
        data, its lists' ``ivf_refine`` chunks first (the list entries name them); returns the
        list chunk's CID. The one entry point for writing lists (save and bulk builds)."""
        return writer.put(LIST_KIND, self._chunk_body(c, writer))

    def _chunk_body(self, c: int, writer: ChunkWriter) -> dict[str, Any]:
        g = self.lists_per_chunk
        shared = self.codec_name == "flat"
        separate = getattr(self, "refiner", None) is not None
        entries = []
        for l in range(c * g, min((c + 1) * g, self.nlist)):
            lst = self._lists[l]
            assert lst is not None
            refine = [writer.put(REFINE_KIND, b) for b in self._refine_bodies(l, lst)] if separate else None
            entries.append(lst.body(l, shared, self.vectors_dtype, refine))
        return {"lists": entries}

    def save(self, writer: ChunkWriter, *, reuse_clean: bool = False) -> dict[str, Any]:
        """Write the index as chunks; returns the descriptor.

        Every resident list chunk is written (identical content gives the identical CID, so a
        store that knows the CID skips the upload). Chunks of a lazy index that were never
        made resident are not rewritten: their CIDs are reused. With ``reuse_clean`` the chunks
        not modified since the last save/load are not rewritten either.
        """
        trained = self.centroids is not None
        cid = self._centroids_cid
        if cid is None or not reuse_clean:
            cid = writer.put(CENTROIDS_KIND, self._centroids_body())
        self._centroids_cid = cid
        pending_cid = None
        if len(self._pending):
            pending_cid = self._pending_cid
            if pending_cid is None or not reuse_clean:
                pending_cid = writer.put(LIST_KIND, {"lists": [self._pending.body(PENDING, False)]})
        self._pending_cid = pending_cid
        list_cids: list[str] = []
        if trained:
            for c in range(self._nchunks):
                resident = self._lists[c * self.lists_per_chunk] is not None
                old = self._chunk_cids[c]
                if resident and (old is None or not reuse_clean):
                    old = self.write_list_chunk(writer, c)
                    self._chunk_cids[c] = old
                assert old is not None
                list_cids.append(old)
        summaries_cid = None
        if trained:
            # its own chunk, so an edit re-uploads these few KB and not the centroids
            summaries_cid = writer.put(SUMMARIES_KIND, {
                "lists": [self._summary(l) or {} for l in range(self.nlist)]})  # type: ignore[attr-defined]
        # no "chunks" list (it repeated every CID above: 516 KB of a 3M index's 1.8 MB manifest,
        # downloaded and decoded at every open); nothing ever read it, so old readers are unaffected
        return {
            "kind": "ivf", "dim": self.dim, "metric": self.metric, "params": self.params(),  # type: ignore[attr-defined]
            "trained": trained, "count": len(self),  # type: ignore[arg-type]
            "centroids": cid, "summaries": summaries_cid, "pending": pending_cid,
            "lists_per_chunk": self.lists_per_chunk, "counts": [int(c) for c in self._counts],
            "lists": list_cids,
        }

    # ------------------------------------------------------------------ load

    @classmethod
    def load(cls, desc: Mapping[str, Any], reader: ChunkReader) -> Any:
        """Rebuild from a descriptor, lazily: the centroids, summaries and pending chunks are read
        (the request layer fetched them at open); the lists are handed to ``search`` when planned."""
        try:
            if desc.get("kind") != "ivf":
                raise FormatError(f"not an IVF descriptor (kind={desc.get('kind')!r})")
            body = reader.get(desc["centroids"], CENTROIDS_KIND)
            idx = cls(int(body["dim"]), str(body["metric"]), IVFParams.from_dict(body["params"]))  # type: ignore[call-arg]
            counts = np.asarray([int(c) for c in desc["counts"]], dtype=np.int64)
            if counts.shape != (idx.nlist,):
                raise FormatError(f"IVF descriptor has {counts.shape[0]} list counts, expected {idx.nlist}")
            idx._counts = counts
            idx._centroids_cid = desc["centroids"]
            if body["trained"]:
                idx._load_trained(body, desc, reader)
            elif counts.any() or desc["lists"]:
                raise FormatError("untrained IVF descriptor with list chunks")
            if desc.get("pending"):
                entry = reader.get(desc["pending"], LIST_KIND)["lists"][0]
                idx._pending = IVFList.from_body(entry, idx.dim, 0, None, False)
                idx._pending_cid = desc["pending"]
            if not idx.trained:  # type: ignore[attr-defined]
                idx._loc = {}
                idx._register(PENDING, idx._pending, 0)  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FormatError(f"malformed IVF descriptor or chunk: {exc!r}") from None
        return idx

    def _load_trained(self, body: Mapping[str, Any], desc: Mapping[str, Any], reader: ChunkReader) -> None:
        stored = np.asarray(body["centroids"])
        if stored.dtype not in (np.float16, np.float32):
            raise FormatError(f"IVF centroids are {stored.dtype}, expected float16 or float32")
        # scored as a float32 copy: NumPy has no fast float16 product (and Pyodide no BLAS at all)
        self.centroids = np.ascontiguousarray(stored, dtype=np.float32).reshape(self.nlist, self.dim)
        self._centroids_f16 = stored.dtype == np.float16
        self._csq = kernels.sq_norms(self.centroids)
        self.codec = qz.codec_from_state(body["codec"])
        if self.refine_kind is not None:  # type: ignore[attr-defined]
            self.refiner = self._fresh_refiner()  # type: ignore[attr-defined]
            self.refiner.load_state(body.get("refine"))
        cids = [str(c) for c in desc["lists"]]
        if len(cids) != self._nchunks:
            raise FormatError(f"IVF descriptor has {len(cids)} list chunks, expected {self._nchunks}")
        self._chunk_cids = list(cids)
        if desc.get("summaries"):
            sums = reader.get(desc["summaries"], SUMMARIES_KIND)["lists"]
            if len(sums) != self.nlist:
                raise FormatError(f"IVF summaries chunk has {len(sums)} lists, expected {self.nlist}")
            self._summaries = [s if isinstance(s, dict) and "n" in s else None for s in sums]
        self._lists = [None] * self.nlist
        self._lazy = True
        self._loc = None
