"""BM25 keyword index: tokenizer, scores against a brute-force BM25, chunked storage, filters, titles."""
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s5vec import filters, layout
from s5vec.demo import movie_records
from s5vec.errors import FormatError, UnknownIdError
from s5vec.keyword import KeywordIndex, KeywordQuery, run, tokenize
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

WORDS = ("space war love city night river blue king dark time dream music house road star ghost"
         " summer winter paris tokyo robot island secret").split()


def corpus(n=1500, seed=5):
    rng = random.Random(seed)
    ids, texts, metas, ts = [], [], [], []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        year = rng.randint(1900, 2005)
        genre = rng.choice(["Drama", "Comedy", "Documentary"])
        title = " ".join(words).title()
        ids.append(f"d{i:05d}")
        texts.append(f"{title} ({year}), {genre}")
        metas.append({"title": title, "year": year, "genres": [genre]})
        ts.append(float(year - 1970) * 365.25 * 86400)
    return ids, texts, metas, ts


def brute_bm25(texts, query, k1=1.2, b=0.75):
    toks = [tokenize(t) for t in texts]
    n = len(toks)
    avgdl = sum(map(len, toks)) / n
    out = np.zeros(n)
    for term in dict.fromkeys(tokenize(query)):
        df = sum(term in t for t in toks)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for d, t in enumerate(toks):
            tf = t.count(term)
            if tf:
                out[d] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(t) / avgdl))
    return out


def built(n=1500, **kw):
    ids, texts, metas, ts = corpus(n)
    idx = KeywordIndex(**kw)
    idx.build(ids, texts, metas, ts)
    return idx, (ids, texts, metas, ts)


def saved(idx):
    store = ChunkStore(MemoryClient())
    writer = layout.StoreWriter(store)
    desc = idx.save(writer)
    reader = layout.StoreReader(store)
    store.prefetch_sync([desc["head"]])
    return KeywordIndex.load(desc, reader), store, writer


def search(idx, text, k=10, flt=None, fetch=lambda cids: None):
    return run(idx.search_steps(idx.prepare(text), k, filters.parse(flt)), fetch)


def test_tokenizer_folds_case_and_accents_and_splits_on_non_alphanumerics():
    assert tokenize("Amélie (2001), Comedy") == ["amelie", "2001", "comedy"]
    assert tokenize("L'Avventura: DON'T_stop!") == ["l", "avventura", "don", "t", "stop"]
    assert tokenize("  ?!… -- ") == []
    assert tokenize("東京物語 Москва") == ["東京物語", "москва"]
    assert tokenize("ÆON Flux ﬁve") == ["æon", "flux", "five"]


@pytest.mark.parametrize("query", ["space war", "paris love night", "ghost", "robot island secret", "blue"])
def test_scores_equal_brute_force_bm25(query):
    idx, (ids, texts, metas, ts) = built(exact_field=None)
    want = brute_bm25(texts, query)
    order = sorted(np.flatnonzero(want), key=lambda d: (-want[d], ids[d]))[:10]
    hits = search(idx, query)
    assert len(hits) == min(10, len(order))
    for h in hits:
        assert math.isclose(h[1], want[ids.index(h[0])], rel_tol=2e-3), (h, want[ids.index(h[0])])
    # nothing outside the hits scores better than the last hit
    assert max(want[d] for d in range(len(ids)) if ids[d] not in {h[0] for h in hits}) <= hits[-1][1] * (1 + 2e-3)


def test_saved_index_searches_the_same_and_fetches_only_its_terms_chunks():
    idx, _ = built()
    loaded, store, writer = saved(idx)
    kinds = [c["kind"] for c in writer.chunks]
    assert kinds.count("kw_head") == 1 and kinds.count("kw_postings") >= idx.buckets
    fetched = []

    def fetch(cids):
        fetched.append(list(cids))
        store.prefetch_sync(cids)

    before = store.stats()["chunks_fetched"]
    got = search(loaded, "space war", fetch=fetch)
    assert got == search(idx, "space war")
    postings, docs = fetched[0], [c for r in fetched[1:] for c in r]
    assert 1 <= len(postings) <= 2  # one bucket (or big-term chunk) per word
    assert len(docs) <= 10  # the hits' document chunks only
    assert store.stats()["chunks_fetched"] - before == len(postings) + len(docs)
    # a second identical query fetches nothing
    fetched.clear()
    assert search(loaded, "space war", fetch=fetch) == got and fetched == []


