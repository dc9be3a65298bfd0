"""The client's SSH key: made once on disk, and its ``authorized_keys`` line.

- ``ensure_client_key(path)``: the ed25519 key at ``path`` (0600, plus ``path.pub``),
  generated the first time; concurrent callers all end up with the same key.
- ``public_key_line(key)``: what a node's ``authorized_keys`` needs to let it in.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh

from styx.files import atomic_write, create_once

__all__ = ["ensure_client_key", "public_key_line"]


def ensure_client_key(path: Path) -> asyncssh.SSHKey:
    """Return the ed25519 client key at ``path``, generating it (mode 0600, plus
    ``path.pub``) the first time. Safe against concurrent callers."""
    path = Path(path)
    try:
        key = asyncssh.import_private_key(path.read_bytes())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        made = asyncssh.generate_private_key("ssh-ed25519", comment="styx")
        # Another process may have won the race: then its key is the one on disk.
        key = asyncssh.import_private_key(create_once(path, made.export_private_key()))
    pub = path.with_name(path.name + ".pub")
    line = key.export_public_key()
    if not pub.exists() or pub.read_bytes() != line:
        atomic_write(pub, line, mode=0o644)
    return key


def public_key_line(key: asyncssh.SSHKey) -> str:
    """The OpenSSH ``authorized_keys`` line of a key."""
    return key.export_public_key().decode().strip()
