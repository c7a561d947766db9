"""BLAKE3 hashing backend.

* CPython: the ``blake3`` package from PyPI (native, releases the GIL).
* Pyodide (``sys.platform == "emscripten"``): the web worker registers a JS module
  named ``s5vec_js`` (``pyodide.registerJsModule("s5vec_js", {blake3})``) whose
  ``blake3(Uint8Array) -> Uint8Array`` is ``hash-wasm``'s WebAssembly BLAKE3.  The bytes
  cross the boundary as one typed-array copy each way (no per-byte conversion).
"""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["blake3", "backend_name", "HashBackendUnavailable"]


class HashBackendUnavailable(RuntimeError):
    """No BLAKE3 implementation could be found for this runtime."""


_impl: Callable[[bytes], bytes] | None = None
_backend: str | None = None


def _load() -> Callable[[bytes], bytes]:
    global _impl, _backend
    if _impl is not None:
        return _impl
    errors: list[str] = []
    if sys.platform == "emscripten":
        try:
            import s5vec_js  # type: ignore[import-not-found]
            from pyodide.ffi import to_js  # type: ignore[import-not-found]

            js_blake3 = s5vec_js.blake3

            def _js(data: bytes) -> bytes:
                # to_js(memoryview) makes a Uint8Array view/copy in one go;
                # .to_bytes() copies the JS result back in one memcpy.
                out = js_blake3(to_js(memoryview(data)))
                try:
                    return out.to_bytes()
                except AttributeError:  # older Pyodide
                    return bytes(out.to_py())

            _impl, _backend = _js, "s5vec_js"
            return _impl
        except ImportError as e:
            errors.append(f"s5vec_js JS module not registered ({e})")
    try:
        import blake3 as _b3  # type: ignore[import-not-found]

        def _native(data: bytes) -> bytes:
            return _b3.blake3(data, max_threads=_b3.blake3.AUTO if len(data) >= 1 << 20 else 1).digest()

        _impl, _backend = _native, "blake3-py"
        return _impl
    except ImportError as e:
        errors.append(f"'blake3' package not installed ({e})")
    raise HashBackendUnavailable(
        "no BLAKE3 implementation available: "
        + "; ".join(errors)
        + ". On CPython `pip install blake3`; in Pyodide register the `s5vec_js` "
        "module (pyodide.registerJsModule) exposing blake3(Uint8Array)->Uint8Array."
    )


def blake3(data: bytes | bytearray | memoryview) -> bytes:
    """32-byte BLAKE3 digest of ``data``."""
    digest = _load()(data if isinstance(data, (bytes, bytearray, memoryview)) else bytes(data))
    if len(digest) != 32:
        raise HashBackendUnavailable(f"BLAKE3 backend {_backend} returned {len(digest)} bytes, expected 32")
    return digest


def backend_name() -> str:
    """Which backend is in use: ``"blake3-py"`` or ``"s5vec_js"``."""
    _load()
    return _backend or "?"
