"""`tally stack up | down | status`: idempotent, loopback only, stops only what it started."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from streaming.settings import SettingError, load_settings
from streaming.stack import manager
from streaming.stack.process import pid_alive

pytestmark = pytest.mark.integration


@pytest.fixture
def local_settings(tmp_path: Path):
    return load_settings({"TALLY_HOME": str(tmp_path / "home"), "TALLY_STREAM_SHARDS": "2"})


def test_up_twice_then_down(local_settings) -> None:
    try:
        first = manager.up(local_settings)
        second = manager.up(local_settings)
        assert {k: v.pid for k, v in first.items()} == {k: v.pid for k, v in second.items()}, "up twice reuses"
        endpoints = manager.resolve_endpoints(local_settings)
        assert endpoints.aws_endpoint_url.startswith("http://127.0.0.1:")
        assert redis.Redis.from_url(endpoints.redis_url).ping()
        rows = {r["component"]: r for r in manager.status(local_settings)}
        assert rows["redis"]["running"] and rows["redis"]["version"] and rows["redis"]["memory"]
        assert rows["aws-emulator"]["running"]
        collector = rows["collector"]
        assert collector["running"] and collector["url"].startswith("http://127.0.0.1:")
        assert collector["spool_bytes"] == 0 and collector["source_id"].startswith("col-")
        assert collector["drained"] == "1:0"
        pids = [c.pid for c in second.values()]
    finally:
        stopped = manager.down(local_settings)
    assert set(stopped) == {"aws-emulator", "redis", "collector"}
    assert not any(pid_alive(p) for p in pids)
    with pytest.raises(manager.StackNotRunning, match="tally stack up"):
        manager.resolve_endpoints(local_settings).redis_url
    with pytest.raises(manager.StackNotRunning, match="tally stack up"):
        manager.resolve_endpoints(local_settings).aws_url("kinesis")


def test_taken_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = load_settings({"TALLY_HOME": str(tmp_path), "TALLY_EMULATOR_PORT": str(port)})
        with pytest.raises(SettingError, match=f"TALLY_EMULATOR_PORT='{port}' is already in use.*Fix: unset"):
            manager.up(settings)
    manager.down(settings)


def test_external_redis_is_used_and_never_stopped(tmp_path: Path, redis_url: str) -> None:
    settings = load_settings({"TALLY_HOME": str(tmp_path), "TALLY_REDIS_URL": redis_url})
    try:
        state = manager.up(settings)
        assert state["redis"].started_by_tally is False
    finally:
        stopped = manager.down(settings)
    assert stopped == ["collector", "aws-emulator"]
    assert redis.Redis.from_url(redis_url).ping()


def test_unreachable_redis_fails_fast_with_the_setting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "stack", "up"],
        env={"PATH": "/usr/bin:/bin", "TALLY_HOME": str(tmp_path), "TALLY_REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True, text=True, timeout=120,
    )
    subprocess.run([sys.executable, "-m", "orchestration.cli", "stack", "down"],
                   env={"PATH": "/usr/bin:/bin", "TALLY_HOME": str(tmp_path)}, capture_output=True)
    assert proc.returncode == 2
    assert "TALLY_REDIS_URL" in proc.stderr and "does not answer" in proc.stderr and "Traceback" not in proc.stderr


def _processes_with_home(home: Path) -> list[int]:
    """Live processes started with TALLY_HOME=home in their environment (what `up` spawned)."""
    found = []
    marker = f"TALLY_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_failed_up_leaves_the_stack_as_it_was(tmp_path: Path) -> None:
    """The issue's case: `tally stack up` with a bad TALLY_REDIS_URL stopped tally's Redis and wrote the
    URL into stack.json. Now: stack.json byte for byte the same, the same processes alive, and commands
    without the variable still use tally's Redis; `status` with the variable says what commands use."""
    env = {"PATH": "/usr/bin:/bin", "TALLY_HOME": str(tmp_path / "home"), "TALLY_STREAM_SHARDS": "1"}
    cli = [sys.executable, "-m", "orchestration.cli"]
    try:
        assert subprocess.run([*cli, "stack", "up"], env=env, capture_output=True, timeout=120).returncode == 0
        state_file = tmp_path / "home" / "stack.json"
        before = state_file.read_bytes()
        settings = load_settings(env)
        pids = {name: c.pid for name, c in manager.load_state(settings).items()}
        bad = {**env, "TALLY_REDIS_URL": "redis://127.0.0.1:1/0"}
        proc = subprocess.run([*cli, "stack", "up"], env=bad, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "TALLY_REDIS_URL" in proc.stderr and "Traceback" not in proc.stderr
        assert state_file.read_bytes() == before
        assert all(pid_alive(pid) for pid in pids.values()), pids
        endpoints = manager.resolve_endpoints(settings)
        assert redis.Redis.from_url(endpoints.redis_url).ping()
        status = subprocess.run([*cli, "stack", "status", "--format", "json"], env=bad, capture_output=True,
                                text=True, timeout=60)
        import json

        rows = json.loads(status.stdout)
        used = {(r["component"], r["origin"]): r.get("used_by") for r in rows}
        assert used[("redis", "TALLY_REDIS_URL")] == "commands"
        assert [v for (c, o), v in used.items() if c == "redis" and o != "TALLY_REDIS_URL"] == [
            "nothing: TALLY_REDIS_URL is set"]
    finally:
        subprocess.run([*cli, "stack", "down"], env=env, capture_output=True, timeout=60)


def test_up_that_fails_midway_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that does not answer, found after the emulator and Redis were started: both are
    stopped again and no stack.json is left behind (there was none)."""
    home = tmp_path / "home"
    monkeypatch.setenv("TALLY_HOME", str(home))  # inherited by what `up` spawns: how we find them
    settings = load_settings({"TALLY_HOME": str(home), "TALLY_STREAM_SHARDS": "1",
                              "TALLY_AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:1"})
    with pytest.raises(Exception) as info:
        manager.up(settings)
    from streaming.outages import explain

    assert "DynamoDB at http://127.0.0.1:1 (TALLY_AWS_ENDPOINT_URL_DYNAMODB) does not answer" in explain(info.value, settings)
    assert not (home / "stack.json").exists()
    assert _processes_with_home(home) == []


def test_redis_keeps_its_counters_across_down_and_up(local_settings) -> None:
    """The embedded Redis's AOF has a stable name under .tally/redis: `down` then `up` (on another free
    port) loads the counters the consumer's store wrote."""
    import datetime as dt
    import json
    import uuid

    from streaming.events import EventDecoder
    from streaming.kinesis.processor import StreamRecord
    from streaming.query.api import SpeedQueries
    from streaming.speed.aggregate import aggregate
    from streaming.speed.store import SpeedStore

    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    at = now.isoformat().replace("+00:00", "Z")
    records = [StreamRecord("shardId-0", str(i + 1), "pk", json.dumps({
        "event_id": str(uuid.uuid4()), "tenant_id": "t-keep", "event_type": "click", "anonymous_id": f"a-{i}",
        "occurred_at": at, "received_at": at, "source_id": "c", "source_seq": i, "properties": {},
        "schema_version": 1}).encode(), now.timestamp()) for i in range(25)]
    try:
        first = manager.up(local_settings)["redis"]
        client = redis.Redis.from_url(first.url)
        batch = aggregate(records, EventDecoder(), [])
        SpeedStore(client, "speed").apply("shardId-0", 1, list(batch.tenants.values()))
        assert SpeedQueries(client).counts("t-keep", now, now + dt.timedelta(minutes=1)).total == 25
        client.close()
        manager.down(local_settings)
        second = manager.up(local_settings)["redis"]
        assert second.pid != first.pid
        client = redis.Redis.from_url(manager.resolve_endpoints(local_settings).redis_url)
        assert SpeedQueries(client).counts("t-keep", now, now + dt.timedelta(minutes=1)).total == 25
        assert client.pfcount(f"tally:{{t-keep}}:uv:h:{int(now.timestamp()) // 3600}") == 25
        client.close()
    finally:
        manager.down(local_settings)
