"""Bulk builds from streamed input (s5vec.build, s5vec.sources): correctness against the flat
oracle, the same index from every input format, typed errors for bad input with nothing
published, and a memory ceiling for streaming 200k vectors (RSS measured in a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kit
from conftest import ROOT
from procs import portal_process
from s5vec import api, build, layout, sources
from s5vec.errors import DimensionError, InvalidArgumentError, InvalidVectorError
from s5vec.s5.client import MemoryClient
from s5vec.store import ChunkStore

NOW, CREATED = 1.7e9, 1.0


def _store() -> ChunkStore:
    return ChunkStore(MemoryClient())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    x = kit.clustered(6000, 24, 30, seed=2)
    ids = [f"r{i}" for i in range(len(x))]
    metas = [{"ch": f"c{i % 5}", "n": i} for i in range(len(x))]
    ts = [1.6e9 + i for i in range(len(x))]
    np.save(d / "x.npy", x)
    with open(d / "ids.jsonl", "w") as fh:
        for i, m, t in zip(ids, metas, ts):
            fh.write(json.dumps({"id": i, "metadata": m, "timestamp": t}) + "\n")
    with open(d / "recs.jsonl", "w") as fh:
        for i, v, m, t in zip(ids, x, metas, ts):
            fh.write(json.dumps({"id": i, "vector": v.tolist(), "metadata": m, "timestamp": t}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ids, "vector": pa.array(list(x), type=pa.list_(pa.float32())),
                      "timestamp": ts, "metadata": [json.dumps(m) for m in metas]})
    pq.write_table(table, d / "recs.parquet", row_group_size=1000)
    return d, x, ids, metas, ts


PARAMS = {"nlist": 32, "codec": "pq", "pq_m": 6}


def _build(src, **kw):
    store = kw.pop("store", None) or _store()
    rep = build.build(src, store, kind=kw.pop("kind", "ivf"), params=kw.pop("params", PARAMS), now=NOW,
                      created=CREATED, rows=kw.pop("rows", 1000), sample_size=kw.pop("sample_size", 3000), **kw)
    return rep, store


def test_npy_build_matches_oracle_and_metadata(data):
    d, x, ids, metas, ts = data
    rep, store = _build(sources.open_source(d / "x.npy", ids=d / "ids.jsonl"))
    assert rep.count == len(x) and rep.spec == "IVF32,PQ6"
    db = api.Database.open(rep.cid, store=store)
    oracle = kit.flat_oracle(ids, x, "cosine", metas, ts)
    qs = kit.queries_near(x, 40)
    assert kit.recall_at_k(db, qs, 10, oracle=oracle, nprobe=8) >= 0.9
    assert db.get("r17") == {"id": "r17", "metadata": metas[17], "timestamp": ts[17]}
    hits = db.search(qs[0], 5, {"ch": "c3"})
    assert hits and all(h["metadata"]["ch"] == "c3" for h in hits)


def test_every_format_builds_the_same_index(data):
    d, *_ = data
    a, _ = _build(sources.open_source(d / "x.npy", ids=d / "ids.jsonl"))
    b, _ = _build(sources.open_source(d / "recs.jsonl"))
    c, _ = _build(sources.open_source(d / "recs.parquet"))
    assert a.cid == b.cid == c.cid


REFINE_PARAMS = [PARAMS, {**PARAMS, "refine": "pq", "refine_m": 12, "refine_rows": 8, "rerank": 40},
                 {**PARAMS, "refine": "sq8", "rerank": 40}, {**PARAMS, "refine": "float16", "rerank": 40},
                 {**PARAMS, "refine": "pq", "refine_m": 12, "rerank": 40, "pq_rotate": True}]


@pytest.mark.parametrize("params", REFINE_PARAMS,
                         ids=["pq", "pq+pq-refine", "pq+sq8-refine", "pq+f16-refine", "opq+opq-refine"])
def test_build_equals_an_index_saved_the_ordinary_way(data, params):
    """Same centroids/codec and records -> the bulk build writes exactly what IVFIndex.save (and
    api.save: refine chunks named by the list chunks, not by the manifest) writes."""
    d, x, ids, metas, ts = data
    src = sources.open_source(d / "x.npy", ids=d / "ids.jsonl")
    rep, store = _build(src, params=params)
    template, _ = build.prepare_build(src, kind="ivf", metric="cosine", params=params, sample_size=3000, seed=0)
    template._insert_trained(ids, build.kernels.prepare(x, "cosine"), metas, np.asarray(ts))
    writer = layout.StoreWriter(store)
    desc = template.save(writer)
    manifest = layout.decode_manifest(store.get(rep.cid))
    assert manifest["index"] == desc
    listed = [c for c in writer.chunks if c["kind"] != "ivf_refine"]
    refine = [c for c in writer.chunks if c["kind"] == "ivf_refine"]
    assert manifest["chunks"] == listed
    if "refine" in params:
        assert refine and manifest["extra"]["unlisted"] == {
            "ivf_refine": {"count": len(refine), "bytes": sum(c["size"] for c in refine)}}
        assert rep.chunks == len(refine) + len(desc["lists"])
        db = api.Database.open(rep.cid, store=store)
        qs = kit.queries_near(x, 40)
        for q in qs[:10]:  # the loaded build answers exactly as the resident index
            want = template.search(api.prepare_query(template, q, 10, None, {"nprobe": 8})).hits
            assert [h["id"] for h in db.search(q, 10, params={"nprobe": 8})] == [h.id for h in want]
        oracle = kit.flat_oracle(ids, x, "cosine", metas, ts)
        # 6-byte PQ codes pick the 40 candidates on 24-d isotropic clusters: ~0.8 whatever the refine
        assert kit.recall_at_k(db, qs, 10, oracle=oracle, nprobe=8) >= 0.75
    else:
        assert not refine and "extra" not in manifest


@pytest.mark.parametrize("kind", ["ivf", "hybrid"])
def test_build_without_params_picks_size_aware_defaults(tmp_path, kind):
    """No params: the build picks them as api.publish does (ivf_tune.choose on its sample, N from
    the input), says so, records them in the manifest, and the index they give reaches recall
    against the flat oracle on queries the choice never saw; the same input gives the same CID."""
    x = kit.clustered(24_000, 32, clusters=60, seed=31, top=6, sub=10, spread=0.3)
    np.save(tmp_path / "x.npy", x)
    seen = []
    store = _store()
    rep = build.build(sources.open_source(tmp_path / "x.npy"), store, kind=kind, now=NOW, created=CREATED,
                      explain=seen.append)
    man = layout.decode_manifest(store.get(rep.cid))
    auto = man["extra"]["auto"]
    assert seen and seen[0] is rep.choice and seen[0].record == auto and "N=24000" in seen[0].line()
    assert auto["kind"] == kind and auto["evidence"]["reached"]
    ivf = man["index"]["historical"] if kind == "hybrid" else man["index"]
    picked = auto["picked"] if kind == "ivf" else {k[4:]: v for k, v in auto["picked"].items() if k.startswith("ivf.")}
    assert ivf["params"]["nlist"] == picked["nlist"] and ivf["params"]["codec"] == picked["codec"]
    if picked.get("refine"):
        assert man["extra"]["unlisted"]["ivf_refine"]["count"] > 0
        assert all(c["kind"] != "ivf_refine" for c in man["chunks"])
    ids = [str(i) for i in range(len(x))]
    oracle = kit.flat_oracle(ids, x, "cosine")
    db = api.Database.open(rep.cid, store=ChunkStore(store.client))
    assert kit.recall_at_k(db, kit.queries_near(x, 40, seed=9), 10, oracle=oracle) >= 0.9
    again = build.build(sources.open_source(tmp_path / "x.npy"), _store(), kind=kind, now=NOW, created=CREATED)
    assert again.cid == rep.cid


def test_hybrid_build_holds_everything_in_its_ivf_part(data):
    d, x, ids, metas, ts = data
    rep, store = _build(sources.open_source(d / "x.npy", ids=d / "ids.jsonl"), kind="hybrid")
    db = api.Database.open(rep.cid, store=store)
    assert db.info()["kind"] == "hybrid" and len(db.index.historical) == len(x) and len(db.index.recent) == 0
    oracle = kit.flat_oracle(ids, x, "cosine", metas, ts)
    assert kit.recall_at_k(db, kit.queries_near(x, 20), 10, oracle=oracle) >= 0.9


def test_reservoir_sample_is_reproducible_and_uniform(data):
    d, x, *_ = data
    src = sources.open_source(d / "recs.jsonl")
    s1 = build.sample_vectors(src, 500, seed=3, rows=700)
    s2 = build.sample_vectors(src, 500, seed=3, rows=700)
    assert np.array_equal(s1, s2) and s1.shape == (500, 24)
    rows = {v.tobytes(): i for i, v in enumerate(x)}
    picked = np.array([rows[v.tobytes()] for v in s1])
    assert len(set(picked)) == 500 and np.all(np.diff(picked) > 0)  # distinct, input order
    assert 0.35 < picked.mean() / len(x) < 0.65 and picked.max() > 0.8 * len(x)  # spread over the stream


# ------------------------------------------------------------------ bad input: typed, nothing published


def _uploaded(store: ChunkStore) -> int:
    return store.stats()["chunks_uploaded"]


@pytest.mark.parametrize("arr, err", [
    (np.arange(600, dtype=np.int64).reshape(100, 6), InvalidVectorError),
    (np.zeros((10, 4, 3), np.float32), InvalidVectorError),
    (np.zeros(40, np.float32), InvalidVectorError),
    (np.array(["a", "b"]), InvalidVectorError),
])
def test_npy_of_wrong_dtype_or_shape_is_refused(tmp_path, arr, err):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(err):
        sources.open_source(tmp_path / "bad.npy")


def test_npy_wrong_dimension_and_junk(tmp_path, data):
    d, *_ = data
    with pytest.raises(DimensionError):
        sources.open_source(d / "x.npy", dim=32)
    (tmp_path / "junk.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(InvalidArgumentError):
        sources.open_source(tmp_path / "junk.npy")
    with pytest.raises(InvalidArgumentError):
        sources.open_source(tmp_path / "missing.npy")


def test_nan_row_or_duplicate_id_publishes_nothing(tmp_path, data):
    d, x, ids, *_ = data
    bad = x.copy()
    bad[5500, 3] = np.nan  # in the last block, after training on a sample that may miss it
    np.save(tmp_path / "nan.npy", bad)
    store = _store()
    with pytest.raises(InvalidVectorError):
        _build(sources.open_source(tmp_path / "nan.npy"), store=store, sample_size=100)
    assert _uploaded(store) == 0
    with open(tmp_path / "dup.jsonl", "w") as fh:
        for i in range(len(x)):
            fh.write(json.dumps(ids[i] if i != 4321 else ids[7]) + "\n")
    store = _store()
    with pytest.raises(InvalidArgumentError, match="duplicate id 'r7'"):
        _build(sources.open_source(d / "x.npy", ids=tmp_path / "dup.jsonl"), store=store)
    assert _uploaded(store) == 0
    with open(tmp_path / "short.jsonl", "w") as fh:
        fh.write('"a"\n"b"\n')
    with pytest.raises(InvalidArgumentError, match="2 lines"):
        _build(sources.open_source(d / "x.npy", ids=tmp_path / "short.jsonl"), store=_store())


def test_bad_jsonl_and_parquet_records(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"id": "a", "vector": [1, 2]}\n{"id": "b", "vector": [1, 2, 3]}\n')
    with pytest.raises(DimensionError, match="r.jsonl:2"):
        list(sources.open_source(p).blocks())
    p.write_text('{"id": "a", "vector": [1, 2]}\n{"id": 5, "vector": [1, 2]}\n')
    with pytest.raises(InvalidArgumentError, match="id must be"):
        list(sources.open_source(p).blocks())
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "emb": [[1.0, 2.0]]}), tmp_path / "x.parquet")
    with pytest.raises(InvalidArgumentError, match="no 'vector' column"):
        sources.open_source(tmp_path / "x.parquet")
    pq.write_table(pa.table({"id": ["a"], "vector": ["abc"]}), tmp_path / "y.parquet")
    with pytest.raises(InvalidVectorError):
        sources.open_source(tmp_path / "y.parquet")
    pq.write_table(pa.table({"vector": [[1.0, 2.0], [1.0, 2.0, 3.0], [1.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(InvalidVectorError, match="different lengths"):
        list(sources.open_source(tmp_path / "ragged.parquet").blocks())
    pq.write_table(pa.table({"vector": [[1.0, 2.0], None]}), tmp_path / "null.parquet")
    with pytest.raises(InvalidVectorError, match="nulls"):
        list(sources.open_source(tmp_path / "null.parquet").blocks())


# ------------------------------------------------------------------ memory ceiling

_MEMORY_SCRIPT = r"""
import json, sys
import numpy as np
from s5vec import api, build, sources

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(field + ":"))

