"""Text embeddings: a static token table distilled from all-MiniLM-L6-v2, run with NumPy alone.

The same code embeds a corpus on CPython (:class:`LocalModel`, the whole table in memory) and a query
in the Pyodide worker (:class:`ChunkedModel`, the model on S5, fetching only its tokens' rows), so
both land in one vector space (dim 256, cosine). See /work/coord/i8embed-interface.md for the calls.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, MutableMapping

from ..errors import InvalidArgumentError
from .chunked import (
    ROW_GROUP, ChunkedModel, embed_query, embed_query_async, manifest_extra, open_model, publish_model,
)
from .model import (
    DEFAULT_MODEL_NAME, ROW_DTYPE, LocalModel, ModelConfig, TextTokenizer, default_model_dir, load_local, pool,
)
from .tokenizer import WordPieceTokenizer, basic_tokenize

__all__ = [
    "DEFAULT_MODEL_NAME", "ROW_DTYPE", "ROW_GROUP", "ChunkedModel", "LocalModel", "ModelConfig", "TextTokenizer",
    "WordPieceTokenizer", "basic_tokenize", "default_model_dir", "embed_query", "embed_query_async",
    "embed_records", "load_local", "manifest_extra", "open_model", "pool", "publish_model", "record_text",
]


def record_text(record: MutableMapping[str, Any], field: str) -> Any:
    """A record's text: ``record[field]``, else ``record["metadata"][field]`` (``None`` if neither)."""
    if field in record:
        return record[field]
    meta = record.get("metadata")
    if isinstance(meta, MutableMapping):
        return meta.get(field)
    return None


def embed_records(records: Iterable[MutableMapping[str, Any]], model: LocalModel, text_field: str = "text",
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Add ``"vector"`` to every record that has none, from its text; returns how many were embedded.

    Every record is checked before any is changed: a record with neither a vector nor a text
    string raises :class:`InvalidArgumentError` naming it (index in the sequence and id).
    """
    records = list(records)
    todo, texts = [], []
    for n, rec in enumerate(records):
        if not isinstance(rec, MutableMapping):
            raise InvalidArgumentError(f"record {n}: not an object")
        if rec.get("vector") is not None:
            continue
        text = record_text(rec, text_field)
        if not isinstance(text, str):
            what = "no" if text is None else f"a non-string ({type(text).__name__})"
            raise InvalidArgumentError(f"record {n} (id {rec.get('id')!r}): no vector and {what} {text_field!r} text")
        todo.append(n)
        texts.append(text)
    ids_list = []
    for j, (n, text) in enumerate(zip(todo, texts)):
        try:
            ids_list.append(model.tokenize(text))
        except InvalidArgumentError as exc:
            raise type(exc)(f"record {n} (id {records[n].get('id')!r}): {exc}") from None
        if progress is not None and (j + 1) % 1024 == 0:
            progress(j + 1, len(todo))
    vecs = model.embed_ids(ids_list) if ids_list else None
    for j, n in enumerate(todo):
        records[n]["vector"] = vecs[j]
    if progress is not None and todo:
        progress(len(todo), len(todo))
    return len(todo)
