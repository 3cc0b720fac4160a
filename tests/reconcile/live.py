"""A live pipeline for the lagging-layer tests: the speed consumer and the archiver as their own processes
(so they can be paused with SIGSTOP, and the machine loaded around them), a sender, the batch layer and
reconciliation, all against the fixtures' servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from streaming.generator import GeneratedRecord
from streaming.reconcile.service import Layers, Run, consumers_behind, run_reconcile
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.settings import Settings
from tests.reconcile import pipeline
from tests.reconcile.conftest import Clients, new_settings, prepare

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Live:
    settings: Settings
    env: dict[str, str]
    clients: Clients
    redis: redis.Redis
    home: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, **env: str) -> None:
        """Start a consumer process (``env``: variables for it alone). Its log (stderr) goes to
        ``<name>.log``, its console output (stdout) to ``<name>.out``."""
        argv = {"speed": [sys.executable, "-m", "streaming.speed.run"],
                "archiver": [sys.executable, "-m", "orchestration.cli", "archive", "--follow"]}[name]
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        out = open(self.home / f"{name}.out", "ab")  # noqa: SIM115 - the child holds it
        self.procs[name] = subprocess.Popen(argv, env={**self.env, **env}, stdout=out, stderr=log, cwd=ROOT,
                                            start_new_session=True)

    def pause(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.procs[name].pid, signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def send(self, records: list[GeneratedRecord]) -> float:
        """Put the records on the stream; returns when the last was acknowledged."""
        pipeline.send(self.clients.kinesis, self.settings.stream_name, records)
        return time.time()

    def layers(self) -> Layers:
        return Layers(s3=self.clients.s3, bucket=self.settings.bucket, redis=self.redis,
                      warehouse=DuckDBWarehouse(self.settings.duckdb_path), dynamodb=self.clients.dynamodb,
                      lease_table=self.settings.lease_table, stream_name=self.settings.stream_name,
                      kinesis=self.clients.kinesis)

    def wait_for_tip(self, after: float, only: str | None = None, timeout_s: float = 240.0) -> None:
        """Until the consumers (or the one named ``only``: "speed layer" or "archive") are at the tip."""
        deadline = time.time() + timeout_s
        while True:
            behind = [b for b in consumers_behind(self.layers(), after) if only is None or b.startswith(only)]
            if not behind:
                return
            if time.time() > deadline:
                raise TimeoutError(f"not at the tip after {timeout_s} s: {behind}")
            time.sleep(0.5)

    def batch(self) -> None:
        """Load every archived hour into DuckDB and build fct_events (what the warehouse has is what the
        archive has now)."""
        pipeline.load_warehouse(self.settings, self.clients.s3)
        pipeline.run_dbt(self.settings, self.home)

    def reconcile(self, start: Any, end: Any) -> Run:
        return run_reconcile(self.settings, self.layers(), start, end, who="pytest")


@contextmanager
def live(tmp_path: Path, aws_endpoint: str, redis_url: str, clients: Clients, client: redis.Redis,
         **settings_env: str) -> Iterator[Live]:
    settings = new_settings(aws_endpoint, redis_url, tmp_path)
    prepare(settings, clients)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TALLY_ENV": "local", "TALLY_HOME": str(settings.home),
           "TALLY_AWS_ENDPOINT_URL": aws_endpoint, "TALLY_REDIS_URL": redis_url,
           "TALLY_STREAM_NAME": settings.stream_name, "TALLY_BUCKET": settings.bucket,
           "TALLY_LEASE_TABLE": settings.lease_table, "TALLY_DUCKDB_PATH": str(settings.duckdb_path),
           "TALLY_ARCHIVE_FLUSH_S": "2", **settings_env}
    if settings_env:
        from streaming.settings import load_settings

        settings = load_settings(env)
    runner = Live(settings, env, clients, client, tmp_path)
    try:
        yield runner
    finally:
        runner.stop()


@contextmanager
def busy_cores(n: int = 2) -> Iterator[None]:
    """``n`` processes spinning on the CPU for the block's duration: the machine is saturated."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
