"""Shared test kit: every test file (tests/ and e2e/) compares hits through here.

Grows into the one data generator, the flat-index oracle and the in-memory chunk I/O
(issue 7); this first part is the hit comparator the CPython and browser tests share.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

SCORE_TOL = 1e-5


def assert_same_hits(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]],
                     *, tol: float = SCORE_TOL, metadata: bool = True) -> None:
    """Same hits, rank by rank, allowing only genuine ties to swap ids.

    Scores must agree within ``tol`` at every rank. Ids must be equal at every rank, except
    inside a run of tied scores (|a - b| <= tol), where the *set* of ids of the run must be
    equal — except for the last run, which may be cut by ``k`` and only needs the same size.
    An off-by-one id therefore fails unless its score ties its neighbour's.
    """
    assert len(got) == len(want), f"{len(got)} hits, expected {len(want)}"
    for r, (g, w) in enumerate(zip(got, want)):
        assert math.isclose(float(g["score"]), float(w["score"]), abs_tol=tol), (r, g, w)
    i, n = 0, len(want)
    while i < n:
        j = i + 1
        while j < n and abs(float(want[j]["score"]) - float(want[i]["score"])) <= tol:
            j += 1
        gids = [h["id"] for h in got[i:j]]
        wids = [h["id"] for h in want[i:j]]
        if j - i == 1:
            assert gids == wids, f"rank {i}: id {gids[0]!r}, expected {wids[0]!r}"
        elif j < n:  # a complete run of ties: same ids, any order
            assert sorted(gids) == sorted(wids), f"ranks {i}..{j - 1} (tied): {gids}, expected {wids}"
        i = j
    if metadata:
        want_meta = {h["id"]: h.get("metadata") for h in want}
        for g in got:
            if g["id"] in want_meta:
                assert g.get("metadata") == want_meta[g["id"]], (g["id"], g.get("metadata"), want_meta[g["id"]])
