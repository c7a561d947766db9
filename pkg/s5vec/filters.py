"""Metadata filter language, parsed once and checked per record.

Syntax (a subset of MongoDB's, which web developers already know)::

    {"channel": "kitchen"}                      equality (shorthand for {"$eq": ...})
    {"channel": {"$in": ["a", "b"]}}            membership ($nin for the negation)
    {"uploaded": {"$gte": 1.6e9, "$lt": 1.7e9}}  range on numbers or ISO-8601 strings
    {"tags": "cooking"}                         on a list field: matches if any element equals
    {"$and": [f1, f2]}, {"$or": [f1, f2]}       combinators; several keys at one level are ANDed
    {"_timestamp": {"$gte": ...}}               the record's own timestamp (Unix seconds)

A record missing the field never matches a comparison (but matches ``$ne`` / ``$nin``).
An unknown operator, a non-list operand for ``$in``, a range bound that is neither a number
nor a string, or a nested object used as a value all raise :class:`FilterError` at parse time,
so a bad filter never reaches an index.
"""
from __future__ import annotations

import json
import operator
from typing import Any, Callable, Mapping

from .errors import FilterError

Predicate = Callable[[Mapping[str, Any]], bool]

TIMESTAMP_FIELD = "_timestamp"
_RANGE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_SCALARS = (str, int, float, bool, type(None))


class Filter:
    """A parsed filter. ``matches(record_fields)`` is the only thing indexes call."""

    __slots__ = ("doc", "_pred")

    def __init__(self, doc: Mapping[str, Any], pred: Predicate) -> None:
        self.doc = doc
        self._pred = pred

    def matches(self, fields: Mapping[str, Any]) -> bool:
        return self._pred(fields)

    def __repr__(self) -> str:
        return f"Filter({json.dumps(self.doc, default=str)})"


def parse(doc: Any) -> Filter | None:
    """Parse a filter document (a dict, a JSON string, or ``None``/``{}`` for no filter)."""
    if doc is None:
        return None
    if isinstance(doc, Filter):
        return doc
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise FilterError(f"filter is not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise FilterError(f"filter must be an object, got {type(doc).__name__}")
    if not doc:
        return None
    return Filter(doc, _parse_doc(doc))


def fields_of(metadata: Mapping[str, Any] | None, timestamp: float | None) -> Mapping[str, Any]:
    """The view a filter sees of a record: its metadata plus ``_timestamp``."""
    if timestamp is None:
        return metadata or {}
    out = dict(metadata or {})
    out[TIMESTAMP_FIELD] = timestamp
    return out


def _parse_doc(doc: Mapping[str, Any]) -> Predicate:
    preds: list[Predicate] = []
    for key, value in doc.items():
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters")
            subs = []
            for sub in value:
                if not isinstance(sub, Mapping):
                    raise FilterError(f"{key} items must be objects, got {type(sub).__name__}")
                subs.append(_parse_doc(sub))
            preds.append(_all(subs) if key == "$and" else _any(subs))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top level")
        else:
            preds.append(_parse_field(key, value))
    return _all(preds)


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    return lambda r: all(p(r) for p in preds)


def _any(preds: list[Predicate]) -> Predicate:
    return lambda r: any(p(r) for p in preds)


def _check_scalar(op: str, value: Any) -> Any:
    if not isinstance(value, _SCALARS):
        raise FilterError(f"{op} takes a string, number, boolean or null, got {type(value).__name__}")
    return value


def _parse_field(field: str, cond: Any) -> Predicate:
    if not isinstance(cond, Mapping):
        return _eq(field, _check_scalar("equality", cond))
    if not cond:
        raise FilterError(f"empty condition for field {field!r}")
    preds: list[Predicate] = []
    for op, arg in cond.items():
        if op == "$eq":
            preds.append(_eq(field, _check_scalar(op, arg)))
        elif op == "$ne":
            eq = _eq(field, _check_scalar(op, arg))
            preds.append(lambda r, eq=eq: not eq(r))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise FilterError(f"{op} takes a list, got {type(arg).__name__}")
            values = [_check_scalar(op, v) for v in arg]
            member = _member(field, values)
            preds.append(member if op == "$in" else (lambda r, m=member: not m(r)))
        elif op in _RANGE_OPS:
            if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
                raise FilterError(f"{op} takes a number or a string (e.g. an ISO-8601 date), got {arg!r}")
            preds.append(_range(field, _RANGE_OPS[op], arg))
        else:
            raise FilterError(f"unknown operator {op!r} for field {field!r}")
    return _all(preds)


def _same_kind(a: Any, b: Any) -> bool:
    """Numbers compare with numbers, strings with strings; bools are not numbers here."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)):
        return isinstance(b, (int, float))
    return type(a) is type(b)


def _values(r: Mapping[str, Any], field: str) -> list[Any]:
    if field not in r:
        return []
    v = r[field]
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _eq(field: str, want: Any) -> Predicate:
    return lambda r: any(_same_kind(v, want) and v == want for v in _values(r, field))


def _member(field: str, values: list[Any]) -> Predicate:
    def pred(r: Mapping[str, Any]) -> bool:
        return any(_same_kind(v, w) and v == w for v in _values(r, field) for w in values)

    return pred


def _range(field: str, cmp: Callable[[Any, Any], bool], bound: Any) -> Predicate:
    return lambda r: any(_same_kind(v, bound) and cmp(v, bound) for v in _values(r, field))
