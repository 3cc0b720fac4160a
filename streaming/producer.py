"""Kinesis producer: PutRecords batches (≤500 records, ≤5 MiB), resending only what failed.

A PutRecords call can succeed as a whole while some records fail (``FailedRecordCount`` > 0, with
``ErrorCode`` ProvisionedThroughputExceededException or InternalFailure per record). Only those records
are resent, with exponential backoff and full jitter. The buffer is bounded: :meth:`Producer.put` sends
synchronously when it is full, so a caller faster than the stream is slowed down rather than allowed to
grow memory. A record is never dropped: after ``max_attempts`` the unsent records are raised in a
:class:`ProducerError` for the caller to keep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
_RETRYABLE_CALL_ERRORS = {
    "ProvisionedThroughputExceededException", "InternalFailure", "ServiceUnavailable",
    "ThrottlingException", "LimitExceededException", "KMSThrottlingException",
}


class ProducerError(RuntimeError):
    """Records that could not be delivered; ``unsent`` holds them (data, partition key)."""

    def __init__(self, message: str, unsent: list[tuple[bytes, str]]) -> None:
        super().__init__(message)
        self.unsent = unsent


@dataclass
class ProducerStats:
    records_sent: int = 0
    calls: int = 0
    records_retried: int = 0
    throttled: int = 0
    internal_failures: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)


class Producer:
    """Batching producer for one stream. Not thread-safe: one per sending thread."""

    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        *,
        max_attempts: int = 12,
        base_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_sent = on_sent
        self.stats = ProducerStats()
        self._buffer: list[tuple[bytes, str]] = []
        self._buffer_bytes = 0

    def put(self, data: bytes, partition_key: str) -> None:
        """Queue one record; sends a batch first when adding it would pass a PutRecords limit."""
        size = len(data) + len(partition_key.encode())
        if size > MAX_RECORD_BYTES:
            raise ValueError(f"record of {size} bytes exceeds Kinesis's 1 MiB limit")
        if len(self._buffer) >= MAX_BATCH_RECORDS or self._buffer_bytes + size > MAX_BATCH_BYTES:
            self.flush()
        self._buffer.append((data, partition_key))
        self._buffer_bytes += size

    def put_many(self, records: Iterable[tuple[bytes, str]]) -> None:
        for data, key in records:
            self.put(data, key)

    def flush(self) -> None:
        """Send everything buffered; returns when every record is acknowledged, or raises."""
        pending, self._buffer, self._buffer_bytes = self._buffer, [], 0
        if pending:
            self._send(pending)

    def _backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.max_backoff_s, self.base_backoff_s * (2 ** attempt)))

    def _send(self, pending: list[tuple[bytes, str]]) -> None:
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(self._backoff(attempt))
            try:
                self.stats.calls += 1
                response = self.kinesis.put_records(
                    StreamName=self.stream_name,
                    Records=[{"Data": data, "PartitionKey": key} for data, key in pending],
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in _RETRYABLE_CALL_ERRORS:
                    raise ProducerError(f"PutRecords failed with {code}: not retryable", pending) from exc
                self.stats.errors_by_code[code] = self.stats.errors_by_code.get(code, 0) + 1
                self.stats.records_retried += len(pending)
                continue
            failed: list[tuple[bytes, str]] = []
            if response.get("FailedRecordCount", 0):
                for record, result in zip(pending, response["Records"], strict=True):
                    code = result.get("ErrorCode")
                    if code:
                        failed.append(record)
                        self.stats.errors_by_code[code] = self.stats.errors_by_code.get(code, 0) + 1
                        if code == "ProvisionedThroughputExceededException":
                            self.stats.throttled += 1
                        else:
                            self.stats.internal_failures += 1
            delivered = len(pending) - len(failed)
            self.stats.records_sent += delivered
            if self.on_sent is not None and delivered:
                self.on_sent(delivered)
            if not failed:
                return
            self.stats.records_retried += len(failed)
            pending = failed
        raise ProducerError(
            f"{len(pending)} records still failing after {self.max_attempts} attempts", pending
        )

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.flush()
