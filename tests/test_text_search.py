"""Text queries through the request layer: keyword index published with the vectors, fusion, get, edits."""
import asyncio

import numpy as np
import pytest

from s5vec import api
from s5vec.demo import movie_records
from s5vec.errors import ClosedError, FilterError, InvalidArgumentError, NothingToCommitError, UnknownIdError
from s5vec.keyword import tokenize
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore


@pytest.fixture(scope="module")
def films():
    recs = list(movie_records(3000))
    rng = np.random.default_rng(0)
    for r in recs:
        r["vector"] = rng.standard_normal(16).astype(np.float32).tolist()
    store = ChunkStore(MemoryClient())
    cid = api.publish(recs, store, kind="flat", text_field="text")
    return recs, store, cid


def test_keyword_mode_finds_titles_first(films):
    recs, store, cid = films
    db = api.Database.open(cid, store=store)
    assert db.keyword is not None and db.model is None
    for r in recs[::97]:
        if not tokenize(r["metadata"]["title"]):
            continue  # "$": a title with no words is not a query
        hits = db.search_text(r["metadata"]["title"], k=5, mode="keyword")
        assert tokenize(hits[0]["metadata"]["title"]) == tokenize(r["metadata"]["title"])
    # hybrid on an index without a model is keyword search
    t = recs[500]["metadata"]["title"]
    assert db.search_text(t, k=5) == db.search_text(t, k=5, mode="keyword")


def test_filters_hold_on_keyword_hits(films):
    _, store, cid = films
    db = api.Database.open(cid, store=store)
    flt = {"genres": "Comedy", "year": {"$gte": 1930, "$lte": 1960}}
    res = db.search_text_with_stats("love", k=10, filter=flt, mode="keyword")
    assert res["hits"]
    for h in res["hits"]:
        assert "Comedy" in h["metadata"]["genres"] and 1930 <= h["metadata"]["year"] <= 1960
    assert res["stats"]["planned"]["postings"] == 1 and res["stats"]["planned"]["docs"] >= 1


def test_unfiltered_query_fetches_postings_then_hit_metadata_only(films):
    _, store, cid = films
    db = api.Database.open(cid, store=ChunkStore(store.client))  # a cold cache
    res = db.search_text_with_stats("night river", k=10, mode="keyword")
    planned = res["stats"]["planned"]
    assert 1 <= planned["postings"] <= 2 and planned["docs"] <= 10 and planned["index"] == 0
    assert res["stats"]["chunksFetched"] == planned["postings"] + planned["docs"]
    again = db.search_text_with_stats("night river", k=10, mode="keyword")
    assert again["hits"] == res["hits"] and again["stats"]["chunksFetched"] == 0


def test_bad_text_queries_are_typed_errors(films):
    _, store, cid = films
    db = api.Database.open(cid, store=store)
    for bad in ["", "   ", "?!…", "--- ..."]:
        with pytest.raises(InvalidArgumentError):
            db.search_text(bad)
    with pytest.raises(InvalidArgumentError):
        db.search_text(42)
    with pytest.raises(InvalidArgumentError):
        db.search_text("x", mode="fuzzy")
    with pytest.raises(InvalidArgumentError):
        db.search_text("x", mode="vector")  # no model in this index
    with pytest.raises(FilterError):
        db.search_text("x", filter={"year": {"$near": 1}})
    assert db.search_text("qqqzzzx blorfle", mode="keyword") == []
    assert db.search_text("東京物語", mode="keyword") == []
    long = "space " * 2000
    assert db.search_text(long, mode="keyword") == db.search_text("space", mode="keyword")
    db.close()
    with pytest.raises(ClosedError):
        db.search_text("space")


def test_get(films):
    recs, store, cid = films
    db = api.Database.open(cid, store=store)
    r = recs[1234]
    assert db.get(r["id"]) == {"id": r["id"], "metadata": r["metadata"], "timestamp": r["timestamp"]}
    with pytest.raises(UnknownIdError):
        db.get("nope")
    with pytest.raises(InvalidArgumentError):
        db.get(7)


