"""The archive side of a deletion: find the subject's lines, rewrite the objects that hold them.

Only objects whose manifest entry counts the subject's tenant are read (manifests are small; the
objects of other tenants are never opened). A batch with lines to remove is rewritten in the archive's
own commit order, so a crash anywhere leaves a readable archive and a re-run finishes the job:

1. each affected object is written again under its next revision key (``...r<N>.jsonl.gz``), without
   the subject's lines (an unlisted new object is a leftover every reader ignores);
2. the batch's manifest, the commit point, is rewritten: the entry names the new key, ``records`` and
   ``bytes`` describe it, ``forgotten`` counts the removed lines per tenant × event type × minute (the
   manifest's ``counts`` still say what the stream delivered, which is what reconciliation explains
   with ``forgotten``), and ``replaced`` lists the old key;
3. the old objects are deleted (and every run deletes any ``replaced`` key still there).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streaming.archive.batch import decode_lines
from streaming.archive.layout import object_revision, revised_object_key
from streaming.archive.store import ArchiveStore
from streaming.privacy.subject import Subject


class _Envelope(msgspec.Struct):
    tenant_id: str
    event_type: str
    anonymous_id: str
    received_at: str
    user_id: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()


def _event_bytes(line: Any) -> bytes | None:
    if line.reason is not None or line.data_b64 is not None:
        return None
    if len(line.event):
        return bytes(line.event)
    return line.data.encode("utf-8") if line.data is not None else None


def _minute_iso(received_at: str) -> str:
    at = dt.datetime.fromisoformat(received_at.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:00Z")


@dataclass
class _Object:
    manifest_key: str
    entry: dict[str, Any]


@dataclass
class ArchiveScan:
    """What the scan of a tenant's objects found: anonymous ids linked to the user, objects to rewrite."""

    objects_read: int = 0
    anonymous_ids: set[str] = field(default_factory=set)
    lines: int = 0  # the subject's lines found


@dataclass
class ArchiveErasure:
    objects_rewritten: int = 0
    manifests_rewritten: int = 0
    lines_removed: int = 0
    old_objects_deleted: int = 0
    forgotten: Counter[tuple[str, str, str]] = field(default_factory=Counter)


