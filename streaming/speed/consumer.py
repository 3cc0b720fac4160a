"""The speed layer's RecordProcessor: the thin I/O shell around :func:`aggregate` and the apply script.

A batch is applied completely or not at all as far as the checkpoint is concerned: ``process_batch``
returns a sequence number to checkpoint only after every tenant's call of that batch has committed.
While Redis is down it waits and retries the same batch (never logs and skips); after ``max_wait_s`` it
raises so the worker backs off and re-delivers the same records. Replays after a crash are safe because
every tenant call carries the batch's last sequence number and lease token (see ``apply.lua``).

With ``overlap`` (the consumer's mode), a batch's calls are sent from a background thread and Redis runs
them while this thread aggregates the next batch; the next ``process_batch`` (or an empty tick,
``shard_ended``, ``shutdown``) settles them first, so the checkpoint it returns lags one batch. An
in-flight batch that fails is re-sent from here, with the same retries, before anything later is sent:
batches commit in order, and a crash replays from the lagging checkpoint, which the markers make safe.

With ``positions`` (the consumer's mode), Redis is not trusted to keep what it acknowledged: every call
writes only on the node as verified, each committed batch leaves a position floor on every node, and a
node found to hold less than this processor wrote makes it ask the worker to read the shard again from
what Redis still holds (:class:`ResetShard`). The argument is in :mod:`streaming.speed.positions`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from streaming import metrics as _metrics
from streaming.events import EventDecoder
from streaming.kinesis.processor import LeaseLost as WorkerLeaseLost
from streaming.kinesis.processor import ResetShard, ShardContext, StreamRecord
from streaming.segments import SegmentRule
from streaming.speed.aggregate import Batch, aggregate, paused_gc
from streaming.speed.connect import TRANSIENT_ERRORS
from streaming.speed.ops import OpsRecorder
from streaming.speed.positions import NOTHING_LOST, NodeRestarted, PositionFenced, ShardPositions, lost_after
from streaming.speed.recent import RecentIds
from streaming.speed.store import ApplyResult, Fenced, SpeedStore

log = logging.getLogger(__name__)


#: CPython's GIL switch interval for a process running overlapped processors (its default is 5 ms). The
#: sending thread needs the GIL only for moments, but at 5 ms each moment waits for the aggregating
#: thread's slice, and Redis starts the batch late. ``make bench`` apply: ~80-96k events/s at 5 ms,
#: ~100-117k at 1 ms, slower again at 0.5 ms. Set by :func:`streaming.speed.run.run_consumer`.
OVERLAP_SWITCH_INTERVAL_S = 0.001
#: An idle shard re-writes its floor (checking every node's run id) this often, so a restart of a node
#: that no batch touches is noticed while the stream is quiet too.
IDLE_CHECK_S = 1.0
#: Restarts verified in a row, within one commit, before the batch is handed back to the worker's backoff.
MAX_VERIFY_ROUNDS = 5


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
    #: Redis restarts this processor verified, and the re-reads they required (Redis had lost writes).
    restarts_verified: int = 0
    resets: int = 0


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


@dataclass
class _InFlight:
    """A batch sent but not yet settled; ``future`` None means it must be sent again."""

    batch: Batch
    last_seq: str
    millis_behind_latest: int
    future: Future[tuple[ApplyResult, float]] | None


class SpeedProcessor:
    """One shard's processor (the worker makes one per shard with ``processor_factory()``)."""

    def __init__(
        self,
        store: SpeedStore,
        decoder: EventDecoder,
        rules: list[SegmentRule] | tuple[SegmentRule, ...] = (),
        ops: OpsRecorder | None = None,
        retry: RetryPolicy | None = None,
        overlap: bool = False,
        positions: ShardPositions | None = None,
    ) -> None:
        self.store = store
        self.positions = positions
        #: node -> run id as verified, and the floor every node was last verified or written to hold.
        self._run_ids: dict[str, str] = {}
        self._floor: str | None = None
        self._next_check_at = 0.0
        self.overlap = overlap
        self._inflight: _InFlight | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.decoder = decoder
        self.rules = list(rules)
        self.ops = ops
        self.retry = retry or RetryPolicy()
        self.stats = ProcessorStats()
        self._lost = threading.Event()
        self.recent = RecentIds(store.dedup_horizon_s)
        self._exported = _metrics.speed()
        self._group = str(getattr(store, "group", "speed"))
        #: What was logged last (a summary line per shard at most once a minute), and when.
        self._logged = ProcessorStats()
        self._logged_at = time.monotonic()

    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        """Resume after the lease checkpoint, or earlier when Redis holds less (a node's floor below it:
        after that floor; a node without one: from the trim horizon). Re-read batches that Redis holds
        are no-ops by their markers. If Redis cannot be reached now, the checkpoint is returned and the
        nodes are verified before the first write (their run ids are unknown until then)."""
        self._lost.clear()
        self._floor, self._run_ids = checkpoint, {}
        if self.positions is None:
            return checkpoint
        try:
            call_with_retry(lambda: self._verify(ctx), self.retry, self._on_retry)
        except RedisUnavailable as exc:
            log.warning("shard %s: Redis not reachable at start (%s); verifying it before the first write",
                        ctx.shard_id, exc)
        except ResetShard as reset:
            return reset.after
        return checkpoint

    def _verify(self, ctx: ShardContext) -> None:
        """Read every node's run id and floor; if a node holds less than :attr:`_floor`, forget what this
        processor holds in memory and raise :class:`ResetShard` to read again from what Redis holds."""
        assert self.positions is not None
        views = self.positions.read(ctx.shard_id)
        after = lost_after(self._floor, {name: v.floor for name, v in views.items()})
        self._run_ids = {name: v.run_id for name, v in views.items()}
        if after is NOTHING_LOST:
            return
        lost = sorted(n for n, v in views.items() if v.floor is None or int(v.floor) < int(self._floor or 0))
        self._floor = after
        self.stats.resets += 1
        raise ResetShard(after, f"Redis node(s) {', '.join(lost)} hold less than was applied: reading shard "
                                f"{ctx.shard_id} again after {after or 'its trim horizon'}")

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], millis_behind_latest: int) -> str | None:
        try:
            return self._process(ctx, records, millis_behind_latest)
        except ResetShard:
            self._forget()
            raise

    def _forget(self) -> None:
        """Redis lost writes: what this processor holds in memory about them goes too (in this thread,
        after the batch in flight gave up, so no id of it is added afterwards). Its recent ids may name
        events Redis lost, which the re-read must not drop as repeats."""
        self._inflight = None
        self.recent = RecentIds(self.store.dedup_horizon_s)

    def _process(self, ctx: ShardContext, records: list[StreamRecord], millis_behind_latest: int) -> str | None:
        if self._lost.is_set():
            raise LeaseLost(f"shard {ctx.shard_id}: lease lost, refusing to write")
        if not records:  # a tick: settle what is in flight, report the lag
            safe = self._settle(ctx)
            self._check_idle(ctx)
            self._record_ops(ctx, millis_behind_latest, [])
            return safe
        with paused_gc():
            # One aggregation per batch (a GetRecords page, up to 10,000 records): the larger the batch,
            # the fewer script calls and keys per event. Cutting it into chunks applied while the next
            # was aggregated was measured slower: the calls' fixed cost outweighed the overlap. Whole
            # batches overlap instead (``overlap``): this aggregation runs while Redis applies the last.
            batch = aggregate(records, self.decoder, self.rules, suppressions=self.store.suppressions, recent=self.recent)
        self.stats.records += len(records)
        if not self.overlap:
            self.apply(ctx, batch, records[-1].sequence_number)
            self._done(ctx, batch, millis_behind_latest, time.time())
            return records[-1].sequence_number
        # Everything that needs no answer from Redis happens before waiting for the batch in flight, and
        # the bookkeeping of that batch after this one is sent: Redis idles only for the hand-over.
        # The payloads are built here, not in the sending thread: sharing the GIL with this one, it would
        # start Redis's work only halfway through the next aggregation.
        try:
            payloads: list[bytes] | None = self.store.prepare(list(batch.tenants.values()), ctx.lease_token,
                                                              self._checked_run_ids(), ctx.shard_id)
        except NodeRestarted:
            payloads = None  # a node not verified yet: the commit verifies it first
        settled = self._wait(ctx)  # raises if the batch before cannot commit: this one is offered again
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"speed-apply-{ctx.shard_id}")
        last_seq = records[-1].sequence_number
        future = self._pool.submit(self._commit, ctx, batch, payloads, last_seq)
        self._inflight = _InFlight(batch, last_seq, millis_behind_latest, future)
        # Provisionally recent: the batch is settled (applied, or sent again until it is) before any
        # later batch is sent, and a processor that gives up is dropped with its map (RecentIds).
        self.recent.add(chain.from_iterable(tb.ids for tb in batch.tenants.values()))
        return self._finish(ctx, settled)

    def _settle(self, ctx: ShardContext) -> str | None:
        """Wait for the in-flight batch (sending it again if it failed); its last sequence number."""
        return self._finish(ctx, self._wait(ctx))

    def _wait(self, ctx: ShardContext) -> tuple[_InFlight, tuple[ApplyResult, float]] | None:
        """The in-flight batch, once committed (sent again here if it failed), with its result."""
        inflight = self._inflight
        if inflight is None:
            return None
        settled: tuple[ApplyResult, float] | None = None
        if inflight.future is not None:
            try:
                settled = inflight.future.result()
            except (Fenced, PositionFenced) as exc:
                self._inflight = None
                self._lost.set()
                raise LeaseLost(str(exc)) from exc
            except (LeaseLost, ResetShard):
                self._inflight = None
                raise
            except Exception as exc:  # noqa: BLE001 - nothing of it may be assumed applied: send it again
                log.warning("shard %s: in-flight batch failed (%s); sending it again before the next",
                            ctx.shard_id, type(exc).__name__, extra={"group": self._group, "shard": ctx.shard_id})
                self._exported.redis_errors.labels(self._group, type(exc).__name__).inc()
                self._exported.redis_retries.labels(self._group).inc()
                inflight.future = None
        if settled is None:
            try:
                settled = self._commit_with_retry(ctx, inflight.batch, inflight.last_seq)
            except ResetShard:
                self._inflight = None
                raise
        self._inflight = None
        return inflight, settled

    def _finish(self, ctx: ShardContext, waited: tuple[_InFlight, tuple[ApplyResult, float]] | None) -> str | None:
        """Count a committed batch and record its lag and latency; its last sequence number (None: none)."""
        if waited is None:
            return None
        inflight, (result, committed_at) = waited
        self._count(result)
        self._done(ctx, inflight.batch, inflight.millis_behind_latest, committed_at)
        return inflight.last_seq

    def _done(self, ctx: ShardContext, batch: Batch, millis_behind_latest: int, committed_at: float) -> None:
        self.stats.batches += 1
        if batch.dead_letters:
            reasons: dict[str, int] = {}
            for dead in batch.dead_letters:
                reasons[dead.reason] = reasons.get(dead.reason, 0) + 1
            for reason, n in reasons.items():
                self._exported.dead_letters.labels(self._group, reason).inc(n)
        if time.monotonic() - self._logged_at >= 60:
            self._log_summary(ctx)
        self._record_ops(ctx, millis_behind_latest, [ts for tb in batch.tenants.values() for ts in tb.received],
                         committed_at)

    def apply(self, ctx: ShardContext, batch: Batch, last_seq: str | None = None) -> None:
        """Every tenant's call and the dead letters; retried as a whole on Redis errors."""
        result, _ = self._commit_with_retry(ctx, batch, last_seq)
        self.recent.add(result.fresh_ids)
        self._count(result)

    def _commit_with_retry(self, ctx: ShardContext, batch: Batch, last_seq: str | None) -> tuple[ApplyResult, float]:
        try:
            return call_with_retry(lambda: self._commit(ctx, batch, None, last_seq), self.retry, self._on_retry)
        except (Fenced, PositionFenced) as exc:
            self._lost.set()
            raise LeaseLost(str(exc)) from exc

    def _commit(self, ctx: ShardContext, batch: Batch, payloads: list[bytes] | None = None,
                last_seq: str | None = None) -> tuple[ApplyResult, float]:
        """Every tenant's call, then the dead letters, then the shard's floor on every node (all three
        idempotent, and nothing is checkpointed before all are done; Redis's work starts first); the
        result and when it committed. A node that restarted is verified and the batch sent again, or the
        shard read again (:class:`ResetShard`) if the node lost what this processor had written."""
        for _ in range(MAX_VERIFY_ROUNDS):
            if self._lost.is_set():
                raise LeaseLost(f"shard {ctx.shard_id}: lease lost while waiting for Redis")
            try:
                started = time.perf_counter()
                result = self.store.apply(ctx.shard_id, ctx.lease_token, list(batch.tenants.values()), payloads,
                                          self._checked_run_ids())
                result.dead_letters = self.store.write_dead_letters(batch.dead_letters, int(time.time() * 1000))
                if self.positions is not None and last_seq is not None:
                    self.positions.write(ctx.shard_id, ctx.lease_token, last_seq, self._run_ids)
                    self._floor = last_seq
                self._exported.apply_seconds.labels(self._group).observe(time.perf_counter() - started)
                return result, time.time()
            except NodeRestarted as exc:
                log.warning("shard %s: %s; checking what it holds", ctx.shard_id, exc)
                self.stats.restarts_verified += 1
                self._verify(ctx)  # raises ResetShard if the node lost writes
                payloads = None  # built again with the run ids just verified
        raise NodeRestarted(list(self._run_ids))

    def _checked_run_ids(self) -> dict[str, str] | None:
        """The run ids every call must find (None: no positions, nothing checked: the Lambda handler)."""
        return self._run_ids if self.positions is not None else None

    def _check_idle(self, ctx: ShardContext) -> None:
        """On a quiet shard, re-write its floor now and then: a node that restarted is found and verified
        even when no batch writes to it."""
        if self.positions is None or self._floor is None or time.monotonic() < self._next_check_at:
            return
        self._next_check_at = time.monotonic() + IDLE_CHECK_S
        floor = self._floor
        try:
            self.positions.write(ctx.shard_id, ctx.lease_token, floor, self._run_ids)
        except NodeRestarted:
            self.stats.restarts_verified += 1
            call_with_retry(lambda: self._verify(ctx), self.retry, self._on_retry)
        except PositionFenced as exc:
            self._lost.set()
            raise LeaseLost(str(exc)) from exc
        except TRANSIENT_ERRORS as exc:
            log.warning("shard %s: could not check Redis's position floor (%s)", ctx.shard_id, type(exc).__name__)

    def _count(self, result: ApplyResult) -> None:
        self.stats.dead_letters += result.dead_letters
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self._exported.events_applied.labels(self._group).inc(result.applied)
        self._exported.events_skipped.labels(self._group).inc(result.skipped)

    def _log_summary(self, ctx: ShardContext) -> None:
        now, last = time.monotonic(), self._logged
        log.info("shard %s: %d records, %d events applied, %d dead letters in the last %.0f s", ctx.shard_id,
                 self.stats.records - last.records, self.stats.applied - last.applied,
                 self.stats.dead_letters - last.dead_letters, now - self._logged_at,
                 extra={"group": self._group, "shard": ctx.shard_id, "records": self.stats.records - last.records,
                        "applied": self.stats.applied - last.applied,
                        "dead_letters": self.stats.dead_letters - last.dead_letters,
                        "duration_s": round(now - self._logged_at, 1)})
        self._logged = ProcessorStats(**vars(self.stats))
        self._logged_at = now

    def _on_retry(self, exc: BaseException) -> None:
        self.stats.redis_retries += 1
        self._exported.redis_errors.labels(self._group, type(exc).__name__).inc()
        self._exported.redis_retries.labels(self._group).inc()
        log.warning("Redis not available (%s); retrying the same batch, checkpoint not advanced", type(exc).__name__)

    def _record_ops(self, ctx: ShardContext, millis_behind_latest: int, received: list[float],
                    committed_at: float | None = None) -> None:
        if self.ops is None:
            return
        try:
            self.ops.record(ctx.shard_id, ctx.worker_id, millis_behind_latest, received, committed_at)
        except TRANSIENT_ERRORS as exc:
            # Lag and latency figures are observability, not counters: the batch is already committed.
            log.warning("could not record lag/latency (%s)", type(exc).__name__)

    def lease_lost(self, ctx: ShardContext) -> None:
        """Write nothing more; a call still in flight carries the old token, which the script fences."""
        self._lost.set()
        self._inflight = None
        self._close()

    def shard_ended(self, ctx: ShardContext) -> None:
        """The in-flight batch commits before this returns (the worker then checkpoints SHARD_END); if
        Redis lost writes meanwhile, ResetShard: the worker reads the shard again instead of ending it."""
        try:
            self._settle(ctx)
        except ResetShard:
            self._forget()
            raise
        self._close()

    def shutdown(self, ctx: ShardContext) -> None:
        """Settle the in-flight batch if Redis lets us; if not, nothing is lost: it was never checkpointed."""
        try:
            self._settle(ctx)
        except Exception as exc:  # noqa: BLE001 - stopping: the re-read after restart applies it
            log.warning("shard %s: in-flight batch not settled at shutdown (%s); it will be re-read",
                        ctx.shard_id, type(exc).__name__)
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
