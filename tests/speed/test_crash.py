"""200k generated events with duplicates and malformed records; the consumer SIGKILLed at random moments
at least 20 times and restarted: final counters equal the ledger exactly, dead letters per reason too."""

from __future__ import annotations

import os
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
from tests.conftest import REGION
from tests.speed.conftest import paced_producer, assert_matches_ledger, generated, start_consumer, total_counted, wait_for_totals

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILLS = 22
PRODUCE_PER_S = 3_000


def test_sigkill_storm_ends_with_the_ledger(tally_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = load_settings(tally_env)
    kinesis = aws_client("kinesis", REGION, settings.aws_endpoint_url)
    ensure_stream(kinesis, settings.stream_name, 4)
    ensure_lease_table(aws_client("dynamodb", REGION, settings.aws_endpoint_url), settings.lease_table)
    datas, pkeys, ledger = generated(GeneratorConfig(seed=2026, tenants=40, duration_s=400, rate_per_s=500,
                                                     duplicate_rate=0.02, late_rate=0.01, malformed_rate=0.01))
    assert ledger.records_total >= 200_000 and ledger.duplicates > 0 and sum(ledger.dead_letters.values()) > 0

    # Paced (about 70 s for the whole stream here) so the kills land while it still grows.
    producer = paced_producer(settings.aws_endpoint_url, settings.stream_name, datas, pkeys, PRODUCE_PER_S)
    rng = random.Random(7)
    log = tmp_path / "consumer.log"
    proc = start_consumer(tally_env, log, lease_duration_s=1.5)
    kills = 0
    progress = []
    try:
        while kills < KILLS:
            if kills % 2 == 0:
                # Any moment: importing, taking leases, reading, mid-apply.
                time.sleep(rng.uniform(0.2, 2.5))
            else:
                # A moment after it has started committing batches, so most kills cut through real work.
                before = total_counted(redis_client)
                deadline = time.monotonic() + 20
                while total_counted(redis_client) == before and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 1.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            progress.append(total_counted(redis_client))
            proc = start_consumer(tally_env, log, lease_duration_s=1.5)
        producer.join(300)
        wait_for_totals(redis_client, ledger, 240)
        time.sleep(2.0)  # a last batch in flight would show up as a double count
        assert_matches_ledger(redis_client, ledger)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert kills >= 20
    # The kills really landed while work was being done, not only after the end.
    assert len(set(progress)) > 5 and progress[-1] < ledger.valid_events
