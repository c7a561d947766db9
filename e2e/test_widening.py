"""A filtered IVF search that widens, in the worker: rounds of plan -> parallel fetch -> search.

Chunks a search reads are named up front (``Database.plan``) and fetched in parallel with
``pyfetch``; when a round finds too few hits the index asks for a wider query and the request
layer runs another round (never a blocking fetch inside the index).

A filter whose per-list bounds are optimistic forces that: every list holds records with
``a == "x"`` and records with ``b == "y"``, so the summaries cannot rule any list out, but only a
few records far from the query have both. The search must widen until it finds them: more
chunks than the first round's plan, fetched in more than one round, results equal to CPython's.
"""
from __future__ import annotations

import numpy as np
from kit import assert_same_hits

N, DIM = 6000, 32


def test_widening_fetches_in_rounds_and_matches_cpython(shared_harness, portals):
    from s5vec import api
    from s5vec.index.ivf import IVFIndex

    rng = np.random.default_rng(21)
    centres = rng.standard_normal((30, DIM)).astype(np.float32)
    x = (centres[rng.integers(0, 30, N)] + 0.3 * rng.standard_normal((N, DIM))).astype(np.float32)
    meta = [{"a": "x", "b": "z"} if i % 2 else {"a": "w", "b": "y"} for i in range(N)]
    both = [int(i) for i in rng.choice(N, 12, replace=False)]
    for i in both:
        meta[i] = {"a": "x", "b": "y"}
    idx = IVFIndex(DIM, nlist=32, nprobe=2)
    idx.add([f"s{i}" for i in range(N)], x, meta)
    store = api.make_store([portals[0].url])
    cid, _ = api.save(idx, store)

    flt = {"a": "x", "b": "y"}
    cpu = api.Database.open(cid, [portals[0].url])
    q = x[0].tolist()
    want = cpu.search_with_stats(q, 10, flt)
    assert len(want["hits"]) == 10 and {h["id"] for h in want["hits"]} <= {f"s{i}" for i in both}
    planned = len(api.Database.open(cid, [portals[0].url]).plan(x[0], 10, flt))

    key = shared_harness.open(cid, [portals[0].url])
    res = shared_harness.search(key, q, k=10, filter=flt)
    assert res["ok"], res
    got = res["value"]
    assert_same_hits(got["hits"], want["hits"])
    assert all(h["metadata"] == {"a": "x", "b": "y"} for h in got["hits"])
    # more chunks than the first round planned, fetched in further rounds, as on CPython
    assert got["stats"]["chunksFetched"] > planned, (got["stats"], planned)
    assert got["stats"]["rounds"] > 1, got["stats"]
    assert (got["stats"]["chunksFetched"], got["stats"]["rounds"]) == (want["stats"]["chunksFetched"], want["stats"]["rounds"])
