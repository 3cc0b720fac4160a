"""Headless Chromium loads a page from one loopback origin whose script sends events to the collector on
another (cross-origin): ``fetch`` with JSON and an Authorization header (a CORS preflight), and
``navigator.sendBeacon`` with a text/plain body carrying the write key. The speed layer counts them."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.settings import load_settings
from streaming.stack.process import free_port
from tests.collector.conftest import Collector, decoded, wait_drained
from tests.reconcile import pipeline
from tests.speed.conftest import read_minute_counts
from tests.speed.test_dashboard import chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PAGE = """<!doctype html><html><body data-done="no"><script>
const collector = %(collector)s, key = %(key)s;
async function run() {
  const auth = "Basic " + btoa(key + ":");
  const results = [];
  for (let i = 0; i < 3; i++) {
    const r = await fetch(collector + "/v1/page", {method: "POST", headers: {"Content-Type": "application/json",
      "Authorization": auth}, body: JSON.stringify({anonymousId: "browser-1", properties: {path: "/from-fetch"}})});
    results.push(r.status);
  }
  const batch = await fetch(collector + "/v1/batch", {method: "POST", headers: {"Content-Type": "application/json",
    "Authorization": auth}, body: JSON.stringify({batch: [
      {type: "track", event: "Clicked", anonymousId: "browser-1"},
      {type: "identify", anonymousId: "browser-1", userId: "u-browser"}]})});
  results.push(batch.status);
  const beacons = [];
  for (let i = 0; i < 2; i++) {
    beacons.push(navigator.sendBeacon(collector + "/v1/batch", JSON.stringify({writeKey: key,
      batch: [{type: "page", anonymousId: "browser-2", properties: {path: "/from-beacon"}}]})));
  }
  document.body.dataset.statuses = results.join(",");
  document.body.dataset.beacons = beacons.join(",");
  document.body.dataset.done = "yes";
}
run().catch(e => { document.body.dataset.done = "error: " + e; });
</script></body></html>"""


@pytest.fixture
def page_origin(collector: Collector) -> Iterator[str]:
    html = PAGE % {"collector": json.dumps(collector.url), "key": json.dumps(collector.keys["acme"])}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/shop"
    finally:
        server.shutdown()


def test_fetch_and_send_beacon_from_another_origin_are_counted(
        collector: Collector, page_origin: str, tmp_path: Path, collector_env: dict[str, str], kinesis: Any,
        dynamodb: Any, redis_client: Any) -> None:
    dom = chromium(tmp_path, "--dump-dom", page_origin)
    assert 'data-done="yes"' in dom, dom[-600:]
    assert 'data-statuses="200,200,200,200"' in dom
    assert 'data-beacons="true,true"' in dom
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the beacons are sent after the page is done with them
        events, _ = decoded(kinesis, collector_env["TALLY_STREAM_NAME"])
        if len(events) >= 7:
            break
        time.sleep(0.5)
    wait_drained(collector)
    events, rejected = decoded(kinesis, collector_env["TALLY_STREAM_NAME"])
    assert not rejected
    paths = sorted(e.properties.get("path", "") for e in events if e.event_type.value == "page_view")
    assert paths == ["/from-beacon"] * 2 + ["/from-fetch"] * 3
    settings = load_settings(collector_env)
    from streaming.resources import ensure_lease_table

    ensure_lease_table(dynamodb, settings.lease_table)
    pipeline.run_speed(settings, kinesis, dynamodb, redis_client)
    counts: dict[str, int] = {}
    for (tenant, etype, _), n in read_minute_counts(redis_client).items():
        assert tenant == "acme"
        counts[etype] = counts.get(etype, 0) + n
    assert counts == {"page_view": 5, "custom": 1, "identify": 1}
