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
        pids = [c.pid for c in second.values()]
    finally:
        stopped = manager.down(local_settings)
    assert set(stopped) == {"aws-emulator", "redis"}
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
    assert stopped == ["aws-emulator"]
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
