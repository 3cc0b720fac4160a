"""Forwarding to a legacy collector (TALLY_COLLECTOR_FORWARD_URL): a loopback HTTP server plays the legacy
collector; a real collector process forwards to it from its forward spool."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from streaming.collector.forward import ForwardRequest, forward_status
from streaming.stack.process import free_port, wait_until
from tests.collector.conftest import Collector, make_collector

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Seen:
    path: str
    content_type: str | None
    content_encoding: str | None
    authorization: str | None
    body: bytes


@dataclass
class Legacy:
    """A legacy collector on a fixed loopback port that can be stopped and started again on it."""

    port: int = field(default_factory=free_port)
    delay_s: float = 0.0
    received: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Legacy:
        legacy = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a stopped server has no kept-alive connection left
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                time.sleep(legacy.delay_s)
                legacy.received.append(Seen(self.path, self.headers.get("content-type"),
                                            self.headers.get("content-encoding"), self.headers.get("authorization"),
                                            body))
                answer = b'{"success": true}'
                self.send_response(200)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def legacy() -> Iterator[Legacy]:
    server = Legacy().start()
    try:
        yield server
    finally:
        server.stop()


def forwarding_collector(collector_env: dict[str, str], tmp_path: Path, dynamodb: Any, legacy: Legacy) -> Collector:
    env = {**collector_env, "TALLY_COLLECTOR_FORWARD_URL": legacy.url, "TALLY_COLLECTOR_FORWARD_MAX_BACKOFF_S": "1"}
    return make_collector(env, tmp_path, dynamodb)


def send(c: Collector, i: int, tenant: str) -> Seen:
    """One request as an SDK sends it, alternating a batch, a gzipped batch and a single track call."""
    message = {"type": "track", "event": "Signed Up", "messageId": f"m-{tenant}-{i}", "anonymousId": f"a{i}",
               "properties": {"n": i, "text": "ünïcode"}}
    auth = requests.auth._basic_auth_str(c.keys[tenant], "")
    if i % 3 == 0:
        path, body, headers = "/v1/batch", json.dumps({"batch": [message, {**message, "messageId": f"x{i}"}]}).encode(), {
            "content-type": "application/json"}
    elif i % 3 == 1:
        path, body, headers = "/v1/batch", gzip.compress(json.dumps({"batch": [message]}).encode()), {
            "content-type": "application/json", "content-encoding": "gzip"}
    else:
        path, body, headers = "/v1/track", json.dumps(message).encode(), {"content-type": "text/plain"}
    r = requests.post(c.url + path, data=body, headers={**headers, "authorization": auth}, timeout=30)
    assert r.status_code == 200, r.text
    return Seen(path, headers["content-type"], headers.get("content-encoding"), auth, body)


def test_forward_request_round_trips() -> None:
    request = ForwardRequest("/v1/batch?x=1", (("content-type", "application/json"),), b"\x00\xffbody", 1.5)
    assert ForwardRequest.decode(request.encode()) == request


def test_every_accepted_request_reaches_the_legacy_collector_once_through_downtime_and_sigkill(
        collector_env: dict[str, str], tmp_path: Path, dynamodb: Any, legacy: Legacy) -> None:
    c = forwarding_collector(collector_env, tmp_path, dynamodb, legacy).start()
    sent: list[Seen] = []
    try:
        sent += [send(c, i, ("acme", "globex")[i % 2]) for i in range(10)]
        wait_until(lambda: len(legacy.received) == 10, 30, "the legacy collector to get the first requests")

        legacy.stop()
        down_at = time.monotonic()
        sent += [send(c, i, ("acme", "initech")[i % 2]) for i in range(10, 20)]  # acknowledged while legacy is down
        wait_until(lambda: c.health()["forward"]["failures"] >= 2, 30, "the forwarder to retry")
        c.kill()  # SIGKILL while 10 requests wait in the forward spool
        c.start()
        sent += [send(c, i, "globex") for i in range(20, 25)]
        status = forward_status(c.state_dir)
        assert status is not None and status["depth_bytes"] > 0
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # down for 30 s
        assert len(legacy.received) == 10
        legacy.start()
        wait_until(lambda: len(legacy.received) >= len(sent), 60, "the legacy collector to catch up")
        wait_until(lambda: c.health()["forward"]["depth_bytes"] == 0, 30, "the forward spool to empty")
        time.sleep(1.5)  # anything sent twice would arrive now
        assert legacy.received == sent  # every request once, in order, byte for byte with its headers
        health = c.health()["forward"]
        assert health["lag_s"] == 0 and health["dropped"] == 0 and health["rejected"] == 0
    finally:
        c.stop()
    on_disk = forward_status(c.state_dir)
    assert on_disk is not None and on_disk["depth_bytes"] == 0 and on_disk["forwarded"] == 15  # since the restart


def test_a_slow_legacy_collector_does_not_delay_the_acknowledgement(
        collector_env: dict[str, str], tmp_path: Path, dynamodb: Any, legacy: Legacy) -> None:
    legacy.delay_s = 2.0
    c = forwarding_collector(collector_env, tmp_path, dynamodb, legacy).start()
    try:
        sent, took = [], []
        for i in range(6):
            started = time.monotonic()
            sent.append(send(c, i, "acme"))
            took.append(time.monotonic() - started)
        # 6 requests at 2 s each would take 12 s if an ack waited on the legacy collector
        assert max(took) < 1.0, took
        assert len(legacy.received) <= 1
        forward = c.health()["forward"]
        assert forward["depth_bytes"] > 0 and forward["lag_s"] > 0
        wait_until(lambda: len(legacy.received) == len(sent), 60, "the slow legacy collector to get every request")
        assert legacy.received == sent
    finally:
        c.stop()


def test_a_full_forward_spool_still_acknowledges_and_counts_what_it_did_not_keep(
        collector_env: dict[str, str], tmp_path: Path, dynamodb: Any, legacy: Legacy) -> None:
    legacy.stop()  # down from the start: the forward spool only fills
    env = {**collector_env, "TALLY_COLLECTOR_FORWARD_URL": legacy.url, "TALLY_COLLECTOR_FORWARD_MAX_BACKOFF_S": "1",
           "TALLY_COLLECTOR_FORWARD_MAX_BYTES": "2500"}
    c = make_collector(env, tmp_path, dynamodb).start()
    try:
        sent = [send(c, i, "acme") for i in range(12)]  # every one 200: tally has them (send asserts it)
        forward = c.health()["forward"]
        assert forward["dropped"] > 0 and forward["depth_bytes"] <= 2500
        legacy.start()
        wait_until(lambda: c.health()["forward"]["depth_bytes"] == 0, 30, "the forward spool to empty")
        time.sleep(1.0)
        kept = len(sent) - forward["dropped"]
        positions = [sent.index(r) for r in legacy.received]  # each one was sent, once, in the order sent
        assert len(legacy.received) == kept and positions == sorted(set(positions))
    finally:
        c.stop()


def test_tally_stack_status_shows_forwarding(tmp_path: Path, legacy: Legacy) -> None:
    from streaming.collector.writekeys import create_write_key
    from streaming.settings import load_settings
    from streaming.stack import manager

    settings = load_settings({"TALLY_HOME": str(tmp_path / "home"), "TALLY_STREAM_SHARDS": "1",
                              "TALLY_COLLECTOR_FORWARD_URL": legacy.url, "TALLY_COLLECTOR_KEYS_REFRESH_S": "1",
                              "TALLY_METRICS_PORT": "off"})
    try:
        state = manager.up(settings)
        dynamodb = manager.resolve_endpoints(settings).client("dynamodb", settings.aws_region)
        key = create_write_key(dynamodb, settings.collector.write_key_table, "acme")
        message = {"type": "track", "event": "E", "anonymousId": "a1"}

        def accepted() -> bool:
            r = requests.post(state["collector"].url + "/v1/track", json=message, auth=(key, ""), timeout=10)
            return r.status_code == 200

        wait_until(accepted, 30, "the collector to know the new write key")
        wait_until(lambda: len(legacy.received) == 1, 30, "the legacy collector to get the request")
        legacy.stop()
        assert requests.post(state["collector"].url + "/v1/track", json=message, auth=(key, ""), timeout=10).ok

        def row() -> dict[str, Any]:
            return next(r for r in manager.status(settings) if r["component"] == "collector")

        wait_until(lambda: row().get("forwarded") == 1 and row().get("forward_failures", 0) >= 1
                   and row().get("forward_lag_s", 0) > 0.5, 30, "tally stack status to show the forwarding lag")
        assert row()["forward_bytes"] > 0
    finally:
        manager.down(settings)
