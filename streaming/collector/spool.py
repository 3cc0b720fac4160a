"""The collector's write-ahead spool: what a 200 stands on until Kinesis has it.

Layout of a collector's state directory (one per collector process; a lock file keeps a second process out):

- ``source_id``: the collector's stable instance id, made once;
- ``spool/<n>.seg``: append-only segments of frames ``[u32 length][u32 crc32][body]``, body =
  ``[u64 source_seq][u8 len tenant][u16 len key][tenant][partition key][record bytes]``;
- ``drained.json``: how far the drainer has had Kinesis acknowledge (segment, offset); written after
  the acknowledgement, so after a crash it is at most behind, and what lies between is sent again (the
  ``event_id`` de-duplicates it in every layer);
- ``seqs.json``: per tenant, the last collector number that was durable when segments were trimmed (the
  segments hold the numbers after it).

**Group commit.** Requests hand their frames to :meth:`Spool.append` (from one thread, the event loop);
a writer thread takes everything waiting, writes it with one ``write`` and one ``fsync``, then wakes the
whole group. While it syncs, the next group gathers.

**Numbers.** ``source_seq`` is per tenant. :meth:`append` computes a request's numbers, builds its
records and only then takes the numbers, in the same call that queues the frames, so a number is never
taken by a request whose records were not queued. A queued frame is either written (and then found by
recovery, which continues the numbering after the highest number on disk) or lost with the process before
it reached the file: then no one saw it (the drainer reads only what is durable, no 200 was sent) and
the number is given again after the restart, so no gap and no reuse can be observed downstream. The
numbers of ``seqs.json`` are durable ones only, never numbers still waiting for their fsync.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("tally.collector.spool")

FRAME = struct.Struct("<II")
BODY_HEAD = struct.Struct("<QBH")
SEGMENT_BYTES = 16 * 1024 * 1024
_SEG_SUFFIX = ".seg"


class SpoolFull(RuntimeError):
    """The spool is at its bound: answer 503 with Retry-After."""


class SpoolCorrupt(RuntimeError):
    """A closed segment fails its checksums: disk damage, not a crash (a crash tears only the tail)."""


class SpoolLocked(RuntimeError):
    """Another collector process holds this state directory."""


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int

    def __str__(self) -> str:
        return f"{self.segment}:{self.offset}"


@dataclass(frozen=True)
class SpooledRecord:
    tenant: str
    source_seq: int
    partition_key: str
    data: bytes


def encode_frame(tenant: str, seq: int, partition_key: str, data: bytes) -> bytes:
    t, k = tenant.encode(), partition_key.encode()
    body = BODY_HEAD.pack(seq, len(t), len(k)) + t + k + data
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes | memoryview) -> SpooledRecord:
    seq, tlen, klen = BODY_HEAD.unpack_from(body)
    at = BODY_HEAD.size
    tenant = bytes(body[at:at + tlen]).decode()
    key = bytes(body[at + tlen:at + tlen + klen]).decode()
    return SpooledRecord(tenant, seq, key, bytes(body[at + tlen + klen:]))


def parse_frames(buf: bytes, verify: bool) -> tuple[list[SpooledRecord], int]:
    """Whole frames at the start of ``buf`` and how many bytes they take (stops at a torn or bad frame)."""
    out: list[SpooledRecord] = []
    at, end = 0, len(buf)
    view = memoryview(buf)
    while at + FRAME.size <= end:
        length, crc = FRAME.unpack_from(buf, at)
        stop = at + FRAME.size + length
        if stop > end or length < BODY_HEAD.size:
            break
        body = view[at + FRAME.size:stop]
        if verify and zlib.crc32(body) != crc:
            break
        out.append(_decode_body(body))
        at = stop
    return out, at


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_durably(path: Path, doc: Any, fsync: bool = True) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    tmp.replace(path)
    if fsync:
        _fsync_dir(path.parent)


def source_id_of(state_dir: Path) -> str:
    """The collector's instance id, made on first use (``col-`` + 12 hex digits) and kept."""
    path = state_dir / "source_id"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    sid = "col-" + os.urandom(6).hex()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(sid)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(state_dir)
    return sid


#: What a request waits on; the spool hands each group's waiters to ``on_group_durable`` (default: call them).
Waiter = Any


