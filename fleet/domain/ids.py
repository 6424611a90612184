"""Identifiers: URL-safe, sortable by creation time (ULID layout, lower-case Crockford base32)."""

from __future__ import annotations

import hashlib
from datetime import datetime

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def sortable_id(prefix: str, now: datetime, entropy: bytes) -> str:
    """``{prefix}{10 chars of ms time}{16 chars of entropy}``: ids sort as they were made."""
    if len(entropy) < 10:
        raise ValueError("need at least 10 bytes of entropy")
    millis = int(now.timestamp() * 1000)
    return prefix + _b32(millis, 10) + _b32(int.from_bytes(entropy[:10], "big"), 16)


def key_digest(*parts: str) -> str:
    """A stable, URL-safe digest of a key (idempotency keys, names): same key, same digest."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
