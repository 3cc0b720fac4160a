"""Collector fixtures: a real collector process (the one `tally collect` runs) against the session's AWS
emulator, with its own stream, write-key table, state directory and a write key per tenant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from streaming.aws import aws_client
from streaming.collector.writekeys import create_write_key
from streaming.events import Event, EventDecoder, Rejection
from streaming.resources import ensure_stream
from streaming.stack.process import free_port, port_in_use, wait_until
from streaming.stream_reader import list_shard_ids
from tests.batch.streams import read_shard

TENANTS = ("acme", "globex", "initech")


@dataclass
class Collector:
    """One collector process; ``restart`` keeps its port and state directory (a restarted instance)."""

    env: dict[str, str]
    state_dir: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_env: dict[str, str] | None = None) -> Collector:
        env = {**os.environ, **self.env, "TALLY_COLLECTOR_STATE_DIR": str(self.state_dir), **(extra_env or {})}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "streaming.collector.run", "--port", str(self.port)],
                                         env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: port_in_use(self.port), 60, "collector", self.proc, self.log)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def health(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def post(self, path: str, body: Any = None, tenant: str | None = "acme", data: bytes | None = None,
             headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        auth = (self.keys[tenant], "") if tenant else None
        return requests.post(f"{self.url}{path}", json=body if data is None else None, data=data, auth=auth,
                             headers=headers, timeout=30, **kwargs)


@pytest.fixture
def collector_env(tally_env: dict[str, str], kinesis: Any, dynamodb: Any) -> dict[str, str]:
    ensure_stream(kinesis, tally_env["TALLY_STREAM_NAME"], 2)
    env = {**tally_env, "TALLY_WRITE_KEY_TABLE": tally_env["TALLY_LEASE_TABLE"] + "-keys",
           "TALLY_COLLECTOR_KEYS_REFRESH_S": "1", "TALLY_METRICS_PORT": "off"}
    return env


def make_collector(env: dict[str, str], tmp_path: Path, dynamodb: Any, name: str = "collector") -> Collector:
    c = Collector(env, tmp_path / name, tmp_path / f"{name}.log")
    c.keys = {t: create_write_key(dynamodb, env["TALLY_WRITE_KEY_TABLE"], t) for t in TENANTS}
    return c


@pytest.fixture
def collector(collector_env: dict[str, str], tmp_path: Path, dynamodb: Any) -> Iterator[Collector]:
    c = make_collector(collector_env, tmp_path, dynamodb).start()
    try:
        yield c
    finally:
        c.stop()


def stream_records(kinesis: Any, stream: str) -> list[bytes]:
    return [r.data for shard in list_shard_ids(kinesis, stream) for r in read_shard(kinesis, stream, shard)]


def decoded(kinesis: Any, stream: str) -> tuple[list[Event], list[Rejection]]:
    decoder = EventDecoder()
    events: list[Event] = []
    rejected: list[Rejection] = []
    for data in stream_records(kinesis, stream):
        out = decoder.decode(data)
        (events if isinstance(out, Event) else rejected).append(out)  # type: ignore[arg-type]
    return events, rejected


def wait_drained(c: Collector, timeout_s: float = 60) -> None:
    wait_until(lambda: c.health()["depth_bytes"] == 0, timeout_s, "the collector's spool to drain", c.proc, c.log)


def rejection_message(rejection: Rejection) -> Any:
    return json.loads(rejection.raw)["message"]
