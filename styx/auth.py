"""API tokens: random, shown once, stored as salted hashes.

A token reads ``styx_<id>_<secret>``: the id finds the row, the secret is checked against
``sha256(salt + secret)`` in constant time. Nothing stored can be turned back into a token.

Pure functions, no storage: ``styx.db.users.UserStore`` keeps the hashes and calls
``split_token`` and ``matches``; ``styx.workers.credentials`` writes the admin's token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "styx_"


@dataclass(frozen=True)
class NewToken:
    token: str  # give this to the user, once
    token_id: str
    salt: str
    digest: str


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_token() -> NewToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return NewToken(f"{PREFIX}{token_id}_{secret}", token_id, salt, _digest(salt, secret))


def split_token(token: str) -> tuple[str, str] | None:
    """``(token_id, secret)``, or None when the string is not shaped like a Styx token."""
    if not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or not token_id or not secret:
        return None
    return token_id, secret


def matches(secret: str, salt: str, digest: str) -> bool:
    return hmac.compare_digest(_digest(salt, secret), digest)
