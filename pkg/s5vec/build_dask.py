"""The bulk build on Dask: workers assign, encode and upload; the driver trains and assembles.

:func:`run_dask` is step 2-3 of :mod:`s5vec.build` spread over a ``distributed`` cluster:

* the driver reads the source block by block (so workers need no access to the input files,
  and a remote cluster works unchanged) and submits :func:`s5vec.build.encode_block` per block,
  keeping a bounded number of blocks in flight;
* one task per upload unit gathers that unit's pieces from every block (block order) and runs
  :func:`s5vec.build.upload_unit` on a worker, which uploads its chunks to the portals itself;
* the driver gathers the small :class:`~s5vec.build.UnitResult` s (CIDs, counts, summaries)
  with a progress bar, and :func:`s5vec.build.assemble` writes the manifest last.

``target`` is ``"local"`` (a ``LocalCluster`` of 2 single-threaded worker processes), a
scheduler address (``tcp://host:8786``) or a ``distributed.Client``. A scheduler that cannot be
reached, or that is lost (or whose workers die) before the last unit is uploaded, raises
:class:`s5vec.errors.BuildError`; no manifest is written then.
"""
from __future__ import annotations

import operator
import time
from collections import deque
from typing import Any, Callable, Sequence

from .build import (DuplicateCheck, UnitResult, _bar, encode_block, ivf_of, stamp_block, unit_lists,
                    upload_unit)
from .errors import BuildError, InvalidArgumentError, S5VecError
from .sources import Source

CONNECT_TIMEOUT = 10.0
IN_FLIGHT_PER_WORKER = 2


def _upload_task(ivf: Any, lists: range, portals: list[str], timeout: float, auth_token: str | None,
                 *pieces: Any) -> UnitResult:
    from .api import make_store

    return upload_unit(ivf, lists, pieces, make_store(portals, timeout=timeout, auth_token=auth_token))


def connect(target: Any, timeout: float = CONNECT_TIMEOUT) -> tuple[Any, Callable[[], None]]:
    """(client, close) for ``"local"``, an address or a Client; unreachable -> BuildError."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask[distributed] is a build dependency
        raise BuildError("a Dask build needs dask[distributed] (pip install 'dask[distributed]')") from None
    if isinstance(target, Client):
        return target, lambda: None
    if target == "local":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    if not isinstance(target, str) or not target:
        raise InvalidArgumentError(f"--dask takes 'local' or a scheduler address, got {target!r}")
    try:
        client = Client(target, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise BuildError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
    return client, client.close


def run_dask(index: Any, source: Source, target: Any, portals: Sequence[str] | None, *, rows: int, now: float,
             progress: bool, on_block: Callable[[int], Any] | None = None, timeout: float = 30.0,
             connect_timeout: float = CONNECT_TIMEOUT, auth_token: str | None = None
             ) -> tuple[list[UnitResult], dict[str, float]]:
    if not portals:
        raise InvalidArgumentError("a Dask build needs the portal URLs (its workers upload the chunks)")
    portals = list(portals)
    ivf = ivf_of(index)
    units = unit_lists(ivf)
    client, close = connect(target, connect_timeout)
    try:
        return _run(client, ivf, units, source, portals, rows, now, progress, on_block, timeout, auth_token)
    except S5VecError:
        raise
    except Exception as exc:  # scheduler lost, worker killed, communication closed, cancelled
        raise BuildError(f"the Dask build failed, nothing was published: {type(exc).__name__}: {exc}") from None
    finally:
        try:
            close()
        except Exception:  # a dead scheduler cannot be closed politely
            pass


def _run(client: Any, ivf: Any, units: list[range], source: Source, portals: list[str], rows: int, now: float,
         progress: bool, on_block: Callable[[int], Any] | None, timeout: float, auth_token: str | None
         ) -> tuple[list[UnitResult], dict[str, float]]:
    from distributed import as_completed, wait

    t0 = time.perf_counter()
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    [tmpl] = client.scatter([ivf], broadcast=True)
    check = DuplicateCheck()
    bar = _bar(source.count, "encoding", "vec", progress)
    encoded: list[Any] = []
    in_flight: deque = deque()
    for b, block in enumerate(source.blocks(rows)):
        check(block)
        fut = client.submit(encode_block, tmpl, stamp_block(block, now), units, pure=False)
        encoded.append(fut)
        in_flight.append((fut, len(block)))
        while len(in_flight) > IN_FLIGHT_PER_WORKER * workers:
            f, n = in_flight.popleft()
            wait([f])
            f.result()  # raises a worker's error now, not at the end
            if bar is not None:
                bar.update(n)
        if on_block is not None:
            on_block(b)
    for f, n in in_flight:
        f.result()
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    check.finish(source, rows)
    t1 = time.perf_counter()
    uploads = {}
    for u, lists in enumerate(units):
        parts = [client.submit(operator.getitem, f, u, pure=False) for f in encoded]
        uploads[client.submit(_upload_task, tmpl, lists, portals, timeout, auth_token, *parts, pure=False)] = u
    del encoded
    bar = _bar(len(units), "uploading", "unit", progress)
    results: list[UnitResult] = [None] * len(units)  # type: ignore[list-item]
    for fut in as_completed(list(uploads)):
        results[uploads[fut]] = fut.result()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results, {"encode": t1 - t0, "upload": time.perf_counter() - t1}