class Spool:
    """One collector's write-ahead spool. :meth:`open` recovers it; :meth:`close` stops the writer."""

    def __init__(self, state_dir: Path, max_bytes: int, fsync: bool = True, segment_bytes: int = SEGMENT_BYTES,
                 on_group_durable: Callable[[list[Any], BaseException | None], None] | None = None,
                 drained_every_s: float = 0.2, drained_sync_every_s: float | None = None) -> None:
        self.state_dir = state_dir
        #: ``drained.json`` is rewritten at most this often (0 = at every :meth:`mark_drained`: the forward
        #: spool, whose receiver does not de-duplicate, so its position must not fall behind on a crash).
        self.drained_every_s = drained_every_s
        #: ... and fsynced at most this often (None = never: a position behind after a power loss only sends
        #: records again, which the event_id de-duplicates; the forward spool syncs each second).
        self.drained_sync_every_s = drained_sync_every_s
        self._last_drained_sync = 0.0
        self.dir = state_dir / "spool"
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.on_group_durable = on_group_durable or (lambda waiters, exc: [w(exc) for w in waiters])
        self.source_id = ""
        self._cv = threading.Condition()
        self._pending: list[bytes] = []
        self._pending_waiters: list[Waiter] = []
        self._pending_seqs: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._durable_seqs: dict[str, int] = {}
        self._sizes: dict[int, int] = {}  # segment -> durable size
        self._active = 0
        self._fd = -1
        self._written_bytes = 0  # logical: durable + pending
        self._drained_bytes = 0
        self._drained = Position(0, 0)
        self._drained_records = 0
        self._durable_records = 0
        self._closing = False
        self._failed: BaseException | None = None
        self._lock_fd = -1
        self._writer: threading.Thread | None = None
        self._last_drained_write = 0.0
        self._read_fds: dict[int, int] = {}

    # -- recovery ----------------------------------------------------------------------------------
    def open(self) -> Spool:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(exist_ok=True)
        self._lock_fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"another collector process uses the state directory {self.state_dir}. Fix: give each "
                              "collector process its own TALLY_COLLECTOR_STATE_DIR") from None
        self.source_id = source_id_of(self.state_dir)
        seqs_path = self.state_dir / "seqs.json"
        durable = {k: int(v) for k, v in json.loads(seqs_path.read_text()).items()} if seqs_path.exists() else {}
        segments = sorted(int(p.name[:-len(_SEG_SUFFIX)]) for p in self.dir.glob(f"*{_SEG_SUFFIX}"))
        records = 0
        for i, seg in enumerate(segments):
            path = self._path(seg)
            data = path.read_bytes()
            found, good = parse_frames(data, verify=True)
            if good < len(data):
                if i < len(segments) - 1:
                    raise SpoolCorrupt(f"spool segment {path} fails its checksum at byte {good} of {len(data)}; it "
                                       "was closed, so this is damage, not a torn write. Fix: keep the file for "
                                       "inspection, move it out of the spool directory, and restart")
                log.warning("spool: cut a torn tail of %d bytes from %s (a write the crash interrupted; never "
                            "acknowledged)", len(data) - good, path)
                with open(path, "rb+") as fh:
                    fh.truncate(good)
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            for r in found:
                if r.source_seq > durable.get(r.tenant, 0):
                    durable[r.tenant] = r.source_seq
            records += len(found)
            self._sizes[seg] = good
        _fsync_dir(self.dir)
        self._durable_seqs = dict(durable)
        self._next = {t: s + 1 for t, s in durable.items()}
        drained_path = self.state_dir / "drained.json"
        drained = Position(0, 0)
        if drained_path.exists():
            doc = json.loads(drained_path.read_text())
            drained = Position(int(doc["segment"]), int(doc["offset"]))
            self._drained_records = int(doc.get("records", 0))
        if segments:
            first = segments[0]
            if drained.segment < first:
                drained = Position(first, 0)
            elif drained.segment in self._sizes:
                drained = Position(drained.segment, min(drained.offset, self._sizes[drained.segment]))
            else:  # beyond every segment (they were all trimmed): start at the next one
                drained = Position(segments[-1] + 1, 0)
        self._active = (segments[-1] + 1) if segments else max(drained.segment, 1)
        if not segments:
            drained = Position(self._active, 0)
        self._drained = drained
        self._written_bytes = sum(self._sizes.values())
        self._drained_bytes = sum(n for s, n in self._sizes.items() if s < drained.segment) + (
            drained.offset if drained.segment in self._sizes else 0)
        self._durable_records = records
        self._open_active()
        self._save_drained()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._writer.start()
        if records:
            log.info("spool: recovered %d records (%d bytes not yet drained) for source %s", records,
                     self.depth_bytes(), self.source_id)
        return self

    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}{_SEG_SUFFIX}"

    def _open_active(self) -> None:
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sizes[self._active] = os.fstat(self._fd).st_size
        _fsync_dir(self.dir)

    # -- the request side (one thread) ---------------------------------------------------------------
    def next_seq(self, tenant: str) -> int:
        return self._next.get(tenant, 1)

    def append(self, tenant: str, build: Sequence[Callable[[int], tuple[str, bytes]]], waiter: Waiter) -> list[int]:
        """Number and queue one request's records; ``waiter`` is called once they are durable (or failed).

        ``build[i](seq)`` returns (partition key, record bytes) for the i-th record. Raises
        :class:`SpoolFull` (nothing queued, no number taken) when the spool would pass its bound.
        """
        if self._failed is not None:
            raise SpoolFull(f"the spool cannot be written ({self._failed})")
        base = self._next.get(tenant, 1)
        frames = []
        size = 0
        for i, make in enumerate(build):
            key, data = make(base + i)
            frame = encode_frame(tenant, base + i, key, data)
            frames.append(frame)
            size += len(frame)
        with self._cv:
            if self._written_bytes - self._drained_bytes + size > self.max_bytes:
                raise SpoolFull(f"the spool holds {self._written_bytes - self._drained_bytes} bytes "
                                f"(bound {self.max_bytes})")
            if frames:
                self._next[tenant] = base + len(frames)
                self._pending_seqs[tenant] = base + len(frames) - 1
            self._pending.extend(frames)
            self._pending_waiters.append(waiter)
            self._written_bytes += size
            self._cv.notify_all()
        return list(range(base, base + len(frames)))

    # -- the writer thread ---------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending_waiters and not self._closing:
                    self._cv.wait()
                if not self._pending_waiters:
                    return
                frames, self._pending = self._pending, []
                waiters, self._pending_waiters = self._pending_waiters, []
                seqs, self._pending_seqs = self._pending_seqs, {}
            error: BaseException | None = None
            try:
                if frames:
                    self._write(b"".join(frames))
            except OSError as exc:
                error = exc
                self._failed = exc
                log.critical("spool: writing %s failed (%s); no 200 is given for it. The collector must be "
                             "restarted: recovery keeps what reached the disk. Fix: free disk space or lower "
                             "TALLY_COLLECTOR_SPOOL_MAX_BYTES", self._path(self._active), exc)
            else:
                with self._cv:
                    self._durable_records += len(frames)
                    for tenant, seq in seqs.items():
                        self._durable_seqs[tenant] = seq
                    self._cv.notify_all()
            self.on_group_durable(waiters, error)

    def _write(self, data: bytes) -> None:
        if self._sizes[self._active] >= self.segment_bytes:
            os.close(self._fd)
            with self._cv:
                self._active += 1
            self._open_active()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fdatasync(self._fd)
        with self._cv:
            self._sizes[self._active] += len(data)

    # -- the drainer side ----------------------------------------------------------------------------
    def wait_durable(self, after: Position, timeout_s: float) -> bool:
        """Wait until something durable lies beyond ``after`` (True) or ``timeout_s`` passes."""
        with self._cv:
            return self._cv.wait_for(lambda: self._durable_end() > after or self._closing, timeout_s)

    def _durable_end(self) -> Position:
        return Position(self._active, self._sizes.get(self._active, 0))

    def read(self, at: Position, max_records: int, max_bytes: int) -> tuple[list[SpooledRecord], Position]:
        """Durable records from ``at``: at most ``max_records`` and about ``max_bytes``; and where they end."""
        with self._cv:
            sizes = dict(self._sizes)
        while at.segment in sizes and at.offset >= sizes[at.segment] and at.segment < self._active:
            at = Position(at.segment + 1, 0)
        size = sizes.get(at.segment, 0)
        if at.offset >= size:
            return [], at
        fd = self._read_fds.get(at.segment)
        if fd is None:
            for old in [s for s in self._read_fds if s < at.segment]:
                os.close(self._read_fds.pop(old))
            fd = self._read_fds[at.segment] = os.open(self._path(at.segment), os.O_RDONLY)
        buf = os.pread(fd, min(size - at.offset, max_bytes), at.offset)
        records, used = parse_frames(buf, verify=False)
        if not records and buf:  # a single frame larger than max_bytes
            length = FRAME.unpack_from(buf)[0]
            buf = os.pread(fd, FRAME.size + length, at.offset)
            records, used = parse_frames(buf, verify=False)
        if len(records) > max_records:
            records = records[:max_records]
            used = sum(FRAME.size + BODY_HEAD.size + len(r.tenant.encode()) + len(r.partition_key.encode())
                       + len(r.data) for r in records)
        return records, Position(at.segment, at.offset + used)

    def mark_drained(self, upto: Position, records: int) -> None:
        """Kinesis acknowledged every record before ``upto``: move the drained position, trim segments."""
        with self._cv:
            old = self._drained
            moved = sum(n for s, n in self._sizes.items() if old.segment <= s < upto.segment) - old.offset + upto.offset
            self._drained = upto
            self._drained_bytes += moved
            self._drained_records += records
            done = [s for s in self._sizes if s < upto.segment and s != self._active]
            durable_seqs = dict(self._durable_seqs)
        now = time.monotonic()
        if done or now - self._last_drained_write >= self.drained_every_s:
            self._save_drained()
            self._last_drained_write = now
        if done:
            # Numbers first, then the segments that held them: a crash between leaves extra segments only.
            _write_json_durably(self.state_dir / "seqs.json", durable_seqs)
            for seg in done:
                fd = self._read_fds.pop(seg, None)
                if fd is not None:
                    os.close(fd)
                self._path(seg).unlink(missing_ok=True)
                with self._cv:
                    self._sizes.pop(seg, None)
            _fsync_dir(self.dir)

    def _save_drained(self) -> None:
        with self._cv:
            doc = {"segment": self._drained.segment, "offset": self._drained.offset, "records": self._drained_records,
                   "source_id": self.source_id, "at": time.time()}
        now = time.monotonic()
        sync = (self.fsync and self.drained_sync_every_s is not None
                and now - self._last_drained_sync >= self.drained_sync_every_s)
        if sync:
            self._last_drained_sync = now
        _write_json_durably(self.state_dir / "drained.json", doc, fsync=sync)

    # -- status and shutdown -------------------------------------------------------------------------
    @property
    def drained(self) -> Position:
        return self._drained

    def depth_bytes(self) -> int:
        with self._cv:
            return self._written_bytes - self._drained_bytes

    def status(self) -> dict[str, Any]:
        with self._cv:
            return {"source_id": self.source_id, "depth_bytes": self._written_bytes - self._drained_bytes,
                    "durable": str(self._durable_end()), "drained": str(self._drained),
                    "drained_records": self._drained_records, "segments": len(self._sizes),
                    "max_bytes": self.max_bytes}

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._writer is not None:
            self._writer.join(timeout=30)
        self._save_drained()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def spool_status(state_dir: Path) -> dict[str, Any]:
    """What ``tally stack status`` shows, read from disk (the collector need not answer)."""
    spool_dir = state_dir / "spool"
    sizes = {int(p.name[:-len(_SEG_SUFFIX)]): p.stat().st_size for p in spool_dir.glob(f"*{_SEG_SUFFIX}")} \
        if spool_dir.exists() else {}
    drained_path = state_dir / "drained.json"
    doc = json.loads(drained_path.read_text()) if drained_path.exists() else {
        "segment": min(sizes, default=1), "offset": 0, "records": 0}
    seg, off = int(doc["segment"]), int(doc["offset"])
    depth = sum(n for s, n in sizes.items() if s > seg) + (sizes.get(seg, 0) - off if seg in sizes else 0)
    sid = (state_dir / "source_id").read_text().strip() if (state_dir / "source_id").exists() else ""
    return {"source_id": sid, "depth_bytes": max(depth, 0), "drained": f"{seg}:{off}",
            "drained_records": int(doc.get("records", 0)), "segments": len(sizes)}
