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
