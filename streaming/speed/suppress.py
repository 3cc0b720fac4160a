"""The speed layer's copy of the suppression lists (written by :mod:`streaming.privacy.suppression`).

Checking the list costs no round trip on the hot path: a tenant's batch carries the list version it was
aggregated with, and the apply script compares it with the list version
(:func:`streaming.speed.keys.suppression_version`) inside the same atomic call. On a mismatch the script
writes nothing and answers ``suppress``; the store reloads that tenant's list here and rebuilds the
tenant's aggregates. So no event is counted against a list older than the one in Redis
when its counters commit, and a tenant that never had a deletion costs one GET inside the script.
"""

from __future__ import annotations

from typing import Any

from streaming.speed import keys
from streaming.suppression import earliest_since


class Suppressions:
    """tenant -> (version, subject_hash -> since_ms), loaded on demand."""

    def __init__(self, client: Any, salt: str = "") -> None:
        self.client = client
        self.salt = salt
        self._lists: dict[str, tuple[int, dict[str, int]]] = {}

    def version(self, tenant: str) -> int:
        """The version this process aggregates ``tenant`` with (0, an empty list, until told otherwise)."""
        known = self._lists.get(tenant)
        return known[0] if known else 0

    def since_map(self, tenant: str) -> dict[str, int] | None:
        """subject_hash -> since_ms for ``tenant``, or None when nothing of it is suppressed."""
        known = self._lists.get(tenant)
        return known[1] if known and known[1] else None

    def tenants_with_lists(self) -> frozenset[str]:
        """The tenants with at least one suppressed subject (their events need the per-event check)."""
        return frozenset(t for t, (_, since) in self._lists.items() if since)

    def reload(self, tenant: str) -> None:
        """Read the version, then the hash (in that order: a change in between only makes the version
        look older than the list, which the script then refuses once more)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.suppression_version(tenant))
        pipe.hgetall(keys.suppression(tenant))
        version, entries = pipe.execute()
        since = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in entries.items()}
        self._lists[tenant] = (int(version or 0), since)

    def subject_since(self, tenant: str, since: dict[str, int], user_id: str | None, anonymous_id: str) -> int | None:
        """The earliest since_ms of the event's identifiers on ``since``, or None."""
        return earliest_since(since, tenant, user_id, anonymous_id, self.salt)
