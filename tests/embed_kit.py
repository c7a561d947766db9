"""Shared by the text-model tests: the built model (same cached build as setup.sh) and references."""
from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
from contextlib import contextmanager

from conftest import ROOT

MODEL_VENV_PY = ROOT / ".cache" / "model-venv" / "bin" / "python"
REFERENCE = ROOT / "tests" / "fixtures" / "embed_reference.py"


def model_dir() -> Path:
    """The distilled model directory, built by ``build_model.sh`` if it is not cached yet."""
    from s5vec.embed import default_model_dir

    p = subprocess.run(["bash", str(ROOT / "build_model.sh")], capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"build_model.sh failed:\n{p.stderr[-3000:]}")
    return default_model_dir()


def reference(texts: list[str], tmp: Path) -> tuple[list[list[int]], np.ndarray]:
    """(reference WordPiece ids, model2vec StaticModel.encode vectors) for ``texts``."""
    out = tmp / "ref.npy"
    p = subprocess.run([str(MODEL_VENV_PY), str(REFERENCE), str(model_dir()), str(out)],
                       input=json.dumps(texts), capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"reference failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout), np.load(out)


def sample_texts(n: int = 1000, seed: int = 0) -> list[str]:
    """Titles, queries and hard cases: accents, punctuation, CJK, emoji, controls, long words, mixed scripts."""
    rng = np.random.default_rng(seed)
    fixed = [
        "Star Wars (1977), Action", "romantic comedy in paris", "Amélie (2001), Comedy, Romance",
        "東京物語 (1953), Drama", "naïve café déjà-vu!!", "hello [PAD] world", "[UNK] only", "x" * 150,
        "🎬 film noir 🎥", "İstanbul", "Москва слезам не верит (1980)", "دختر", "मुंबई", "ΑΘΗΝΑ", "Ǆemal Ǳ",
        "ﬁnancial ﬂow", "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "tab\there\nnewline\r\n", "zero\u200bwidth\u200djoiner",
        "nbsp\u00a0and\u2003em\u3000ideographic", "soft\u00adhyphen", "e\u0301 combining", "Ω≈ç√∫˜µ≤≥÷",
        "¡¿‽⁇«»„“”‚‘’", "$100 + 50% = <tag> ^ ` | ~", "a" * 99, "b" * 100, "c" * 101,
        "antidisestablishmentarianism", "supercalifragilisticexpialidocious", "\x00\x01\x7f\x85\ufffd",
        "   ", "", "?!.", "日本語のテキスト、漢字とかな。", "한국어 텍스트", "ภาษาไทย", "emoji 👩‍👩‍👧 🇫🇷 ❤️",
        "The Lord of the Rings: The Return of the King (2003), Action Drama", "C'est la vie", "rock'n'roll",
        "e-mail@example.com http://x.y/z?q=1", "12,345.67 1st 2nd 3rd", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "\U00020000\U0002a700 ext",
        "ＡＢＣ１２３", "\u2028line\u2029para", "控制\x1c\x1d\x1e\x1f符", "Ⅻ ⅻ ①②", "ß ẞ ǅ",
    ]
    words = ["space", "documentary", "love", "paris", "war", "the", "night", "of", "dead", "king", "robot",
             "é", "ü", "ø", "ñ", "café", "Straße", "Ça", "ÆON", "naïveté", "über", "jalapeño", "façade"]
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n.,;:!?'\"()[]{}-_/\\&*#@%$+=<>|~^`",
        "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÉÎÕÜßæøåœ",
        "日本語中文字漢字東京京都大阪한국어ひらがなカタカナ",
        "😀🎬🎥❤️👍🏽🇺🇸✨🔥", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "αβγδεζηθικλμνξοπρστυφχψω",
        "\u0300\u0301\u0308\u200b\u200c\u200d\u2060\ufeff\u00ad",
    ]
    out = list(fixed)
    while len(out) < n:
        kind = rng.integers(0, 3)
        if kind == 0:
            ws = [words[i] for i in rng.integers(0, len(words), rng.integers(1, 8))]
            out.append(" ".join(ws) + f" ({int(rng.integers(1890, 2010))})")
        else:
            length = int(rng.integers(1, 60))
            chars = []
            for _ in range(length):
                pool = pools[int(rng.integers(0, len(pools)))]
                chars.append(pool[int(rng.integers(0, len(pool)))])
            if kind == 2:  # a random code point from many blocks. Characters added to Unicode after 3.2 are
                # left out except emoji: Python's and the reference's Unicode versions categorise some of
                # them differently (e.g. a new combining mark), a documented limit (README)
                while True:
                    c = chr(int(rng.choice([rng.integers(0x20, 0x2FFF), rng.integers(0x3000, 0xD7FF),
                                            rng.integers(0xE000, 0xFFFD), rng.integers(0x1F300, 0x1FAFF),
                                            rng.integers(0x1D400, 0x1D7FF), rng.integers(0x20000, 0x2A6DF)])))
                    if 0x1F300 <= ord(c) <= 0x1FAFF or unicodedata.ucd_3_2_0.category(c) != "Cn":
                        break
                chars.append(c)
            out.append("".join(chars))
    return out[:n]


@contextmanager
def counting(store):
    """``with counting(store) as c: ...`` then ``c["chunks_fetched"]``, ``c["bytes_fetched"]``."""
    before = store.snapshot()
    box: dict = {}
    try:
        yield box
    finally:
        box.update(store.diff(before))
