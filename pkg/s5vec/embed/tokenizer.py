"""BERT's uncased WordPiece tokenizer in pure Python, matching Hugging Face ``tokenizers``.

The static model's rows are indexed by MiniLM's token ids, so the same text must give the same ids
as the reference tokenizer (``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece``) on CPython and
in Pyodide, where the Rust ``tokenizers`` package does not exist. The steps, in the reference order:

1. clean: drop NUL, U+FFFD and control/format/private-use characters (Cc Cf Co Cs; not tab, CR, LF); map
   whitespace to a space;
2. put spaces around CJK ideographs (each becomes its own word);
3. strip accents (NFD, drop non-spacing marks), then lower-case;
4. split on whitespace and around every punctuation character (ASCII punctuation or Unicode P*);
5. WordPiece each word: greedy longest match first, continuation pieces prefixed ``##``; a word
   longer than ``max_input_chars_per_word`` or with an unmatchable rest is one unknown token.

ASCII text (most queries and titles) takes a regex fast path; words are memoised.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

__all__ = ["WordPieceTokenizer", "basic_tokenize"]

_ASCII_WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
# ASCII controls other than tab/LF/CR are removed; tab/LF/CR become spaces (then split anyway).
_ASCII_CLEAN = {c: None for c in range(32) if c not in (9, 10, 13)}
_ASCII_CLEAN[127] = None
# Rust's char::is_whitespace (Unicode White_Space) minus what is a control character (removed first).
_SPACES = frozenset(" \t\n\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                    "\u200a\u2028\u2029\u202f\u205f\u3000")
# Removed by the reference's clean step: control, format, private use, surrogate. Unassigned (Cn)
# code points stay (and make their word unknown), as the reference tokenizer does.
_REMOVED = frozenset(("Cc", "Cf", "Co", "Cs"))
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _normalize_unicode(text: str) -> str:
    """Steps 1-3 for text with non-ASCII characters."""
    out = []
    for ch in text:
        if ch in _SPACES:
            out.append(" ")
            continue
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or unicodedata.category(ch) in _REMOVED:
            continue
        if _is_cjk(cp):
            out.append(" ")
            out.append(ch)
            out.append(" ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFD", "".join(out))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return text.lower()


def _split_unicode(text: str) -> list[str]:
    """Step 4 for normalised non-ASCII text."""
    words: list[str] = []
    for chunk in text.split(" "):
        if not chunk:
            continue
        start = 0
        for i, ch in enumerate(chunk):
            if ch in _ASCII_PUNCT or (ord(ch) > 127 and unicodedata.category(ch)[0] == "P"):
                if i > start:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


def basic_tokenize(text: str) -> list[str]:
    """Normalise and split ``text`` into words and punctuation marks (steps 1-4)."""
    if text.isascii():
        return _ASCII_WORDS.findall(text.translate(_ASCII_CLEAN).lower())
    return _split_unicode(_normalize_unicode(text))


class WordPieceTokenizer:
    """Text -> token ids over a fixed vocabulary (ids are positions in ``vocab``)."""

    def __init__(self, vocab: Sequence[str], *, unk_token: str = "[UNK]", prefix: str = "##",
                 max_input_chars_per_word: int = 100, cache_size: int = 200_000) -> None:
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        if unk_token not in self.index:
            raise ValueError(f"vocabulary lacks the unknown token {unk_token!r}")
        self.unk_id = self.index[unk_token]
        self.prefix = prefix
        self.max_chars = max_input_chars_per_word
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.vocab)

    def wordpiece(self, word: str) -> tuple[int, ...]:
        """Ids of one word's pieces; ``(unk_id,)`` when it cannot be split (step 5)."""
        got = self._cache.get(word)
        if got is not None:
            return got
        index, n = self.index, len(word)
        if n > self.max_chars:
            pieces: tuple[int, ...] = (self.unk_id,)
        else:
            out: list[int] = []
            start = 0
            while start < n:
                end = n
                found = -1
                while start < end:
                    sub = word[start:end] if start == 0 else self.prefix + word[start:end]
                    found = index.get(sub, -1)
                    if found >= 0:
                        break
                    end -= 1
                if found < 0:
                    out = [self.unk_id]
                    break
                out.append(found)
                start = end
            pieces = tuple(out)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[word] = pieces
        return pieces

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """All token ids of ``text`` (unknown words included as ``unk_id``), at most ``max_tokens``."""
        ids: list[int] = []
        for word in basic_tokenize(text):
            ids.extend(self.wordpiece(word))
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.vocab[i] for i in ids]
