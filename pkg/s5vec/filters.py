"""Metadata filter language, parsed once and checked per record.

Syntax (a subset of MongoDB's, which web developers already know)::

    {"channel": "kitchen"}                      equality (shorthand for {"$eq": ...})
    {"channel": {"$in": ["a", "b"]}}            membership ($nin for the negation)
    {"uploaded": {"$gte": 1.6e9, "$lt": 1.7e9}}  range on numbers or ISO-8601 strings
    {"tags": "cooking"}                         on a list field: matches if any element equals
    {"$and": [f1, f2]}, {"$or": [f1, f2]}       combinators; several keys at one level are ANDed
    {"_timestamp": {"$gte": ...}}               the record's own timestamp (Unix seconds)

A record missing the field never matches a comparison (but matches ``$ne`` / ``$nin``).
A filter nests at most 32 levels and has at most 1,000 nodes (:mod:`s5vec.limits`).
An unknown operator, a non-list operand for ``$in``, a range bound that is neither a number
nor a string, or a nested object used as a value all raise :class:`FilterError` at parse time,
so a bad filter never reaches an index.

Besides checking one record, a filter can *bound* how many records of a group can match from
a :func:`summarize` of the group (value counts of low-cardinality fields, min/max of numbers
and strings). IVF keeps one summary per inverted list so that a filtered search skips lists
that cannot match and probes the nearest lists that can, without fetching the others.
"""
from __future__ import annotations

import json
import operator
from typing import Any, Callable, Iterable, Mapping

from . import limits
from .errors import FilterError

Summary = Mapping[str, Any]  # {"n": records, "fields": {name: FieldSummary}}
TIMESTAMP_FIELD = "_timestamp"
MAX_DISTINCT = 32  # value counts are kept per field up to this many distinct values
_RANGE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_SCALARS = (str, int, float, bool, type(None))


# -- value helpers ---------------------------------------------------------------------------
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


def value_key(v: Any) -> str | None:
    """A typed string key for a scalar (``True`` and ``1`` must not collide), None if not summarisable."""
    if isinstance(v, bool):
        return f"b:{int(v)}"
    if isinstance(v, (int, float)):
        return f"n:{float(v)!r}"
    if isinstance(v, str):
        return f"s:{v}"
    return None


