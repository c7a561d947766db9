"""Streaming record readers for bulk builds: records arrive in blocks, never all at once.

A :class:`Source` yields :class:`Block` s of at most ``rows`` records (ids, a float32 matrix,
metadata dicts, timestamps with NaN where the input had none) and can be read more than once
(a build reads a training sample first, then everything). Three readers:

* :class:`NpySource` - a ``.npy`` matrix, read block by block with ``pread`` (not memory-mapped,
  so pages already read do not stay in the process's memory),
  optionally with a JSON-lines side file of ``{"id", "metadata", "timestamp"}`` (or bare id
  strings), one line per row; without it the ids are the row numbers as strings.
* :class:`JsonlSource` - JSON lines of ``{"id", "vector", "metadata", "timestamp"}``.
* :class:`ParquetSource` - a Parquet file read through pyarrow in record batches: columns
  ``vector`` (list / fixed-size list of floats, or change it with ``vector_column``), ``id``
  (optional: row numbers otherwise), ``timestamp`` (optional, Unix seconds) and ``metadata``
  (optional: a JSON string or a struct per row); every other column is copied into the
  metadata when ``extra_columns_as_metadata`` is on (the default).

:func:`open_source` picks the reader from the file name. Bad input raises a typed error
(:class:`InvalidVectorError` for a wrong dtype, :class:`DimensionError` for a wrong width,
:class:`InvalidArgumentError` for unreadable files and bad records) before a build uploads
anything.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from .errors import DimensionError, InvalidArgumentError, InvalidVectorError

DEFAULT_BLOCK = 16_384
"""Rows per block: a multiple of every blocked loop in the build, so blocks score identically."""


@dataclass
class Block:
    """``n`` records: ids, float32 (n, dim) vectors, metadata dicts, float64 timestamps (NaN = none)."""

    start: int
    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@runtime_checkable
class Source(Protocol):
    """A re-readable stream of record blocks of one dimension."""

    dim: int
    count: int | None  # None when unknown until read (JSON lines, stdin)

    def blocks(self, rows: int = DEFAULT_BLOCK) -> Iterator[Block]: ...


def _check_vectors(x: np.ndarray, dim: int, where: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != dim:
        raise DimensionError(f"{where}: vectors of shape {x.shape}, expected (n, {dim})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InvalidVectorError(f"{where}: row {bad} of the block holds NaN or infinity")
    return x


def _timestamp(t: Any, where: str) -> float:
    if t is None:
        return float("nan")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise InvalidArgumentError(f"{where}: timestamp must be Unix seconds (a number), got {t!r}")
    t = float(t)
    if not np.isfinite(t):
        raise InvalidArgumentError(f"{where}: timestamp must be finite")
    return t


def _metadata(m: Any, where: str) -> dict[str, Any]:
    if m is None:
        return {}
    if not isinstance(m, dict):
        raise InvalidArgumentError(f"{where}: metadata must be an object, got {type(m).__name__}")
    return m


def _id(i: Any, where: str) -> str:
    if not isinstance(i, str) or not i:
        raise InvalidArgumentError(f"{where}: id must be a non-empty string, got {i!r}")
    return i


class InputError(InvalidArgumentError):
    """Input the CLI cannot read at all (not UTF-8, not JSON, nested too deep): exit status 2."""

    exit_code = 2

    @property
    def name(self) -> str:
        return "InvalidArgumentError"


def json_lines(path: str, what: str) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) per non-blank line of ``path`` (``-`` = stdin).

    Bytes are decoded per line so a non-UTF-8 byte or bad JSON is a one-line typed error naming
    its line, for the CLI and for streamed build input alike."""
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {what} file {path}: {exc.strerror}") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{n}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                                 ) from None
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{n}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
            except RecursionError:
                raise InputError(f"{path}:{n}: JSON nested too deeply") from None


