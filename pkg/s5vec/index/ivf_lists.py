"""IVF inverted lists: the in-memory list, its chunk-body form, the parameters and the codec glue.

A list holds its records' ids, codes (float32 vectors for the flat codec, uint8 codes for
sq8/pq), optionally the full float32 vectors (re-ranking), metadata dicts and timestamps.
Chunk bodies use plain lists and arrays; :mod:`s5vec.layout` packs ids and metadata into
columns (schema ``ivf_list``) and hands them back lazily.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import kernels
from .. import quantizers as qz
from ..errors import FormatError, InvalidArgumentError

PENDING = -1  # list number of the pending (untrained) buffer
REFINE_KINDS = ("float16", "sq8", "pq")


def is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


@dataclass(frozen=True)
class IVFParams:
    """Construction parameters of an IVF index (also what its centroids chunk records).

    ``rerank`` None = the default depth (4k for sq8, 10k for pq); ``train_min`` None =
    ``max(1000, 30 * nlist)``; ``residual`` None = on for PQ; ``vectors_dtype`` float16 halves
    the bytes of stored full vectors (rounded on insert, so results match after save/load).

    ``refine`` (sq8/pq codecs): None keeps the re-rank vectors inside the list chunks (what
    ``store_full`` does); ``"float16"``, ``"sq8"`` or ``"pq"`` (a second PQ of what the first
    one left, ``refine_m`` bytes) stores them apart, in ``ivf_refine`` chunks of ``refine_rows``
    rows of one list, fetched in a second round only for the candidates of the PQ pass, so
    the codes are what crosses the wire. Vectors are rounded through the refine code on insert
    (results match after save/load).

    ``pq_rotate``: the PQ codes (and a PQ refine) code a principal-axes rotation of the vectors
    (``PQCodec(rotate=True)``): far fewer bytes for the same recall on embeddings."""

    nlist: int = 128
    nprobe: int = 16
    codec: str = "flat"
    pq_m: int | None = None
    rerank: int | None = None
    store_full: bool = True
    seed: int = 0
    pq_nbits: int = 8
    lists_per_chunk: int = 1
    train_min: int | None = None
    kmeans_iters: int = 20
    residual: bool | None = None
    vectors_dtype: str = "float32"
    refine: str | None = None
    refine_rows: int = 16
    refine_m: int | None = None
    pq_rotate: bool = False

    def __post_init__(self) -> None:
        for name in ("nlist", "nprobe", "lists_per_chunk", "kmeans_iters"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {v!r}")
        if self.codec not in ("flat", "sq8", "pq"):
            raise InvalidArgumentError(f"codec must be 'flat', 'sq8' or 'pq', got {self.codec!r}")
        if self.rerank is not None and (not is_int(self.rerank) or self.rerank < 0):
            raise InvalidArgumentError(f"rerank must be None or an integer >= 0, got {self.rerank!r}")
        if self.train_min is not None and (not is_int(self.train_min) or self.train_min < self.nlist):
            raise InvalidArgumentError(f"train_min must be an integer >= nlist, got {self.train_min!r}")
        if self.vectors_dtype not in ("float32", "float16"):
            raise InvalidArgumentError(f"vectors_dtype must be 'float32' or 'float16', got {self.vectors_dtype!r}")
        if self.refine is not None:
            if self.refine not in REFINE_KINDS:
                raise InvalidArgumentError(f"refine must be one of {', '.join(REFINE_KINDS)} or None, got {self.refine!r}")
            if self.codec == "flat":
                raise InvalidArgumentError("refine needs a quantized codec (sq8 or pq): flat lists hold exact vectors")
            if not self.store_full:
                raise InvalidArgumentError("refine stores re-rank vectors; it cannot be combined with store_full=False")
        if not is_int(self.refine_rows) or not 1 <= self.refine_rows <= 1 << 16:
            raise InvalidArgumentError(f"refine_rows must be an integer in 1..65536, got {self.refine_rows!r}")
        if not isinstance(self.pq_rotate, bool):
            raise InvalidArgumentError(f"pq_rotate must be true or false, got {self.pq_rotate!r}")
        if self.refine_m is not None and (not is_int(self.refine_m) or self.refine_m < 1):
            raise InvalidArgumentError(f"refine_m must be a positive integer, got {self.refine_m!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IVFParams":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class IVFList:
    """One inverted list (or the pending buffer)."""

    __slots__ = ("ids", "codes", "vectors", "metadata", "timestamps", "_sq", "_rows", "refine_cids")

    def __init__(
        self,
        ids: Sequence[str],
        codes: np.ndarray | None,
        vectors: np.ndarray | None,
        metadata: Sequence[dict[str, Any]],
        timestamps: np.ndarray,
    ) -> None:
        self.ids = ids
        self.codes = codes
        self.vectors = vectors
        self.metadata = metadata
        self.timestamps = timestamps
        self._sq: np.ndarray | None = None
        self._rows: dict[str, int] | None = None
        #: CIDs of this list's ``ivf_refine`` blocks (separate refine data, read from a list chunk)
        self.refine_cids: list[str] | None = None

    @classmethod
    def empty(cls, code_size: int, code_dtype: np.dtype | None, dim: int | None) -> "IVFList":
        codes = None if code_dtype is None else np.empty((0, code_size), dtype=code_dtype)
        vectors = None if dim is None else np.empty((0, dim), dtype=np.float32)
        return cls([], codes, vectors, [], np.empty(0, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.ids)

    def copy(self) -> "IVFList":
        """A list of its own (edits replace attributes, never mutate the arrays or lists in
        place, so sharing them with a cached chunk's decoded lists is safe)."""
        return IVFList(self.ids, self.codes, self.vectors, self.metadata, self.timestamps)

    @property
    def sq(self) -> np.ndarray:
        """Squared norms of the full vectors (for L2 distances), computed once per version."""
        if self._sq is None:
            self._sq = kernels.sq_norms(self.vectors)
        return self._sq

    def row_of(self, id: str) -> int | None:
        if self._rows is None:
            self._rows = {i: r for r, i in enumerate(self.ids)}
        return self._rows.get(id)

    def timestamp(self, r: int) -> float | None:
        """Timestamp of row ``r``; None only for records written before every record had one (NaN)."""
        t = float(self.timestamps[r])
        return None if t != t else t

    def append(self, ids: list[str], codes: np.ndarray | None, vectors: np.ndarray | None,
               metadata: list[dict[str, Any]], timestamps: np.ndarray, shared: bool) -> None:
        self.ids = list(self.ids) + ids
        self.metadata = list(self.metadata) + metadata
        self.timestamps = np.concatenate((self.timestamps, timestamps))
        if self.vectors is not None and vectors is not None:
            self.vectors = np.concatenate((self.vectors, vectors))
        if shared:
            self.codes = self.vectors
        elif self.codes is not None and codes is not None:
            self.codes = np.concatenate((self.codes, codes))
        self._sq = None
        self._rows = None

    def remove_rows(self, rows: np.ndarray, shared: bool) -> None:
        keep = np.ones(len(self.ids), dtype=bool)
        keep[rows] = False
        self.ids = [i for i, k in zip(self.ids, keep) if k]
        self.metadata = [m for m, k in zip(self.metadata, keep) if k]
        self.timestamps = self.timestamps[keep]
        if self.vectors is not None:
            self.vectors = self.vectors[keep]
        if shared:
            self.codes = self.vectors
        elif self.codes is not None:
            self.codes = self.codes[keep]
        self._sq = None
        self._rows = None

    def body(self, number: int, shared: bool, vectors_dtype: str = "float32",
             refine_cids: list[str] | None = None) -> dict[str, Any]:
        """The list as one entry of an ``ivf_list`` chunk (plain lists and arrays); with
        ``refine_cids`` the vectors live in those ``ivf_refine`` chunks, not here."""
        out: dict[str, Any] = {
            "list": number,
            "ids": list(self.ids),
            "metadata": [dict(m) for m in self.metadata],
            "timestamps": np.ascontiguousarray(self.timestamps, dtype=np.float64),
        }
        if refine_cids is not None:
            out["refine"] = list(refine_cids)
        elif self.vectors is not None:
            out["vectors"] = np.ascontiguousarray(self.vectors, dtype=np.dtype(vectors_dtype))
        if not shared and self.codes is not None:
            out["codes"] = np.ascontiguousarray(self.codes)
        return out

    @classmethod
    def from_body(cls, body: Mapping[str, Any], dim: int, code_size: int, code_dtype: np.dtype | None,
                  shared: bool) -> "IVFList":
        """Inverse of :meth:`body` on what :mod:`s5vec.layout` decoded (arrays are views, not copies)."""
        try:
            ids = body["ids"]
            n = len(ids)
            metadata = body["metadata"]
            ts = np.asarray(body["timestamps"], dtype=np.float64).reshape(n)
            vectors = body.get("vectors")
            if vectors is not None:
                vectors = np.asarray(vectors, dtype=np.float32).reshape(n, dim)
            if shared:
                codes = vectors
                if vectors is None:
                    raise FormatError("flat IVF list without vectors")
            elif code_dtype is None:
                codes = None
            else:
                codes = np.asarray(body["codes"], dtype=code_dtype).reshape(n, code_size)
            if len(metadata) != n:
                raise FormatError("IVF list has mismatched metadata")
            refine = body.get("refine")
            if refine is not None and not (isinstance(refine, list) and all(isinstance(c, str) for c in refine)):
                raise FormatError("IVF list refine entry must be a list of CIDs")
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed IVF list chunk: {exc}") from None
        out = cls(ids, codes, vectors, metadata, ts)  # a packed column (layout.LazyStrings) stays packed
        out.refine_cids = refine
        return out


def make_codec(codec: str, dim: int, metric: str, residual: bool, pq_m: int | None, pq_nbits: int,
               seed: int, rotate: bool = False) -> qz.Codec:
    """A fresh (untrained) codec for an IVF index's parameters."""
    if codec == "pq":
        # residual PQ: the table holds l2 sub-distances to (q - c) or inner products with q;
        # the centroid term is added per list at search time
        m = ("l2" if metric == "l2" else "ip") if residual else metric
        return qz.PQCodec(dim, pq_m, pq_nbits, m, seed=seed, rotate=rotate)
    if codec == "sq8":
        return qz.SQ8Codec(dim, metric)
    return qz.Float32Codec(dim, metric)


class Refiner:
    """The re-rank vectors of an IVF index with separate refine data (param ``refine``).

    ``encode(x, centroids, codes)`` -> what an ``ivf_refine`` chunk stores for prepared vectors
    ``x`` of one list (``centroids`` = that list's centroid broadcast per row, ``codes`` their
    first-level codes); ``decode`` is its inverse; ``roundtrip`` = decode(encode(...)), which is
    what the index keeps in memory so a resident search and a loaded one agree (to float32
    rounding: a loaded PQ refine is scored against the rotated query, :meth:`dots`).

    - ``float16``: the vectors as float16 (2 bytes per dimension);
    - ``sq8``: per-dimension scalar quantization (1 byte per dimension);
    - ``pq``: a second product quantizer over what the first-level (PQ) code left,
      ``x - c - decode(code)``: ``m`` bytes (faiss's IVFPQR idea).
    """

    def __init__(self, kind: str, dim: int, metric: str, m: int | None, seed: int, first: qz.Codec,
                 residual: bool, rotate: bool = False) -> None:
        self.kind, self.dim, self.metric, self.seed, self.rotate = kind, dim, metric, seed, rotate
        self.first, self.residual = first, residual
        self.codec: Any = None
        if kind == "pq":
            self.m = int(m) if m is not None else _divisor_at_most(dim, max(1, dim // 4))
            if dim % self.m:
                raise InvalidArgumentError(f"refine_m must divide dim={dim}, got {self.m}")
        elif kind == "sq8":
            self.m = dim
        else:
            self.m = 2 * dim  # bytes

    @property
    def bytes_per_vector(self) -> int:
        return self.m

    def _left(self, x: np.ndarray, cents: np.ndarray | None, codes: np.ndarray) -> np.ndarray:
        """What the first-level code does not reproduce: x - (c) - decode(code)."""
        base = self.first.decode(codes)
        if self.residual and cents is not None:
            base = base + cents
        return (x - base).astype(np.float32, copy=False)

    def train(self, x: np.ndarray, cents: np.ndarray | None, codes: np.ndarray | None) -> None:
        """Train on prepared vectors (with their list centroids and first-level codes for pq)."""
        if self.kind == "sq8":
            self.codec = qz.SQ8Codec(self.dim, "l2")
            self.codec.train(x)
        elif self.kind == "pq":
            assert codes is not None
            self.codec = qz.PQCodec(self.dim, self.m, 8, "l2", seed=self.seed + 7919, rotate=self.rotate)
            self.codec.train(self._left(x, cents, codes))

    def encode(self, x: np.ndarray, cents: np.ndarray | None, codes: np.ndarray | None) -> np.ndarray:
        if self.kind == "float16":
            return np.ascontiguousarray(x, dtype=np.float16)
        if self.kind == "sq8":
            return self.codec.encode(x)
        assert codes is not None
        return self.codec.encode(self._left(x, cents, codes))

    def decode(self, data: np.ndarray, cents: np.ndarray | None, codes: np.ndarray | None) -> np.ndarray:
        if self.kind == "float16":
            return np.asarray(data, dtype=np.float32)
        if self.kind == "sq8":
            return self.codec.decode(data)
        assert codes is not None
        base = self.first.decode(codes)
        if self.residual and cents is not None:
            base = base + cents
        return (base + self.codec.decode(data)).astype(np.float32, copy=False)

    def dots(self, query: np.ndarray, data: np.ndarray, cents: np.ndarray | None,
             codes: np.ndarray | None) -> np.ndarray | None:
        """``decode(data, cents, codes) @ query`` without decoding, for a PQ refine over PQ codes
        (each code's rotation applied to the query once, not to every row); None for the other
        kinds (their decode has no rotation to save)."""
        if self.kind != "pq" or codes is None or not isinstance(self.first, qz.PQCodec):
            return None
        d = self.first.dots(query, codes) + self.codec.dots(query, data)
        if self.residual and cents is not None:
            d += kernels.row_dots(np.asarray(cents, dtype=np.float32), query)
        return d.astype(np.float32, copy=False)

    def roundtrip(self, x: np.ndarray, cents: np.ndarray | None, codes: np.ndarray | None) -> np.ndarray:
        return self.decode(self.encode(x, cents, codes), cents, codes)

    def state(self) -> dict[str, Any] | None:
        return None if self.codec is None else self.codec.state()

    def load_state(self, state: Mapping[str, Any] | None) -> None:
        if self.kind in ("sq8", "pq"):
            if state is None:
                raise FormatError(f"IVF {self.kind} refine without its codec state")
            self.codec = qz.codec_from_state(state)


def _divisor_at_most(dim: int, target: int) -> int:
    for m in range(min(target, dim), 0, -1):
        if dim % m == 0:
            return m
    return 1
