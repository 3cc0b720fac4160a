"""The archive as the core sees it: counts from committed manifests, and which of their objects exist.

``n`` is what the manifests say the stream delivered (duplicates included); ``n_present`` the part whose
archive object is still in S3; ``forgotten`` the part removed from (or never written to) its object for
privacy (a deletion request, or a suppressed subject's earlier event), which the warehouse cannot hold. The archive watermark is the slowest shard's newest ``max_received_at``.
Event-level reads (for drill-down) parse the lines of the existing committed objects of an hour.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pandas as pd

from streaming.archive.batch import decode_lines
from streaming.archive.layout import EVENTS_PREFIX, base_object_key, parse_manifest_key
from streaming.archive.store import ArchiveStore
from streaming.reconcile.model import EVENT_COLUMNS


class _Envelope(msgspec.Struct):
    event_id: str
    tenant_id: str
    event_type: str
    received_at: str
    source_id: str
    source_seq: int


_envelope = msgspec.json.Decoder(_Envelope)


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _valid_event_bytes(line: Any) -> bytes | None:
    """A valid record's bytes from an archive line, None for a rejected record. Lines carry a valid
    event verbatim in ``event`` (raw JSON) or, in older objects and for multi-line JSON, in ``data``."""
    if line.reason is not None or line.data_b64 is not None:
        return None
    event = getattr(line, "event", None)
    if event is not None and len(event):
        return bytes(event)
    return line.data.encode("utf-8") if line.data is not None else None


def _net_cells(obj: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    """An object entry's counts less what it lists as forgotten: the lines the object holds per cell."""
    net = {(t, e, m): int(n) for t, e, m, n in obj["counts"]}
    for t, e, m, n in obj.get("forgotten", []):
        net[(t, e, m)] = net.get((t, e, m), 0) - int(n)
    return net


def _minute(iso: str) -> int:
    return int(_epoch(iso)) // 60


@dataclass
class ShardProgress:
    """Per shard: committed manifests as (last sequence number, max received_at epoch), in stream order."""

    batches: list[tuple[int, float | None]] = field(default_factory=list)

    @property
    def watermark(self) -> float | None:
        marks = [m for _, m in self.batches if m is not None]
        return max(marks) if marks else None

    def event_time_at(self, sequence_number: int) -> float | None:
        """The newest received_at known to be covered once a consumer has processed ``sequence_number``
        (conservative: only batches that end at or before it count)."""
        marks = [m for last, m in self.batches if last <= sequence_number and m is not None]
        return max(marks) if marks else None


@dataclass
class ArchiveSnapshot:
    counts: pd.DataFrame
    watermark: float | None
    shards: dict[str, ShardProgress]
    dead_letters: dict[str, int]
    missing_objects: list[str]
    #: Cells of committed, existing objects the warehouse has not loaded: (tenant, type, minute) -> the
    #: hours (ISO) of those objects and how many objects (only when the snapshot was given the loaded keys).
    unloaded: dict[tuple[str, str, int], dict[str, int]] = field(default_factory=dict)

    def positions(self) -> dict[str, int]:
        """The archive's position per shard: the last sequence number a committed manifest covers."""
        return {shard: max(last for last, _ in p.batches) for shard, p in self.shards.items() if p.batches}


class ArchiveReader:
    def __init__(self, s3: Any, bucket: str, workers: int = 8) -> None:
        self.store = ArchiveStore(s3, bucket)
        self.s3 = s3
        self.bucket = bucket
        self.workers = workers

    def _object_keys(self) -> set[str]:
        keys: set[str] = set()
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=EVENTS_PREFIX):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def snapshot(self, start_minute: int, end_minute: int, loaded: set[str] | None = None) -> ArchiveSnapshot:
        """Counts of cells in ``[start_minute, end_minute)`` from every committed manifest; with ``loaded``
        (the object keys the warehouse holds rows of), the cells of the existing objects it lacks."""
        manifest_keys = [k for shard in self.store.shard_ids() for k in self.store.manifest_keys(shard)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            manifests = list(pool.map(self.store.read_manifest, manifest_keys))
        present = self._object_keys()
        counts: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
        shards: dict[str, ShardProgress] = defaultdict(ShardProgress)
        dead: dict[str, int] = defaultdict(int)
        missing: list[str] = []
        unloaded: dict[tuple[str, str, int], dict[str, int]] = {}
        # A deletion request rewrites an object under a revised key and erases the same lines from the
        # warehouse itself: rows of any revision of an object mean the warehouse has it.
        loaded_bases = {base_object_key(k) for k in loaded} if loaded is not None else None
        for key, manifest in zip(manifest_keys, manifests, strict=True):
            if manifest is None:
                continue
            batch = parse_manifest_key(key)
            assert batch is not None
            received = manifest["watermark"].get("max_received_at")
            shards[batch.shard_id].batches.append((int(batch.last_seq), _epoch(received) if received else None))
            for reason, n in manifest.get("dead_letters", {}).items():
                dead[reason] += int(n)
            for obj in manifest["objects"]:
                exists = obj["key"] in present
                if not exists:
                    missing.append(obj["key"])
                lacking = exists and loaded_bases is not None and base_object_key(obj["key"]) not in loaded_bases
                kept = _net_cells(obj) if lacking else {}
                for tenant, etype, minute_iso, n in obj["counts"]:
                    minute = _minute(minute_iso)
                    if start_minute <= minute < end_minute:
                        cell = counts[(tenant, etype, minute)]
                        cell[0] += int(n)
                        if exists:
                            cell[1] += int(n)
                        if kept.get((tenant, etype, minute_iso), 0) > 0:
                            hours = unloaded.setdefault((tenant, etype, minute), {})
                            hours[obj["hour"]] = hours.get(obj["hour"], 0) + 1
                # Lines a deletion request (or the archiver, for a suppressed subject) left out.
                for tenant, etype, minute_iso, n in obj.get("forgotten", []):
                    minute = _minute(minute_iso)
                    if start_minute <= minute < end_minute:
                        counts[(tenant, etype, minute)][2] += int(n)
        for progress in shards.values():
            progress.batches.sort()
        frame = pd.DataFrame([(t, e, m, n, p, f) for (t, e, m), (n, p, f) in counts.items()],
                             columns=["tenant_id", "event_type", "minute", "n", "n_present", "forgotten"])
        marks = [p.watermark for p in shards.values()]
        watermark = None if not marks or any(m is None for m in marks) else min(m for m in marks if m is not None)
        return ArchiveSnapshot(frame, watermark, dict(shards), dict(dead), sorted(missing), unloaded)

    def events(self, hours: list[int]) -> pd.DataFrame:
        """Distinct valid events in the existing committed objects of these epoch hours."""
        hour_starts = [dt.datetime.fromtimestamp(h * 3600, tz=dt.timezone.utc) for h in hours]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            listed = [o for objs in pool.map(self.store.committed_objects, hour_starts) for o in objs]
            bodies = list(pool.map(lambda o: self.store.read_object(o.key), listed))
        rows: dict[str, tuple[str, str, str, int, str, int]] = {}
        for body in bodies:
            for line in decode_lines(body):
                raw = _valid_event_bytes(line)
                if raw is None:
                    continue
                ev = _envelope.decode(raw)
                rows.setdefault(ev.event_id, (ev.event_id, ev.tenant_id, ev.event_type, _minute(ev.received_at),
                                              ev.source_id, ev.source_seq))
        return pd.DataFrame(list(rows.values()), columns=list(EVENT_COLUMNS))
