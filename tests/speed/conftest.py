"""Speed-layer fixtures: a real 3-master Redis Cluster, generated stream records, ledger comparisons."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.generator import GeneratorConfig, Ledger, TrafficGenerator
from streaming.kinesis.processor import StreamRecord
from streaming.query.api import SpeedQueries
from streaming.speed import deadletters, keys
from streaming.stack.redis_local import RedisServer, find_redis_server


def _redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    return str(Path(find_redis_server()[0]).with_name("redis-cli"))


def _cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis refuses ports above 55535."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 45_000)
        if port in taken or port + 10_000 in taken:
            continue
        try:
            for p in (port, port + 10_000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@pytest.fixture(scope="session")
def redis_cluster_url(servers_dir: Path) -> Iterator[str]:
    """Three ``redis-server --cluster-enabled yes`` masters on loopback, joined by ``redis-cli --cluster create``."""
    nodes = []
    try:
        for i in range(3):
            workdir = servers_dir / f"cluster-{i}"
            port = _cluster_port({n.port for n in nodes})
            server = RedisServer(workdir=workdir, port=port, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ])
            nodes.append(server.start())
        subprocess.run(
            [_redis_cli(), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [redis.Redis(port=n.port).cluster("info") for n in nodes]
            if all(i.get("cluster_state") == "ok" for i in infos):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("Redis Cluster did not reach cluster_state:ok")
        yield nodes[0].url
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster_client(redis_cluster_url: str) -> Iterator[Any]:
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    client.flushall()
    try:
        yield client
    finally:
        client.flushall()
        client.close()


def generated(config: GeneratorConfig) -> tuple[list[bytes], list[str], Ledger]:
    """(record data, partition keys, ledger) for a config."""
    gen = TrafficGenerator(config)
    datas, pkeys = [], []
    for record in gen.records():
        datas.append(record.data)
        pkeys.append(record.partition_key)
    return datas, pkeys, gen.ledger


def as_stream_records(datas: list[bytes], shard_id: str = "shardId-000000000000", first_seq: int = 1) -> list[StreamRecord]:
    return [StreamRecord(shard_id, str(first_seq + i), "pk", d, 0.0) for i, d in enumerate(datas)]


def recent_start(duration_s: int) -> str:
    """A start so that the whole run lies in the last ``duration_s`` seconds (live queries see it)."""
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=duration_s + 5)
    return start.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _epoch(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def read_minute_counts(client: Any) -> dict[tuple[str, str, int], int]:
    """Every minute counter in Redis: (tenant, event_type, epoch minute) -> count."""
    out: dict[tuple[str, str, int], int] = {}
    for key in client.scan_iter(match="tally:{*}:cnt:m:*", count=1000):
        k = key.decode()
        tenant = k[k.index("{") + 1:k.index("}")]
        minute = int(k.rsplit(":", 1)[1])
        for etype, n in client.hgetall(key).items():
            out[(tenant, etype.decode(), minute)] = int(n)
    return out


def ledger_minute_counts(ledger: Ledger) -> dict[tuple[str, str, int], int]:
    return {(t, e, _epoch(m) // 60): n for t, e, m, n in ledger.count_rows()}


def assert_matches_ledger(client: Any, ledger: Ledger, uniques_tolerance: float = 0.03, dead_letters: bool = True) -> None:
    """Counters equal the ledger exactly (minute cells, hour and day roll-ups); dead letters per reason
    equal (unless ``dead_letters`` is False); HyperLogLog uniques within tolerance."""
    got = read_minute_counts(client)
    want = ledger_minute_counts(ledger)
    assert sum(got.values()) == ledger.valid_events
    assert got == want
    hours: dict[tuple[str, str, int], int] = {}
    for (t, e, minute), n in want.items():
        hours[(t, e, minute // 60)] = hours.get((t, e, minute // 60), 0) + n
    for (t, e, hour), n in hours.items():
        assert int(client.hget(keys.counts(t, "h", hour), e) or 0) == n
    days: dict[tuple[str, str, int], int] = {}
    for (t, e, minute), n in want.items():
        days[(t, e, minute // 1440)] = days.get((t, e, minute // 1440), 0) + n
    for (t, e, day), n in days.items():
        assert int(client.hget(keys.counts(t, "d", day), e) or 0) == n
    if dead_letters:
        assert deadletters.counts(client) == ledger.dead_letters
    queries = SpeedQueries(client)
    for tenant, by_day in ledger.uniques_day.items():
        for day_iso, n in by_day.items():
            day = dt.datetime.fromisoformat(day_iso).replace(tzinfo=dt.timezone.utc)
            est = queries.uniques(tenant, day, day + dt.timedelta(days=1))
            assert abs(est - n) <= max(2, uniques_tolerance * n), (tenant, day_iso, est, n)
    for tenant, by_hour in ledger.uniques_hour.items():
        for hour_iso, n in by_hour.items():
            est = client.pfcount(keys.uniques(tenant, "h", _epoch(hour_iso) // 3600))
            assert abs(est - n) <= max(2, uniques_tolerance * n), (tenant, hour_iso, est, n)


def consumer_argv(lease_duration_s: float = 2.0, worker_id: str = "") -> list[str]:
    argv = [sys.executable, "-m", "streaming.speed.run", "--lease-duration-s", str(lease_duration_s)]
    return argv + (["--worker-id", worker_id] if worker_id else [])


def start_consumer(env: dict[str, str], log: Path, lease_duration_s: float = 2.0, worker_id: str = "") -> subprocess.Popen[bytes]:
    """A consumer process (the same code `tally consume` runs), logging to ``log``."""
    full_env = {**os.environ, **env}
    with open(log, "ab") as fh:
        return subprocess.Popen(consumer_argv(lease_duration_s, worker_id), env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def paced_producer(endpoint: str, stream_name: str, datas: list[bytes], pkeys: list[str], per_s: int) -> Any:
    """A started thread sending the records through the producer at about ``per_s`` records a second, so
    that the kills of a storm land while the stream still grows (a fast machine would otherwise consume
    everything before the last kill)."""
    import threading

    from streaming.aws import aws_client
    from streaming.producer import Producer
    from tests.conftest import REGION

    def produce() -> None:
        started = time.monotonic()
        with Producer(aws_client("kinesis", REGION, endpoint), stream_name) as producer:
            for i, (data, key) in enumerate(zip(datas, pkeys, strict=True)):
                producer.put(data, key)
                if i % per_s == per_s - 1:
                    time.sleep(max(0.0, started + (i + 1) / per_s - time.monotonic()))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return thread


def total_counted(client: Any) -> int:
    """Events counted so far, from the day roll-ups (few keys: cheap to poll)."""
    return sum(int(n) for key in client.scan_iter(match="tally:{*}:cnt:d:*", count=1000)
               for n in client.hvals(key))


def wait_for_totals(client: Any, ledger: Ledger, timeout_s: float, alive: Any = None) -> None:
    """Poll until Redis holds as many counted events and dead letters as the ledger (or time runs out)."""
    want_events, want_dl = ledger.valid_events, sum(ledger.dead_letters.values())
    deadline = time.monotonic() + timeout_s
    got_events = got_dl = -1
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        got_events = total_counted(client)
        got_dl = sum(deadletters.counts(client).values())
        if got_events >= want_events and got_dl >= want_dl:
            return
        time.sleep(0.5)
    raise AssertionError(f"after {timeout_s}s: {got_events}/{want_events} events, {got_dl}/{want_dl} dead letters")


def valid_events(datas: list[bytes]) -> list[Any]:
    """The stream's valid events, each event_id once (its first copy), as the speed layer counts them."""
    from streaming.events import Event, EventDecoder

    decoder = EventDecoder()
    seen: set[Any] = set()
    events = []
    for data in datas:
        event = decoder.decode(data, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3650))
        if isinstance(event, Event) and event.event_id not in seen:
            seen.add(event.event_id)
            events.append(event)
    return events


