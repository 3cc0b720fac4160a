"""The pure core of the archiver: one shard batch of records -> archive objects + one manifest.

Every record is kept, valid or not, with its exact bytes. A valid record's bytes are embedded verbatim
as the line's ``event`` value (they are one JSON object; msgspec.Raw writes and reads back exactly those
bytes), so the warehouse parses each event once, straight into typed columns. A valid record whose
bytes contain a line break (pretty-printed JSON) cannot sit inside a JSON line verbatim: it goes in
``data`` as a string instead. A rejected record's line carries its bytes base64-encoded with the
rejection reason and detail, and the numbers it still carries (``source_id``, ``tenant_id``,
``source_seq``, read by :func:`streaming.events.sequence_position`: a dead letter holds its number, so
the sequence analysis must not see a gap there). Records are split into one object per hour
of ``received_at`` (a rejected record has no trustworthy ``received_at``: it goes to the hour it
arrived on the stream), so a late event lands in its own, older hour's prefix.

Manifest counts are of records as delivered: a repeated ``event_id`` is counted each time it was
delivered (de-duplication is the warehouse's job, and the manifest must describe the objects).

Privacy (``suppressed_since``, see :mod:`streaming.privacy.suppression`): an event of a suppressed
subject received at or after the suppression started gets no line and is not counted; the manifest
counts it under ``suppressed``. One received before is counted but gets no line either; its object entry
counts it under ``forgotten`` (what ``counts`` holds that the object does not), as a deletion does.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from streaming.archive.layout import BatchRange, hour_start, object_key
from streaming.events import Event, EventDecoder, Rejection, sequence_position
from streaming.kinesis.processor import StreamRecord

MANIFEST_VERSION = 1


class ArchiveLine(msgspec.Struct, omit_defaults=True):
    """One archived record (one JSON line). ``data`` for valid events, ``data_b64`` for rejected ones."""

    shard_id: str
    sequence_number: str
    partition_key: str
    arrival_ts: float
    event: msgspec.Raw = msgspec.Raw()  # empty = absent (msgspec cannot make Raw optional)
    data: str | None = None
    data_b64: str | None = None
    reason: str | None = None
    detail: str | None = None
    #: A rejected record's numbers, when its bytes still carry them (sequence_position).
    source_id: str | None = None
    tenant_id: str | None = None
    source_seq: int | None = None


_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(ArchiveLine)


@dataclass(frozen=True)
class ArchiveObject:
    key: str
    hour: dt.datetime
    body: bytes  # gzip-compressed JSON lines


@dataclass(frozen=True)
class ArchiveBatch:
    batch: BatchRange
    objects: list[ArchiveObject]
    manifest: dict[str, Any]


def _minute_iso(epoch_s: float) -> str:
    minute = int(epoch_s) // 60 * 60
    return dt.datetime.fromtimestamp(minute, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:00Z")


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


class SuppressedSince(Protocol):
    """The suppression list as the archiver reads it (:class:`streaming.privacy.suppression.SuppressionCache`)."""

    def begin_batch(self) -> None:
        """A new batch starts: re-check the list's version before the next answer."""

    def since(self, tenant: str, user_id: str | None, anonymous_id: str | None) -> int | None:
        """When the subject's suppression started (epoch ms), or None if it is not suppressed."""


class _HourPart:
    __slots__ = ("lines", "counts", "dead_letters", "records", "forgotten", "suppressed")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.records = 0
        self.forgotten: Counter[tuple[str, str, int]] = Counter()
        self.suppressed: Counter[tuple[str, str, int]] = Counter()


