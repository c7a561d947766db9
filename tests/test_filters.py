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
