"""The speed layer's RecordProcessor: the thin I/O shell around :func:`aggregate` and the apply script.

A batch is applied completely or not at all as far as the checkpoint is concerned: ``process_batch``
returns the sequence number to checkpoint only after every tenant's call has committed. While Redis is
down it waits and retries the same batch (never logs and skips); after ``max_wait_s`` it raises so the
worker backs off and re-delivers the same records. Replays after a crash are safe because every tenant
call carries the batch's last sequence number and lease token (see ``apply.lua``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streaming.events import EventDecoder
from streaming.kinesis.leases import LeaseLost as WorkerLeaseLost
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.segments import SegmentRule
from streaming.speed.aggregate import Batch, aggregate, paused_gc
from streaming.speed.connect import TRANSIENT_ERRORS
from streaming.speed.ops import OpsRecorder
from streaming.speed.recent import RecentIds
from streaming.speed.store import Fenced, SpeedStore

log = logging.getLogger(__name__)


class RedisUnavailable(RuntimeError):
    """Redis stayed unreachable for ``max_wait_s``: nothing of the batch may be assumed applied."""


class LeaseLost(WorkerLeaseLost):
    """This processor lost its shard (told by the worker or fenced by Redis): it must not write."""


@dataclass
class RetryPolicy:
    base_s: float = 0.05
    max_s: float = 2.0
    max_wait_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    should_stop: Callable[[], bool] = field(default=lambda: False)


@dataclass
class ProcessorStats:
    batches: int = 0
    records: int = 0
    applied: int = 0
    skipped: int = 0
    dead_letters: int = 0
    redis_retries: int = 0


def call_with_retry(fn: Callable[[], Any], policy: RetryPolicy, on_retry: Callable[[BaseException], None]) -> Any:
    """Run ``fn`` until it succeeds, waiting with capped exponential backoff and full jitter on transient
    Redis errors; raise :class:`RedisUnavailable` after ``policy.max_wait_s``."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except TRANSIENT_ERRORS as exc:
            waited = time.monotonic() - started
            if waited >= policy.max_wait_s or policy.should_stop():
                raise RedisUnavailable(f"Redis unavailable for {waited:.1f}s: {type(exc).__name__}") from exc
            on_retry(exc)
            policy.sleep(random.uniform(0, min(policy.max_s, policy.base_s * 2 ** attempt)))
            attempt += 1


class SpeedProcessor:
    """One shard's processor (the worker makes one per shard with ``processor_factory()``)."""

    def __init__(
        self,
        store: SpeedStore,
        decoder: EventDecoder,
        rules: list[SegmentRule] | tuple[SegmentRule, ...] = (),
        ops: OpsRecorder | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.decoder = decoder
        self.rules = list(rules)
        self.ops = ops
        self.retry = retry or RetryPolicy()
        self.stats = ProcessorStats()
        self._lost = threading.Event()
        self.recent = RecentIds(store.dedup_horizon_s)

    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        # The lease table's checkpoint is where to start reading; the per-tenant markers in Redis make
        # any re-read batch a no-op, so there is no need to look further ahead here.
        self._lost.clear()
        return checkpoint

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], millis_behind_latest: int) -> str | None:
        if self._lost.is_set():
            raise LeaseLost(f"shard {ctx.shard_id}: lease lost, refusing to write")
        if not records:
            self._record_ops(ctx, millis_behind_latest, [])
            return None
        with paused_gc():
            # One aggregation per batch (a GetRecords page, up to 10,000 records): the larger the batch,
            # the fewer script calls and keys per event. Cutting it into chunks applied while the next
            # was aggregated was measured slower: the calls' fixed cost outweighed the overlap.
            batch = aggregate(records, self.decoder, self.rules, suppressions=self.store.suppressions, recent=self.recent)
            self.apply(ctx, batch)
        self.stats.batches += 1
        self.stats.records += len(records)
        self._record_ops(ctx, millis_behind_latest, [ts for tb in batch.tenants.values() for ts in tb.received])
        return records[-1].sequence_number

    def apply(self, ctx: ShardContext, batch: Batch) -> None:
        """Dead letters first (idempotent), then every tenant's call; retried as a whole on Redis errors."""

        def attempt() -> None:
            if self._lost.is_set():
                raise LeaseLost(f"shard {ctx.shard_id}: lease lost while waiting for Redis")
            self.stats.dead_letters += self.store.write_dead_letters(batch.dead_letters, int(time.time() * 1000))
            result = self.store.apply(ctx.shard_id, ctx.lease_token, list(batch.tenants.values()))
            self.recent.add(result.fresh_ids)
            self.stats.applied += result.applied
            self.stats.skipped += result.skipped

        try:
            call_with_retry(attempt, self.retry, self._on_retry)
        except Fenced as exc:
            self._lost.set()
            raise LeaseLost(str(exc)) from exc

    def _on_retry(self, exc: BaseException) -> None:
        self.stats.redis_retries += 1
        log.warning("Redis not available (%s); retrying the same batch, checkpoint not advanced", type(exc).__name__)

    def _record_ops(self, ctx: ShardContext, millis_behind_latest: int, received: list[float]) -> None:
        if self.ops is None:
            return
        try:
            self.ops.record(ctx.shard_id, ctx.worker_id, millis_behind_latest, received)
        except TRANSIENT_ERRORS as exc:
            # Lag and latency figures are observability, not counters: the batch is already committed.
            log.warning("could not record lag/latency (%s)", type(exc).__name__)

    def lease_lost(self, ctx: ShardContext) -> None:
        self._lost.set()

    def shard_ended(self, ctx: ShardContext) -> None:
        """Nothing is buffered: every batch is committed before ``process_batch`` returns."""

    def shutdown(self, ctx: ShardContext) -> None:
        """Nothing is buffered: every batch is committed before ``process_batch`` returns."""