# -- nodes -----------------------------------------------------------------------------------
class _Node:
    def matches(self, r: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def bound(self, s: Summary) -> int:
        """An upper bound of the records in the summarised group that can match."""
        return int(s.get("n", 0))

    def estimate(self, s: Summary) -> float:
        """Expected matches in the group (independence and uniform ranges assumed); <= bound."""
        return float(self.bound(s))


class _And(_Node):
    def __init__(self, subs: list[_Node]) -> None:
        self.subs = subs

    def matches(self, r: Mapping[str, Any]) -> bool:
        return all(p.matches(r) for p in self.subs)

    def bound(self, s: Summary) -> int:
        return min(p.bound(s) for p in self.subs)

    def estimate(self, s: Summary) -> float:
        n = float(s.get("n", 0)) or 1.0
        out = n
        for p in self.subs:
            out *= p.estimate(s) / n
        return min(out, float(self.bound(s)))


class _Or(_Node):
    def __init__(self, subs: list[_Node]) -> None:
        self.subs = subs

    def matches(self, r: Mapping[str, Any]) -> bool:
        return any(p.matches(r) for p in self.subs)

    def bound(self, s: Summary) -> int:
        return min(int(s.get("n", 0)), sum(p.bound(s) for p in self.subs))

    def estimate(self, s: Summary) -> float:
        return min(float(s.get("n", 0)), sum(p.estimate(s) for p in self.subs))


class _Not(_Node):
    """``$ne`` / ``$nin``: also true for records without the field, so no useful bound."""

    def __init__(self, sub: _Node) -> None:
        self.sub = sub

    def matches(self, r: Mapping[str, Any]) -> bool:
        return not self.sub.matches(r)

    def estimate(self, s: Summary) -> float:
        return max(0.0, float(s.get("n", 0)) - self.sub.estimate(s))


class _Eq(_Node):
    def __init__(self, field: str, want: list[Any]) -> None:
        self.field, self.want = field, want

    def matches(self, r: Mapping[str, Any]) -> bool:
        return any(_same_kind(v, w) and v == w for v in _values(r, self.field) for w in self.want)

    def bound(self, s: Summary) -> int:
        f = s.get("fields", {}).get(self.field)
        if f is None:
            return 0
        counts = f.get("values")
        if counts is not None:
            return min(int(f["n"]), sum(int(counts.get(value_key(w), 0)) for w in self.want))
        if all(_outside(f, w, w, True, True) for w in self.want):
            return 0
        return int(f["n"])


class _Range(_Node):
    def __init__(self, field: str, op: str, bound_value: Any) -> None:
        self.field, self.op, self.value = field, op, bound_value
        self.cmp = _RANGE_OPS[op]

    def matches(self, r: Mapping[str, Any]) -> bool:
        return any(_same_kind(v, self.value) and self.cmp(v, self.value) for v in _values(r, self.field))

    def bound(self, s: Summary) -> int:
        f = s.get("fields", {}).get(self.field)
        if f is None:
            return 0
        lo = hi = None
        if self.op in ("$gt", "$gte"):
            lo = self.value
        else:
            hi = self.value
        strict = self.op in ("$gt", "$lt")
        return 0 if _outside(f, lo, hi, not strict, not strict) else int(f["n"])

    def estimate(self, s: Summary) -> float:
        b = self.bound(s)
        f = s.get("fields", {}).get(self.field)
        if not b or f is None or isinstance(self.value, str) or f.get("lo") is None:
            return float(b)
        lo, hi = float(f["lo"]), float(f["hi"])
        if hi <= lo:
            return float(b)
        frac = (hi - self.value) / (hi - lo) if self.op in ("$gt", "$gte") else (self.value - lo) / (hi - lo)
        return b * min(1.0, max(0.0, frac))


def _outside(f: Mapping[str, Any], lo: Any, hi: Any, lo_inc: bool, hi_inc: bool) -> bool:
    """True when no value of the field's kind can lie within [lo, hi] (None = open end)."""
    probe = lo if lo is not None else hi
    if isinstance(probe, bool) or probe is None:
        return False
    key = ("lo", "hi") if isinstance(probe, (int, float)) else ("slo", "shi") if isinstance(probe, str) else None
    if key is None:
        return False
    fmin, fmax = f.get(key[0]), f.get(key[1])
    if fmin is None:  # no value of this kind at all
        return True
    if lo is not None and (fmax < lo or (fmax == lo and not lo_inc)):
        return True
    if hi is not None and (fmin > hi or (fmin == hi and not hi_inc)):
        return True
    return False


class Filter:
    """A parsed filter: ``matches(record_fields)`` per record, ``bound(summary)`` per group."""

    __slots__ = ("doc", "_root")

    def __init__(self, doc: Mapping[str, Any], root: _Node) -> None:
        self.doc = doc
        self._root = root

    def matches(self, fields: Mapping[str, Any]) -> bool:
        return self._root.matches(fields)

    def bound(self, summary: Summary) -> int:
        return self._root.bound(summary)

    def estimate(self, summary: Summary) -> float:
        return self._root.estimate(summary)

    def key(self) -> str:
        """A canonical string for caching per-filter results."""
        return json.dumps(self.doc, sort_keys=True, default=str)

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
        except RecursionError:
            raise FilterError(f"filter nested too deeply (more than {limits.MAX_FILTER_DEPTH} levels)") from None
    if not isinstance(doc, Mapping):
        raise FilterError(f"filter must be an object, got {type(doc).__name__}")
    if not doc:
        return None
    limits.check_filter_shape(doc)  # iterative: bounds the recursive parse below
    return Filter(doc, _parse_doc(doc))


def fields_of(metadata: Mapping[str, Any] | None, timestamp: float | None) -> Mapping[str, Any]:
    """The view a filter sees of a record: its metadata plus ``_timestamp``."""
    if timestamp is None:
        return metadata or {}
    out = dict(metadata or {})
    out[TIMESTAMP_FIELD] = timestamp
    return out


def summarize(metadata: Iterable[Mapping[str, Any] | None], timestamps: Iterable[float] | None = None) -> dict[str, Any]:
    """Summary of a group of records for :meth:`Filter.bound` (CBOR-able, deterministic)."""
    fields: dict[str, dict[str, Any]] = {}
    n = 0
    ts_iter = iter(timestamps) if timestamps is not None else None
    for meta in metadata:
        n += 1
        items = list((meta or {}).items())
        if ts_iter is not None:
            t = next(ts_iter)
            if t == t:  # NaN means no timestamp
                items.append((TIMESTAMP_FIELD, float(t)))
        for name, value in items:
            vals = value if isinstance(value, (list, tuple)) else [value]
            f = fields.get(name)
            if f is None:
                f = fields[name] = {"n": 0, "values": {}, "lo": None, "hi": None, "slo": None, "shi": None}
            f["n"] += 1
            seen: set[str] = set()
            for v in vals:
                key = value_key(v)
                if key is None or key in seen:
                    continue
                seen.add(key)
                if f["values"] is not None:
                    f["values"][key] = f["values"].get(key, 0) + 1
                    if len(f["values"]) > MAX_DISTINCT:
                        f["values"] = None
                if isinstance(v, bool):
                    continue
                lo, hi = ("lo", "hi") if isinstance(v, (int, float)) else ("slo", "shi")
                if f[lo] is None or v < f[lo]:
                    f[lo] = v
                if f[hi] is None or v > f[hi]:
                    f[hi] = v
    for f in fields.values():
        for key in ("values", "lo", "hi", "slo", "shi"):
            if f[key] is None:
                del f[key]
    return {"n": n, "fields": fields}


# -- parsing ---------------------------------------------------------------------------------
def _parse_doc(doc: Mapping[str, Any]) -> _Node:
    nodes: list[_Node] = []
    for key, value in doc.items():
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} takes a non-empty list of filters")
            subs = []
            for sub in value:
                if not isinstance(sub, Mapping) or not sub:
                    raise FilterError(f"{key} items must be non-empty objects, got {sub!r}")
                subs.append(_parse_doc(sub))
            nodes.append(_And(subs) if key == "$and" else _Or(subs))
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key!r} at the top level")
        else:
            nodes.append(_parse_field(key, value))
    return nodes[0] if len(nodes) == 1 else _And(nodes)


