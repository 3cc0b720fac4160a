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
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
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


#: Records per pipelined chunk: small enough that applying one chunk overlaps aggregating the next,
#: large enough that the per-call cost (one script call per tenant per chunk) stays small.
DEFAULT_CHUNK = 2_500


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
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.store = store
        self.decoder = decoder
        self.rules = list(rules)
        self.ops = ops
        self.retry = retry or RetryPolicy()
        self.chunk_size = max(1, chunk_size)
        self.stats = ProcessorStats()
        self._lost = threading.Event()
        self._committer: ThreadPoolExecutor | None = None
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
        received: list[float] = []
        with paused_gc():
            if len(records) <= self.chunk_size:
                batch = aggregate(records, self.decoder, self.rules, suppressions=self.store.suppressions, recent=self.recent)
                self.apply(ctx, batch)
                _collect_received(batch, received)
            else:
                self._pipelined(ctx, records, received)
        self.stats.batches += 1
        self.stats.records += len(records)
        self._record_ops(ctx, millis_behind_latest, received)
        return records[-1].sequence_number

    def _pipelined(self, ctx: ShardContext, records: list[StreamRecord], received: list[float]) -> None:
        """Aggregate chunk k+1 while chunk k is applied (Redis runs the script on the other core).

        Chunks are applied strictly in order, one at a time, each as its own exactly-once call set (its
        own first/last sequence numbers), so a crash between chunks leaves a prefix applied, which a
        re-read skips by the markers. An in-batch repeat of an ``event_id`` is dropped across chunks
        too (one ``seen`` set). Nothing is in flight when this returns or raises.
        """
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"apply-{ctx.shard_id}")
        seen: set[bytes] = set()
        pending: Future[None] | None = None
        try:
            for chunk in _chunks(records, self.chunk_size):
                batch = aggregate(chunk, self.decoder, self.rules, seen=seen, suppressions=self.store.suppressions,
                                  recent=self.recent)
                if pending is not None:
                    pending.result()  # raises the chunk's failure: nothing after it is sent
                pending = self._committer.submit(self.apply, ctx, batch)
                _collect_received(batch, received)
            done, pending = pending, None
            done.result()
        finally:
            if pending is not None:
                wait([pending])

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
        self._stop_committer()

    def shutdown(self, ctx: ShardContext) -> None:
        """Nothing is buffered: every batch is committed before ``process_batch`` returns."""
        self._stop_committer()

    def _stop_committer(self) -> None:
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None



def _chunks(records: list[StreamRecord], size: int) -> Iterator[list[StreamRecord]]:
    for i in range(0, len(records), size):
        yield records[i:i + size]


def _collect_received(batch: Batch, out: list[float]) -> None:
    for tb in batch.tenants.values():
        out.extend(tb.received)
