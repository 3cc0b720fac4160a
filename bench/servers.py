"""Servers for benchmarks: the patched AWS emulator and a redis-server on spare loopback ports."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from streaming.stack.redis_local import RedisServer


@contextmanager
def emulator(retention_s: int = 86_400, max_records_per_shard: int = 2_000_000) -> Iterator[str]:
    """Yield the endpoint URL of a fresh emulator process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.stack.emulator", "--port", str(port), "--retention-s", str(retention_s),
         "--max-records-per-shard", str(max_records_per_shard)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_until(lambda: port_in_use(port), 60, "AWS emulator", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)


@contextmanager
def redis_server(appendonly: bool = False) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(workdir=Path(tmp), appendonly=appendonly, appendfsync="everysec").start()
        try:
            yield server
        finally:
            server.stop()