def _check_scalar(op: str, value: Any) -> Any:
    if not isinstance(value, _SCALARS):
        raise FilterError(f"{op} takes a string, number, boolean or null, got {type(value).__name__}")
    return value


def _parse_field(field: str, cond: Any) -> _Node:
    if not isinstance(cond, Mapping):
        return _Eq(field, [_check_scalar("equality", cond)])
    if not cond:
        raise FilterError(f"empty condition for field {field!r}")
    nodes: list[_Node] = []
    for op, arg in cond.items():
        if op == "$eq":
            nodes.append(_Eq(field, [_check_scalar(op, arg)]))
        elif op == "$ne":
            nodes.append(_Not(_Eq(field, [_check_scalar(op, arg)])))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise FilterError(f"{op} takes a list, got {type(arg).__name__}")
            member = _Eq(field, [_check_scalar(op, v) for v in arg])
            nodes.append(member if op == "$in" else _Not(member))
        elif op in _RANGE_OPS:
            if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
                raise FilterError(f"{op} takes a number or a string (e.g. an ISO-8601 date), got {arg!r}")
            nodes.append(_Range(field, op, arg))
        else:
            raise FilterError(f"unknown operator {op!r} for field {field!r}")
    return nodes[0] if len(nodes) == 1 else _And(nodes)
