"""Host keys of pool hosts: trusted on first use and recorded in ``STYX_HOME/ssh_known_hosts``
(OpenSSH format, ``[host]:port`` unless the port is 22), unless the pool entry gives
``host_key``. A changed key fails the host's check; delete its line from that file if the
change is expected.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh

from styx.files import file_lock
from styx.providers.ssh.config import SshTarget
from styx.providers.ssh.errors import StateFileUnreadable

__all__ = ["KNOWN_HOSTS_FILE", "KnownHosts", "known_hosts_name"]

KNOWN_HOSTS_FILE = "ssh_known_hosts"


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    """The known hosts file at ``path`` (a lock file next to it serialises writers)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self, target: SshTarget) -> list[str]:
        """Keys trusted for ``target``: the pool's ``host_key``, else those recorded (exact
        name match, no wildcards or hashes)."""
        if target.host_key:
            return [target.host_key]
        name = known_hosts_name(target.host, target.port)
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        keys = []
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
                continue
            if name in fields[0].split(","):
                key = f"{fields[1]} {fields[2]}"
                try:
                    asyncssh.import_public_key(key)
                except (asyncssh.KeyImportError, ValueError):
                    raise StateFileUnreadable(
                        f"{self.path}:{number}: not an OpenSSH public key; fix or delete the line"
                    ) from None
                keys.append(key)
        return keys

    def remember(self, target: SshTarget, key: str) -> None:
        """Record a first-seen host key; raises if another one was recorded meanwhile.
        Blocks on the lock: call in a thread from async code."""
        with file_lock(self.path.with_name(f"{self.path.name}.lock")):
            known = self.keys(target)
            if key in known:
                return
            if known:
                raise asyncssh.HostKeyNotVerifiable(
                    f"another host key was recorded for {target.address} meanwhile"
                )
            with open(self.path, "a") as f:
                f.write(f"{known_hosts_name(target.host, target.port)} {key}\n")
