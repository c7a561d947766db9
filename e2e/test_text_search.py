"""Text search through the bridge (real Chromium, Pyodide worker, real portal, the real static model)
against CPython's ``Database.search_text`` on the same published film index.

The film index (a spread subset of ggplot2movies, embedded by the model built at set-up) is
published once per session by the ``film_index`` fixture in conftest.py.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kit import assert_same_hits  # noqa: E402  (tests/kit.py: the shared hit comparator)

from .test_search import tampered  # noqa: E402

QUERIES = ["documentary about space", "romantic comedy in paris", "cartoon cat and mouse", "war drama",
           "The Wizard of Oz", "casablanca", "vampire horror", "a boxer's comeback", "jazz musician biography",
           "high school love story"]


def sample_titles(records, n, seed=3):
    """Titles of films whose title is a real query (has words), from across the collection."""
    from s5vec.keyword import tokenize

    rng = random.Random(seed)
    pool = [r for r in records if tokenize(r["metadata"]["title"])]
    return [r["metadata"]["title"] for r in rng.sample(pool, n)]


def search_text(bridge, key, text, **opts):
    return bridge.run(
        """const db = window.dbs[arg.key];
           const hits = await db.searchText(arg.text, arg.opts);
           return { hits, stats: db.lastStats };""",
        {"key": key, "text": text, "opts": opts},
    )


def same_title(a: str, b: str) -> bool:
    from s5vec.keyword import tokenize

    return tokenize(a) == tokenize(b)


def test_cold_tab_exact_title_first(harness, film_index):
    """From a blank tab (fresh worker): open, type a title, that film is first."""
    titles = sample_titles(film_index["records"], 25)
    t0 = time.perf_counter()
    key = harness.open(film_index["cid"], film_index["urls"])
    first = search_text(harness, key, titles[0], k=10)
    print(f"\nblank tab -> first text result: {time.perf_counter() - t0:.2f} s")
    assert first["ok"], first
    assert same_title(first["value"]["hits"][0]["metadata"]["title"], titles[0])
    for t in titles[1:]:
        res = search_text(harness, key, t, k=10)
        assert res["ok"], res
        assert same_title(res["value"]["hits"][0]["metadata"]["title"], t), (t, res["value"]["hits"][:3])


def test_documentary_about_space(shared_harness, film_index):
    key = shared_harness.open(film_index["cid"], film_index["urls"])
    res = search_text(shared_harness, key, "documentary about space", k=10)
    assert res["ok"], res
    docs = [h for h in res["value"]["hits"] if "Documentary" in h["metadata"]["genres"]]
    assert len(docs) >= 6, [(h["metadata"]["title"], h["metadata"]["genres"]) for h in res["value"]["hits"]]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_genre_and_year_filter_holds_in_every_hit(shared_harness, film_index, mode):
    key = shared_harness.open(film_index["cid"], film_index["urls"])
    flt = {"genres": "Comedy", "year": {"$gte": 1930, "$lte": 1959}}
    for q in ["The Gold Rush", "city at night", "love story"]:
        res = search_text(shared_harness, key, q, k=10, filter=flt, mode=mode)
        assert res["ok"], res
        for h in res["value"]["hits"]:
            assert "Comedy" in h["metadata"]["genres"] and 1930 <= h["metadata"]["year"] <= 1959, h
        assert_same_hits(res["value"]["hits"], film_index["ref"].search_text(q, 10, flt, mode))
    assert res["value"]["hits"], "the filter should leave something for the last query"


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_search_text_equals_cpython(shared_harness, film_index, mode):
    key = shared_harness.open(film_index["cid"], film_index["urls"])
    for q in QUERIES + sample_titles(film_index["records"], 5, seed=9):
        res = search_text(shared_harness, key, q, k=10, mode=mode)
        assert res["ok"], res
        assert_same_hits(res["value"]["hits"], film_index["ref"].search_text(q, 10, None, mode))


def test_a_query_fetches_only_its_token_rows_and_posting_lists(harness, film_index):
    """Count them: the model rows of the query's tokens, the postings of its words, nothing else
    from the model or the keyword index (plus the vector index's lists and the hits' documents)."""
    from s5vec import api

    ref = api.Database.open(film_index["cid"], film_index["urls"])  # fresh: nothing decoded yet
    text = "space documentary"
    tokens = ref.model.tokenize(text)
    want_model = len(ref.model.plan(tokens))
    want_postings = len(ref.keyword.plan(ref.keyword.prepare(text)))
    assert 1 <= want_model <= len(tokens) and 1 <= want_postings <= 2
    key = harness.open(film_index["cid"], film_index["urls"])
    res = search_text(harness, key, text, k=10)
    assert res["ok"], res
    planned, stats = res["value"]["stats"]["planned"], res["value"]["stats"]
    assert planned["model"] == want_model and planned["postings"] == want_postings, planned
    assert stats["chunksFetched"] == sum(planned.values()), stats
    # the same query again downloads nothing
    again = search_text(harness, key, text, k=10)
    assert again["value"]["stats"]["chunksFetched"] == 0 and again["value"]["stats"]["bytesFetched"] == 0
    # a second open of the same index in this tab re-downloads nothing it already verified
    key2 = harness.open(film_index["cid"], film_index["urls"])
    third = search_text(harness, key2, text, k=10)
    assert third["ok"] and third["value"]["stats"]["chunksFetched"] == 0, third


def test_bad_text_input_is_typed_and_the_worker_keeps_serving(shared_harness, film_index):
    key = shared_harness.open(film_index["cid"], film_index["urls"])
    ok_title = sample_titles(film_index["records"], 1, seed=4)[0]
    cases = {"": "EmptyQueryError", "   \n\t": "EmptyQueryError", "?!... ---": "EmptyQueryError",
             42: "InvalidArgumentError"}
    for text, name in cases.items():
        res = search_text(shared_harness, key, text, k=5)
        assert not res["ok"] and res["name"] == name and res["isS5VecError"], (text, res)
        good = search_text(shared_harness, key, ok_title, k=5)
        assert good["ok"] and same_title(good["value"]["hits"][0]["metadata"]["title"], ok_title)
    bad_mode = search_text(shared_harness, key, "space", mode="psychic")
    assert bad_mode["name"] == "InvalidArgumentError"
    # documented results, not errors: a 10,000-character query is cut to its first 3,072 characters;
    # unknown words and non-Latin script give what the model makes of them (the keyword side finds nothing)
    ref = film_index["ref"]
    for text in ["space " * 1666 + "x" * 4, "qwxzv blorfle snarfquux", "東京物語", "Москва слезам не верит"]:
        res = search_text(shared_harness, key, text, k=5)
        assert res["ok"], (text[:40], res)
        assert_same_hits(res["value"]["hits"], ref.search_text(text, 5))
    # get by id, and an unknown id
    rec = film_index["records"][123]
    got = shared_harness.js("return await window.dbs[arg.key].get(arg.id);", {"key": key, "id": rec["id"]})
    assert got == {"id": rec["id"], "metadata": rec["metadata"], "timestamp": rec["timestamp"]}
    res = shared_harness.run("return await window.dbs[arg].get('no-such-film');", key)
    assert res["name"] == "UnknownIdError"
    good = search_text(shared_harness, key, ok_title, k=5)
    assert good["ok"]


def test_model_chunk_with_a_wrong_hash_is_an_integrity_error(harness, film_index, portals):
    """A token-table chunk whose bytes do not match its CID: IntegrityError; the worker keeps serving."""
    text = "zeppelin"
    row_cids = api_model_rows(film_index, text)
    with tampered([portals[0]], row_cids[0]):
        key = harness.open(film_index["cid"], film_index["urls"])
        res = search_text(harness, key, text, k=5, mode="vector")
        assert not res["ok"] and res["name"] == "IntegrityError", res
        kw = search_text(harness, key, text, k=5, mode="keyword")  # the same worker keeps serving
        assert kw["ok"], kw
    other = next(t for t in ["river", "island", "mountain", "winter"]
                 if not set(api_model_rows(film_index, t)) & set(row_cids))
    res = search_text(harness, key, other, k=5, mode="vector")  # a query needing other rows still works
    assert res["ok"], res


def api_model_rows(film_index, text):
    """CIDs of the token-table chunks a fresh reader of this index needs for ``text``."""
    from s5vec import api

    fresh = api.Database.open(film_index["cid"], film_index["urls"])
    return fresh.model.plan(fresh.model.tokenize(text))