class NpySource:
    """A ``.npy`` float matrix (float16/32/64, C order) read in row blocks, plus an optional JSON-lines ids file."""

    def __init__(self, path: str | os.PathLike, ids: str | os.PathLike | None = None, *, dim: int | None = None) -> None:
        self.path = os.fspath(path)
        self.ids_path = None if ids is None else os.fspath(ids)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(fh)
                self._offset = fh.tell()
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot read {self.path} as a .npy array: {exc}") from None
        if dtype.kind != "f" or dtype.hasobject:
            raise InvalidVectorError(f"{self.path}: vectors must be floats (float16/32/64), the array holds {dtype}")
        if len(shape) != 2 or shape[1] == 0:
            raise InvalidVectorError(f"{self.path}: expected a 2-d (n, dim) array, got shape {shape}")
        if fortran and shape[0] > 1:
            raise InvalidVectorError(f"{self.path}: a Fortran-order array cannot be streamed by rows; save it C-ordered")
        if dim is not None and shape[1] != dim:
            raise DimensionError(f"{self.path}: vectors have dimension {shape[1]}, expected {dim}")
        self.dtype = dtype
        self.dim = int(shape[1])
        self.count = int(shape[0])
        if os.path.getsize(self.path) < self._offset + self.count * self.dim * dtype.itemsize:
            raise InvalidArgumentError(f"{self.path} is truncated: its header promises shape {shape}")

    def _rows(self, fd: int, start: int, stop: int) -> np.ndarray:
        """Rows start..stop read with pread (no memory map, so pages read do not stay in RSS)."""
        width = self.dim * self.dtype.itemsize
        buf = os.pread(fd, (stop - start) * width, self._offset + start * width)
        return np.frombuffer(buf, dtype=self.dtype).reshape(stop - start, self.dim)

    def _side(self) -> Iterator[tuple[str, dict[str, Any], float]]:
        if self.ids_path is None:
            n = 0
            while True:
                yield str(n), {}, float("nan")
                n += 1
        rows = 0
        for line, rec in json_lines(self.ids_path, "ids"):
            where = f"{self.ids_path}:{line}"
            if isinstance(rec, str):
                yield _id(rec, where), {}, float("nan")
            elif isinstance(rec, dict):
                yield _id(rec.get("id"), where), _metadata(rec.get("metadata"), where), _timestamp(rec.get("timestamp"), where)
            else:
                raise InvalidArgumentError(f"{where}: each line must be an id string or an object with 'id'")
            rows += 1
        if rows != self.count:
            raise InvalidArgumentError(f"{self.ids_path} has {rows} lines, {self.path} has {self.count} rows")

    def blocks(self, rows: int = DEFAULT_BLOCK) -> Iterator[Block]:
        side = self._side()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            yield from self._blocks(fd, side, rows)
        finally:
            os.close(fd)
        if self.ids_path is not None:
            for _ in side:  # a longer side file: the generator raises the count mismatch
                pass

    def _blocks(self, fd: int, side: Iterator[tuple[str, dict[str, Any], float]], rows: int) -> Iterator[Block]:
        for s in range(0, self.count, rows):
            x = _check_vectors(self._rows(fd, s, min(s + rows, self.count)), self.dim, f"{self.path} rows {s}..")
            ids, metas, ts = [], [], np.empty(x.shape[0], np.float64)
            for r in range(x.shape[0]):
                i, m, t = next(side)
                ids.append(i)
                metas.append(m)
                ts[r] = t
            yield Block(s, ids, x, metas, ts)


