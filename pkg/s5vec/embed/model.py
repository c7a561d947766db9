"""Static text embedding: token ids -> mean of their table rows -> unit vector.

This is model2vec's inference (``StaticModel.encode``) written with NumPy only, so the corpus is
embedded on CPython and the query in the Pyodide worker by the same code, into one vector space:

* the raw text is cut to ``max_chars`` characters, tokenised (see :mod:`.tokenizer`), cut to
  ``max_tokens`` tokens, and unknown pieces are dropped (model2vec does the same, in that order);
* the rows of the remaining ids are averaged and the mean is divided by its norm.

Text with nothing to embed is an error rather than a zero vector (model2vec's answer) or the mean of
punctuation rows: :class:`EmptyQueryError` when it has no letter or digit, :class:`NoKnownTokensError`
when it has some but no token with a letter or digit is in the vocabulary.

Rows are shipped quantised (int8 codes with one float32 scale per row, see :func:`quantize_rows`);
:class:`LocalModel` dequantises the same way as the chunked model on S5, so a corpus vector embedded
on CPython equals the one a query would get from the chunks.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import EmptyQueryError, InvalidArgumentError, NoKnownTokensError
from .tokenizer import WordPieceTokenizer, basic_tokenize

__all__ = [
    "DEFAULT_MODEL_NAME", "ROW_DTYPE", "ModelConfig", "TextTokenizer", "LocalModel", "default_model_dir",
    "load_local", "quantize_rows", "dequantize_rows", "pool",
]

DEFAULT_MODEL_NAME = "minilm-l6-static256"
# How rows are shipped: "int8" (codes + per-row float32 scale), "float16" or "float32".
ROW_DTYPE = "int8"


@dataclass(frozen=True)
class ModelConfig:
    """What a reader needs to reproduce the embedding: tokenizer settings and limits."""

    name: str
    dim: int
    vocab_size: int
    max_chars: int = 3072
    max_tokens: int = 512
    unk_token: str = "[UNK]"
    prefix: str = "##"
    max_input_chars_per_word: int = 100
    added_tokens: tuple[str, ...] = ("[PAD]", "[UNK]")
    source: Mapping[str, Any] = field(default_factory=dict)

    def tokenizer_dict(self) -> dict[str, Any]:
        return {"type": "bert-wordpiece", "lowercase": True, "strip_accents": True, "clean_text": True,
                "handle_chinese_chars": True, "unk_token": self.unk_token, "prefix": self.prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word, "added_tokens": list(self.added_tokens),
                "max_chars": self.max_chars, "max_tokens": self.max_tokens, "drop_unknown": True}

    @classmethod
    def from_parts(cls, name: str, dim: int, vocab_size: int, tok: Mapping[str, Any],
                   source: Mapping[str, Any] | None = None) -> "ModelConfig":
        return cls(name=str(name), dim=int(dim), vocab_size=int(vocab_size),
                   max_chars=int(tok.get("max_chars", 3072)), max_tokens=int(tok.get("max_tokens", 512)),
                   unk_token=str(tok.get("unk_token", "[UNK]")), prefix=str(tok.get("prefix", "##")),
                   max_input_chars_per_word=int(tok.get("max_input_chars_per_word", 100)),
                   added_tokens=tuple(str(t) for t in tok.get("added_tokens", ("[PAD]", "[UNK]"))),
                   source=dict(source or {}))


class TextTokenizer:
    """The model's text -> ids step, with its limits and typed errors (shared by every model form)."""

    def __init__(self, vocab: Sequence[str], config: ModelConfig) -> None:
        if len(vocab) != config.vocab_size:
            raise InvalidArgumentError(f"vocabulary has {len(vocab)} tokens, the model {config.vocab_size}")
        self.config = config
        self.wp = WordPieceTokenizer(vocab, unk_token=config.unk_token, prefix=config.prefix,
                                     max_input_chars_per_word=config.max_input_chars_per_word)
        self.unk_id = self.wp.unk_id
        # Special tokens written literally in the text are matched before normalisation, as the
        # reference tokenizer does ("[PAD]" -> its id; "[UNK]" -> unknown, dropped).
        self.added = {t: self.wp.index[t] for t in config.added_tokens if t in self.wp.index}
        self._special = frozenset(self.added.values())

    def truncated(self, text: str) -> bool:
        """Whether :meth:`tokenize` embeds only a prefix of ``text`` (the documented limits)."""
        if len(text) > self.config.max_chars:
            return True
        return len(self._raw_ids(text)) > self.config.max_tokens

    def _raw_ids(self, text: str, truncate: bool = True) -> list[int]:
        """Ids with unknown pieces still in, cut to ``max_chars`` / ``max_tokens + 1`` when ``truncate``."""
        cap = self.config.max_tokens + 1 if truncate else None
        if truncate:
            text = text[: self.config.max_chars]
        if not any(t in text for t in self.added):
            return self.wp.encode(text, cap)
        ids: list[int] = []
        for part, special in self._split_added(text):
            if special is not None:
                ids.append(special)
            else:
                ids.extend(self.wp.encode(part, cap))
            if cap is not None and len(ids) >= cap:
                break
        return ids[:cap]

    def reference_ids(self, text: str) -> list[int]:
        """All ids of ``text`` (no limits, unknown pieces kept): what the reference tokenizer returns."""
        return self._raw_ids(text, truncate=False)

    def _split_added(self, text: str) -> list[tuple[str, int | None]]:
        out: list[tuple[str, int | None]] = []
        start = i = 0
        while i < len(text):
            for tok, tid in self.added.items():
                if text.startswith(tok, i):
                    out.append((text[start:i], None))
                    out.append((tok, tid))
                    i += len(tok)
                    start = i
                    break
            else:
                i += 1
        out.append((text[start:], None))
        return out

    def is_meaningful(self, token_id: int) -> bool:
        """Whether a token has a letter or digit: a text none of whose tokens has one (only
        punctuation, symbols, emoji) has nothing to search for. (Checked per query, not precomputed
        over the vocabulary: opening the model in the worker stays cheap.)"""
        return token_id not in self._special and any(ch.isalnum() for ch in self.wp.vocab[token_id])

    def tokenize(self, text: Any) -> list[int]:
        """Ids to embed (truncated, unknown pieces dropped); typed errors when nothing is left."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a string, got {type(text).__name__}")
        ids = self._raw_ids(text)[: self.config.max_tokens]
        kept = [i for i in ids if i != self.unk_id]
        for i in kept:
            if self.is_meaningful(i):
                return kept
        if not text.strip():
            raise EmptyQueryError("text is empty")
        if not any(ch.isalnum() for w in basic_tokenize(text[: self.config.max_chars]) for ch in w):
            raise EmptyQueryError(f"text {_preview(text)} has no letters or digits to search for")
        raise NoKnownTokensError(f"no word of {_preview(text)} is in the model's vocabulary")


def _preview(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def pool(rows: np.ndarray) -> np.ndarray:
    """``[batch, tokens, dim]`` rows -> ``[batch, dim]`` unit means (model2vec's arithmetic)."""
    out = rows.mean(axis=1, dtype=np.float32).astype(np.float32, copy=False)
    norm = np.linalg.norm(out, axis=1, keepdims=True) + np.float32(1e-32)
    return (out / norm).astype(np.float32, copy=False)


def quantize_rows(table: np.ndarray, dtype: str = ROW_DTYPE) -> dict[str, np.ndarray]:
    """Rows in their shipped form: ``{"codes": int8[n, d], "scale": float32[n]}`` or ``{"rows": ...}``."""
    table = np.asarray(table, dtype=np.float32)
    if dtype == "int8":
        scale = (np.abs(table).max(axis=1) / np.float32(127.0)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        codes = np.clip(np.rint(table / safe[:, None]), -127, 127).astype(np.int8)
        return {"codes": codes, "scale": scale}
    if dtype in ("float16", "float32"):
        return {"rows": table.astype(dtype)}
    raise InvalidArgumentError(f"unknown row dtype {dtype!r}; expected int8, float16 or float32")


def dequantize_rows(part: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`quantize_rows` (float32 rows; ``ChunkedModel._row`` does the same per row)."""
    if "codes" in part:
        return part["codes"].astype(np.float32) * np.asarray(part["scale"], dtype=np.float32)[:, None]
    return np.asarray(part["rows"], dtype=np.float32)


class LocalModel:
    """The whole table in memory (CPython): fast batched embedding of a corpus."""

    def __init__(self, vocab: Sequence[str], table: np.ndarray, config: ModelConfig,
                 row_dtype: str | None = ROW_DTYPE) -> None:
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 2 or table.shape != (config.vocab_size, config.dim):
            raise InvalidArgumentError(f"table shape {table.shape} does not match the model config")
        self.config = config
        self.vocab = list(vocab)
        self.tok = TextTokenizer(self.vocab, config)
        self.raw_table = table
        self.row_dtype = row_dtype
        self.shipped = quantize_rows(table, row_dtype) if row_dtype else {"rows": table}
        self.table = dequantize_rows(self.shipped) if row_dtype else table
        self.path: Path | None = None  # the artifact directory, when loaded from one

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def name(self) -> str:
        return self.config.name

    def tokenize(self, text: Any) -> list[int]:
        return self.tok.tokenize(text)

    def truncated(self, text: str) -> bool:
        return self.tok.truncated(text)

    def embed_ids(self, ids_list: Sequence[Sequence[int]]) -> np.ndarray:
        """Pool token-id lists (all non-empty), grouped by length so each group is one gather."""
        out = np.zeros((len(ids_list), self.dim), dtype=np.float32)
        buckets: dict[int, list[int]] = {}
        for i, ids in enumerate(ids_list):
            buckets.setdefault(len(ids), []).append(i)
        for _, rows in buckets.items():
            mat = np.array([ids_list[i] for i in rows], dtype=np.int64)
            out[rows] = pool(self.table[mat])
        return out

    def embed(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None,
              batch_size: int = 4096) -> np.ndarray:
        """``float32[n, dim]`` unit vectors; a text with nothing to embed raises, naming its index."""
        if isinstance(texts, str):
            raise InvalidArgumentError("embed takes a list of texts; use embed_one for a single text")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            ids_list = []
            for n, text in enumerate(texts[start:start + batch_size], start):
                try:
                    ids_list.append(self.tok.tokenize(text))
                except InvalidArgumentError as exc:
                    raise type(exc)(f"text {n}: {exc}") from None
            out[start:start + len(ids_list)] = self.embed_ids(ids_list)
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed_ids([self.tok.tokenize(text)])[0]


def default_model_dir(name: str = DEFAULT_MODEL_NAME) -> Path:
    """``$S5VEC_MODEL_DIR``, else ``<repo>/.cache/model/<name>`` (where ``build_model.sh`` puts it)."""
    env = os.environ.get("S5VEC_MODEL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".cache" / "model" / name


def read_config(path: Path) -> ModelConfig:
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return ModelConfig.from_parts(raw["name"], raw["dim"], raw["vocab_size"], raw["tokenizer"], raw.get("source"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"bad model config in {path}: {exc}") from None


def load_local(path: str | os.PathLike | None = None, *, row_dtype: str | None = ROW_DTYPE) -> LocalModel:
    """The model artifact on disk (vocab.txt, table.npy, config.json) as a :class:`LocalModel`.

    ``row_dtype=None`` keeps the distilled float32 table (as model2vec has it); the default applies
    the shipped quantisation so vectors match the chunked model's.
    """
    p = Path(path) if path is not None else default_model_dir()
    if not (p / "table.npy").is_file() or not (p / "vocab.txt").is_file():
        raise InvalidArgumentError(f"no text model at {p}: build it with `bash build_model.sh` (run by ./setup.sh)")
    config = read_config(p)
    vocab = (p / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    try:
        table = np.load(p / "table.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot read {p / 'table.npy'}: {exc}") from None
    model = LocalModel(vocab, table, config, row_dtype=row_dtype)
    model.path = p
    return model
