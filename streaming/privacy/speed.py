"""The speed layer's side of a deletion: per-visitor entries in Redis.

Per-visitor state lives in the segment membership sorted sets (:func:`streaming.speed.keys.segment_members`,
member = anonymous id) and the segment state hashes (:func:`streaming.speed.keys.segment_state`, field =
anonymous id). Both are removed for
every anonymous id of the subject. Aggregate counters (counts, top pages) hold no identifier and keep
their totals. The hourly HyperLogLog uniques absorbed the anonymous ids into registers that cannot be
un-added: they hold no identifier that can be read back, and they expire with
``TALLY_SPEED_TTL_DAY_S`` (a documented limit, not a removal).

Keys are found with SCAN under the tenant's own prefix (:func:`streaming.speed.keys.segment_members_pattern`):
the tenant id is checked against the contract before it reaches the pattern, so it can hold no glob
character.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streaming.privacy.subject import Subject
from streaming.speed import keys


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class SpeedErasure:
    keys_scanned: int = 0
    entries_removed: dict[str, int] = field(default_factory=dict)  # "seg" | "segst" -> entries

    @property
    def total(self) -> int:
        return sum(self.entries_removed.values())


class SpeedEraser:
    def __init__(self, client: Any) -> None:
        self.client = client

    def _keys(self, tenant: str) -> tuple[list[str], list[str]]:
        scan = self.client.scan_iter
        members = [_text(k) for k in scan(match=keys.segment_members_pattern(tenant), count=1000)]
        states = [_text(k) for k in scan(match=keys.segment_state_pattern(tenant), count=1000)]
        return sorted(members), sorted(states)

    def count(self, subject: Subject) -> int:
        """Entries about the subject still in Redis (0 once the erasure is complete)."""
        anons = sorted(subject.anonymous_ids)
        if not anons:
            return 0
        members, states = self._keys(subject.tenant)
        pipe = self.client.pipeline(transaction=False)
        for key in members:
            pipe.zmscore(key, anons)
        for key in states:
            pipe.hmget(key, anons)
        return sum(1 for found in pipe.execute() for v in found if v is not None)

    def erase(self, subject: Subject) -> SpeedErasure:
        result = SpeedErasure(entries_removed={"seg": 0, "segst": 0})
        anons = sorted(subject.anonymous_ids)
        if not anons:
            return result
        members, states = self._keys(subject.tenant)
        result.keys_scanned = len(members) + len(states)
        pipe = self.client.pipeline(transaction=False)
        for key in members:
            pipe.zrem(key, *anons)
        for key in states:
            pipe.hdel(key, *anons)
        removed = pipe.execute()
        result.entries_removed["seg"] = sum(int(n) for n in removed[:len(members)])
        result.entries_removed["segst"] = sum(int(n) for n in removed[len(members):])
        return result