def test_edits_reach_the_keyword_index_at_commit(films):
    recs, store, cid = films
    db = api.Database.open(cid, store=store)
    gone = recs[10]["id"]
    db.delete([gone])
    db.upsert([{"id": "new1", "vector": [0.1] * 16, "text": "Zyzzyva Returns (2005), Comedy",
                "metadata": {"title": "Zyzzyva Returns", "year": 2005, "genres": ["Comedy"]}, "timestamp": 1.1e9}])
    assert db.get("new1")["metadata"]["title"] == "Zyzzyva Returns"  # edits show before the commit
    with pytest.raises(UnknownIdError):
        db.get(gone)
    new_cid, _ = db.commit()
    db2 = api.Database.open(new_cid, store=store)
    assert db2.search_text("zyzzyva returns", mode="keyword")[0]["id"] == "new1"
    with pytest.raises(UnknownIdError):
        db2.get(gone)
    # a commit without text edits names the same keyword chunks and reads none of them
    before = store.stats()["chunks_fetched"]
    db2.upsert([{"id": "new1", "vector": [0.2] * 16, "text": "Zyzzyva Returns (2005), Comedy",
                 "metadata": {"title": "Zyzzyva Returns", "year": 2005}, "timestamp": 1.1e9}])
    db2._kw_edits.clear()
    third, _ = db2.commit()
    m2, m3 = api.read_manifest(store, new_cid), api.read_manifest(store, third)
    kw = lambda m: sorted(c["cid"] for c in m["chunks"] if c["kind"].startswith("kw_"))
    assert kw(m2) == kw(m3) and m3["extra"]["keyword"] == m2["extra"]["keyword"]
    with pytest.raises(InvalidArgumentError):
        db2.upsert([{"id": "x", "vector": [0.0] * 16}])  # no text for the keyword index


def test_fuse_rrf_and_exact_first():
    vec = [("a", 0.9, {"t": "a"}), ("b", 0.8, {"t": "b"}), ("c", 0.7, {"t": "c"})]
    kw = [("c", 5.0, False, None), ("d", 4.0, True, None), ("a", 1.0, False, None)]
    got = api.fuse(vec, kw, 4)
    assert [h["id"] for h in got] == ["d", "a", "c", "b"]
    assert got[1]["metadata"] == {"t": "a"} and got[0]["metadata"] is None
    assert all(x["score"] >= y["score"] for x, y in zip(got, got[1:]))


@pytest.fixture(scope="module")
def embedded_films():
    """8,000 films embedded by the model built at set-up, published with model and keyword index."""
    from s5vec import embed

    recs = list(movie_records(8000))
    model = embed.load_local()
    embed.embed_records(recs, model)
    store = ChunkStore(MemoryClient())
    cid = api.publish(recs, store, kind="hybrid", params={"codec": "sq8", "store_full": False}, text_field="text",
                      extra=embed.manifest_extra(embed.publish_model(model, store), "text"))
    return recs, store, cid


def test_hybrid_exact_title_first_on_many_titles(embedded_films):
    import random

    recs, store, cid = embedded_films
    db = api.Database.open(cid, store=store)
    pool = [r for r in recs if tokenize(r["metadata"]["title"])]
    for r in random.Random(2).sample(pool, 600):
        title = r["metadata"]["title"]
        hits = db.search_text(title, k=10)
        assert tokenize(hits[0]["metadata"]["title"]) == tokenize(title), (title, hits[0])
        # with its year too ("The Matrix 1999"), that very film comes first
        hits = db.search_text(f"{title} {r['metadata']['year']}", k=10)
        assert tokenize(hits[0]["metadata"]["title"]) == tokenize(title) and \
            hits[0]["metadata"]["year"] == r["metadata"]["year"], (title, hits[0])


