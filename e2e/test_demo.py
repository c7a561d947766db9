"""The demo page (web/demo -> web/dist/index.html) in real Chromium, on a published demo collection."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest


@pytest.fixture(scope="module")
def demo(web_dist, portals, tmp_path_factory):
    from s5vec.api import Database, make_store, publish
    from s5vec.demo import demo_records, write_demo_config

    p1, p2 = portals
    records = list(demo_records(1500, dim=384, seed=3))
    path = tmp_path_factory.mktemp("demo") / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cid = publish(records, make_store([p1.url]), kind="flat", params={"chunk_rows": 512})
    config = web_dist / "demo-config.json"
    write_demo_config(str(path), cid, [p1.url], str(config), samples=20)
    yield {"cid": cid, "config": json.loads(config.read_text()), "ref": Database.open(cid, [p1.url])}
    config.unlink(missing_ok=True)


def result_ids(page):
    return page.eval_on_selector_all("#results li", "els => els.map(e => e.dataset.id)")


def run_search(page, sample_index=0):
    page.locator("#samples li button.more").nth(sample_index).click()
    page.wait_for_function("document.querySelector('#search-stats').textContent.includes('results in')")


def test_demo_page_more_like_this_with_filters(page, web_url, demo):
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(web_url + "index.html")
    page.wait_for_function("document.body.dataset.ready", timeout=120_000)
    assert page.evaluate("document.body.dataset.ready") == "1", page.inner_text("#status")
    status = page.inner_text("#status")
    assert "1500 vectors" in status and "start-up" in status and "numpy 2.0.2" in status
    assert page.locator("#steps li").count() == 4
    samples = demo["config"]["samples"]
    assert page.locator("#samples li").count() == len(samples)

    # more like this, no filter: same ids as CPython; the sample itself comes first
    sample = samples[0]
    run_search(page, 0)
    stats = page.inner_text("#search-stats")
    assert re.search(r"10 results in [\d.]+ ms · fetched [\d.]+ (B|KiB|MiB) in \d+ chunks", stats), stats
    ref = demo["ref"].search(sample["vector"], k=10)
    assert result_ids(page) == [h["id"] for h in ref]
    assert result_ids(page)[0] == sample["id"]

    # channel filter (re-runs the search on change)
    channel = demo["config"]["channels"][5]
    page.select_option("#channel", channel)
    page.wait_for_function("arg => document.querySelector('#search-stats').textContent.includes(arg)", arg=channel)
    ref = demo["ref"].search(sample["vector"], k=10, filter={"channel": channel})
    assert result_ids(page) == [h["id"] for h in ref]
    assert all(channel in t for t in page.locator("#results li .meta").all_inner_texts())

    # + upload date range [2024-01-01, 2024-12-31]
    page.fill("#from", "2024-01-01")
    page.fill("#to", "2024-12-31")
    page.dispatch_event("#to", "change")
    page.wait_for_function("document.querySelector('#search-stats').textContent.includes('$lt')")
    lo = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp())
    hi = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp())
    flt = {"channel": channel, "uploaded_ts": {"$gte": lo, "$lt": hi}}
    ref = demo["ref"].search(sample["vector"], k=10, filter=flt)
    assert ref, "the filter should match something"
    assert result_ids(page) == [h["id"] for h in ref]
    for text in page.locator("#results li .meta").all_inner_texts():
        assert "2024-" in text
    assert not errors
