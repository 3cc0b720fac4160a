"""Per-tenant API keys, stored hashed (SHA-256) in Redis: a leaked Redis dump reveals no usable key."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from streaming.speed import keys

KEY_PREFIX = "tly_"


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_key(client: Any, tenant: str) -> str:
    """A new random key for ``tenant``; only its hash is stored, so show the key to the user once."""
    keys.check_tenant(tenant)
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    client.hset(keys.api_keys(), _digest(api_key), tenant)
    return api_key


def tenant_for(client: Any, api_key: str | None) -> str | None:
    """The tenant a key belongs to, or None for a missing or unknown key."""
    if not api_key or not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
        return None
    found = client.hget(keys.api_keys(), _digest(api_key))
    return found.decode() if found is not None else None


def revoke_key(client: Any, api_key: str) -> bool:
    return bool(client.hdel(keys.api_keys(), _digest(api_key)))