def test_hybrid_modes_filters_and_odd_text(embedded_films):
    from s5vec.errors import EmptyQueryError, NoKnownTokensError

    recs, store, cid = embedded_films
    db = api.Database.open(cid, store=ChunkStore(store.client))
    res = db.search_text_with_stats("documentary about space", 10)
    assert sum("Documentary" in h["metadata"]["genres"] for h in res["hits"]) >= 6
    planned = res["stats"]["planned"]
    assert planned["model"] >= 1 and planned["postings"] == 2 and planned["index"] >= 1
    flt = {"genres": "Drama", "year": {"$lt": 1950}}
    for mode in ("hybrid", "vector", "keyword"):
        for h in db.search_text("war", 10, flt, mode):
            assert "Drama" in h["metadata"]["genres"] and h["metadata"]["year"] < 1950
    with pytest.raises(EmptyQueryError):
        db.search_text("  ?! ")
    emoji_only = "\U0001F600\U0001F3AC"
    with pytest.raises(EmptyQueryError):  # no letter or digit at all
        db.search_text(emoji_only)
    assert db.search_text("qwxzv blorfle", 5, mode="keyword") == []
    assert len(db.search_text("qwxzv blorfle", 5)) == 5  # the vector side answers with what it knows
    try:
        db.search_text("\u16a0\u16a2\u16a6", 5, mode="vector")  # runes: no known token, probably
    except NoKnownTokensError:
        assert db.search_text("\u16a0\u16a2\u16a6", 5) == []  # hybrid: the keyword side alone


def test_uncommitted_delete_leaves_keyword_results(films):
    recs, store, cid = films
    db = api.Database.open(cid, store=store)
    title = next(r["metadata"]["title"] for r in recs[200:] if len(tokenize(r["metadata"]["title"])) >= 2)
    first = db.search_text(title, 5, mode="keyword")[0]["id"]
    db.delete([first])
    assert first not in [h["id"] for h in db.search_text(title, 5, mode="keyword")]


def test_rpc_search_text_and_get(films, monkeypatch):
    import asyncio
    import json

    from s5vec import rpc

    recs, store, cid = films
    monkeypatch.setattr(api, "make_store", lambda portals, **kw: store)
    monkeypatch.setattr(rpc, "_stores", {})

    def call(op, args):
        return json.loads(asyncio.run(rpc.handle(op, args)))

    h = call("open", {"manifest": cid, "portals": ["http://unused"]})["result"]["handle"]
    title = next(r["metadata"]["title"] for r in recs[300:] if len(tokenize(r["metadata"]["title"])) >= 2)
    out = call("searchText", {"handle": h, "text": title, "k": 3, "mode": "keyword"})
    assert out["ok"] and tokenize(out["result"]["hits"][0]["metadata"]["title"]) == tokenize(title)
    assert out["result"]["stats"]["planned"]["postings"] >= 1
    assert call("searchText", {"handle": h, "text": "  "})["error"]["name"] in ("EmptyQueryError", "InvalidArgumentError")
    assert call("searchText", {"handle": h})["error"]["name"] == "InvalidArgumentError"
    assert call("get", {"handle": h, "id": recs[5]["id"]})["result"]["metadata"] == recs[5]["metadata"]
    assert call("get", {"handle": h, "id": "zz"})["error"]["name"] == "UnknownIdError"
    # a second open on the same portals shares the verified chunks: nothing is fetched again
    h2 = call("open", {"manifest": cid, "portals": ["http://unused"]})["result"]["handle"]
    again = call("searchText", {"handle": h2, "text": title, "k": 3, "mode": "keyword"})["result"]
    assert again["stats"]["chunksFetched"] == 0


