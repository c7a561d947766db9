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

from typing import Any, Iterable, Mapping

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
_MEMO = "__ivf_lists__"  # key under which decoded lists are memoised on a chunk body


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
    _lists: list[IVFList | None]
    _counts: np.ndarray
    _pending: IVFList
    _summaries: list[dict[str, Any] | None]
    _loc: dict[str, tuple[int, int]] | None

    def _init_storage(self) -> None:
        self._lazy = False
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
        """Every list chunk a lazy index has not made resident (what ``load_all`` needs)."""
        if not self._lazy:
            return []
        return [c for c in dict.fromkeys(self._chunk_cids) if c is not None]

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
        """Make every list resident (and the index writable) from the chunks ``plan_all()`` named."""
        if not self._lazy:
            return
        for c in range(self._nchunks):
            for l, lst in self._chunk_lists(c, chunks).items():
                self._lists[l] = lst.copy()  # the decoded ones stay with the store's cached chunk
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
            "centroids": self.centroids if self.centroids is not None else np.empty((0, self.dim), np.float32),
            "codec": self.codec.state() if self.centroids is not None else None,
        }

    def _chunk_body(self, c: int) -> dict[str, Any]:
        g = self.lists_per_chunk
        shared = self.codec_name == "flat"
        entries = []
        for l in range(c * g, min((c + 1) * g, self.nlist)):
            lst = self._lists[l]
            assert lst is not None
            entries.append(lst.body(l, shared, self.vectors_dtype))
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
                    old = writer.put(LIST_KIND, self._chunk_body(c))
                    self._chunk_cids[c] = old
                assert old is not None
                list_cids.append(old)
        summaries_cid = None
        if trained:
            # its own chunk, so an edit re-uploads these few KB and not the centroids
            summaries_cid = writer.put(SUMMARIES_KIND, {
                "lists": [self._summary(l) or {} for l in range(self.nlist)]})  # type: ignore[attr-defined]
        chunks = [cid] + ([summaries_cid] if summaries_cid else []) + ([pending_cid] if pending_cid else []) + list_cids
        return {
            "kind": "ivf", "dim": self.dim, "metric": self.metric, "params": self.params(),  # type: ignore[attr-defined]
            "trained": trained, "count": len(self),  # type: ignore[arg-type]
            "centroids": cid, "summaries": summaries_cid, "pending": pending_cid,
            "lists_per_chunk": self.lists_per_chunk, "counts": [int(c) for c in self._counts],
            "lists": list_cids, "chunks": list(dict.fromkeys(chunks)),
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
        self.centroids = np.ascontiguousarray(np.asarray(body["centroids"], dtype=np.float32).reshape(self.nlist, self.dim))
        self._csq = kernels.sq_norms(self.centroids)
        self.codec = qz.codec_from_state(body["codec"])
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
