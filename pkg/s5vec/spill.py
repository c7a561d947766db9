"""Encoded rows of a bulk build, kept on disk between the encode pass and their unit's upload.

Why: a list chunk holds rows from every block of the input, so the single-process build holds
what it encoded until the last block is read. In memory that was the whole collection once more
(ids, metadata, codes, refine codes: ~480 B a record at 10M x 384 with the default PQ codes, a
4.8 GB heap). Here each upload unit appends its pieces to its own file in a private temporary
directory, and an upload reads back one unit: memory is one block plus the units being uploaded,
whatever N is. (Dask workers spill on their own: ``distributed``'s memory manager.)

The files hold pickles written and read by this process only, in a directory created 0700 and
removed by :meth:`PieceSpill.close` (also on error), so nothing untrusted is ever unpickled.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import threading
from typing import Any, BinaryIO, Iterator


class PieceSpill:
    """Append-only files of pickled pieces, one per upload unit."""

    def __init__(self, units: int, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="s5vec-build-", dir=directory)
        self._files: list[BinaryIO | None] = []
        self._lock = threading.Lock()
        self.bytes = 0  # written so far, all units
        try:
            for u in range(units):
                self._files.append(open(os.path.join(self.dir, f"unit{u}.pkl"), "w+b"))
        except BaseException:
            self.close()
            raise

    def add(self, unit: int, piece: Any) -> None:
        """Append one piece (None = the block had no rows in this unit: nothing written)."""
        if piece is None:
            return
        fh = self._files[unit]
        if fh is None:
            raise RuntimeError(f"unit {unit} was already read back")
        before = fh.tell()
        pickle.dump(piece, fh, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self.bytes += fh.tell() - before

    def pieces(self, unit: int) -> Iterator[Any]:
        """The unit's pieces in the order they were added, read back once; the file is removed
        when they are all read."""
        fh = self._files[unit]
        if fh is None:
            raise RuntimeError(f"unit {unit} was already read back")
        self._files[unit] = None
        try:
            fh.flush()
            fh.seek(0)
            while True:
                try:
                    yield pickle.load(fh)
                except EOFError:
                    return
        finally:
            fh.close()
            try:
                os.unlink(fh.name)
            except OSError:
                pass

    def close(self) -> None:
        """Close every file and remove the directory (idempotent)."""
        for i, fh in enumerate(self._files):
            if fh is not None:
                fh.close()
                self._files[i] = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PieceSpill":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
