"""The shared hit comparator must catch what the old score-only comparison let through."""
import pytest

from kit import assert_same_hits

HITS = [{"id": "a", "score": 0.9}, {"id": "b", "score": 0.8}, {"id": "c", "score": 0.8}, {"id": "d", "score": 0.7}]


def test_equal_and_tied_swaps_pass():
    assert_same_hits(HITS, HITS)
    assert_same_hits([HITS[0], HITS[2], HITS[1], HITS[3]], HITS)


@pytest.mark.parametrize("bad", [
    [{"id": "x", "score": 0.9}] + HITS[1:],            # wrong id, same score: the old comparator passed it
    HITS[:3] + [{"id": "e", "score": 0.7}],
    [HITS[0], {"id": "b", "score": 0.8}, {"id": "x", "score": 0.8}, HITS[3]],  # tied run with a stranger
    HITS[:3],
])
def test_wrong_hits_fail(bad):
    with pytest.raises(AssertionError):
        assert_same_hits(bad, HITS)


def test_metadata_compared():
    want = [{"id": "a", "score": 1.0, "metadata": {"t": 1}}]
    with pytest.raises(AssertionError):
        assert_same_hits([{"id": "a", "score": 1.0, "metadata": {"t": 2}}], want)


# ------------------------------------------------------------------ generator, chunk I/O, oracle

import numpy as np  # noqa: E402

import kit  # noqa: E402


def test_generator_is_deterministic_and_two_level():
    a, la = kit.clustered(500, 8, 10, seed=3, labels=True)
    b = kit.clustered(500, 8, 10, seed=3)
    assert a.dtype == np.float32 and a.shape == (500, 8) and np.array_equal(a, b)
    assert la.shape == (500,) and set(la.tolist()) <= set(range(10))
    two, lt = kit.clustered(2000, 8, seed=3, spread=0.01, top=4, sub=10, spread_sub=0.05, labels=True)
    assert two.shape == (2000, 8) and set(lt.tolist()) <= set(range(40))
    # sub-clusters of one topic sit together: rows of sub-clusters 0 and 9 (topic 0) are closer
    # to each other than to rows of sub-cluster 10 (topic 1)
    a0, a9, b10 = two[lt == 0][0], two[lt == 9][0], two[lt == 10][0]
    assert np.linalg.norm(a0 - a9) < np.linalg.norm(a0 - b10)


def test_mem_chunks_go_through_real_cbor_and_blake3():
    from s5vec import layout
    from s5vec.errors import FormatError, IntegrityError

    io = kit.MemChunks()
    cid = io.put("flat_rows", {"ids": ["a"], "vectors": np.ones((1, 2), np.float32), "metadata": [{}],
                               "timestamps": np.zeros(1)})
    assert io.client.blobs[cid] == layout.encode_chunk("flat_rows", io.get(cid, "flat_rows"))
    with pytest.raises(FormatError):
        io.fresh().get(cid, "hnsw_nodes")  # the kind is checked
    bad = io.fresh()
    bad.client.blobs[cid] = io.client.blobs[cid][:-1] + b"\0"
    with pytest.raises(IntegrityError):
        bad.get(cid)


def test_recall_against_the_flat_oracle_can_fail():
    x = kit.clustered(300, 8, 5, seed=1)
    ids = [f"i{k}" for k in range(300)]
    oracle = kit.flat_oracle(ids, x)
    q = kit.queries_near(x, 10)
    assert kit.recall_at_k(oracle, q, 5, oracle=oracle) == 1.0
    wrong = kit.flat_oracle(ids, x[::-1].copy())  # same ids, vectors shuffled: a broken index
    assert kit.recall_at_k(wrong, q, 5, oracle=oracle) < 0.5
