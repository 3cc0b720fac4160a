"""Redis, not the consumer, dies: a redis-server with ``appendfsync everysec`` is SIGKILLed at least 10
times while a consumer process applies a generated stream, and each time restarted from its AOF with the
tail cut off at a random point (what the kernel had not written when a machine crashes: the writes
``everysec`` may lose although Redis acknowledged them). The consumer notices each loss and reads again
from what Redis holds; at the end every speed-layer structure equals the records and their ledger."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
import redis

from streaming.aws import aws_client
from streaming.generator import GeneratorConfig
from streaming.resources import ensure_lease_table, ensure_stream
from streaming.settings import load_settings
from streaming.stack.process import free_port
from streaming.stack.redis_local import RedisServer
from tests.conftest import REGION
from tests.speed.conftest import paced_producer, assert_speed_layer_matches, generated, recent_start, start_consumer, wait_for_totals
from tests.speed.test_positions import aof_tail

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 10
PRODUCE_PER_S = 1_500


def test_redis_sigkilled_and_losing_its_aof_tail_ends_with_the_ledger(tally_env: dict[str, str], tmp_path: Path) -> None:
    server = RedisServer(workdir=tmp_path / "redis", port=free_port(), appendonly=True, appendfsync="everysec",
                         data_name="t").start()
    env = {**tally_env, "TALLY_REDIS_URL": server.url}
    settings = load_settings(env)
    kinesis = aws_client("kinesis", REGION, settings.aws_endpoint_url)
    ensure_stream(kinesis, settings.stream_name, 4)
    ensure_lease_table(aws_client("dynamodb", REGION, settings.aws_endpoint_url), settings.lease_table)
    datas, pkeys, ledger = generated(GeneratorConfig(seed=2027, tenants=30, duration_s=200, rate_per_s=300,
                                                     duplicate_rate=0.02, late_rate=0.0, malformed_rate=0.01,
                                                     start=recent_start(200)))
    assert ledger.records_total >= 55_000 and ledger.duplicates > 0

    producer = paced_producer(settings.aws_endpoint_url, settings.stream_name, datas, pkeys, PRODUCE_PER_S)
    log = tmp_path / "consumer.log"
    proc = start_consumer(env, log, lease_duration_s=2.0)
    client = redis.Redis.from_url(server.url)
    rng = random.Random(11)
    cut_bytes = []
    try:
        loaded = 0  # the AOF tail's size when the running incarnation started: never cut below it
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.5, 4.0))
            assert proc.poll() is None, log.read_text()[-3000:]
            server.kill()
            tail = aof_tail(server)
            size = tail.stat().st_size
            cut = rng.randint(0, min(300_000, size - loaded))
            with open(tail, "r+b") as fh:
                fh.truncate(size - cut)
            cut_bytes.append(cut)
            server.start()
            loaded = aof_tail(server).stat().st_size
        producer.join(300)
        wait_for_totals(client, ledger, 300)
        time.sleep(3.0)  # a re-read still in flight would show up as a double count
        assert_speed_layer_matches(client, datas, ledger)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        client.close()
        server.stop()
    text = log.read_text()
    # The storm really cost acknowledged writes, and the consumer read them again (not only restarts).
    assert sum(1 for c in cut_bytes if c > 0) >= KILLS - 2
    assert text.count("hold less than was applied") >= 3, text[-3000:]