@pytest.mark.parametrize("flt", [{"genres": "Documentary"}, {"year": {"$gte": 1990, "$lte": 1995}},
                                 {"$and": [{"genres": {"$in": ["Drama", "Comedy"]}}, {"year": {"$lt": 1950}}]}])
def test_filtered_keyword_search_is_exact(flt):
    idx, (ids, texts, metas, ts) = built()
    loaded, store, _ = saved(idx)
    f = filters.parse(flt)
    want = brute_bm25(texts, "night star")
    ok = [d for d in np.flatnonzero(want) if f.matches(filters.fields_of(metas[d], ts[d]))]
    ok.sort(key=lambda d: (-want[d], ids[d]))
    hits = search(loaded, "night star", 10, flt, fetch=store.prefetch_sync)
    assert len(hits) == min(10, len(ok))
    for h in hits:
        d = ids.index(h[0])
        assert f.matches(filters.fields_of(metas[d], ts[d]))
        assert math.isclose(h[1], want[d], rel_tol=2e-3)
    assert hits[-1][1] >= want[ok[len(hits) - 1]] * (1 - 2e-3)


def test_get_and_documents_round_trip():
    idx, (ids, texts, metas, ts) = built(300)
    loaded, store, _ = saved(idx)
    store.prefetch_sync(loaded.get_plan("d00123"))
    assert loaded.get("d00123") == (metas[123], ts[123])
    with pytest.raises(UnknownIdError):
        loaded.get("nope")
    with pytest.raises(UnknownIdError):
        loaded.get("d00123x")
    assert [d[:2] for d in loaded.documents()] == sorted(zip(ids, texts))


def commit(idx, store, edits):
    """What Database.commit does with the keyword index: edited copy, fetch what it reads, save, reopen."""
    known = {c for c in idx.chunk_cids()}
    new = idx.edited(edits)
    store.prefetch_sync(new.plan_save())
    writer = layout.StoreWriter(store, known)
    desc = new.save(writer)
    assert new.chunk_cids() <= known | {c["cid"] for c in writer.chunks}
    store.prefetch_sync([desc["head"]] + [c["cid"] for c in writer.chunks if c["kind"] == "kw_ids"])
    return KeywordIndex.load(desc, layout.StoreReader(store)), writer


def rebuilt(docs):
    """A from-scratch build, numbered in reverse id order: unlike any order the edits made."""
    ids = sorted(docs, reverse=True)
    ref = KeywordIndex()
    ref.build(ids, [docs[i][0] for i in ids], [docs[i][1] for i in ids], [docs[i][2] for i in ids])
    return ref


QUERIES = ["space war", "paris love night", "ghost", "robot island secret", "blue", "Space War", "Dark Time",
           "summer 1999", "Drama", "brand new", "tokyo tokyo ghost", "Winter", "remastered secret"]


def assert_same_results(idx, ref, store, queries=QUERIES):
    for q in queries:
        for flt in (None, {"genres": "Documentary"}, {"year": {"$gte": 1950}}):
            got = search(idx, q, 40, flt, fetch=store.prefetch_sync)
            assert got == search(ref, q, 40, flt), (q, flt)
    assert len(idx) == len(ref)


def film(i, words, year=2005, genre="Drama"):
    title = " ".join(words).title()
    return f"{title} ({year}), {genre}", {"title": title, "year": year, "genres": [genre]}, float(i)


def test_incremental_edits_equal_a_rebuild_after_adds_deletes_and_text_updates():
    """Scores (bit for bit), ties, exact titles, filters and get() after each commit equal a
    from-scratch build of the same records, though document numbers differ (append order, tombstones)."""
    ids, texts, metas, ts = corpus(1500)
    docs = {i: (t, m, s) for i, t, m, s in zip(ids, texts, metas, ts)}
    idx, store, _ = saved(rebuilt(docs))
    rng = random.Random(11)
    for rnd in range(6):
        edits = {}
        for j in range(rng.choice([1, 40, 300])):  # new records
            edits[f"n{rnd}-{j}"] = film(j, rng.sample(WORDS, rng.randint(1, 4)), rng.randint(1900, 2005))
        for i in rng.sample(sorted(docs), 25):  # deletes
            edits[i] = None
        for i in rng.sample(sorted(docs), 15):  # text (and title) updates of existing records
            edits[i] = film(rnd, rng.sample(WORDS, 3) + ["remastered"], 1999, "Documentary")
        edits["brand"] = film(1, ["brand", "new"])  # the same id edited in every round
        idx, _ = commit(idx, store, edits)
        for i, d in edits.items():
            docs.pop(i, None)
            if d is not None:
                docs[i] = d
        ref = rebuilt(docs)
        assert_same_results(idx, ref, store)
        gone = next(i for i, d in edits.items() if d is None)
        with pytest.raises(UnknownIdError):
            idx.get(gone)
        store.prefetch_sync(idx.get_plan("brand"))
        assert idx.get("brand") == (docs["brand"][1], docs["brand"][2])
        assert idx.segments <= 4 and sorted(d[0] for d in idx.documents()) == sorted(docs)


