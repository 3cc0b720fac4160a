"""End to end through the AWS emulator and the lease worker: faults on the way in, workers killed, Redis
restarted; every time the counters equal the generator's ledger."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.aws import aws_client
from streaming.generator import GeneratorConfig
from streaming.producer import Producer
from streaming.resources import ensure_lease_table, ensure_stream
from streaming.settings import load_settings
from streaming.speed.ops import read_lag
from streaming.speed.run import ConsumerOptions, build_worker
from streaming.stack.redis_local import RedisServer
from tests.conftest import REGION
from tests.faults import PutRecordsFaults
from tests.speed.conftest import assert_matches_ledger, generated, start_consumer, wait_for_totals

pytestmark = pytest.mark.integration


def _setup(env: dict[str, str], shards: int) -> Any:
    settings = load_settings(env)
    kinesis = aws_client("kinesis", REGION, settings.aws_endpoint_url)
    ensure_stream(kinesis, settings.stream_name, shards)
    ensure_lease_table(aws_client("dynamodb", REGION, settings.aws_endpoint_url), settings.lease_table)
    return settings, kinesis


def _produce(kinesis: Any, stream: str, datas: list[bytes], pkeys: list[str]) -> None:
    with Producer(kinesis, stream) as producer:
        for data, key in zip(datas, pkeys, strict=True):
            producer.put(data, key)


def test_partial_put_failures_and_throttling_end_to_end(tally_env: dict[str, str], redis_client: redis.Redis) -> None:
    settings, kinesis = _setup(tally_env, 2)
    datas, pkeys, ledger = generated(GeneratorConfig(seed=31, tenants=10, duration_s=60, rate_per_s=100,
                                                     duplicate_rate=0.03, malformed_rate=0.02))
    faults = PutRecordsFaults(kinesis, seed=3, record_fail_p=0.3, call_throttle_p=0.2)
    hooked = faults.install(aws_client("kinesis", REGION, settings.aws_endpoint_url))
    producer = Producer(hooked, settings.stream_name, sleep=lambda s: None, max_attempts=60)
    with producer:
        for data, key in zip(datas, pkeys, strict=True):
            producer.put(data, key)
    assert faults.failed_records > 0 and faults.throttled_calls > 0
    build_worker(settings, ConsumerOptions(lease_duration_s=5)).run_until_caught_up(120)
    assert_matches_ledger(redis_client, ledger)


def test_three_workers_one_killed(tally_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> None:
    settings, kinesis = _setup(tally_env, 4)
    datas, pkeys, ledger = generated(GeneratorConfig(seed=32, tenants=15, duration_s=120, rate_per_s=250,
                                                     duplicate_rate=0.03, malformed_rate=0.01))
    procs = [start_consumer(tally_env, tmp_path / f"consumer-{i}.log", worker_id=f"w{i}") for i in range(3)]
    try:
        _produce(kinesis, settings.stream_name, datas[: len(datas) // 2], pkeys[: len(datas) // 2])
        deadline = time.monotonic() + 60
        while not any(v["worker"] == "w0" for v in read_lag(redis_client).values()):
            assert time.monotonic() < deadline, "w0 never applied a batch"
            time.sleep(0.2)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        _produce(kinesis, settings.stream_name, datas[len(datas) // 2:], pkeys[len(datas) // 2:])
        wait_for_totals(redis_client, ledger, 120)
        time.sleep(1.0)  # nothing more may arrive
        assert_matches_ledger(redis_client, ledger)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
    # The survivors took over every shard the killed worker held.
    last_writers = {shard: v["worker"] for shard, v in read_lag(redis_client).items()}
    assert len(last_writers) == 4 and set(last_writers.values()) <= {"w1", "w2"}


def test_redis_restarted_mid_run_with_aof(tally_env: dict[str, str], tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path / "redis", appendonly=True, appendfsync="always").start()
    port = server.port
    env = {**tally_env, "TALLY_REDIS_URL": server.url}
    settings, kinesis = _setup(env, 2)
    datas, pkeys, ledger = generated(GeneratorConfig(seed=33, tenants=10, duration_s=120, rate_per_s=200,
                                                     duplicate_rate=0.03, malformed_rate=0.01))
    client = redis.Redis(port=port)
    stop = threading.Event()
    worker = build_worker(settings, ConsumerOptions(lease_duration_s=5, redis_wait_s=0.5), stop)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        third = len(datas) // 3
        _produce(kinesis, settings.stream_name, datas[:third], pkeys[:third])
        time.sleep(1.0)
        server.kill()  # SIGKILL: only what the AOF holds survives
        _produce(kinesis, settings.stream_name, datas[third:2 * third], pkeys[third:2 * third])
        time.sleep(2.0)  # the consumer keeps failing to apply meanwhile
        server = RedisServer(workdir=tmp_path / "redis", port=port, appendonly=True, appendfsync="always").start()
        _produce(kinesis, settings.stream_name, datas[2 * third:], pkeys[2 * third:])
        wait_for_totals(client, ledger, 120)
        time.sleep(1.0)
        assert_matches_ledger(client, ledger)
    finally:
        stop.set()
        thread.join(30)
        server.stop()
