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


def assert_matches_ledger(client: Any, ledger: Ledger, uniques_tolerance: float = 0.03) -> None:
    """Counters equal the ledger exactly (minute cells, hour and day roll-ups); dead letters per reason
    equal; HyperLogLog uniques within tolerance."""
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
