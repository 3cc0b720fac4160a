"""Read and re-feed dead letters: records that failed validation, kept with reason, raw bytes and position.

``replay`` puts the raw bytes back on the stream (through the producer, so partial failures are resent)
and then marks each entry replayed. A crash between the two re-sends the record on the next replay,
which is safe: the consumer counts an ``event_id`` once inside the dedup horizon. A record that is still
invalid after the "fix" is dead-lettered again at its new stream position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streaming.events import Event, EventDecoder
from streaming.speed import keys
from streaming.speed.store import unpack

_MARK_REPLAYED_LUA = """
-- KEYS: pending, replayed counts. ARGV: (id, reason)*. Only pending entries move (idempotent).
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class DeadLetterEntry:
    entry_id: str
    reason: str
    detail: str
    raw: bytes
    shard_id: str
    sequence_number: str
    written_ms: int


def _entry(entry_id: str, blob: bytes) -> DeadLetterEntry:
    doc = unpack(blob)
    return DeadLetterEntry(entry_id, doc["reason"], doc["detail"], doc["raw"], doc["shard"], doc["seq"], int(doc["at"]))


def counts(client: Any) -> dict[str, int]:
    """Reason -> dead letters ever written (each stream position once)."""
    return {k.decode(): int(v) for k, v in client.hgetall(keys.dead_letter_counts()).items()}


def replayed_counts(client: Any) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.dead_letter_replayed()).items()}


def list_pending(client: Any, reason: str | None = None, limit: int = 100) -> list[DeadLetterEntry]:
    """Pending (not yet replayed) dead letters, oldest first, optionally of one reason."""
    out: list[DeadLetterEntry] = []
    offset = 0
    page = 500
    while len(out) < limit:
        ids = client.zrange(keys.dead_letter_pending(), offset, offset + page - 1)
        if not ids:
            break
        offset += page
        blobs = client.hmget(keys.dead_letter_entries(), ids)
        for entry_id, blob in zip(ids, blobs, strict=True):
            if blob is None:
                continue
            entry = _entry(entry_id.decode(), blob)
            if reason is None or entry.reason == reason:
                out.append(entry)
                if len(out) >= limit:
                    break
    return out


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
) -> ReplayResult:
    """Re-feed pending dead letters to the stream with ``send`` (a list of (data, partition key)).

    With ``only_valid`` (the default), only records the current decoder accepts are re-fed: the others
    stay pending, so a replay before the fix changes nothing.
    """
    result = ReplayResult()
    entries = list_pending(client, reason, limit)
    chosen: list[DeadLetterEntry] = []
    for entry in entries:
        if only_valid and not isinstance(decoder.decode(entry.raw), Event):
            result.still_invalid += 1
            continue
        chosen.append(entry)
    if not chosen:
        return result
    send([(e.raw, f"replay-{e.entry_id}") for e in chosen])
    result.sent = len(chosen)
    script = client.register_script(_MARK_REPLAYED_LUA)
    result.marked = int(script(
        keys=[keys.dead_letter_pending(), keys.dead_letter_replayed()],
        args=[x for e in chosen for x in (e.entry_id, e.reason)],
    ))
    return result


