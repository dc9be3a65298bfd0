"""Task secrets travel through Temporal sealed, so the workflow history and the web UI never
show them: the API seals, the activity that starts the job unseals, with a key that only
Styx's processes read (``STYX_SECRET_KEY``, or ``STYX_HOME/secret.key``, created 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet


def _key(home: Path) -> bytes:
    explicit = os.environ.get("STYX_SECRET_KEY")
    if explicit:
        return explicit.encode()
    path = home / "secret.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


def seal(home: Path, values: dict[str, str]) -> str | None:
    if not values:
        return None
    return Fernet(_key(home)).encrypt(json.dumps(values).encode()).decode()


def unseal(home: Path, sealed: str | None) -> dict[str, str]:
    if not sealed:
        return {}
    return json.loads(Fernet(_key(home)).decrypt(sealed.encode()))
