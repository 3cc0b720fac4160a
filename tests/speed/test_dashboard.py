"""The live dashboard, loaded in headless Chromium with a tenant key, shows what the API answers."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import redis
import uvicorn
from starlette.testclient import TestClient

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import ShardContext
from streaming.query.apikeys import create_key
from streaming.query.http import create_app
from streaming.segments import load_rules
from streaming.speed.consumer import SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import SpeedStore
from streaming.stack.process import free_port, port_in_use
from tests.speed.conftest import as_stream_records, generated, recent_start

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=15000")


class Cells(HTMLParser):
    """Collects the data-* attributes the page puts on the numbers it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.minutes: dict[tuple[str, str], int] = {}
        self.segments: dict[str, int] = {}
        self.lag: dict[str, int] = {}
        self.loaded = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.loaded = a.get("data-loaded", "")
        if "id" in a and "data-value" in a:
            self.by_id[a["id"]] = a["data-value"]
        if "data-type" in a and "data-value" in a:
            self.minutes[(a["data-minute"], a["data-type"])] = int(a["data-value"])
        if "data-segment" in a:
            self.segments[a["data-segment"]] = int(a["data-value"])
        if "data-shard" in a:
            self.lag[a["data-shard"]] = int(a["data-value"])


@pytest.fixture
def served(redis_client: redis.Redis) -> Iterator[tuple[str, TestClient]]:
    datas, _, _ = generated(GeneratorConfig(seed=9, tenants=3, duration_s=240, rate_per_s=40, start=recent_start(240)))
    rules = load_rules()
    proc = SpeedProcessor(SpeedStore(redis_client, "speed", rules), EventDecoder(), rules, OpsRecorder(redis_client, "speed"))
    proc.process_batch(ShardContext("s", "shardId-000000000000", "w", 1), as_stream_records(datas), 250)
    app = create_app(redis_client)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", TestClient(app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chromium(tmp_path: Path, *args: str) -> str:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    out = subprocess.run([binary, *FLAGS, f"--user-data-dir={tmp_path / f'profile-{time.monotonic_ns()}'}", *args],
                         capture_output=True, timeout=180)
    return out.stdout.decode("utf-8", "replace")


def test_dashboard_numbers_match_the_api(served: tuple[str, TestClient], redis_client: redis.Redis, tmp_path: Path) -> None:
    base, http = served
    key = create_key(redis_client, "tenant-001")
    url = f"{base}/dashboard#tenant=tenant-001&key={key}&minutes=15"
    page = Cells()
    for _ in range(3):
        page = Cells()
        page.feed(chromium(tmp_path, "--dump-dom", url))
        if page.loaded == "true":
            break
    assert page.loaded == "true", "the page loaded its data"
    minutes = sorted({m for m, _ in page.minutes})
    assert len(minutes) >= 5
    start = dt.datetime.fromisoformat(minutes[0])
    end = dt.datetime.fromisoformat(minutes[-1]) + dt.timedelta(minutes=1)
    headers = {"X-API-Key": key}
    params = {"start": start.isoformat(), "end": end.isoformat(), "resolution": "m"}
    api = http.get("/v1/tenants/tenant-001/counts", headers=headers, params=params).json()
    for row in api["series"]:
        for etype, n in row["by_event_type"].items():
            assert page.minutes[(row["bucket_start"], etype)] == n, (row["bucket_start"], etype)
    assert int(page.by_id["total"]) == api["total"] > 0
    uniques = http.get("/v1/tenants/tenant-001/uniques", headers=headers,
                       params={"start": start.isoformat(), "end": end.isoformat()}).json()["unique_visitors"]
    assert int(page.by_id["uniques"]) == uniques > 0
    segments = http.get("/v1/tenants/tenant-001/segments", headers=headers).json()["segments"]
    assert page.segments == {s["name"]: s["members"] for s in segments}
    assert any(page.segments.values())
    assert page.lag == {"speed/shardId-000000000000": 250}
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "dashboard.png"
    chromium(tmp_path, f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 10_000
    shutil.copy(shot, OUTPUT / "dashboard.png")


def test_dashboard_with_another_tenants_key_shows_an_error(served: tuple[str, TestClient], redis_client: redis.Redis,
                                                           tmp_path: Path) -> None:
    base, _ = served
    key = create_key(redis_client, "tenant-002")
    dom = chromium(tmp_path, "--dump-dom", f"{base}/dashboard#tenant=tenant-001&key={key}")
    page = Cells()
    page.feed(dom)
    assert page.loaded == "error"
    assert re.search(r"could not load: 403", dom)
    assert "total" not in page.by_id