def test_a_commit_writes_only_the_chunks_its_edits_touch():
    idx, store, w0 = saved(rebuilt({i: (t, m, s) for i, t, m, s in zip(*corpus(3000))}))
    base = {c["cid"] for c in w0.chunks if c["kind"] == "kw_postings"}
    assert len(base) >= 16 and idx.segments == 1
    # new records: one small new segment; the base segment's postings and every full document chunk stay
    added, w1 = commit(idx, store, {f"new{j}": film(j, ["ghost", "river", f"w{j}"]) for j in range(10)})
    written = {c["kind"]: [] for c in w1.chunks}
    for c in w1.chunks:
        written[c["kind"]].append(c["cid"])
    assert added.segments == 2 and set(written["kw_postings"]).isdisjoint(base)
    assert len(written["kw_postings"]) == 1 and len(written["kw_docs"]) <= 2 and len(written["kw_head"]) == 1
    assert w1.uploaded <= 6, w1.chunks  # + the kw_ids chunk of the new documents and the head
    # deletes: tombstones in the head only (no posting or document chunk is written)
    gone, w2 = commit(added, store, {"d00007": None, "d02500": None, "new3": None})
    assert {c["kind"] for c in w2.chunks} == {"kw_head", "kw_ids"} and w2.uploaded == 1
    assert len(gone) == 3000 + 10 - 3
    assert search(gone, "ghost river", 20, fetch=store.prefetch_sync) == search(
        rebuilt({i: (t, m, s) for i, t, m, s in gone.documents()}), "ghost river", 20)


