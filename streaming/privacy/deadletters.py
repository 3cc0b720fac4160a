"""The speed layer's dead letters in a deletion: entries whose raw bytes name the subject.

A dead letter (:mod:`streaming.speed.deadletters`) keeps a record that failed validation with its raw
bytes, which are not a valid event and so cannot be read field by field. They are matched as bytes
instead. An entry is the subject's when its raw bytes contain

* the user id or one of the subject's anonymous ids **as a quoted string**, and
* the subject's tenant id, quoted the same way.

"Quoted" means one of these forms of an identifier ``x`` (see :func:`quoted_forms`):

* ``"x"`` as JSON writes it (``json.dumps`` with and without ``ensure_ascii``, so an id with non-ASCII
  characters or characters JSON escapes is found in either spelling);
* ``\\"x\\"``, the same inside a JSON string (a record whose payload is itself a JSON document encoded as
  a string, e.g. ``{"body": "{\\"user_id\\": \\"x\\"}"}``);
* ``'x'``, single quotes (a common kind of invalid JSON: a Python/JS literal).

The quotes are the boundaries: ``"u-1"`` never matches inside ``"u-12"`` or ``"xu-1"``. What is not
found: an identifier that is not a whole quoted string (an unquoted value, part of a longer string such
as a URL, a record cut off before the closing quote) and records that do not name the tenant as a
quoted string (another tenant may have a user with the same id, so the tenant must be there too).

Where they are searched: dead letters live under their record's tenant's hash tag, or under
``{_unattributed}`` when the bytes name no valid tenant id (:mod:`streaming.speed.deadletters`). A
subject's dead letters are in their tenant's tag or in the unattributed one (a record whose tenant id did
not parse, but whose bytes still name the tenant as a quoted string); both are searched. A record that
parsed to *another* valid tenant is that tenant's data and is not searched.

The whole entry is removed: from the entries hash, the pending set and the retention index, in one script
(the keys share the tag). The counts per reason are aggregates and keep their totals. An entries hash can
be large, so it is read with HSCAN in pages (never KEYS, never HGETALL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from streaming.privacy.subject import Subject
from streaming.speed import keys, scripts
from streaming.speed.store import unpack

#: Entries per HSCAN page (a hint to Redis; a page of msgpack entries of at most 64 KiB raw each).
SCAN_PAGE = 500



def quoted_forms(identifier: str) -> frozenset[bytes]:
    """Every byte string that counts as ``identifier`` written as a whole quoted string (module docstring)."""
    forms: set[bytes] = set()
    for ensure_ascii in (False, True):
        quoted = json.dumps(identifier, ensure_ascii=ensure_ascii)
        forms.add(quoted.encode("utf-8"))
        # the same inside a JSON string: \"x\"
        forms.add(json.dumps(quoted, ensure_ascii=ensure_ascii)[1:-1].encode("utf-8"))
    forms.add(b"'" + identifier.encode("utf-8") + b"'")
    return frozenset(forms)


@dataclass(frozen=True)
class DeadLetterMatcher:
    """Does a dead letter's raw bytes name the subject (module docstring for the rule)?"""

    tenant_forms: frozenset[bytes]
    identifier_forms: frozenset[bytes]

    @classmethod
    def for_subject(cls, subject: Subject) -> DeadLetterMatcher:
        idents = {subject.user_id, *subject.anonymous_ids}
        return cls(quoted_forms(subject.tenant), frozenset(f for i in idents if i for f in quoted_forms(i)))

    def matches(self, raw: bytes) -> bool:
        return any(f in raw for f in self.identifier_forms) and any(f in raw for f in self.tenant_forms)


@dataclass
class DeadLetterErasure:
    entries_scanned: int = 0
    removed: int = 0


def _raw(blob: bytes) -> bytes:
    """The raw record bytes of a stored entry (an entry that cannot be unpacked is matched as a whole)."""
    try:
        raw = unpack(blob).get("raw", b"")
    except (msgspec.DecodeError, AttributeError):  # a damaged entry is still searched, never skipped
        return bytes(blob)
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")


class DeadLetterEraser:
    def __init__(self, client: Any, page: int = SCAN_PAGE) -> None:
        self.client = client
        self.page = page

    @staticmethod
    def _tags(subject: Subject) -> tuple[str, str]:
        return keys.dead_letter_tag(subject.tenant), keys.UNATTRIBUTED_TAG

    def _find(self, subject: Subject) -> tuple[int, dict[str, set[str]]]:
        """(entries scanned, tag -> ids of the subject's entries). HSCAN may return an entry twice: sets."""
        matcher = DeadLetterMatcher.for_subject(subject)
        scanned, found = 0, {}
        for tag in self._tags(subject):
            for entry_id, blob in self.client.hscan_iter(keys.dead_letter_entries(tag), count=self.page):
                scanned += 1
                if matcher.matches(_raw(blob)):
                    found.setdefault(tag, set()).add(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
        return scanned, found

    def find(self, subject: Subject) -> tuple[int, set[str]]:
        """(entries scanned, ids of the subject's entries)."""
        scanned, found = self._find(subject)
        return scanned, {i for ids in found.values() for i in ids}

    def count(self, subject: Subject) -> int:
        """The subject's dead letters still in Redis (0 once the erasure is complete)."""
        return len(self.find(subject)[1])

    def erase(self, subject: Subject) -> DeadLetterErasure:
        """Remove the subject's entries; idempotent (a second run finds and removes nothing)."""
        scanned, found = self._find(subject)
        result = DeadLetterErasure(entries_scanned=scanned)
        script = scripts.register(self.client, "deadletters_erase")
        for tag, found_ids in sorted(found.items()):
            ids = sorted(found_ids)
            tag_keys = [keys.dead_letter_entries(tag), keys.dead_letter_pending(tag), keys.dead_letter_written(tag)]
            for start in range(0, len(ids), self.page):
                result.removed += int(script(keys=tag_keys, args=ids[start:start + self.page]))
        return result