def expected_top_pages(datas: list[bytes]) -> dict[tuple[str, str, int], dict[str, int]]:
    """(tenant, resolution h|d, bucket) -> path -> page views, computed from the records themselves."""
    out: dict[tuple[str, str, int], dict[str, int]] = {}
    for e in valid_events(datas):
        path = e.properties.get("path")
        if e.event_type.value != "page_view" or not isinstance(path, str):
            continue
        hour = int(e.received_at.timestamp()) // 3600
        for key in ((e.tenant_id, "h", hour), (e.tenant_id, "d", hour // 24)):
            by_path = out.setdefault(key, {})
            by_path[path] = by_path.get(path, 0) + 1
    return out


def expected_segments(datas: list[bytes], at_s: int) -> dict[tuple[str, str], set[str]]:
    """(tenant, segment) -> visitors with at least min_count matching events in (at - window, at]."""
    from streaming.segments import load_rules

    hits: dict[tuple[str, str, str], list[int]] = {}
    rules = load_rules()
    for e in valid_events(datas):
        ms = int(e.received_at.timestamp() * 1000)
        for rule in rules:
            if rule.matches(e.event_type.value, e.properties):
                hits.setdefault((e.tenant_id, rule.name, e.anonymous_id), []).append(ms)
    windows = {r.name: (r.min_count, r.window_hours * 3_600_000) for r in rules}
    out: dict[tuple[str, str], set[str]] = {}
    for (tenant, name, anon), times in hits.items():
        k, window = windows[name]
        if sum(1 for t in times if at_s * 1000 - window < t <= at_s * 1000) >= k:
            out.setdefault((tenant, name), set()).add(anon)
    return out


def assert_speed_layer_matches(client: Any, datas: list[bytes], ledger: Ledger, uniques_tolerance: float = 0.03,
                               dead_letters: bool = True, segments_at_s: int | None = None) -> None:
    """Every speed-layer structure against the records and their ledger: counters (minute, hour, day)
    and dead letters exactly, uniques within the HyperLogLog error, top pages per hour and day exactly,
    and every segment's members exactly at ``segments_at_s`` (default: the end of the stream)."""
    from streaming.segments import load_rules

    assert_matches_ledger(client, ledger, uniques_tolerance, dead_letters)
    want_pages = expected_top_pages(datas)
    assert want_pages
    for (tenant, res, bucket), by_path in want_pages.items():
        got = {p.decode(): int(n) for p, n in client.zrange(keys.top_pages(tenant, res, bucket), 0, -1, withscores=True)}
        assert got == by_path, (tenant, res, bucket)
    stray = {k.decode() for k in client.scan_iter(match="tally:{*}:top:*", count=1000)}
    assert stray == {keys.top_pages(t, r, b) for t, r, b in want_pages}
    at_s = segments_at_s or max(int(e.received_at.timestamp()) for e in valid_events(datas)) + 1
    want = expected_segments(datas, at_s)
    assert sum(len(v) for v in want.values()) > 0
    queries = SpeedQueries(client)
    at = dt.datetime.fromtimestamp(at_s, dt.timezone.utc)
    for tenant in ledger.counts:
        for rule in load_rules():
            got_members = set(queries.segment_members(tenant, rule.name, at=at, limit=1_000_000))
            assert got_members == want.get((tenant, rule.name), set()), (tenant, rule.name)