class JsonlSource:
    """JSON lines of ``{"id", "vector", "metadata", "timestamp"}`` objects."""

    def __init__(self, path: str | os.PathLike, *, dim: int | None = None) -> None:
        self.path = os.fspath(path)
        self.count: int | None = None
        if dim is None:
            for n, rec in json_lines(self.path, "records"):
                dim = len(self._vector(rec, n, None))
                break
            else:
                raise InvalidArgumentError(f"{self.path}: no records")
        self.dim = int(dim)

    def _vector(self, rec: Any, n: int, dim: int | None) -> list:
        if not isinstance(rec, dict) or "id" not in rec or "vector" not in rec:
            raise InvalidArgumentError(f"{self.path}:{n}: each line must be an object with id and vector")
        v = rec["vector"]
        if not isinstance(v, list) or not v:
            raise InvalidVectorError(f"{self.path}:{n}: vector must be a non-empty array of numbers")
        if dim is not None and len(v) != dim:
            raise DimensionError(f"{self.path}:{n}: vector has dimension {len(v)}, expected {dim}")
        return v

    def blocks(self, rows: int = DEFAULT_BLOCK) -> Iterator[Block]:
        ids: list[str] = []
        vecs: list[list] = []
        metas: list[dict[str, Any]] = []
        ts: list[float] = []
        start = 0
        for n, rec in json_lines(self.path, "records"):
            where = f"{self.path}:{n}"
            vecs.append(self._vector(rec, n, self.dim))
            ids.append(_id(rec["id"], where))
            metas.append(_metadata(rec.get("metadata"), where))
            ts.append(_timestamp(rec.get("timestamp"), where))
            if len(ids) == rows:
                yield self._block(start, ids, vecs, metas, ts)
                start += len(ids)
                ids, vecs, metas, ts = [], [], [], []
        if ids:
            yield self._block(start, ids, vecs, metas, ts)
        self.count = start + len(ids)

    def _block(self, start: int, ids, vecs, metas, ts) -> Block:
        try:
            x = np.asarray(vecs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidVectorError(f"{self.path}: records {start}..: vectors must be numbers ({exc})") from None
        x = _check_vectors(x, self.dim, f"{self.path} records {start}..")
        return Block(start, ids, x, metas, np.asarray(ts, dtype=np.float64))


class ParquetSource:
    """A Parquet file, read in record batches through pyarrow (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, *, vector_column: str = "vector", id_column: str = "id",
                 extra_columns_as_metadata: bool = True, dim: int | None = None) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow is a build dependency
            raise InvalidArgumentError("reading Parquet needs pyarrow (pip install pyarrow)") from None
        self.path = os.fspath(path)
        self.vector_column, self.id_column = vector_column, id_column
        self.extra = extra_columns_as_metadata
        try:
            meta = pq.ParquetFile(self.path)
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot read {self.path} as Parquet: {exc}") from None
        names = meta.schema_arrow.names
        if vector_column not in names:
            raise InvalidArgumentError(f"{self.path}: no {vector_column!r} column (columns: {', '.join(names)})")
        self.count = int(meta.metadata.num_rows)
        self._names = names
        if dim is None:
            first = next(self._batches(1), None)
            if first is None:
                raise InvalidArgumentError(f"{self.path}: no rows")
            dim = first.vectors.shape[1]
        self.dim = int(dim)

    def _batches(self, rows: int, dim: int | None = None) -> Iterator[Block]:
        import pyarrow.parquet as pq

        start = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=rows):
            cols = {name: batch.column(name) for name in batch.schema.names}
            n = batch.num_rows
            where = f"{self.path} rows {start}.."
            vcol = cols[self.vector_column]
            try:
                flat = np.asarray(vcol.flatten().to_numpy(zero_copy_only=False))
                if flat.dtype.kind not in "fiu":
                    raise ValueError(f"values of type {vcol.type}")
                width = flat.shape[0] // n if n else 0
                if vcol.null_count or width * n != flat.shape[0]:
                    raise ValueError("rows of different lengths or nulls")
                offsets = getattr(vcol, "offsets", None)  # variable-size lists: every row the same length
                if offsets is not None and (np.diff(offsets.to_numpy()) != width).any():
                    raise ValueError("rows of different lengths")
                x = flat.reshape(n, width)
            except (ValueError, TypeError, AttributeError) as exc:
                raise InvalidVectorError(f"{where}: column {self.vector_column!r} is not a list of numbers ({exc})") from None
            x = _check_vectors(x, dim if dim is not None else width, where)
            ids = ([_id(i, where) for i in cols[self.id_column].to_pylist()] if self.id_column in cols
                   else [str(start + r) for r in range(n)])
            ts = np.full(n, np.nan)
            if "timestamp" in cols:
                ts = np.asarray([_timestamp(t, where) for t in cols["timestamp"].to_pylist()], dtype=np.float64)
            metas: list[dict[str, Any]] = [{} for _ in range(n)]
            if "metadata" in cols:
                for r, m in enumerate(cols["metadata"].to_pylist()):
                    if isinstance(m, str):
                        try:
                            m = json.loads(m)
                        except ValueError:
                            raise InvalidArgumentError(f"{where}: metadata of row {r} is not JSON") from None
                    metas[r] = dict(_metadata(m, where))
            if self.extra:
                for name, col in cols.items():
                    if name in (self.vector_column, self.id_column, "timestamp", "metadata"):
                        continue
                    for r, v in enumerate(col.to_pylist()):
                        if v is not None:
                            metas[r][name] = v
            yield Block(start, ids, x, metas, ts)
            start += n

    def blocks(self, rows: int = DEFAULT_BLOCK) -> Iterator[Block]:
        return self._batches(rows, self.dim)


def open_source(path: str | os.PathLike, *, ids: str | os.PathLike | None = None, fmt: str | None = None,
                dim: int | None = None) -> Source:
    """The reader for ``path`` by ``fmt`` (``npy`` | ``jsonl`` | ``parquet``) or by its extension."""
    p = os.fspath(path)
    if fmt is None:
        ext = os.path.splitext(p)[1].lower()
        fmt = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}.get(ext, "jsonl")
    if not os.path.exists(p):
        raise InvalidArgumentError(f"no such input file: {p}")
    if fmt == "npy":
        return NpySource(p, ids, dim=dim)
    if ids is not None:
        raise InvalidArgumentError("an ids file goes with a .npy input only")
    if fmt == "jsonl":
        return JsonlSource(p, dim=dim)
    if fmt == "parquet":
        return ParquetSource(p, dim=dim)
    raise InvalidArgumentError(f"unknown input format {fmt!r}; expected npy, jsonl or parquet")
