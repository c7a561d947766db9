"""The text model on S5: a model chunk (its CID names the model), a vocabulary chunk, and row chunks.

A query needs the vocabulary (to tokenise) and only the table rows of its own tokens, so the table
is cut into chunks of ``group`` consecutive rows: a 5-word query reads about 5 row chunks of ~4 KB
instead of a 7.5 MB table. Chunks are written and read through :mod:`s5vec.layout` like an index's
(canonical CBOR, verified against their CID by the store).

Chunk kinds (schemas in docs/FORMAT.md):

* ``text_model``  -- settings, the vocabulary CID, the row-chunk CIDs (raw CID bytes), the notice CID;
* ``model_vocab`` -- the tokens, newline-joined and zlib-compressed (220 KB of text -> ~108 KB);
* ``model_rows``  -- ``group`` rows from ``start``: int8 ``codes`` + float32 ``scale`` (or float ``rows``);
* ``model_notice`` -- source and licences (never read by a query).

Like an index, a :class:`ChunkedModel` never fetches by itself and keeps no chunks of its own: the
request layer prefetches :meth:`ChunkedModel.open_chunks` before :meth:`ChunkedModel.load` and
:meth:`ChunkedModel.plan` before :meth:`ChunkedModel.embed_tokens`, which reads the decoded row
chunks from the store's cache (the one byte budget) and dequantises only the rows it uses.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import layout
from ..errors import CIDError, FormatError, InvalidArgumentError
from ..s5.cid import BlobId
from .model import LocalModel, ModelConfig, TextTokenizer, pool

__all__ = ["ROW_GROUP", "ChunkedModel", "publish_model", "open_model", "manifest_extra", "embed_query",
           "embed_query_async"]

# Rows per chunk. 16 int8 rows of 256 dims = ~4.3 KB per chunk: a query of t distinct tokens reads
# at most t chunks (bench/bench_text.py measures bytes per cold query); the model chunk lists
# vocab/16 = 1,846 CIDs (~70 KB, read once when the model opens).
ROW_GROUP = 16
MODEL_KIND, VOCAB_KIND, ROWS_KIND, NOTICE_KIND = "text_model", "model_vocab", "model_rows", "model_notice"
_ZLIB_MAX = 8 * 2**20  # a vocabulary never inflates past this (guards against a zip bomb)


def manifest_extra(model_cid: str, field: str = "text", dim: int | None = None) -> dict[str, Any]:
    """What an index manifest's ``extra`` carries to name its text model: ``{"embed": {...}}``."""
    doc: dict[str, Any] = {"model": model_cid, "field": field}
    if dim is not None:
        doc["dim"] = int(dim)
    return {"embed": doc}


def publish_model(model: LocalModel | str | Path, store: Any, *, group: int = ROW_GROUP,
                  notice: str | None = None) -> str:
    """Upload ``model`` (a :class:`LocalModel` or its directory) as chunks; returns the model CID.

    Content-addressed: publishing the same model again produces the same CIDs and uploads nothing
    the store already knows.
    """
    if not isinstance(model, LocalModel):
        from .model import load_local

        model = load_local(model)
    if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= 4096:
        raise InvalidArgumentError(f"group must be an integer in [1, 4096], got {group!r}")
    if notice is None:
        path = getattr(model, "path", None)
        notice_file = Path(path) / "NOTICE.md" if path else None
        notice = notice_file.read_text(encoding="utf-8") if notice_file and notice_file.is_file() else (
            "all-MiniLM-L6-v2 (Apache-2.0), distilled with model2vec (MIT)")
    cfg = model.config
    w = layout.StoreWriter(store)
    vocab_blob = zlib.compress("\n".join(model.vocab).encode("utf-8"), 9)
    vocab_cid = w.put(VOCAB_KIND, {"count": len(model.vocab), "tokens": vocab_blob, "compression": "zlib"})
    notice_cid = w.put(NOTICE_KIND, {"text": notice})
    rows: list[bytes] = []
    shipped = model.shipped
    for start in range(0, cfg.vocab_size, group):
        body: dict[str, Any] = {"start": start}
        for key, arr in shipped.items():
            body[key] = np.ascontiguousarray(arr[start:start + group])
        rows.append(BlobId.parse(w.put(ROWS_KIND, body)).to_bytes())
    dtype = model.row_dtype or "float32"
    head = {
        "name": cfg.name, "dim": cfg.dim, "vocab_size": cfg.vocab_size, "pooling": "mean", "normalize": True,
        "tokenizer": cfg.tokenizer_dict(), "vocab": vocab_cid, "notice": notice_cid,
        "rows": {"dtype": dtype, "group": group, "chunks": rows},
        "source": dict(cfg.source),
    }
    return w.put(MODEL_KIND, head)


