"""The archive in S3: write a batch (objects first, manifest last) and read what is committed.

The manifest is the commit point. An object without its manifest (the archiver died between the two)
is a leftover that readers ignore; the batch is re-read from the stream and written again, to the same
keys if the range is the same, or to new keys if the restarted archiver cut its batches differently.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from streaming.archive.batch import ArchiveBatch
from streaming.archive.layout import MANIFESTS_PREFIX, BatchRange, hour_prefix, parse_manifest_key, parse_object_key


@dataclass(frozen=True)
class CommittedObject:
    """An archive object listed by a committed manifest, with that manifest's entry for it."""

    key: str
    batch: BatchRange
    entry: dict[str, Any]


class ArchiveStore:
    """Reads and writes the archive in one bucket."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    # -- writing -------------------------------------------------------------------------------
    def write_batch(self, batch: ArchiveBatch) -> None:
        """Objects first, then the manifest: only a complete batch is ever committed."""
        for obj in batch.objects:
            self.s3.put_object(Bucket=self.bucket, Key=obj.key, Body=obj.body,
                               ContentType="application/x-ndjson", ContentEncoding="gzip")
        self.s3.put_object(Bucket=self.bucket, Key=batch.batch.manifest_key,
                           Body=json.dumps(batch.manifest, separators=(",", ":")).encode(),
                           ContentType="application/json")

    # -- listing -------------------------------------------------------------------------------
    def _keys(self, prefix: str, start_after: str | None = None) -> Iterator[tuple[str, dt.datetime]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"]

    def shard_ids(self) -> list[str]:
        """Shards that have at least one committed manifest."""
        shards: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=MANIFESTS_PREFIX, Delimiter="/"
        ):
            shards.extend(p["Prefix"][len(MANIFESTS_PREFIX):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return shards

    def manifest_keys(self, shard_id: str, start_after: str | None = None) -> list[str]:
        """Committed manifest keys of a shard, in stream order (the padded keys sort that way)."""
        return [k for k, _ in self._keys(f"{MANIFESTS_PREFIX}{shard_id}/", start_after) if parse_manifest_key(k)]

    def last_committed_seq(self, shard_id: str) -> str | None:
        """The highest committed sequence number of a shard: where a restarted archiver resumes."""
        batches = [parse_manifest_key(k) for k in self.manifest_keys(shard_id)]
        seqs = [int(b.last_seq) for b in batches if b is not None]
        return str(max(seqs)) if seqs else None

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(body)

    def read_object(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def committed_objects(self, hour: dt.datetime) -> list[CommittedObject]:
        """The objects of one ``received_at`` hour that a committed manifest lists; leftovers skipped."""
        by_batch: dict[BatchRange, list[str]] = {}
        for key, _ in self._keys(hour_prefix(hour)):
            parsed = parse_object_key(key)
            if parsed is not None:
                by_batch.setdefault(parsed[1], []).append(key)
        if not by_batch:
            return []
        with ThreadPoolExecutor(max_workers=8) as pool:
            manifests = dict(zip(by_batch, pool.map(lambda b: self.read_manifest(b.manifest_key), by_batch)))
        committed: list[CommittedObject] = []
        for batch, keys in sorted(by_batch.items(), key=lambda kv: (kv[0].shard_id, int(kv[0].first_seq))):
            manifest = manifests[batch]
            if manifest is None:
                continue
            entries = {o["key"]: o for o in manifest["objects"]}
            committed.extend(CommittedObject(k, batch, entries[k]) for k in keys if k in entries)
        return committed

    def hours_with_objects(self) -> list[dt.datetime]:
        """Every hour that has a committed object, from all manifests (used by reports and the CLI)."""
        hours: set[str] = set()
        for shard in self.shard_ids():
            for key in self.manifest_keys(shard):
                manifest = self.read_manifest(key)
                if manifest:
                    hours.update(o["hour"] for o in manifest["objects"])
        return sorted(dt.datetime.strptime(h, "%Y-%m-%dT%H:00:00Z").replace(tzinfo=dt.timezone.utc) for h in hours)
