"""The producer resends only failed records, backs off, and never drops one silently."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from streaming.aws import aws_client
from streaming.producer import MAX_BATCH_RECORDS, Producer, ProducerError
from streaming.stream_reader import iter_stream
from tests.conftest import REGION
from tests.faults import PutRecordsFaults

pytestmark = pytest.mark.integration


def test_every_record_arrives_once_under_partial_failures_and_throttling(aws_endpoint: str, stream_name: str) -> None:
    real = aws_client("kinesis", REGION, aws_endpoint)
    faults = PutRecordsFaults(real, seed=5, record_fail_p=0.3, call_throttle_p=0.2)
    hooked = faults.install(aws_client("kinesis", REGION, aws_endpoint))
    sleeps: list[float] = []
    producer = Producer(hooked, stream_name, sleep=sleeps.append, base_backoff_s=0.01, max_attempts=40)
    payloads = [f"event-{i}".encode() for i in range(3000)]
    with producer:
        for i, data in enumerate(payloads):
            producer.put(data, f"visitor-{i % 97}")
    got = Counter(r["Data"] for _, r in iter_stream(real, stream_name))
    assert got == Counter(payloads), "each record exactly once"
    assert faults.failed_records > 0 and faults.throttled_calls > 0
    assert producer.stats.records_sent == 3000
    assert producer.stats.throttled > 0 and producer.stats.internal_failures > 0
    assert sleeps and all(s >= 0 for s in sleeps)


def test_batches_respect_limits(aws_endpoint: str, stream_name: str) -> None:
    client = aws_client("kinesis", REGION, aws_endpoint)
    sizes: list[int] = []
    client.meta.events.register("before-parameter-build.kinesis.PutRecords",
                                lambda params, **_: sizes.append(len(params["Records"])))
    with Producer(client, stream_name) as producer:
        for i in range(1234):
            producer.put(b"x" * 10, str(i))
        for i in range(30):  # 30 x 300 KiB: the 5 MiB limit cuts batches before 500 records
            producer.put(b"y" * 300_000, str(i))
    assert max(sizes) == MAX_BATCH_RECORDS
    assert sum(sizes) == 1264
    assert any(s < 20 for s in sizes[3:])


def test_gives_up_loudly_with_the_unsent_records(aws_endpoint: str, stream_name: str) -> None:
    real = aws_client("kinesis", REGION, aws_endpoint)
    faults = PutRecordsFaults(real, record_fail_p=1.0, call_throttle_p=0.0)
    producer = Producer(faults.install(aws_client("kinesis", REGION, aws_endpoint)), stream_name,
                        sleep=lambda s: None, max_attempts=3)
    producer.put(b"a", "k")
    producer.put(b"b", "k")
    with pytest.raises(ProducerError) as info:
        producer.flush()
    assert sorted(d for d, _ in info.value.unsent) == [b"a", b"b"]


def test_oversized_record_is_refused() -> None:
    producer = Producer(object(), "s")
    with pytest.raises(ValueError, match="1 MiB"):
        producer.put(b"x" * (1024 * 1024 + 1), "k")
