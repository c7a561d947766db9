"""The ``s5vec`` command line: portal, publish, search, migrate, web, demo-data.

Bad input gets one line on stderr and exit status 2 (usage) or 1 (anything else), never a
traceback; progress bars go to stderr so stdout stays machine-readable (the manifest CID is
the last line of ``publish``; ``search`` prints one JSON line per query).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator, Sequence

from .errors import InvalidArgumentError, S5VecError


def _progress(total: int | None, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional; progress is a nicety
        return None
    return tqdm(total=total, desc=desc, unit="vec", file=sys.stderr, disable=None)


def _read_jsonl(path: str, what: str) -> Iterator[tuple[int, Any]]:
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {what} file {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except ValueError as exc:
                raise InvalidArgumentError(f"{path}:{n}: not valid JSON ({exc.msg})") from None


def _parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--param takes KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def cmd_portal(args: argparse.Namespace) -> int:
    from .s5.portal import run_portal

    run_portal(args.dir, args.host, args.port)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from .webserver import run_web

    run_web(args.dir, args.host, args.port)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from . import api

    records = []
    for n, rec in _read_jsonl(args.file, "records"):
        if not isinstance(rec, dict):
            raise InvalidArgumentError(f"{args.file}:{n}: each line must be an object with id and vector")
        records.append(rec)
    store = api.make_store(args.portal, timeout=args.timeout)
    bar = _progress(len(records), "indexing")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    cid = api.publish(records, store, kind=args.index, metric=args.metric, params=_parse_params(args.param),
                      progress=progress)
    if bar is not None:
        bar.close()
    st = store.stats()
    print(f"uploaded {st['chunks_uploaded']} chunks ({st['bytes_uploaded']} bytes)", file=sys.stderr)
    print(cid)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from . import api, filters

    if (args.text is None) == (args.queries is None):
        raise InvalidArgumentError("search takes either --text or --queries")
    flt = filters.parse(args.filter) if args.filter else None
    params = _parse_params(args.param)
    db = api.Database.open(args.cid, args.portal, timeout=args.timeout)
    if args.text is not None:
        for h in db.search_text(args.text, args.k, flt, args.mode, params):
            print(json.dumps({"id": h["id"], "score": h["score"], "metadata": h["metadata"]}, ensure_ascii=False,
                             default=str), flush=True)
        return 0
    for n, q in _read_jsonl(args.queries, "queries"):
        vec = q.get("vector") if isinstance(q, dict) else q
        try:
            hits = db.search(vec, args.k, flt, params)
        except S5VecError as exc:
            raise type(exc)(f"{args.queries}:{n}: {exc}") from None
        print(json.dumps([{"id": h["id"], "score": h["score"]} for h in hits]), flush=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from . import api

    db = api.Database.open(args.cid, args.portal, timeout=args.timeout)
    moved = db.migrate()
    cid, writer = db.commit()
    print(f"moved {moved} aged records from HNSW to IVF; uploaded {writer.uploaded} of "
          f"{len(writer.chunks)} chunks", file=sys.stderr)
    print(cid)
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo import demo_records, movie_records, write_records

    if args.count is not None and args.count <= 0:
        raise InvalidArgumentError("--count must be a positive number")
    if args.source == "movies":
        records = movie_records(args.count)
    else:
        records = demo_records(args.count or 20000, dim=args.dim, seed=args.seed)
    n = write_records(args.out, records)
    print(f"wrote {n} records to {args.out}", file=sys.stderr)
    return 0


def cmd_demo_config(args: argparse.Namespace) -> int:
    from .demo import write_demo_config

    write_demo_config(args.records, args.manifest, args.portal, args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s5vec", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("portal", help="serve a local S5 portal (content-addressed blobs on disk)")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5050)
    sp.set_defaults(fn=cmd_portal)

    sp = sub.add_parser("publish", help="build an index from JSON lines and upload it; prints the manifest CID")
    sp.add_argument("file", help='JSON lines: {"id", "vector", "metadata", "timestamp"} ("-" for stdin)')
    sp.add_argument("--portal", action="append", required=True, help="portal URL (repeat for fallbacks)")
    sp.add_argument("--index", default=None, help="flat | hnsw | ivf | hybrid")
    sp.add_argument("--metric", default="cosine", choices=["cosine", "l2", "ip"])
    sp.add_argument("--param", action="append", metavar="KEY=VALUE", help="index parameter (repeatable)")
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.set_defaults(fn=cmd_publish)

    sp = sub.add_parser("search", help="search a published index: --text prints one JSON line per hit "
                                       "(id, score, metadata); --queries one JSON line of hits per query vector")
    sp.add_argument("cid", help="manifest CID")
    sp.add_argument("--portal", action="append", required=True)
    sp.add_argument("--text", default=None, help="a text query (the index must have been published with a text field)")
    sp.add_argument("--mode", default="hybrid", choices=["hybrid", "vector", "keyword"], help="with --text")
    sp.add_argument("--queries", default=None, help="JSON lines, one vector (JSON array) per line")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--filter", default=None, help="metadata filter as JSON")
    sp.add_argument("--param", action="append", metavar="KEY=VALUE", help="search parameter, e.g. ef=128, nprobe=32")
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.set_defaults(fn=cmd_search)

    sp = sub.add_parser("migrate", help="hybrid: move aged records from HNSW to IVF; prints the new manifest CID")
    sp.add_argument("cid", help="manifest CID of a hybrid index")
    sp.add_argument("--portal", action="append", required=True)
    sp.add_argument("--timeout", type=float, default=30.0)
    sp.set_defaults(fn=cmd_migrate)

    sp = sub.add_parser("web", help="serve the built web bundle (web/dist) with correct MIME types")
    sp.add_argument("--dir", default="web/dist")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8080)
    sp.set_defaults(fn=cmd_web)

    sp = sub.add_parser("demo-data", help="write a demo collection as JSON lines: real films (text, no vectors) "
                                          "or synthetic videos (with vectors)")
    sp.add_argument("--out", required=True)
    sp.add_argument("--source", choices=["movies", "synthetic"], default="movies",
                    help="movies: the 58,788 films of R's ggplot2movies (IMDb, 2005); synthetic: generated videos")
    sp.add_argument("--count", type=int, default=None,
                    help="movies: an evenly spaced subset of this size (default all); synthetic: default 20000")
    sp.add_argument("--dim", type=int, default=384, help="synthetic only")
    sp.add_argument("--seed", type=int, default=7, help="synthetic only")
    sp.set_defaults(fn=cmd_demo_data)

    sp = sub.add_parser("demo-config", help="write the demo page's config (manifest, portals, genres, years)")
    sp.add_argument("--records", required=True)
    sp.add_argument("--manifest", required=True)
    sp.add_argument("--portal", action="append", required=True)
    sp.add_argument("--out", required=True)
    sp.set_defaults(fn=cmd_demo_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "index", "x") is None:
        from .api import DEFAULT_KIND

        args.index = DEFAULT_KIND
    try:
        return args.fn(args)
    except S5VecError as exc:
        print(f"s5vec: error: {exc.name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