src = sources.open_source(sys.argv[1])
a = np.ones((1024, 256), np.float32)
a @ a.T  # BLAS allocates its work buffers once: a fixed cost, not the build's
del a
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark (VmHWM) to the current RSS
    fh.write("5")
assert status("VmHWM") <= base + 1024, (status("VmHWM"), base)
store = api.make_store([sys.argv[2]], cache_bytes=1 << 20)  # a real portal: the chunks live in its process
rep = build.build(src, store, kind="ivf", params={"nlist": 64, "codec": "pq", "pq_m": 16, "store_full": False},
                  sample_size=10000, spill_dir=sys.argv[3])
print(json.dumps({"base_kib": base, "peak_kib": status("VmHWM"), "count": rep.count, "spilled": rep.spilled}))
"""

INPUT_DIM = 256
PER_RECORD_CEILING = 120  # bytes of RSS per extra record streamed (a float32 input row is 1,024 bytes)
TOTAL_CEILING_MIB = 100  # RSS growth for all 200k records (the float32 input is 195 MiB)


def _write_input(path, rows: int) -> None:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, INPUT_DIM))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, INPUT_DIM)).astype(np.float32)
    for s in range(0, rows, 25_000):
        mm[s : s + 25_000] = centres[rng.integers(0, 40, 25_000)] + 0.3 * rng.standard_normal((25_000, INPUT_DIM), np.float32)
    mm.flush()


def _growth_mib(path, portal_dir) -> float:
    """Peak RSS growth of a build of ``path`` in a fresh process, uploading to a portal process."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "pkg"), OPENBLAS_NUM_THREADS="1")
    spill = portal_dir / "spill"
    spill.mkdir()
    with portal_process(portal_dir) as url:
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path), url, str(spill)], capture_output=True,
                             text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["spilled"] > 16 * got["count"]  # the codes went through the spill files...
    assert list(spill.iterdir()) == []  # ...which are gone
    return (got["peak_kib"] - got["base_kib"]) / 1024


