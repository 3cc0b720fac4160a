"""Redis restarted **empty** mid-run, on a stream that no longer holds its first records: the consumer
rebuilds on its own what the stream still holds, the batch layer (archived before the records were
trimmed, built by dbt once) holds the rest, and one ``tally heal`` makes every speed-layer structure —
counters, unique visitors, top pages, live segments — equal to the records' ledger.

Real parts: an AWS emulator of the test's own that keeps at most N records per shard (older ones are
trimmed, as past Kinesis's retention), a redis-server without persistence, the consumer as a process,
the archiver, the DuckDB loader and dbt."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from orchestration.cli import main
from streaming.aws import aws_client
from streaming.generator import GeneratorConfig
from streaming.resources import ensure_bucket, ensure_lease_table, ensure_stream
from streaming.settings import load_settings
from streaming.speed.ops import read_lag
from streaming.stack.process import free_port, port_in_use, stop_pid, wait_until
from streaming.stack.redis_local import RedisServer
from streaming.stream_reader import list_shard_ids
from tests.batch.streams import read_shard
from tests.reconcile import pipeline
from tests.reconcile.conftest import generated
from tests.speed.conftest import (
    assert_speed_layer_matches, read_minute_counts, start_consumer, total_counted, valid_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.dbt]

REGION = "us-east-1"


def _emulator(tmp_path: Path, max_records_per_shard: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = tmp_path / "emulator.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streaming.stack.emulator", "--port", str(port),
                                 "--max-records-per-shard", str(max_records_per_shard)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: port_in_use(port), 60, "AWS emulator", proc, log)
    return proc, f"http://127.0.0.1:{port}"


def _counts_of(datas: list[bytes]) -> dict[tuple[str, str, int], int]:
    out: dict[tuple[str, str, int], int] = {}
    for e in valid_events(datas):
        key = (e.tenant_id, e.event_type.value, int(e.received_at.timestamp()) // 60)
        out[key] = out.get(key, 0) + 1
    return out


def _caught_up(client: redis.Redis, want: int, timeout_s: float, after: float) -> None:
    """Until Redis counts ``want`` events and every shard reported no lag since ``after``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            lag = read_lag(client)
            if total_counted(client) == want and lag and all(
                    v["millis_behind_latest"] == 0 and v["at"] > after for v in lag.values()):
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"after {timeout_s}s: {total_counted(client)}/{want} events counted")


def test_empty_redis_is_rebuilt_from_the_stream_and_healed_from_the_warehouse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    h0 = int(now // 3600) * 3600 - 2 * 3600  # two hours ago: hour h0 closes, the data ends 20+ min ago
    start = dt.datetime.fromtimestamp(h0 + 600, dt.timezone.utc).isoformat().replace("+00:00", "Z")
    records, ledger = generated(GeneratorConfig(seed=17, tenants=5, start=start, duration_s=90 * 60, rate_per_s=1.2,
                                                duplicate_rate=0.02, late_rate=0.0, malformed_rate=0.01))
    datas = [r.data for r in records]
    half = len(records) // 2
    # Each shard keeps ~80% of its share: the first ~20% of the run (inside hour h0) is trimmed by the end.
    emulator, endpoint = _emulator(tmp_path, int(0.8 * len(records) / 2))
    server = RedisServer(workdir=tmp_path / "redis", port=free_port()).start()  # no persistence
    env = {"TALLY_ENV": "local", "TALLY_HOME": str(tmp_path / "home"), "TALLY_AWS_ENDPOINT_URL": endpoint,
           "TALLY_REDIS_URL": server.url, "TALLY_STREAM_NAME": "heal-stream", "TALLY_BUCKET": "heal-bucket",
           "TALLY_LEASE_TABLE": "heal-leases", "TALLY_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
           "TALLY_ALLOWED_LATENESS_S": "60"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(env)
    kinesis, s3, dynamodb = (aws_client(s, REGION, endpoint) for s in ("kinesis", "s3", "dynamodb"))
    ensure_stream(kinesis, settings.stream_name, 2)
    ensure_bucket(s3, settings.bucket, REGION)
    ensure_lease_table(dynamodb, settings.lease_table)
    client = redis.Redis.from_url(server.url)
    consumer = start_consumer(env, tmp_path / "consumer.log")
    try:
        pipeline.send(kinesis, settings.stream_name, records[:half])
        _caught_up(client, len(valid_events(datas[:half])), 180, time.time())
        pipeline.run_archiver(settings, kinesis, dynamodb, s3)  # the first half archived before it is trimmed
        tail = int(len(records) * 0.9)
        pipeline.send(kinesis, settings.stream_name, records[half:tail])
        server.kill()  # Redis dies mid-run and comes back with nothing
        server.start()
        pipeline.send(kinesis, settings.stream_name, records[tail:])
        held = [r.data for shard in list_shard_ids(kinesis, settings.stream_name)
                for r in read_shard(kinesis, settings.stream_name, shard)]
        assert len(held) < 0.85 * len(records), "the stream no longer holds the run's first records"
        # The consumer's own recovery: exactly what the stream still holds, nothing more.
        _caught_up(client, len(valid_events(held)), 240, time.time())
        assert read_minute_counts(client) == _counts_of(held)
        assert "hold less than was applied" in (tmp_path / "consumer.log").read_text()

        pipeline.run_archiver(settings, kinesis, dynamodb, s3)
        pipeline.load_warehouse(settings, s3)
        pipeline.run_dbt(settings, tmp_path / "dbt", "+fct_event_counts_day")
        frm = dt.datetime.fromtimestamp(h0, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M")
        to = dt.datetime.fromtimestamp(h0 + 3 * 3600, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M")
        result = CliRunner().invoke(main, ["heal", "--from", frm, "--to", to, "--who", "pytest"])
        assert result.exit_code == 0, result.output
        assert "unique-visitor hours" in result.output and "segments" in result.output, result.output
        at_s = int(time.time())
        assert_speed_layer_matches(client, datas, ledger, dead_letters=False, segments_at_s=at_s)
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(30)
        client.close()
        server.stop()
        stop_pid(emulator.pid)
        emulator.wait(10)
