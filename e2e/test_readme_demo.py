"""README command 1 (./demo.sh) end to end: convert the films, embed + publish to a local portal, serve, search.

Runs the real script (set-up skipped: the test session has done it) on free ports, with its data
and a copy of web/dist in a temp dir so the other tests' bundle is untouched.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_script_serves_a_searchable_page(page, web_dist, tmp_path):
    web = tmp_path / "web"
    shutil.copytree(web_dist, web)
    web_port, portal_port = free_port(), free_port()
    env = dict(os.environ, S5VEC_SKIP_SETUP="1", DEMO_COUNT="5000", WEB_PORT=str(web_port),
               PORTAL_PORT=str(portal_port), DEMO_DATA_DIR=str(tmp_path / "data"), WEB_DIR=str(web))
    proc = subprocess.Popen(["bash", str(ROOT / "demo.sh")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url, lines, deadline = None, [], time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Open (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url == f"http://127.0.0.1:{web_port}/", "".join(lines)
        assert any("published manifest blob" in l for l in lines), "".join(lines)
        for _ in range(100):  # the web server starts right after the banner
            try:
                page.goto(url)
                break
            except Exception:
                time.sleep(0.1)
        page.wait_for_function("document.body.dataset.ready", timeout=120_000)
        assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#boot-label")
        assert "5,000 films" in page.text_content("#tagline")
        page.fill("#q", "documentary about space")
        page.press("#q", "Enter")
        page.wait_for_function("document.body.dataset.query === 'documentary about space'")
        assert len(page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)")) == 10
        assert re.search(r"[\d.]+ (B|KiB|MiB) in \d+ chunks", page.text_content("#dev-stats"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
