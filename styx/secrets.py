"""Task secrets travel through Temporal sealed, so the workflow history and the web UI never
show them: the API seals, the activity that starts the job unseals, with a key that only
Styx's processes read (``STYX_SECRET_KEY``, or ``STYX_HOME/secret.key``, created 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet

from styx.files import create_once


def _key(home: Path) -> bytes:
    explicit = os.environ.get("STYX_SECRET_KEY")
    if explicit:
        return explicit.encode()
    path = home / "secret.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        # If another process made it first, its key is the one kept and returned.
        return create_once(path, Fernet.generate_key()).strip()


def secret_key(home: Path) -> bytes:
    """Styx's key (a Fernet key): it also seals the dashboard's sign-in cookie."""
    return _key(home)


def seal(home: Path, values: dict[str, str]) -> str | None:
    if not values:
        return None
    return Fernet(_key(home)).encrypt(json.dumps(values).encode()).decode()


def unseal(home: Path, sealed: str | None) -> dict[str, str]:
    if not sealed:
        return {}
    return json.loads(Fernet(_key(home)).decrypt(sealed.encode()))
