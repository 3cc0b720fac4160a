"""The archiver as a :class:`~streaming.kinesis.processor.RecordProcessor` (consumer group "archiver").

It buffers a shard's records and commits them as one archive batch when the buffer reaches
``max_records`` or ``max_bytes``, or when its oldest record has waited ``flush_s`` (the worker calls
``process_batch`` after every poll, also with no records, which is the clock tick).

The archive is its own checkpoint: :meth:`initialize` resumes after the highest sequence number a
committed manifest covers, whatever the lease table says. Killed at any point, the archiver loses
nothing (uncommitted records are read again) and duplicates nothing (a batch is either committed, with
its manifest, or ignored by every reader).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streaming import metrics as _metrics
from streaming.archive.batch import SuppressedSince, build_batch
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder
from streaming.kinesis.processor import ShardContext, StreamRecord

log = logging.getLogger(__name__)

GROUP = "archiver"


@dataclass(frozen=True)
class FlushPolicy:
    max_records: int = 20_000
    max_bytes: int = 16 * 1024 * 1024
    flush_s: float = 30.0


@dataclass
class ArchiverStats:
    batches: int = 0
    records: int = 0
    objects: int = 0


class ArchiveProcessor:
    """One shard's archiver. Not thread-safe; the worker makes one per shard."""

    def __init__(
        self,
        store: ArchiveStore,
        decoder: EventDecoder,
        policy: FlushPolicy = FlushPolicy(),
        clock: Callable[[], float] = time.monotonic,
        suppression: SuppressedSince | None = None,
    ) -> None:
        self.store = store
        self.suppression = suppression  # a streaming.privacy SuppressionCache: re-checked per batch
        self.decoder = decoder
        self.policy = policy
        self.clock = clock
        self.stats = ArchiverStats()
        self._buffer: list[StreamRecord] = []
        self._bytes = 0
        self._oldest_at: float | None = None
        self._committed: str | None = None
        self._shard_id: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        self._shard_id = ctx.shard_id
        self._buffer, self._bytes, self._oldest_at = [], 0, None
        self._committed = self.store.last_committed_seq(ctx.shard_id)
        if checkpoint is not None and self._committed is not None and int(checkpoint) > int(self._committed):
            # The lease table is ahead of the archive: only possible if something else wrote the
            # checkpoint. The archive is the truth, so re-read from what it has.
            log.warning("shard %s: lease checkpoint %s is ahead of the archive (%s); resuming from the archive",
                        ctx.shard_id, checkpoint, self._committed)
        return self._committed

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], millis_behind_latest: int) -> str | None:
        for record in records:
            if self._committed is not None and int(record.sequence_number) <= int(self._committed):
                continue  # already in a committed batch (the worker re-offered it)
            if self._oldest_at is None:
                self._oldest_at = self.clock()
            self._buffer.append(record)
            self._bytes += len(record.data)
            if len(self._buffer) >= self.policy.max_records or self._bytes >= self.policy.max_bytes:
                self.flush()
        if self._oldest_at is not None and self.clock() - self._oldest_at >= self.policy.flush_s:
            self.flush()
        return self._committed

    def lease_lost(self, ctx: ShardContext) -> None:
        # Whatever is buffered belongs to the new owner now; writing it could only make overlaps.
        self._buffer, self._bytes, self._oldest_at = [], 0, None

    def shard_ended(self, ctx: ShardContext) -> None:
        self.flush()

    def shutdown(self, ctx: ShardContext) -> None:
        self.flush()

    # -- committing ----------------------------------------------------------------------------
    @property
    def committed(self) -> str | None:
        """The highest sequence number in a committed batch of this shard."""
        return self._committed

    def flush(self) -> str | None:
        """Commit the buffer as one batch (objects, then manifest). Raises if S3 refuses; the buffer is
        then kept and the next call tries again with the same range, so the same keys."""
        if not self._buffer:
            return self._committed
        assert self._shard_id is not None
        started = time.perf_counter()
        if self.suppression is not None:
            self.suppression.begin_batch()
        batch = build_batch(self._shard_id, self._buffer, self.decoder, suppressed_since=self.suppression)
        self.store.write_batch(batch)
        duration = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.records += len(self._buffer)
        self.stats.objects += len(batch.objects)
        size = sum(len(o.body) for o in batch.objects)
        exported = _metrics.archiver()
        exported.records.labels(self._shard_id).inc(len(self._buffer))
        exported.objects.labels(self._shard_id).inc(len(batch.objects))
        exported.bytes.labels(self._shard_id).inc(size)
        exported.commit_seconds.observe(duration)
        for reason, n in batch.manifest["dead_letters"].items():
            exported.dead_letters.labels(GROUP, reason).inc(n)
        log.info("shard %s: committed %d records in %d archive objects (%d bytes) in %.2f s", self._shard_id,
                 len(self._buffer), len(batch.objects), size, duration,
                 extra={"group": GROUP, "shard": self._shard_id, "records": len(self._buffer),
                        "objects": len(batch.objects), "bytes": size, "duration_s": round(duration, 3)})
        self._committed = batch.batch.last_seq
        self._buffer, self._bytes, self._oldest_at = [], 0, None
        return self._committed


def processor_factory(store: ArchiveStore, decoder: EventDecoder, policy: FlushPolicy,
                      suppression: Callable[[], SuppressedSince] | None = None) -> Callable[[], ArchiveProcessor]:
    """What the worker calls once per shard it takes. ``suppression`` makes each processor its own
    suppression-list reader (see :mod:`streaming.privacy.suppression`)."""
    return lambda: ArchiveProcessor(store, decoder, policy, suppression=suppression() if suppression else None)