@pytest.mark.slow
def test_streaming_200k_vectors_stays_under_the_memory_ceiling(tmp_path):
    """Streaming 200k x 256 vectors (195 MiB of float32) from a .npy to a portal process: peak RSS
    growth (VmHWM, reset once the input is opened and BLAS is warm) stays under 100 MiB, and the
    second 100k records cost under 120 bytes each (measured 29; an input row is 1,024): the input is
    read 16k rows at a time, the encoded rows wait for their upload in spill files (they were held
    in memory: 96 / 127 MiB, 333 bytes per extra record), and the duplicate-id check keeps 8 bytes
    a record. The fixed part is the training sample (10k rows, a few copies), one block's
    temporaries and the units being uploaded."""
    _write_input(tmp_path / "a.npy", 100_000)
    _write_input(tmp_path / "b.npy", 200_000)
    (tmp_path / "pa").mkdir()
    (tmp_path / "pb").mkdir()
    small, big = _growth_mib(tmp_path / "a.npy", tmp_path / "pa"), _growth_mib(tmp_path / "b.npy", tmp_path / "pb")
    per_record = (big - small) * 2**20 / 100_000
    print(f"RSS growth streaming 100k / 200k x {INPUT_DIM}: {small:.1f} / {big:.1f} MiB; "
          f"{per_record:.0f} bytes per extra record")
    assert big < TOTAL_CEILING_MIB
    assert per_record < PER_RECORD_CEILING


