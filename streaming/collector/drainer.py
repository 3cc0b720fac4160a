"""Forward the spool to Kinesis, oldest first, and trim what Kinesis acknowledged.

Each round reads up to one PutRecords call's worth of durable records (≤ 500 records, < 5 MiB) from the
drained position and gives them to the :class:`~streaming.producer.Producer`, which resends only the
records a response marks failed. When the producer gives up (a long throttle) or the call cannot be made
at all (Kinesis unreachable), the drainer waits (backing off up to ``max_backoff_s``) and tries again
with what is still unsent; nothing moves the drained position but a full acknowledgement. A restarted
collector's drainer starts at the saved drained position, so the spool's oldest records go first.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streaming.collector.spool import Spool
from streaming.producer import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, Producer, ProducerError

log = logging.getLogger("tally.collector.drainer")

#: A little under PutRecords' 5 MiB so the partition keys fit too: the producer then never splits a round.
_ROUND_BYTES = MAX_BATCH_BYTES - 256 * 1024


@dataclass
class DrainerStats:
    records_sent: int = 0
    rounds: int = 0
    failures: int = 0
    last_error: str = ""
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class Drainer:
    """A thread: spool -> Producer -> Kinesis."""

    def __init__(self, spool: Spool, kinesis: Any, stream_name: str, *, max_backoff_s: float = 2.0,
                 producer_attempts: int = 6, on_sent: Callable[[int], None] | None = None,
                 linger_s: float = 0.05) -> None:
        self.spool = spool
        self.producer = Producer(kinesis, stream_name, max_attempts=producer_attempts, max_backoff_s=max_backoff_s)
        self.max_backoff_s = max_backoff_s
        #: A round smaller than a full PutRecords call waits this long for more (each call has a fixed
        #: cost in botocore and in Kinesis; 50 ms is small against the end-to-end budget of seconds).
        self.linger_s = linger_s
        self.on_sent = on_sent
        self.stats = DrainerStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spool-drainer", daemon=True)
        self._rng = random.Random()

    def start(self) -> Drainer:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the round in flight (whatever is unsent stays in the spool for the next start)."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)

    def idle(self) -> bool:
        """Nothing durable is waiting to be sent."""
        return self.spool.depth_bytes() == 0

    def _run(self) -> None:
        at = self.spool.drained
        while not self._stop.is_set():
            records, end = self.spool.read(at, MAX_BATCH_RECORDS, _ROUND_BYTES)
            if records and len(records) < MAX_BATCH_RECORDS and self.linger_s:
                self._stop.wait(self.linger_s)
                records, end = self.spool.read(at, MAX_BATCH_RECORDS, _ROUND_BYTES)
            if not records:
                if end != at:
                    self.spool.mark_drained(end, 0)
                    at = end
                    continue
                self.spool.wait_durable(at, 0.2)
                continue
            if not self._send([(r.data, r.partition_key) for r in records]):
                return
            self.spool.mark_drained(end, len(records))
            self.stats.records_sent += len(records)
            self.stats.rounds += 1
            if self.on_sent is not None:
                self.on_sent(len(records))
            at = end

    def _send(self, pending: list[tuple[bytes, str]]) -> bool:
        """True once every record is acknowledged; False if asked to stop first."""
        attempt = 0
        while True:
            try:
                self.producer.put_many(pending)
                self.producer.flush()
                if attempt:
                    log.info("drainer: Kinesis took the records again after %d failed rounds", attempt)
                return True
            except ProducerError as exc:
                pending = exc.unsent
                kind = "producer"
            except Exception as exc:  # noqa: BLE001 - Kinesis unreachable: keep the records, wait, retry
                # (flush emptied the producer's buffer before the call; some of them may have been delivered
                # by an earlier attempt: resent, they are redeliveries the event_id de-duplicates)
                kind = type(exc).__name__
                self.stats.last_error = f"{kind}: {exc}"[:300]
            attempt += 1
            self.stats.failures += 1
            self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
            if attempt == 1 or attempt % 20 == 0:
                log.warning("drainer: %d records not yet in Kinesis (%s); they stay in the spool and are retried",
                            len(pending), kind)
            if self._stop.wait(self._rng.uniform(0.5, 1.0) * min(self.max_backoff_s, 0.1 * 2 ** min(attempt, 6))):
                return False
