"""Write the service worker of a built bundle: the precache manifest and the release id.

    python web/precache.py web/dist [--template web/sw.js]

Run by build_wheel.sh after web/dist is assembled (and by e2e tests that make a second release).
Every runtime file in the bundle is listed as ``{url, revision, integrity}`` (revision: sha256 hex,
integrity: the SRI ``sha256-...`` the browser checks when Workbox downloads it); the release id is a
hash of that list.  The release id is also written into ``wheels/manifest.json`` (the worker reports
it, so the bridge can tell that the worker and the service worker are from one release) before the
list is hashed, and the template's ``self.__WB_MANIFEST`` and ``__S5VEC_RELEASE__`` are replaced in
``<dist>/sw.js``: any change to any runtime file changes sw.js, which is what makes the browser
install the new release.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
from pathlib import Path

# Not precached: the service worker and what it imports itself (stored with its registration),
# per-deployment data (demo-config.json: network-first at run time), test pages, and files no page loads.
SKIP_DIRS = ("vendor/workbox/",)
SKIP_FILES = {"sw.js", "chunk-cache.js", "vendor/hash-wasm/blake3.umd.min.js", "demo-config.json"}
SKIP_SUFFIXES = (".d.ts", ".map", "LICENSE", "package.json", ".ts")
SKIP_PREFIXES = ("harness",)


def runtime_files(dist: Path) -> list[str]:
    out = []
    for p in sorted(dist.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(dist).as_posix()
        if rel in SKIP_FILES or rel.startswith(SKIP_DIRS) or rel.endswith(SKIP_SUFFIXES) or p.name.startswith(SKIP_PREFIXES):
            continue
        out.append(rel)
    return out


def entry(dist: Path, rel: str) -> dict[str, str]:
    digest = hashlib.sha256((dist / rel).read_bytes()).digest()
    return {"url": rel, "revision": digest.hex()[:32], "integrity": "sha256-" + base64.b64encode(digest).decode()}


def release_id(entries: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]


def write(dist: Path, template: Path) -> str:
    """Write ``dist/sw.js`` from ``template``; returns the release id."""
    wheels = dist / "wheels" / "manifest.json"
    files = runtime_files(dist)
    # the release id covers every runtime file except the wheel manifest (which then carries it), the
    # scripts the service worker imports and its template
    imported = [entry(dist, f) for f in sorted(SKIP_FILES - {"sw.js", "demo-config.json"}) if (dist / f).exists()]
    imported += [entry(dist, p.relative_to(dist).as_posix())
                 for sub in SKIP_DIRS for p in sorted((dist / sub).rglob("*")) if p.is_file()]
    template_hash = hashlib.sha256(template.read_bytes()).hexdigest()
    release = release_id([entry(dist, f) for f in files if f != "wheels/manifest.json"]
                         + imported + [{"url": "sw.js", "revision": template_hash}])
    if wheels.exists():
        doc = json.loads(wheels.read_text())
        doc["release"] = release
        wheels.write_text(json.dumps(doc, indent=2))
    entries = [entry(dist, f) for f in files]
    src = template.read_text()
    for token in ("self.__WB_MANIFEST", "__S5VEC_RELEASE__"):
        if src.count(token) != 1:
            raise SystemExit(f"precache.py: {template} must contain {token} exactly once")
    src = src.replace("self.__WB_MANIFEST", json.dumps(entries, indent=1)).replace("__S5VEC_RELEASE__", release)
    (dist / "sw.js").write_text(src)
    return release


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dist", type=Path)
    ap.add_argument("--template", type=Path, default=Path(__file__).with_name("sw.js"))
    a = ap.parse_args()
    release = write(a.dist, a.template)
    n = len(runtime_files(a.dist))
    print(f"precache.py: release {release}, {n} files -> {a.dist / 'sw.js'}")


if __name__ == "__main__":
    main()
