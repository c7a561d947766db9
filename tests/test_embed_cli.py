"""`s5vec embed` and `s5vec publish --text-field` against a real portal process."""
from __future__ import annotations

import json

import numpy as np
import pytest

from s5vec import api, embed

from embed_kit import model_dir
from test_cli import portal, s5vec  # noqa: F401  (the module-scoped real portal fixture)

FILMS = [
    ("m1", "Star Wars (1977), Action"), ("m2", "Alien (1979), Action, Drama"),
    ("m3", "Amélie (2001), Comedy, Romance"), ("m4", "For All Mankind (1989), Documentary"),
    ("m5", "Toy Story (1995), Animation, Comedy"), ("m6", "Casablanca (1942), Drama, Romance"),
]


@pytest.fixture(scope="module")
def local_model():
    return embed.load_local(model_dir())


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_embed_adds_vectors(tmp_path, local_model):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"id": i, "title": t} for i, t in FILMS] + [{"id": "v", "vector": [0.5, 0.5]}])
    p = s5vec("embed", str(src), "--out", str(out), "--text-field", "title")
    assert "embedded 7 records" in p.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [i for i, _ in FILMS] + ["v"]
    assert rows[-1]["vector"] == [0.5, 0.5]
    got = np.array([r["vector"] for r in rows[:-1]], dtype=np.float32)
    np.testing.assert_allclose(got, local_model.embed([t for _, t in FILMS]), atol=1e-7)


@pytest.mark.parametrize("rows,msg", [
    ([{"id": "a", "text": "   "}], "EmptyQueryError: record 0 (id 'a')"),
    ([{"id": "a"}], "InvalidArgumentError: record 0 (id 'a'): no vector and no 'text' text"),
    ([{"id": "a", "text": 5}], "non-string"),
])
def test_embed_bad_input_is_one_line(tmp_path, rows, msg):
    src = tmp_path / "in.jsonl"
    _write(src, rows)
    p = s5vec("embed", str(src), "--out", str(tmp_path / "o.jsonl"), check=False)
    assert p.returncode == 1 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_embed_missing_model_dir_is_one_line(tmp_path):
    src = tmp_path / "in.jsonl"
    _write(src, [{"id": "a", "text": "x"}])
    p = s5vec("embed", str(src), "--out", "-", "--model", str(tmp_path / "nope"), check=False)
    assert p.returncode == 1 and "build_model.sh" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_publish_text_field_names_the_model(tmp_path, portal, local_model):  # noqa: F811
    url, _ = portal
    src = tmp_path / "films.jsonl"
    _write(src, [{"id": i, "text": t, "metadata": {"title": t}} for i, t in FILMS])
    p = s5vec("publish", str(src), "--portal", url, "--text-field", "text", "--index", "flat")
    cid = p.stdout.strip().splitlines()[-1]
    assert "text model" in p.stderr
    db = api.Database.open(cid, [url])
    extra = db.manifest["extra"]["embed"]
    assert extra["field"] == "text" and extra["dim"] == 256
    model = embed.open_model(extra["model"], db.store)
    q = embed.embed_query(model, db.store, "documentary about space and the moon")
    assert db.search(q, k=1)[0]["id"] == "m4"
    for i, t in FILMS:  # every film's own text finds it first
        assert db.search(embed.embed_query(model, db.store, t), k=1)[0]["id"] == i
    # publishing again re-uses the model: same model CID, nothing of it uploaded again
    p2 = s5vec("publish", str(src), "--portal", url, "--text-field", "text", "--index", "flat")
    assert f"text model {extra['model']}" in p2.stderr
