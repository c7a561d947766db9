"""web/http-api.d.ts stays in step with the server: it names every route of the route table,
and it type-checks (with the example client web/http-example.ts)."""
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

from s5vec.serve.app import ROUTES, STATUS

DTS = (ROOT / "web" / "http-api.d.ts").read_text()


def test_every_route_is_typed():
    typed = set(re.findall(r'"((?:GET|POST|DELETE) /v1/[^"]*)":', DTS))
    served = {f"{m} {p.replace(':path}', '}')}" for m, p, _f, _op in ROUTES}
    assert typed == served


def test_every_error_name_is_typed():
    names = set(re.findall(r'\| "(\w+)"', DTS.split("export type HttpErrorName", 1)[1].split(";", 1)[0]))
    assert {n for n in STATUS if n not in ("RevisionError", "ConflictError")} <= names


@pytest.mark.skipif(not shutil.which("npx") or not (ROOT / "node_modules" / ".bin" / "tsc").exists(),
                    reason="node/tsc not installed")
def test_http_types_typecheck():
    p = subprocess.run(["npx", "--no-install", "tsc", "--noEmit", "-p", "web/tsconfig.http.json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
