"""The suppression rule every layer applies alike: how a subject is named, and which events it covers.

The speed layer (:mod:`streaming.speed.suppress`), the archiver and the deletion workflow
(:mod:`streaming.privacy.suppression`, which writes the lists) all count by this rule, so the layers
keep agreeing. It lives beside the event contract, outside both packages, so neither imports the other
for it.

Subjects are stored hashed: ``subject_hash`` is SHA-256 of ``tenant NUL identifier``, keyed (HMAC) with
the deployment's ``TALLY_PRIVACY_SALT`` when set, so a dump of Redis or of the audit log cannot be
reversed by hashing guessed e-mail addresses without that secret.
"""

from __future__ import annotations

import hashlib
import hmac


def subject_hash(tenant: str, identifier: str, salt: str = "") -> str:
    """Hex digest naming one subject identifier (a user id or an anonymous id) of one tenant."""
    message = tenant.encode("utf-8") + b"\0" + identifier.encode("utf-8")
    if salt:
        return hmac.new(salt.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def earliest_since(since: dict[str, int], tenant: str, user_id: str | None, anonymous_id: str | None,
                   salt: str = "") -> int | None:
    """The earliest since_ms on ``since`` (subject_hash -> since_ms) of an event's identifiers, or None."""
    marks = [m for m in (since.get(subject_hash(tenant, ident, salt)) for ident in (user_id, anonymous_id) if ident)
             if m is not None]
    return min(marks) if marks else None