def test_duplicate_across_blocks_is_named_and_colliding_hashes_pass(tmp_path, data, monkeypatch):
    """The duplicate-id check keeps hashes, not ids: a repeat in a later block is found after the
    last block (nothing uploaded, the spill files removed), and ids that only share a hash pass."""
    d, x, ids, *_ = data
    with open(tmp_path / "dup.jsonl", "w") as fh:
        for i in range(len(x)):
            fh.write(json.dumps(ids[i] if i != 5321 else ids[17]) + "\n")  # blocks of 1000: row 17 and 5321
    spill = tmp_path / "spill"
    spill.mkdir()
    store = _store()
    with pytest.raises(InvalidArgumentError, match="duplicate id 'r17' \\(input row 5321 repeats row 17\\)"):
        _build(sources.open_source(d / "x.npy", ids=tmp_path / "dup.jsonl"), store=store, spill_dir=str(spill))
    assert _uploaded(store) == 0 and list(spill.iterdir()) == []
    # every id collides with a seventh of the others: still distinct, so the build goes through
    monkeypatch.setattr(build, "_id_hashes", lambda ids: np.array([int(i[1:]) % 7 for i in ids], np.int64))
    rep, _ = _build(sources.open_source(d / "x.npy", ids=d / "ids.jsonl"))
    assert rep.count == len(x) and rep.spilled > 0


def test_piece_spill_reads_back_in_order_once(tmp_path):
    from s5vec.spill import PieceSpill

    with PieceSpill(3, tmp_path) as sp:
        for k in range(5):
            sp.add(k % 3, {"k": k, "a": np.arange(k)})
        sp.add(1, None)  # an empty piece writes nothing
        got = [p["k"] for p in sp.pieces(1)]
        assert got == [1, 4]
        with pytest.raises(RuntimeError):
            list(sp.pieces(1))
        assert [p["k"] for p in sp.pieces(0)] == [0, 3]
        d = sp.dir
    assert not os.path.exists(d)
