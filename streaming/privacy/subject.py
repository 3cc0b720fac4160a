"""Who a deletion request is about: a user id and every anonymous id stitched to it.

An event belongs to the subject when its ``user_id`` is the user, or it has no ``user_id`` and its
``anonymous_id`` is one the user was ever seen with (an ``identify`` or any later event links them): the
same stitching the warehouse applies (``int_identities_stitched``), taken over every layer's data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from streaming.events import TENANT_ID_PATTERN
from streaming.suppression import subject_hash

_TENANT = re.compile(TENANT_ID_PATTERN)

#: Longest identifier accepted in a request (event identifiers are far shorter).
MAX_IDENTIFIER = 512


class BadRequest(ValueError):
    """A deletion request whose tenant or user id cannot be valid; the message holds no identifier."""


def check_tenant(tenant: str) -> str:
    """The tenant id, if it matches the contract as a whole string (``fullmatch``: a ``$`` alone also
    matches before a trailing newline, which must not make ``"t\\n"`` a tenant)."""
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise BadRequest(f"the tenant id does not match {TENANT_ID_PATTERN}")
    return tenant


def check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_IDENTIFIER or "\0" in user_id:
        raise BadRequest(f"a user id must be a non-empty string of at most {MAX_IDENTIFIER} characters without NUL")
    return user_id


@dataclass
class Subject:
    tenant: str
    user_id: str
    anonymous_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        check_user_id(self.user_id)

    def owns(self, tenant: str, user_id: str | None, anonymous_id: str | None) -> bool:
        """Is an event with these identifiers about the subject?"""
        if tenant != self.tenant:
            return False
        if user_id is not None:
            return user_id == self.user_id
        return anonymous_id in self.anonymous_ids

    def hashes(self, salt: str) -> list[str]:
        """Subject hashes of the user id and every anonymous id (what the suppression list holds)."""
        return sorted({subject_hash(self.tenant, i, salt) for i in (self.user_id, *self.anonymous_ids)})