def test_cli_search_text_prints_one_json_line_per_hit(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from s5vec.s5.portal import serve

    from conftest import ROOT

    portal = serve(tmp_path / "portal")[0]
    try:
        recs = list(movie_records(500))
        for r in recs:
            r["vector"] = [1.0, float(len(r["text"]) % 7), 0.5]
        cid = api.publish(recs, api.make_store([portal.url]), kind="flat", text_field="text")
        title = next(r["metadata"]["title"] for r in recs[100:] if len(tokenize(r["metadata"]["title"])) >= 2)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "pkg"))
        p = subprocess.run([sys.executable, "-m", "s5vec", "search", cid, "--portal", portal.url, "--text", title,
                            "-k", "3", "--mode", "keyword"], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        assert 1 <= len(lines) <= 3 and set(lines[0]) == {"id", "score", "metadata"}
        assert tokenize(lines[0]["metadata"]["title"]) == tokenize(title)
        p = subprocess.run([sys.executable, "-m", "s5vec", "search", cid, "--portal", portal.url, "--text", "?!"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 1 and "Error" in p.stderr and "Traceback" not in p.stderr
    finally:
        portal.stop()


class TabClient(MemoryClient):
    """A portal as the tab sees it: no blocking download (Pyodide cannot block on a fetch, so every
    chunk must come through the parallel ``download_many``), and uploads that take a while."""

    def download(self, cid):
        raise AssertionError(f"blocking download of {cid} in the tab")

    async def download_many(self, cids):
        return {c: MemoryClient.download(self, c) for c in dict.fromkeys(cids)}

    async def upload_async(self, data):
        await asyncio.sleep(0.01)
        return self.upload(data)


def test_tab_commit_updates_the_keyword_index_and_keeps_later_edits_pending(films):
    """upsert_async/delete_async/commit_async (the worker's writes) keep the keyword index in step:
    the few chunks the edited keyword index reads are fetched in parallel (not every document
    chunk), and a text edit made while the commit uploads is not in that snapshot but in the next one."""
    recs, store, cid = films
    tab = TabClient()
    tab.blobs = store.client.blobs
    gone = recs[10]["id"]
    fetched = []
    download_many = tab.download_many

    async def counting(cids):
        fetched.extend(cids)
        return await download_many(cids)

    tab.download_many = counting

    def film(i, title):
        return {"id": i, "vector": [0.1] * 16, "text": f"{title} (2005), Comedy",
                "metadata": {"title": title, "year": 2005, "genres": ["Comedy"]}, "timestamp": 1.1e9}

    def reader(manifest):
        return api.Database.open(manifest, store=ChunkStore(store.client))

    async def run():
        db = await api.Database.open_async(cid, store=ChunkStore(tab))
        with pytest.raises(InvalidArgumentError):
            await db.upsert_async([{"id": "x", "vector": [0.0] * 16}])  # no text for the keyword index
        assert db.edits == 0 and not db._kw_edits
        await db.delete_async([gone])
        await db.upsert_async([film("new1", "Zyzzyva Returns")])
        kinds = {c["cid"]: c["kind"] for c in db.manifest["chunks"]}
        fetched.clear()
        commit = asyncio.create_task(db.commit_async())
        await asyncio.sleep(0.005)  # the snapshot is taken, uploads are running
        await db.upsert_async([film("new2", "Quixotic Llamas")])
        first = await commit
        kw_read = [c for c in fetched if kinds.get(c, "").startswith("kw_")]
        assert [kinds[c] for c in kw_read] == ["kw_docs"], "only the last document chunk, to append to"
        assert db.edits == 1 and list(db._kw_edits) == ["new2"], "the edit made during the uploads is pending"
        a = reader(first["manifest"])
        assert a.search_text("zyzzyva returns", mode="keyword")[0]["id"] == "new1"
        assert "new2" not in [h["id"] for h in a.search_text("quixotic llamas", mode="keyword")]
        with pytest.raises(UnknownIdError):
            a.get(gone)
        hits = (await db.search_text_async("zyzzyva returns", mode="keyword"))["hits"]
        assert hits[0]["id"] == "new1"  # the tab's own database searches its new keyword index
        second = await db.commit_async()
        assert second["parent"] == first["manifest"] and db.edits == 0 and not db._kw_edits
        b = reader(second["manifest"])
        assert b.search_text("quixotic llamas", mode="keyword")[0]["id"] == "new2"
        assert b.search_text("zyzzyva returns", mode="keyword")[0]["id"] == "new1"
        assert len(b.keyword) == len(recs) + 1
        with pytest.raises(NothingToCommitError):
            await db.commit_async()

    asyncio.run(run())
