"""Read and re-feed dead letters: records that failed validation, kept with reason, raw bytes and position.

Dead letters live under their tenant's hash tag (the ``dead_letter_*`` keys of
:mod:`streaming.speed.keys`), or the ``{_unattributed}`` tag when the raw bytes name no valid tenant id;
an index (:func:`~streaming.speed.keys.dead_letter_tags`) lists the tags that hold some, so the global
counts per reason are the sum over the tags. Entries are kept ``TALLY_DEAD_LETTER_TTL_S`` after they
are written (trimmed on every write; a tag's keys expire that long after its newest), so memory is
bounded per tenant and the load spreads over a Redis Cluster's slots with the tenants.

``replay`` puts the raw bytes back on the stream (through the producer, so partial failures are resent)
and then marks each entry replayed. A crash between the two re-sends the record on the next replay,
which is safe: the consumer counts an ``event_id`` once inside the dedup horizon. A record that is still
invalid after the "fix" is dead-lettered again at its new stream position.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streaming.events import Event, EventDecoder
from streaming.speed import keys, scripts
from streaming.speed.store import unpack



@dataclass(frozen=True)
class DeadLetterEntry:
    entry_id: str
    reason: str
    detail: str
    raw: bytes
    shard_id: str
    sequence_number: str
    written_ms: int
    #: the hash tag it lives under: its tenant, or ``keys.UNATTRIBUTED_TAG``
    tag: str = keys.UNATTRIBUTED_TAG
    tenant_id: str | None = None
    source_id: str | None = None
    source_seq: int | None = None


def _entry(tag: str, entry_id: str, blob: bytes) -> DeadLetterEntry:
    doc = unpack(blob)
    return DeadLetterEntry(entry_id, doc["reason"], doc["detail"], doc["raw"], doc["shard"], doc["seq"], int(doc["at"]),
                           tag, doc.get("tenant_id"), doc.get("source_id"), doc.get("source_seq"))


def tag_of(tenant: str) -> str:
    """The tag a ``--tenant`` value names: a tenant id, or ``_unattributed`` (records naming no valid tenant)."""
    return tenant if tenant == keys.UNATTRIBUTED_TAG else keys.check_tenant(tenant)


def tags(client: Any) -> list[str]:
    """Every tag that holds dead letters (tenants first by name, then the unattributed tag)."""
    return sorted((t.decode() if isinstance(t, bytes) else t) for t in client.zrange(keys.dead_letter_tags(), 0, -1))


def _summed(client: Any, key: Callable[[str], str], tenant: str | None) -> dict[str, int]:
    chosen = [tag_of(tenant)] if tenant is not None else tags(client)
    pipe = client.pipeline(transaction=False)
    for tag in chosen:
        pipe.hgetall(key(tag))
    total: dict[str, int] = {}
    for fields in pipe.execute() if chosen else []:
        for reason, n in fields.items():
            total[reason.decode()] = total.get(reason.decode(), 0) + int(n)
    return dict(sorted(total.items()))


def counts(client: Any, tenant: str | None = None) -> dict[str, int]:
    """Reason -> dead letters written (each stream position once), over every tag or one tenant's."""
    return _summed(client, keys.dead_letter_counts, tenant)


def replayed_counts(client: Any, tenant: str | None = None) -> dict[str, int]:
    return _summed(client, keys.dead_letter_replayed, tenant)


def _pending_of(client: Any, tag: str, reason: str | None, limit: int, page: int = 500) -> list[DeadLetterEntry]:
    out: list[DeadLetterEntry] = []
    offset = 0
    while len(out) < limit:
        ids = client.zrange(keys.dead_letter_pending(tag), offset, offset + page - 1)
        if not ids:
            break
        offset += page
        blobs = client.hmget(keys.dead_letter_entries(tag), ids)
        for entry_id, blob in zip(ids, blobs, strict=True):
            if blob is None:
                continue
            entry = _entry(tag, entry_id.decode(), blob)
            if reason is None or entry.reason == reason:
                out.append(entry)
                if len(out) >= limit:
                    break
    return out


def list_pending(client: Any, reason: str | None = None, limit: int = 100, tenant: str | None = None) -> list[DeadLetterEntry]:
    """Pending (not yet replayed) dead letters, oldest first, optionally of one reason and one tenant
    (``_unattributed``: the records that name no valid tenant)."""
    chosen = [tag_of(tenant)] if tenant is not None else tags(client)
    per_tag = [_pending_of(client, tag, reason, limit) for tag in chosen]
    merged = heapq.merge(*per_tag, key=lambda e: (e.written_ms, e.tag, e.entry_id))
    return [e for _, e in zip(range(max(0, limit)), merged)]


@dataclass
class ReplayResult:
    sent: int = 0
    still_invalid: int = 0
    marked: int = 0


def replay(
    client: Any,
    send: Callable[[list[tuple[bytes, str]]], None],
    decoder: EventDecoder,
    reason: str | None = None,
    limit: int = 10_000,
    only_valid: bool = True,
    tenant: str | None = None,
) -> ReplayResult:
    """Re-feed pending dead letters to the stream with ``send`` (a list of (data, partition key)).

    With ``only_valid`` (the default), only records the current decoder accepts are re-fed: the others
    stay pending, so a replay before the fix changes nothing.
    """
    result = ReplayResult()
    chosen: list[DeadLetterEntry] = []
    for entry in list_pending(client, reason, limit, tenant):
        if only_valid and not isinstance(decoder.decode(entry.raw), Event):
            result.still_invalid += 1
            continue
        chosen.append(entry)
    if not chosen:
        return result
    send([(e.raw, f"replay-{e.entry_id}") for e in chosen])
    result.sent = len(chosen)
    script = scripts.register(client, "deadletters_replayed")
    by_tag: dict[str, list[str]] = {}
    for e in chosen:
        by_tag.setdefault(e.tag, []).extend((e.entry_id, e.reason))
    for tag, args in sorted(by_tag.items()):
        result.marked += int(script(keys=[keys.dead_letter_pending(tag), keys.dead_letter_replayed(tag)], args=args))
    return result