def build_batch(
    shard_id: str,
    records: Sequence[StreamRecord],
    decoder: EventDecoder,
    future_limit: dt.datetime | None = None,
    compresslevel: int = 1,
    suppressed_since: SuppressedSince | None = None,
) -> ArchiveBatch:
    """Turn one non-empty, in-order shard batch into its objects and manifest (no I/O)."""
    if not records:
        raise ValueError("an archive batch needs at least one record")
    limit = decoder.future_limit() if future_limit is None else future_limit
    parts: dict[int, _HourPart] = defaultdict(_HourPart)
    max_arrival = 0.0
    max_received: float | None = None
    for rec in records:
        if rec.shard_id != shard_id:
            raise ValueError(f"record of shard {rec.shard_id} in a batch of shard {shard_id}")
        result = decoder.decode(rec.data, limit)
        max_arrival = max(max_arrival, rec.arrival_ts)
        if isinstance(result, Event):
            received = result.received_at.timestamp()
            max_received = received if max_received is None else max(max_received, received)
            part = parts[int(received) // 3600]
            cell = (result.tenant_id, result.event_type.value, int(received) // 60)
            since = None if suppressed_since is None else suppressed_since.since(
                result.tenant_id, result.user_id, result.anonymous_id)
            if since is not None:
                if int(received * 1000) >= since:
                    part.suppressed[cell] += 1
                else:
                    part.counts[cell] += 1
                    part.forgotten[cell] += 1
                continue
            part.counts[cell] += 1
            if b"\n" in rec.data or b"\r" in rec.data:
                line = ArchiveLine(rec.shard_id, rec.sequence_number, rec.partition_key, rec.arrival_ts,
                                   data=rec.data.decode("utf-8"))
            else:
                line = ArchiveLine(rec.shard_id, rec.sequence_number, rec.partition_key, rec.arrival_ts,
                                   event=msgspec.Raw(rec.data))
        else:
            assert isinstance(result, Rejection)
            part = parts[int(rec.arrival_ts) // 3600]
            part.dead_letters[result.reason.value] += 1
            number = sequence_position(rec.data)
            line = ArchiveLine(rec.shard_id, rec.sequence_number, rec.partition_key, rec.arrival_ts,
                               data_b64=base64.b64encode(rec.data).decode("ascii"), reason=result.reason.value,
                               detail=result.detail[:500],
                               **(number._asdict() if number is not None else {}))
        part.records += 1
        part.lines.append(_line_encoder.encode(line))
    batch = BatchRange(shard_id, records[0].sequence_number, records[-1].sequence_number)
    objects: list[ArchiveObject] = []
    manifest_objects: list[dict[str, Any]] = []
    suppressed: Counter[tuple[str, str, int]] = Counter()
    for hour_no in sorted(parts):
        part = parts[hour_no]
        suppressed.update(part.suppressed)
        if not part.lines and not part.counts:
            continue  # only suppressed events: nothing to store for this hour
        hour = hour_start(hour_no * 3600)
        key = object_key(shard_id, hour, batch.first_seq, batch.last_seq)
        # mtime=0: a re-written batch produces the very same bytes.
        body = gzip.compress(b"".join(line + b"\n" for line in part.lines), compresslevel=compresslevel, mtime=0)
        objects.append(ArchiveObject(key, hour, body))
        manifest_objects.append({
            "key": key,
            "hour": hour.strftime("%Y-%m-%dT%H:00:00Z"),
            "records": part.records,
            "valid": sum(part.counts.values()),
            "bytes": len(body),
            "counts": _cells(part.counts),
            "dead_letters": dict(sorted(part.dead_letters.items())),
            **({"forgotten": _cells(part.forgotten)} if part.forgotten else {}),
        })
    manifest = {
        "version": MANIFEST_VERSION,
        "shard_id": shard_id,
        "first_sequence_number": batch.first_seq,
        "last_sequence_number": batch.last_seq,
        "records": len(records),
        "objects": manifest_objects,
        "dead_letters": dict(sorted(sum((Counter(o["dead_letters"]) for o in manifest_objects), Counter()).items())),
        **({"suppressed": _cells(suppressed)} if suppressed else {}),
        "watermark": {
            "max_arrival_at": _iso(max_arrival),
            "max_received_at": None if max_received is None else _iso(max_received),
        },
    }
    return ArchiveBatch(batch, objects, manifest)


def _cells(counter: Counter[tuple[str, str, int]]) -> list[list[Any]]:
    """Manifest form of per-cell counts: [[tenant, event type, minute ISO, n], ...]."""
    return [[t, e, _minute_iso(m * 60), n] for (t, e, m), n in sorted(counter.items())]


def decode_lines(body: bytes) -> list[ArchiveLine]:
    """The lines of one archive object (gzip JSON lines)."""
    text = gzip.decompress(body)
    return [_line_decoder.decode(line) for line in text.split(b"\n") if line]


def record_bytes(line: ArchiveLine) -> bytes:
    """The exact bytes the record had on the stream."""
    if len(line.event):
        return bytes(line.event)
    if line.data is not None:
        return line.data.encode("utf-8")
    return base64.b64decode(line.data_b64 or "")
