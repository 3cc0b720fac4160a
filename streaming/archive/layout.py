"""Object and manifest keys of the archive.

Objects: ``raw/events/dt=YYYY-MM-DD/hour=HH/<shard_id>/<first_seq>-<last_seq>.jsonl.gz``; manifests:
``raw/manifests/<shard_id>/<first_seq>-<last_seq>.json``. Sequence numbers are zero-padded to 56 digits
(real Kinesis sequence numbers have 56; the emulator's are small integers) so that keys sort in stream
order and a re-written batch (same shard, same range) lands on the same keys.

An object rewritten by an audited deletion request gets a revision suffix
(``<first_seq>-<last_seq>.r<N>.jsonl.gz``): a new key in the same place, listed by the batch's updated
manifest, so the old object can be removed after the manifest (the commit point) names the new one.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

SEQ_WIDTH = 56
EVENTS_PREFIX = "raw/events/"
MANIFESTS_PREFIX = "raw/manifests/"
_OBJECT_RE = re.compile(
    r"^raw/events/dt=(?P<day>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/(?P<shard>[^/]+)/"
    r"(?P<first>\d+)-(?P<last>\d+)(?:\.r(?P<rev>\d+))?\.jsonl\.gz$"
)
_MANIFEST_RE = re.compile(r"^raw/manifests/(?P<shard>[^/]+)/(?P<first>\d+)-(?P<last>\d+)\.json$")


def pad_seq(sequence_number: str) -> str:
    if not sequence_number.isdigit() or len(sequence_number) > SEQ_WIDTH:
        raise ValueError(f"not a Kinesis sequence number: {sequence_number!r}")
    return sequence_number.rjust(SEQ_WIDTH, "0")


def unpad_seq(padded: str) -> str:
    return str(int(padded))


def hour_start(epoch_s: float) -> dt.datetime:
    """The UTC hour containing ``epoch_s``."""
    return dt.datetime.fromtimestamp(int(epoch_s) // 3600 * 3600, tz=dt.timezone.utc)


def hour_prefix(hour: dt.datetime) -> str:
    hour = hour.astimezone(dt.timezone.utc)
    return f"{EVENTS_PREFIX}dt={hour:%Y-%m-%d}/hour={hour:%H}/"


def object_key(shard_id: str, hour: dt.datetime, first_seq: str, last_seq: str) -> str:
    return f"{hour_prefix(hour)}{shard_id}/{pad_seq(first_seq)}-{pad_seq(last_seq)}.jsonl.gz"


def revised_object_key(key: str, revision: int) -> str:
    """The key of revision ``revision`` (>= 1) of the object ``key`` (itself of any revision)."""
    m = _OBJECT_RE.match(key)
    if m is None or revision < 1:
        raise ValueError(f"not an archive object key or revision: {key!r}, {revision}")
    return f"{key[:m.start('first')]}{m['first']}-{m['last']}.r{revision}.jsonl.gz"


def base_object_key(key: str) -> str:
    """The key an object had as the archiver wrote it (a rewrite by a deletion request adds ``.r<N>``)."""
    m = _OBJECT_RE.match(key)
    if m is None or not m["rev"]:
        return key
    return f"{key[:m.start('first')]}{m['first']}-{m['last']}.jsonl.gz"


def object_revision(key: str) -> int:
    """0 for an object as the archiver wrote it, N for its N-th rewrite."""
    m = _OBJECT_RE.match(key)
    return int(m["rev"]) if m is not None and m["rev"] else 0


def manifest_key(shard_id: str, first_seq: str, last_seq: str) -> str:
    return f"{MANIFESTS_PREFIX}{shard_id}/{pad_seq(first_seq)}-{pad_seq(last_seq)}.json"


@dataclass(frozen=True)
class BatchRange:
    """A shard batch's identity: the shard and its first and last sequence numbers."""

    shard_id: str
    first_seq: str
    last_seq: str

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.shard_id, self.first_seq, self.last_seq)


def parse_object_key(key: str) -> tuple[dt.datetime, BatchRange] | None:
    """(hour, batch) of an archive object key, or None for anything else under ``raw/events/``."""
    m = _OBJECT_RE.match(key)
    if m is None:
        return None
    hour = dt.datetime.strptime(f"{m['day']} {m['hour']}", "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc)
    return hour, BatchRange(m["shard"], unpad_seq(m["first"]), unpad_seq(m["last"]))


def parse_manifest_key(key: str) -> BatchRange | None:
    m = _MANIFEST_RE.match(key)
    if m is None:
        return None
    return BatchRange(m["shard"], unpad_seq(m["first"]), unpad_seq(m["last"]))