def _check_head(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        dim, vocab_size = int(body["dim"]), int(body["vocab_size"])
        rows = body["rows"]
        group, chunks, dtype = int(rows["group"]), list(rows["chunks"]), str(rows["dtype"])
        if dim <= 0 or vocab_size <= 0 or group <= 0 or len(chunks) != -(-vocab_size // group):
            raise ValueError("sizes do not agree")
        if dtype not in ("int8", "float16", "float32") or body.get("pooling", "mean") != "mean":
            raise ValueError(f"unsupported rows dtype {dtype!r} or pooling")
        if not isinstance(body["vocab"], str) or not isinstance(body["tokenizer"], Mapping):
            raise ValueError("bad vocab or tokenizer entry")
        if not all(isinstance(c, bytes) and 35 < len(c) < 45 for c in chunks):
            raise ValueError("row chunk CIDs are not raw CID bytes")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"bad text_model chunk: {exc}") from None
    return {"dim": dim, "vocab_size": vocab_size, "group": group, "dtype": dtype, "cids": chunks}


class ChunkedModel:
    """A text model read from S5 chunks: tokenise locally, fetch only the rows a text uses."""

    def __init__(self, cid: str, head: Mapping[str, Any], vocab: Sequence[str], reader: Any) -> None:
        h = _check_head(head)
        self.cid = cid
        self.head = dict(head)
        self.reader = reader
        self.dim, self.group, self.row_dtype = h["dim"], h["group"], h["dtype"]
        self._row_raw: list[bytes] = h["cids"]  # decoded to CID strings when first planned
        self._cid_str: dict[int, str] = {}
        self.config = ModelConfig.from_parts(head.get("name", "text-model"), h["dim"], h["vocab_size"],
                                             head["tokenizer"], head.get("source"))
        try:
            self.tok = TextTokenizer(vocab, self.config)
        except (InvalidArgumentError, ValueError) as exc:
            raise FormatError(f"text model vocabulary does not fit its model chunk: {exc}") from None

    # -- opening ------------------------------------------------------------------
    @staticmethod
    def open_chunks(reader: Any, cid: str) -> list[str]:
        """Chunks :meth:`load` reads besides the model chunk itself (prefetch ``[cid]`` first)."""
        body = reader.get(cid, MODEL_KIND)
        _check_head(body)
        return [body["vocab"]]

    @classmethod
    def load(cls, cid: str, reader: Any) -> "ChunkedModel":
        head = reader.get(cid, MODEL_KIND)
        _check_head(head)
        vb = reader.get(head["vocab"], VOCAB_KIND)
        try:
            if vb.get("compression", "zlib") != "zlib":
                raise ValueError(f"unknown compression {vb.get('compression')!r}")
            d = zlib.decompressobj()
            text = d.decompress(vb["tokens"], _ZLIB_MAX)
            if d.unconsumed_tail:
                raise ValueError("vocabulary too large")
            vocab = text.decode("utf-8").split("\n")
            if len(vocab) != int(vb["count"]):
                raise ValueError(f"{len(vocab)} tokens, chunk says {vb['count']}")
        except (KeyError, TypeError, ValueError, zlib.error, UnicodeDecodeError) as exc:
            raise FormatError(f"bad model_vocab chunk: {exc}") from None
        return cls(cid, head, vocab, reader)

    def row_cid(self, c: int) -> str:
        """CID of row chunk ``c`` (rows ``c * group ..``); a malformed one is a FormatError."""
        got = self._cid_str.get(c)
        if got is None:
            try:
                got = self._cid_str[c] = BlobId.from_bytes(self._row_raw[c]).to_string()
            except (CIDError, IndexError) as exc:
                raise FormatError(f"bad row chunk CID {c} in the text model: {exc}") from None
        return got

    @property
    def row_count(self) -> int:
        return len(self._row_raw)

    # -- querying -----------------------------------------------------------------
    def tokenize(self, text: Any) -> list[int]:
        """Token ids to embed; EmptyQueryError / NoKnownTokensError when there are none."""
        return self.tok.tokenize(text)

    def truncated(self, text: str) -> bool:
        return self.tok.truncated(text)

    def plan(self, ids: Sequence[int]) -> list[str]:
        """Every row-chunk CID :meth:`embed_tokens` reads for ``ids`` (held or not), in row order.

        The store's prefetch skips those it already holds, so a warm query fetches nothing."""
        need = sorted({int(i) // self.group for i in ids})
        return [self.row_cid(c) for c in need if 0 <= c < len(self._row_raw)]

    def _chunk(self, c: int) -> Mapping[str, Any]:
        """Row chunk ``c``'s body (decoded and cached by the store, next to its bytes), checked."""
        body = self.reader.get(self.row_cid(c), ROWS_KIND)
        try:
            n = min(self.group, self.config.vocab_size - c * self.group)
            part = body["codes"] if "codes" in body else body["rows"]
            if int(body["start"]) != c * self.group or part.shape != (n, self.dim):
                raise ValueError(f"rows {part.shape} from {body['start']}, expected {(n, self.dim)} from "
                                 f"{c * self.group}")
            if "codes" in body and (part.dtype != np.int8 or np.asarray(body["scale"]).shape != (n,)):
                raise ValueError("codes are not int8 or scale has the wrong length")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"bad model_rows chunk: {exc}") from None
        return body

    def _row(self, token_id: int) -> np.ndarray:
        c, j = divmod(token_id, self.group)
        body = self._chunk(c)
        if "codes" in body:  # the same float32 arithmetic as dequantize_rows over the whole table
            row = body["codes"][j].astype(np.float32) * np.asarray(body["scale"], dtype=np.float32)[j]
        else:
            row = np.asarray(body["rows"][j], dtype=np.float32)
        if not np.isfinite(row).all():
            raise FormatError(f"model_rows chunk {c} has a non-finite row")
        return row

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """``float32[dim]`` unit mean of the ids' rows (ids from :meth:`tokenize`)."""
        if not ids:
            raise InvalidArgumentError("no token ids to embed")
        ids = [int(i) for i in ids]
        if min(ids) < 0 or max(ids) >= self.config.vocab_size:
            raise InvalidArgumentError("token id out of the vocabulary's range")
        rows = {i: self._row(i) for i in set(ids)}
        mat = np.stack([rows[i] for i in ids])
        return pool(mat[None])[0]

    def embed(self, text: str) -> np.ndarray:
        """Tokenise and embed one text (reads unplanned rows synchronously through the reader)."""
        return self.embed_tokens(self.tokenize(text))


def embed_query(model: ChunkedModel, store: Any, text: str) -> np.ndarray:
    """Tokenise, prefetch the rows in parallel (blocking), embed: for the CLI and tests."""
    ids = model.tokenize(text)
    store.prefetch_sync(model.plan(ids))
    return model.embed_tokens(ids)


async def embed_query_async(model: ChunkedModel, store: Any, text: str) -> np.ndarray:
    """:func:`embed_query` for the worker (``await store.prefetch``)."""
    ids = model.tokenize(text)
    await store.prefetch(model.plan(ids))
    return model.embed_tokens(ids)


def open_model(cid: str, store: Any) -> ChunkedModel:
    """Open a model by CID on CPython (blocking prefetches; the worker uses the two-step form)."""
    reader = layout.StoreReader(store)
    store.prefetch_sync([cid])
    store.prefetch_sync(ChunkedModel.open_chunks(reader, cid))
    return ChunkedModel.load(cid, reader)