def test_segments_merge_and_compaction_renumbers_when_a_quarter_is_deleted():
    ids, texts, metas, ts = corpus(800)
    docs = {i: (t, m, s) for i, t, m, s in zip(ids, texts, metas, ts)}
    idx, store, _ = saved(rebuilt(docs))
    rng = random.Random(3)
    for rnd in range(12):  # many small commits: segments stay few, small ones merge
        edits = {f"r{rnd}-{j}": film(j, rng.sample(WORDS, 2)) for j in range(rng.randint(1, 60))}
        idx, _ = commit(idx, store, edits)
        docs.update(edits)
        assert 1 <= idx.segments <= 4
    assert_same_results(idx, rebuilt(docs), store)
    doomed = rng.sample(sorted(docs), len(docs) // 4 + 1)
    idx, w = commit(idx, store, dict.fromkeys(doomed))
    for i in doomed:
        del docs[i]
    assert idx.segments == 1 and len(idx._ids) == len(idx) == len(docs), "renumbered without tombstones"
    assert_same_results(idx, rebuilt(docs), store)


def test_a_version_1_keyword_index_is_a_clear_format_error():
    idx, _ = built(100)
    store = ChunkStore(MemoryClient())
    desc = idx.save(layout.StoreWriter(store))
    assert "version" not in desc and layout.FORMAT_VERSION == 2  # the format version covers descriptors
    with pytest.raises(FormatError, match="format 1 layout"):
        KeywordIndex.load(dict(desc, version=1), layout.StoreReader(store))


def test_unknown_and_empty_queries_find_nothing():
    idx, _ = built(200)
    assert search(idx, "zzqx") == []
    assert search(idx, "!!! ...") == []
    assert KeywordQuery.from_text("a " * 500).terms == ("a",)


def test_corrupt_chunks_are_format_errors():
    idx, _ = built(200)
    store = ChunkStore(MemoryClient())
    desc = idx.save(layout.StoreWriter(store))
    with pytest.raises(FormatError):
        KeywordIndex.load(dict(desc, kind="bm26"), layout.StoreReader(store))
    with pytest.raises(FormatError):
        KeywordIndex.load(dict(desc, tokenizer="porter"), layout.StoreReader(store))
    writer, reader = layout.StoreWriter(store), layout.StoreReader(store)
    head = reader.get(desc["head"], "kw_head")
    seg = head["segments"][0]
    bad_heads = [dict(head, n_docs=199), dict(head, dead=np.array([200], np.uint32)), dict(head, total_len=1),
                 dict(head, segments=[dict(seg, hi=150)]), dict(head, segments=[dict(seg, buckets=[])]),
                 dict(head, ids=head["ids"] * 2), dict(head, id_rows=31), {"n_docs": 200}]
    for bad in bad_heads:
        with pytest.raises(FormatError):
            KeywordIndex.load(dict(desc, head=writer.put("kw_head", bad)), reader)
    ids = reader.get(head["ids"][0], "kw_ids")
    for bad in (dict(ids, start=5), dict(ids, dl=ids["dl"][:-1]), dict(ids, id_text=ids["id_text"] + "x")):
        with pytest.raises(FormatError):
            KeywordIndex.load(dict(desc, head=writer.put("kw_head", dict(head, ids=[writer.put("kw_ids", bad)]))), reader)


@pytest.fixture(scope="module")
def movies():
    recs = list(movie_records(8000))
    idx = KeywordIndex()
    idx.build([r["id"] for r in recs], [r["text"] for r in recs], [r["metadata"] for r in recs],
              [r["timestamp"] for r in recs])
    return recs, idx


def test_movies_exact_title_first(movies):
    recs, idx = movies
    rng = random.Random(1)
    for r in rng.sample(recs, 400):
        title = r["metadata"]["title"]
        if not tokenize(title):
            continue
        hits = search(idx, title, 3)
        assert hits and tokenize(hits[0][3]["title"]) == tokenize(title), (title, hits[:3])
        assert hits[0][2]  # flagged exact


def test_movies_negative_timestamps_and_year_filter(movies):
    recs, idx = movies
    assert min(r["timestamp"] for r in recs) < 0
    hits = search(idx, "love", 20, {"_timestamp": {"$lt": 0}})
    assert hits and all(h[3]["year"] < 1970 for h in hits)


def test_ranking_without_metadata_reads_only_postings():
    idx, _ = built()
    loaded, store, _ = saved(idx)
    rounds = []
    hits = run(loaded.search_steps(loaded.prepare("ghost river"), 10, metadata=False),
               lambda c: (rounds.append(c), store.prefetch_sync(c)))
    assert len(rounds) == 1 and len(rounds[0]) <= 2
    assert [h[:3] for h in hits] == [h[:3] for h in search(idx, "ghost river")]
    meta = run(loaded.metadata_steps([h[0] for h in hits]), store.prefetch_sync)
    assert meta == {h[0]: h[3] for h in search(idx, "ghost river")}


def test_query_stopwords_do_not_rank_unless_alone():
    assert KeywordQuery.from_text("Documentary about the Space").terms == ("documentary", "space")
    assert KeywordQuery.from_text("Documentary about the Space").exact == "=documentary about the space"
    assert KeywordQuery.from_text("The It").terms == ("the", "it")


_TINY = ["space", "war", "love", "ghost", "blue", "the"]
_edit = st.one_of(
    st.tuples(st.sampled_from([f"t{i}" for i in range(30)]), st.none()),
    st.tuples(st.sampled_from([f"t{i}" for i in range(40)]),
              st.tuples(st.lists(st.sampled_from(_TINY), min_size=1, max_size=5), st.integers(1990, 1993))))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(st.lists(_edit, max_size=12), min_size=1, max_size=5))
def test_fuzz_random_edit_commits_equal_a_rebuild(rounds):
    """Random rounds of upserts and deletes over few words (many ties, merges, compactions)."""
    docs = {f"t{i}": film(i, [_TINY[i % 6], _TINY[(i * 7) % 6]], 1990 + i % 4) for i in range(30)}
    idx, store, _ = saved(rebuilt(docs))
    for edits in rounds:
        edits = {i: (None if e is None else film(0, e[0], e[1])) for i, e in edits}
        if not edits:
            continue
        idx, _ = commit(idx, store, edits)
        for i, d in edits.items():
            docs.pop(i, None)
            if d is not None:
                docs[i] = d
        if docs:
            assert_same_results(idx, rebuilt(docs), store, _TINY + ["space war 1991", "Love Ghost", "the"])
        assert len(idx) == len(docs)
