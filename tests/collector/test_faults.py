"""The collector under faults: SIGKILLed again and again while a client sends with retries, Kinesis gone
for 30 s under load, and a full spool. Every event that got a 200 must be in every layer exactly once."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests

from streaming.aws import aws_client
from streaming.collector.writekeys import create_write_key
from streaming.events import Event
from streaming.resources import ensure_stream
from streaming.settings import load_settings
from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from tests.collector.conftest import TENANTS, Collector, decoded, make_collector, wait_drained
from tests.collector.layers import run_layers, speed_cells, warehouse_cells

pytestmark = pytest.mark.integration

TYPES = {"page": "page_view", "identify": "identify", "track": "custom"}


class Sender:
    """Sends batches of fresh messages, each retried (same messageIds) until it gets a 200."""

    def __init__(self, collector: Collector, batch: int = 20, pause_s: float = 0.0, seed: int = 1) -> None:
        self.collector = collector
        self.batch = batch
        self.pause_s = pause_s
        self.rng = random.Random(seed)
        self.acked: dict[str, tuple[str, str]] = {}  # event_id -> (tenant, envelope type)
        self.statuses: Counter[int] = Counter()
        self.failures = 0
        self.stop = threading.Event()
        self._pause = threading.Event()
        self._paused = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.max_ack_s = 0.0

    def _messages(self) -> tuple[str, list[dict[str, Any]]]:
        tenant = self.rng.choice(TENANTS)
        out = []
        for _ in range(self.batch):
            kind = self.rng.choice(list(TYPES))
            out.append({"type": kind, "event": "E", "anonymousId": f"anon-{self.rng.randrange(50)}",
                        "messageId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                        "properties": {"path": "/p"}})
        return tenant, out

    def pause(self) -> None:
        """Hold the next batch back and wait until the one in flight has its 200."""
        self._pause.set()
        assert self._paused.wait(60)

    def resume(self) -> None:
        self._paused.clear()
        self._pause.clear()

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            if self._pause.is_set():
                self._paused.set()
                time.sleep(0.05)
                continue
            tenant, batch = self._messages()
            started = time.monotonic()
            while True:  # the SDK's loop: same batch until a 200
                try:
                    answer = session.post(f"{self.collector.url}/v1/batch", json={"batch": batch},
                                          auth=(self.collector.keys[tenant], ""), timeout=10)
                    self.statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        break
                except requests.RequestException:
                    self.failures += 1
                    session = requests.Session()
                time.sleep(0.05)
            self.max_ack_s = max(self.max_ack_s, time.monotonic() - started)
            for m in batch:
                self.acked[str(uuid.UUID(m["messageId"]))] = (tenant, TYPES[m["type"]])
            if self.pause_s:
                time.sleep(self.pause_s)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def expected_by_tenant_type(self) -> Counter[tuple[str, str]]:
        return Counter(self.acked.values())


def assert_numbers_whole(events: list[Event]) -> None:
    """Per (source, tenant): the numbers form 1..max with no gap, and no number holds two events."""
    held: dict[tuple[str, str], dict[int, set[str]]] = {}
    for e in events:
        held.setdefault((e.source_id, e.tenant_id), {}).setdefault(e.source_seq, set()).add(str(e.event_id))
    for key, numbers in held.items():
        assert sorted(numbers) == list(range(1, max(numbers) + 1)), f"gap in {key}"
        assert all(len(ids) == 1 for ids in numbers.values()), f"a number of {key} holds two events"


@pytest.mark.slow
def test_sigkill_storm_loses_and_double_counts_nothing(collector_env: dict[str, str], tmp_path: Path, dynamodb: Any,
                                                        kinesis: Any, s3: Any, redis_client: Any) -> None:
    collector = make_collector(collector_env, tmp_path, dynamodb).start()
    kills = 0
    rng = random.Random(19)
    try:
        with Sender(collector) as sender:
            while kills < 22:
                time.sleep(rng.uniform(0.3, 1.2))
                collector.kill()
                kills += 1
                collector.start()
            time.sleep(1.0)
        assert sender.statuses[200] > kills, sender.statuses
        wait_drained(collector)
    finally:
        collector.stop()
    events, rejected = decoded(kinesis, collector_env["TALLY_STREAM_NAME"])
    assert not rejected
    on_stream = {str(e.event_id) for e in events}
    assert set(sender.acked) <= on_stream, "every event that got a 200 is on the stream"
    assert on_stream == set(sender.acked), "and nothing else: every spooled event was eventually acknowledged"
    assert_numbers_whole(events)
    settings = load_settings(collector_env)
    run_layers(settings, kinesis, dynamodb, s3, redis_client, tmp_path)
    speed = speed_cells(redis_client)
    by_tenant_type: Counter[tuple[str, str]] = Counter()
    for (tenant, etype, _), n in speed.items():
        by_tenant_type[(tenant, etype)] += n
    assert by_tenant_type == sender.expected_by_tenant_type(), "the speed layer counted each acknowledged event once"
    assert warehouse_cells(settings.duckdb_path) == speed, "the warehouse's minutes equal the speed layer's"
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        ids = [r[0] for r in con.execute("select event_id::varchar from marts.fct_events").fetchall()]
    assert len(ids) == len(set(ids)) and set(ids) == set(sender.acked)


def _private_emulator(port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streaming.stack.emulator", "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: port_in_use(port), 60, "private AWS emulator", proc, log)
    return proc


@pytest.mark.slow
def test_kinesis_gone_for_30_s_under_load(collector_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    emulator = _private_emulator(port, tmp_path / "emulator.log")
    env = {**collector_env, "TALLY_AWS_ENDPOINT_URL": endpoint}
    stream = env["TALLY_STREAM_NAME"]
    kinesis = aws_client("kinesis", "us-east-1", endpoint)
    dynamodb = aws_client("dynamodb", "us-east-1", endpoint)
    ensure_stream(kinesis, stream, 2)
    collector = make_collector(env, tmp_path, dynamodb).start()
    try:
        with Sender(collector, batch=20, pause_s=0.02) as sender:
            time.sleep(4)
            wait_until(lambda: sender.statuses[200] > 20, 30, "the first acknowledgements")
            # What reached the emulator before the outage is lost with its memory: read it first, with the
            # sender held for the moment it takes (the emulator's loss of what it held is not the collector's).
            sender.pause()
            wait_drained(collector)
            snapshot, _ = decoded(kinesis, stream)
            assert {str(e.event_id) for e in snapshot} == set(sender.acked)
            stop_pid(emulator.pid)
            emulator.wait(timeout=10)
            sender.resume()
            outage_started = time.monotonic()
            acked_at_stop = sender.statuses[200]
            depths = []
            while time.monotonic() - outage_started < 30:
                time.sleep(1)
                depths.append(collector.health()["depth_bytes"])
            acked_in_outage = sender.statuses[200] - acked_at_stop
            emulator = _private_emulator(port, tmp_path / "emulator.log")
            ensure_stream(kinesis, stream, 2)  # the emulator keeps nothing across restarts
            time.sleep(3)
        assert acked_in_outage > 50, sender.statuses
        assert sender.statuses[503] == 0 and sender.failures == 0, (sender.statuses, sender.failures)
        assert depths[-1] > depths[0] > 0 and depths == sorted(depths), f"the spool grows in the outage: {depths}"
        assert sender.max_ack_s < 5, "requests kept getting their 200 promptly"
        wait_drained(collector, timeout_s=120)
        after, rejected = decoded(kinesis, stream)
        assert not rejected
        events = snapshot + after
        ids = Counter(str(e.event_id) for e in events)
        assert set(ids) == set(sender.acked), "zero loss: every acknowledged event is on the stream"
        # zero double counts: a second copy of an event is only ever the same record sent again
        copies: dict[str, set[int]] = {}
        for e in events:
            copies.setdefault(str(e.event_id), set()).add(e.source_seq)
        assert all(len(s) == 1 for s in copies.values())
        assert_numbers_whole(events)
        assert collector.health()["depth_bytes"] == 0
    finally:
        collector.stop()
        stop_pid(emulator.pid)


def test_a_full_spool_answers_503_with_retry_after_and_keeps_what_it_acknowledged(
        collector_env: dict[str, str], tmp_path: Path, dynamodb: Any, kinesis: Any) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # Kinesis unreachable: nothing leaves the spool
    small = {"TALLY_COLLECTOR_MAX_BATCH_BYTES": "20000", "TALLY_COLLECTOR_SPOOL_MAX_BYTES": "120000",
             "TALLY_COLLECTOR_MAX_MESSAGE_BYTES": "4000", "TALLY_COLLECTOR_RETRY_AFTER_S": "7"}
    collector = make_collector(collector_env, tmp_path, dynamodb)
    collector.start(small)
    collector.stop()  # it has read the write keys once: its state directory caches them
    collector.start({"TALLY_AWS_ENDPOINT_URL": nowhere, **small})
    acked: set[str] = set()
    refused: set[str] = set()
    answers: Counter[int] = Counter()
    try:
        for i in range(200):
            batch = [{"type": "track", "event": "E", "userId": f"u-{i}", "messageId": str(uuid.uuid4()),
                      "properties": {"pad": "x" * 300}} for _ in range(10)]
            answer = collector.post("/v1/batch", {"batch": batch})
            answers[answer.status_code] += 1
            ids = {m["messageId"] for m in batch}
            if answer.status_code == 200:
                assert not refused, "once full, the spool stays full while Kinesis is away"
                acked |= ids
            else:
                assert answer.status_code == 503 and answer.headers["retry-after"] == "7"
                assert answer.json()["code"] == "spool_full"
                refused |= ids
            if len(refused) > 50:
                break
        assert acked and refused, answers
        assert collector.health()["depth_bytes"] <= 120_000
        collector.stop()
        collector.start(small)  # the same state directory, now with Kinesis reachable: the spool drains
        wait_drained(collector)
    finally:
        collector.stop()
    events, _ = decoded(kinesis, collector_env["TALLY_STREAM_NAME"])
    assert {str(e.event_id) for e in events} == acked, "every 200 is on the stream; no 503 is"
