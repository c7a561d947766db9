"""The ``s5vec`` command line: portal, publish, search, migrate, embed, serve, mcp, web, demo-data.

Bad input gets one line on stderr and exit status 2 (usage) or 1 (anything else), never a
traceback; progress bars go to stderr so stdout stays machine-readable (the manifest CID is
the last line of ``publish``; ``search`` prints one JSON line per query).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from .errors import InvalidArgumentError, S5VecError
# one JSON-lines reader for every input (CLI files and streamed build sources)
from .sources import json_lines as _read_jsonl


def _progress(total: int | None, desc: str, unit: str = "vec"):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional; progress is a nicety
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None)


def _bar_callback(bar):
    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()
    return progress


def _embed_missing(records: list, text_field: str, model_dir: str | None):
    """Embed the records that have no vector (progress bar on stderr); returns the local model."""
    from . import embed

    model = embed.load_local(model_dir)
    todo = sum(1 for r in records if r.get("vector") is None)
    bar = _progress(todo, "embedding", unit="text") if todo else None
    embed.embed_records(records, model, text_field, progress=_bar_callback(bar))
    if bar is not None:
        bar.close()
    return model


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


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
    from .s5.portal import load_tokens, run_portal

    tokens = load_tokens(args.token_file)
    run_portal(args.dir, args.host, args.port, max_body=args.max_body, verbose=args.verbose, tokens=tokens,
               require_token=args.require_token, cors_origins=args.cors_origin or ())
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from .s5.registry import SigningKey

    key = SigningKey.generate()
    try:
        key.save(args.out)
    except FileExistsError:
        raise InvalidArgumentError(f"{args.out} exists; a key file is never overwritten") from None
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write key file {args.out}: {exc.strerror}") from None
    print(f"wrote the ed25519 seed to {args.out} (keep it secret); its public key (the pointer) is:",
          file=sys.stderr)
    print(key.pointer)
    return 0


def cmd_pointer(args: argparse.Namespace) -> int:
    import os

    from .s5.registry import SigningKey, publish_pointer

    key = SigningKey.load(args.key)
    token = args.auth_token or os.environ.get("S5VEC_AUTH_TOKEN") or None
    entry = publish_pointer(args.portal, key, args.cid, auth_token=token, timeout=args.timeout)
    print(f"pointer {key.pointer} -> {args.cid} (revision {entry.revision})", file=sys.stderr)
    print(key.pointer)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from .s5.registry import resolve_pointer

    print(resolve_pointer(args.portal, args.pointer, timeout=args.timeout))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from .webserver import run_web

    run_web(args.dir, args.host, args.port)
    return 0


def _bulk_input(args: argparse.Namespace) -> bool:
    return bool(args.dask or args.stream or args.ids or args.format or args.file.lower().endswith((".npy", ".parquet", ".pq")))


def cmd_publish_bulk(args: argparse.Namespace) -> int:
    """The streaming (block-wise) build, in this process or on Dask (see s5vec.build)."""
    from . import api, build, sources

    if args.file == "-":
        raise InvalidArgumentError("a streaming build reads its input twice (sample, then all): give a file, not '-'")
    src = sources.open_source(args.file, ids=args.ids, fmt=args.format)
    store = api.make_store(args.portal, timeout=args.timeout, auth_token=args.auth_token)
    rep = build.build(src, store, kind=args.index, metric=args.metric, params=_parse_params(args.param),
                      sample_size=args.sample, seed=args.seed, progress=True, dask=args.dask, portals=args.portal,
                      auth_token=args.auth_token, explain=lambda choice: print(choice.line(), file=sys.stderr))
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in rep.seconds.items())
    print(f"built {rep.spec} over {rep.count} records; {rep.chunks} list/refine chunks ({rep.bytes} bytes, "
          f"{rep.bytes / max(rep.count, 1):.0f} B/vector); {secs}", file=sys.stderr)
    print(rep.cid)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from . import api

    if _bulk_input(args):
        return cmd_publish_bulk(args)
    records = []
    for n, rec in _read_jsonl(args.file, "records"):
        if not isinstance(rec, dict):
            raise InvalidArgumentError(f"{args.file}:{n}: each line must be an object with id and vector")
        records.append(rec)
    store = api.make_store(args.portal, timeout=args.timeout, auth_token=args.auth_token)
    extra = None
    if args.text_field:
        from . import embed

        model = _embed_missing(records, args.text_field, args.model)
        model_cid = embed.publish_model(model, store)
        print(f"text model {model_cid}", file=sys.stderr)
        extra = embed.manifest_extra(model_cid, args.text_field, model.dim)
    bar = _progress(len(records), "indexing")
    cid = api.publish(records, store, kind=args.index, metric=args.metric, params=_parse_params(args.param),
                      progress=_bar_callback(bar), extra=extra, text_field=args.text_field,
                      explain=lambda choice: print(choice.line(), file=sys.stderr))
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

    store = api.make_store(args.portal, timeout=args.timeout, auth_token=args.auth_token)
    db = api.Database.open(args.cid, store=store)
    moved = db.migrate()
    cid, writer = db.commit()
    print(f"moved {moved} aged records from HNSW to IVF; uploaded {writer.uploaded} of "
          f"{len(writer.chunks)} chunks", file=sys.stderr)
    print(cid)
    return 0


def _read_token(path: str | None) -> str | None:
    """The write token: from ``--auth-token-file`` (first line), else ``$S5VEC_SERVE_TOKEN``."""
    import os

    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read token file {path}: {exc.strerror}") from None
        if not token:
            raise InvalidArgumentError(f"token file {path} is empty")
        return token
    return os.environ.get("S5VEC_SERVE_TOKEN") or None


def _portal_token(path: str | None) -> str | None:
    """The portal upload token (commits upload chunks): ``--portal-token-file``, else ``$S5VEC_AUTH_TOKEN``
    (the upload token ``publish`` uses too)."""
    import os

    if path:
        return _read_token(path)
    return os.environ.get("S5VEC_AUTH_TOKEN") or None


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run_server

    run_server(args.cid, args.portal, host=args.host, port=args.port, token=_read_token(args.auth_token_file),
               portal_token=_portal_token(args.portal_token_file),
               cors_origins=args.cors_origin or (), max_body=args.max_body, cache_bytes=args.cache_bytes,
               timeout=args.timeout, log_level=args.log_level, workers=args.workers, pointer=args.pointer,
               pointer_key=args.pointer_key)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from .mcp_server import run_mcp

    token = _read_token(args.auth_token_file)
    if args.allow_writes and not token:
        raise InvalidArgumentError("--allow-writes needs a token (--auth-token-file or S5VEC_SERVE_TOKEN)")
    run_mcp(args.cid, args.portal, transport=args.transport, allow_writes=args.allow_writes, token=token,
            host=args.host, port=args.port, cache_bytes=args.cache_bytes, timeout=args.timeout,
            pointer=args.pointer, pointer_key=args.pointer_key, portal_token=_portal_token(args.portal_token_file))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    records = []
    for n, rec in _read_jsonl(args.file, "records"):
        if not isinstance(rec, dict):
            raise InvalidArgumentError(f"{args.file}:{n}: each line must be an object with a {args.text_field!r} text")
        records.append(rec)
    _embed_missing(records, args.text_field, args.model)
    try:
        out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {args.out}: {exc.strerror}") from None
    with out:
        for rec in records:
            vec = rec["vector"]
            rec["vector"] = vec.tolist() if hasattr(vec, "tolist") else vec
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"embedded {len(records)} records", file=sys.stderr)
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


_TIMEOUT_HELP = "seconds allowed for one blob, all portals and retries included (default 30)"
_TOKEN_HELP = "bearer token for uploads (default: $S5VEC_AUTH_TOKEN)"


def _pointer_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--portal-token-file", default=None, metavar="FILE",
                    help="the portals' upload token, for commits and pointer moves (else $S5VEC_AUTH_TOKEN)")
    sp.add_argument("--pointer", default=None, metavar="PUBKEY",
                    help="open the manifest this signed registry pointer names (instead of a CID)")
    sp.add_argument("--pointer-key", default=None, metavar="KEYFILE",
                    help="the pointer's signing key (s5vec keygen): every commit also moves the pointer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s5vec", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("portal", help="serve a local S5 portal (content-addressed blobs on disk)")
    sp.add_argument("--dir", required=True)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5050)
    sp.add_argument("--require-token", action=argparse.BooleanOptionalAction, default=None,
                    help="writes need Authorization: Bearer <token> (default: on when a token is configured "
                         "or when bound beyond 127.0.0.1/localhost)")
    sp.add_argument("--token-file", default=None,
                    help="file of upload tokens, one per line (env S5VEC_PORTAL_TOKEN adds one)")
    sp.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="browser origin allowed to write (upload, registry); repeatable; '*' = any")
    sp.add_argument("--max-body", type=int, default=256 * 2**20, help="largest upload in bytes")
    sp.add_argument("--verbose", action="store_true", help="log every request")
    sp.set_defaults(fn=cmd_portal)

    sp = sub.add_parser("keygen", help="create an ed25519 key file for a signed pointer (registry entry)")
    sp.add_argument("--out", required=True, help="key file to create (mode 0600; never overwritten)")
    sp.set_defaults(fn=cmd_keygen)

    sp = sub.add_parser("pointer", help="point a signed registry entry (KEYFILE's public key) at a manifest CID")
    sp.add_argument("key", help="key file from s5vec keygen")
    sp.add_argument("cid", help="manifest CID")
    sp.add_argument("--portal", action="append", required=True, help="portal URL (repeat: stored on each)")
    sp.add_argument("--auth-token", default=None, help="portal write token (default: env S5VEC_AUTH_TOKEN)")
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.set_defaults(fn=cmd_pointer)

    sp = sub.add_parser("resolve", help="print the manifest CID a pointer (public key) names, signature checked")
    sp.add_argument("pointer", help="public key (base64url), as printed by keygen")
    sp.add_argument("--portal", action="append", required=True)
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.set_defaults(fn=cmd_resolve)

    sp = sub.add_parser("publish", help="build an index from JSON lines and upload it; prints the manifest CID")
    sp.add_argument("file", help='JSON lines: {"id", "vector", "metadata", "timestamp"} ("-" for stdin)')
    sp.add_argument("--portal", action="append", required=True, help="portal URL (repeat for fallbacks)")
    sp.add_argument("--index", default=None, help="flat | hnsw | ivf | hybrid")
    sp.add_argument("--metric", default="cosine", choices=["cosine", "l2", "ip"])
    sp.add_argument("--param", action="append", metavar="KEY=VALUE", help="index parameter (repeatable)")
    sp.add_argument("--text-field", default=None, metavar="FIELD",
                    help="embed records without a vector from this text field (top level or in metadata) and "
                         "publish the text model with the index")
    sp.add_argument("--model", default=None, metavar="DIR", help="text model directory (default: the built one)")
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.add_argument("--auth-token", default=os.environ.get("S5VEC_AUTH_TOKEN") or None, help=_TOKEN_HELP)
    bulk = sp.add_argument_group("streaming build (ivf/hybrid; used for .npy/.parquet input or with any of these)")
    bulk.add_argument("--dask", default=None, metavar="ADDRESS|local",
                      help="build on Dask: a scheduler address (tcp://host:8786) or 'local' (a LocalCluster)")
    bulk.add_argument("--stream", action="store_true", help="stream a JSON-lines file block by block")
    bulk.add_argument("--format", choices=["jsonl", "npy", "parquet"], default=None, help="input format (default: by extension)")
    bulk.add_argument("--ids", default=None, help='.npy input: JSON lines with {"id", "metadata", "timestamp"} per row')
    bulk.add_argument("--sample", type=int, default=None, help="training sample rows (default: 64 per list, 20k..256k)")
    bulk.add_argument("--seed", type=int, default=0, help="sampling seed (same input + seed = same index)")
    sp.set_defaults(fn=cmd_publish)

    sp = sub.add_parser("embed", help="add text-embedding vectors to JSON-line records")
    sp.add_argument("file", help='JSON lines with a text field ("-" for stdin)')
    sp.add_argument("--out", required=True, help='output JSON lines ("-" for stdout)')
    sp.add_argument("--text-field", default="text", metavar="FIELD")
    sp.add_argument("--model", default=None, metavar="DIR", help="text model directory (default: the built one)")
    sp.set_defaults(fn=cmd_embed)

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
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.set_defaults(fn=cmd_search)

    sp = sub.add_parser("migrate", help="hybrid: move aged records from HNSW to IVF; prints the new manifest CID")
    sp.add_argument("cid", help="manifest CID of a hybrid index")
    sp.add_argument("--portal", action="append", required=True)
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.add_argument("--auth-token", default=os.environ.get("S5VEC_AUTH_TOKEN") or None, help=_TOKEN_HELP)
    sp.set_defaults(fn=cmd_migrate)

    sp = sub.add_parser("serve", help="HTTP API (/v1: search, records, commit...) over a published index")
    sp.add_argument("cid", nargs="?", help="manifest CID (or --pointer)")
    _pointer_args(sp)
    sp.add_argument("--portal", action="append", required=True, help="portal URL (repeat for fallbacks)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on stdout)")
    sp.add_argument("--auth-token-file", default=None,
                    help="file whose first line is the bearer token writes need (else $S5VEC_SERVE_TOKEN; "
                         "without either the server is read-only)")
    sp.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allowed CORS origin (repeatable, * for any)")
    sp.add_argument("--max-body", type=int, default=32 * 2**20, help="request body limit in bytes")
    sp.add_argument("--cache-bytes", type=int, default=256 * 2**20, help="chunk cache budget in bytes")
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    sp.add_argument("--workers", type=int, default=1,
                    help="processes sharing the port, each with its own copy of the index (reads only)")
    sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("mcp", help="MCP server (tools: search_videos, similar_videos, get_video, index_info)")
    sp.add_argument("cid", nargs="?", help="manifest CID (or --pointer)")
    _pointer_args(sp)
    sp.add_argument("--portal", action="append", required=True)
    sp.add_argument("--transport", default="stdio", choices=["stdio", "http"])
    sp.add_argument("--host", default="127.0.0.1", help="with --transport http")
    sp.add_argument("--port", type=int, default=8001, help="with --transport http")
    sp.add_argument("--allow-writes", action="store_true", help="add the tools add_videos, delete_videos, commit")
    sp.add_argument("--auth-token-file", default=None,
                    help="token the write tools need (else $S5VEC_SERVE_TOKEN); required by --allow-writes")
    sp.add_argument("--cache-bytes", type=int, default=256 * 2**20)
    sp.add_argument("--timeout", type=_positive_seconds, default=30.0, help=_TIMEOUT_HELP)
    sp.set_defaults(fn=cmd_mcp)

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
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