class ArchiveEraser:
    def __init__(self, store: ArchiveStore, workers: int = 8) -> None:
        self.store = store
        self.workers = workers

    # -- reading --------------------------------------------------------------------------------
    def _manifests(self) -> list[tuple[str, dict[str, Any]]]:
        keys = [k for shard in self.store.shard_ids() for k in self.store.manifest_keys(shard)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            bodies = list(pool.map(self.store.read_manifest, keys))
        return [(k, m) for k, m in zip(keys, bodies, strict=True) if m is not None]

    def _tenant_objects(self, manifests: list[tuple[str, dict[str, Any]]], tenant: str) -> list[_Object]:
        found = []
        for key, manifest in manifests:
            for entry in manifest["objects"]:
                if any(row[0] == tenant for row in entry["counts"]):
                    found.append(_Object(key, entry))
        return found

    def _read(self, objects: list[_Object]) -> Iterator[tuple[_Object, list[Any]]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from zip(objects, pool.map(lambda o: decode_lines(self.store.read_object(o.entry["key"])), objects))

    @staticmethod
    def _subject_lines(lines: list[Any], subject: Subject) -> list[tuple[int, _Envelope]]:
        out = []
        for i, line in enumerate(lines):
            raw = _event_bytes(line)
            if raw is None:
                continue
            ev = _envelope.decode(raw)
            if subject.owns(ev.tenant_id, ev.user_id, ev.anonymous_id):
                out.append((i, ev))
        return out

    def discover(self, subject: Subject) -> ArchiveScan:
        """The anonymous ids the archive links to the user (any line with the user's id)."""
        scan = ArchiveScan()
        objects = self._tenant_objects(self._manifests(), subject.tenant)
        for _, lines in self._read(objects):
            scan.objects_read += 1
            for line in lines:
                raw = _event_bytes(line)
                if raw is None:
                    continue
                ev = _envelope.decode(raw)
                if ev.tenant_id == subject.tenant and ev.user_id == subject.user_id:
                    scan.anonymous_ids.add(ev.anonymous_id)
        return scan

    def count(self, subject: Subject) -> int:
        """Lines about the subject in committed objects (0 once the erasure is complete)."""
        objects = self._tenant_objects(self._manifests(), subject.tenant)
        return sum(len(self._subject_lines(lines, subject)) for _, lines in self._read(objects))

    # -- rewriting ------------------------------------------------------------------------------
    def erase(self, subject: Subject) -> ArchiveErasure:
        result = ArchiveErasure()
        manifests = self._manifests()
        by_key = dict(manifests)
        todo: dict[str, list[tuple[_Object, list[Any], list[tuple[int, _Envelope]]]]] = {}
        for obj, lines in self._read(self._tenant_objects(manifests, subject.tenant)):
            hits = self._subject_lines(lines, subject)
            if hits:
                todo.setdefault(obj.manifest_key, []).append((obj, lines, hits))
        for manifest_key, objects in todo.items():
            self._rewrite(manifest_key, by_key[manifest_key], objects, result)
        # Old objects a crashed run left behind after its manifest had moved on (step 3 again).
        for manifest_key, manifest in manifests:
            for old in manifest.get("replaced", []):
                if self._delete_if_exists(old):
                    result.old_objects_deleted += 1
        return result

    def _rewrite(self, manifest_key: str, manifest: dict[str, Any],
                 objects: list[tuple[_Object, list[Any], list[tuple[int, _Envelope]]]],
                 result: ArchiveErasure) -> None:
        manifest = json.loads(json.dumps(manifest))  # a copy to edit
        entries = {e["key"]: e for e in manifest["objects"]}
        old_keys = []
        for obj, lines, hits in objects:
            drop = {i for i, _ in hits}
            kept = [_encoder.encode(line) for i, line in enumerate(lines) if i not in drop]
            body = gzip.compress(b"".join(line + b"\n" for line in kept), compresslevel=1, mtime=0)
            old_key = obj.entry["key"]
            new_key = revised_object_key(old_key, object_revision(old_key) + 1)
            self.store.s3.put_object(Bucket=self.store.bucket, Key=new_key, Body=body,
                                     ContentType="application/x-ndjson", ContentEncoding="gzip")
            forgotten: Counter[tuple[str, str, str]] = Counter(
                {(t, e, m): n for t, e, m, n in entries[old_key].get("forgotten", [])})
            for _, ev in hits:
                cell = (ev.tenant_id, ev.event_type, _minute_iso(ev.received_at))
                forgotten[cell] += 1
                result.forgotten[cell] += 1
            entry = entries[old_key]
            entry.update(key=new_key, records=len(kept), bytes=len(body),
                         forgotten=[[t, e, m, n] for (t, e, m), n in sorted(forgotten.items())])
            old_keys.append(old_key)
            result.objects_rewritten += 1
            result.lines_removed += len(hits)
        manifest["replaced"] = sorted(set(manifest.get("replaced", [])) | set(old_keys))
        # The commit point: from here on readers see the new objects only.
        self.store.s3.put_object(Bucket=self.store.bucket, Key=manifest_key,
                                 Body=json.dumps(manifest, separators=(",", ":")).encode(),
                                 ContentType="application/json")
        result.manifests_rewritten += 1
        for old_key in old_keys:
            self.store.s3.delete_object(Bucket=self.store.bucket, Key=old_key)
            result.old_objects_deleted += 1

    def _delete_if_exists(self, key: str) -> bool:
        listed = self.store.s3.list_objects_v2(Bucket=self.store.bucket, Prefix=key, MaxKeys=1).get("Contents", [])
        if not any(item["Key"] == key for item in listed):
            return False
        self.store.s3.delete_object(Bucket=self.store.bucket, Key=key)
        return True
