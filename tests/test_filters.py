import pytest

from s5vec.errors import FilterError
from s5vec.filters import fields_of, parse

REC = {"channel": "cooking-hub", "views": 120, "tags": ["pasta", "vegan"], "uploaded": "2024-05-01T10:00:00Z",
       "live": False}


def m(doc, rec=REC, ts=None):
    return parse(doc).matches(fields_of(rec, ts))


def test_equality_and_lists():
    assert m({"channel": "cooking-hub"})
    assert not m({"channel": "gaming-hub"})
    assert m({"tags": "vegan"})
    assert not m({"tags": "ramen"})
    assert m({"live": False}) and not m({"live": 0})  # booleans are not numbers
    assert m({"views": 120.0})


def test_in_nin_ne():
    assert m({"channel": {"$in": ["a", "cooking-hub"]}})
    assert not m({"channel": {"$nin": ["a", "cooking-hub"]}})
    assert m({"tags": {"$in": ["ramen", "pasta"]}})
    assert m({"missing": {"$ne": 3}})
    assert m({"missing": {"$nin": [3]}})


def test_ranges_numbers_strings_and_timestamp():
    assert m({"views": {"$gte": 120, "$lt": 121}})
    assert not m({"views": {"$gt": 120}})
    assert m({"uploaded": {"$gte": "2024-01-01", "$lt": "2025-01-01"}})
    assert not m({"uploaded": {"$gt": 5}})  # a string field never matches a number bound
    assert m({"_timestamp": {"$gte": 100}}, ts=150.0)
    assert not m({"_timestamp": {"$gte": 200}}, ts=150.0)
    assert not m({"missing": {"$gt": 1}})


def test_and_or():
    assert m({"$or": [{"channel": "x"}, {"views": {"$gt": 100}}]})
    assert not m({"$and": [{"channel": "cooking-hub"}, {"views": {"$gt": 200}}]})
    assert m({"channel": "cooking-hub", "$or": [{"tags": "pasta"}, {"tags": "x"}]})


def test_empty_and_json():
    assert parse(None) is None and parse({}) is None
    assert parse('{"views": {"$lte": 120}}').matches(REC)


@pytest.mark.parametrize("bad", [
    {"views": {"$regex": "x"}},
    {"$nor": [{"a": 1}]},
    {"views": {"$in": 3}},
    {"views": {"$gt": [1]}},
    {"views": {"$gt": True}},
    {"views": {"$gt": None}},
    {"views": {}},
    {"a": {"$eq": {"nested": 1}}},
    {"$and": []},
    {"$or": [3]},
    [1, 2],
    "not json",
    7,
])
def test_bad_filters_raise(bad):
    with pytest.raises(FilterError):
        parse(bad)


def test_summary_bounds_are_sound_and_tight():
    """bound(summary) never undercounts (an IVF list skipped by it truly has no match)."""
    import random

    from s5vec.filters import summarize

    rnd = random.Random(4)
    chans = [f"ch{i}" for i in range(50)]
    groups = []
    for g in range(40):
        recs = [{"ch": rnd.choice(chans[g % 5 * 10: g % 5 * 10 + (3 if g % 2 else 40)]),
                 "views": rnd.randrange(g * 100, g * 100 + 500), "tags": rnd.sample(["a", "b", "c", "d"], 2),
                 "date": f"2024-{rnd.randrange(1, 13):02d}-01", "flag": rnd.random() < 0.2}
                for _ in range(rnd.randrange(0, 60))]
        ts = [1000.0 + g * 10 + i for i in range(len(recs))]
        groups.append((recs, ts))
    docs = [{"ch": "ch3"}, {"ch": {"$in": ["ch11", "ch42"]}}, {"views": {"$gte": 1500, "$lt": 1600}},
            {"views": {"$gt": 3899}}, {"date": {"$lt": "2024-02-01"}}, {"tags": "d"}, {"flag": True},
            {"$or": [{"ch": "ch0"}, {"views": {"$lte": 50}}]}, {"ch": {"$ne": "ch1"}}, {"missing": 1},
            {"_timestamp": {"$gte": 1200, "$lt": 1210}}, {"$and": [{"ch": "ch20"}, {"tags": "a"}]}]
    pruned = 0
    for doc in docs:
        f = parse(doc)
        for recs, ts in groups:
            actual = sum(f.matches(fields_of(r, t)) for r, t in zip(recs, ts))
            b = f.bound(summarize(recs, ts))
            assert b >= actual, (doc, b, actual)
            pruned += b == 0 and len(recs) > 0
    assert pruned > 100  # the summaries really do rule groups out


def test_summary_keeps_types_apart():
    from s5vec.filters import summarize

    s = summarize([{"x": True}, {"x": 1}, {"x": "1"}])
    assert parse({"x": True}).bound(s) == 1 and parse({"x": 1}).bound(s) == 1 and parse({"x": "1"}).bound(s) == 1
    assert parse({"x": False}).bound(s) == 0
