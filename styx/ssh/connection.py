"""Reaching a node and running a short command on it.

- Errors: ``SshError`` and the ones every caller handles — ``NodeUnreachable`` (re-attach,
  the command may still run), ``CommandTimeout``, ``RemoteCommandFailed``.
- ``NodeEndpoint``: how to reach one node (host, port, user, pinned host key), as a dict too.
- ``connect(node, key)``: one SSH connection, pinned to the node's host key.
- ``env_prefix(env)`` and ``run(conn, command, env)``: a short command, its environment
  exported inside the command itself; ``run_checked`` for helper commands that must succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import asyncssh

__all__ = [
    "CommandTimeout",
    "NodeEndpoint",
    "NodeUnreachable",
    "RemoteCommandFailed",
    "SshError",
    "connect",
    "env_prefix",
    "run",
    "run_checked",
]

# AES-GCM first: with AES-NI it measured ~2x chacha20-poly1305 (asyncssh's default) on
# bulk exec output over loopback. All of these are offered by stock OpenSSH.
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)

_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------------------
# Errors


class SshError(Exception):
    """Base of the errors raised here (asyncssh's auth errors pass through unchanged)."""


class NodeUnreachable(SshError):
    """The node could not be reached, or the connection died before the command ended.

    The remote command may still be running: re-attach rather than assume it failed.
    """


class CommandTimeout(SshError, TimeoutError):
    """A short command did not finish within its timeout."""


class RemoteCommandFailed(SshError):
    """A helper command on the node failed in a way that retrying will not fix."""

    def __init__(self, message: str, exit_status: int | None = None, stderr: bytes = b""):
        detail = stderr.decode(errors="replace").strip()
        super().__init__(f"{message}: {detail}" if detail else message)
        self.exit_status = exit_status
        self.stderr = stderr


# ---------------------------------------------------------------------------------------
# Endpoints and connections


@dataclass
class NodeEndpoint:
    """How to reach one node of a cluster over SSH.

    ``ip`` is the address jobs see as the node's IP (``STYX_NODE_IPS``); ``host_key`` is
    the node's OpenSSH public host key (``"ssh-ed25519 AAAA…"``), or ``None`` to accept
    any key — only for hosts the user configured that way.
    """

    host: str
    port: int
    user: str
    ip: str
    rank: int
    host_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeEndpoint:
        return cls(
            host=data["host"],
            port=int(data["port"]),
            user=data["user"],
            ip=data["ip"],
            rank=int(data["rank"]),
            host_key=data.get("host_key"),
        )


async def connect(
    node: NodeEndpoint,
    client_key: asyncssh.SSHKey,
    *,
    connect_timeout: float = 10.0,
    keepalive_interval: float = 15.0,
) -> asyncssh.SSHClientConnection:
    """Open an SSH connection to ``node``, pinned to its host key.

    The user's agent and ``~/.ssh/config`` are ignored. Raises ``NodeUnreachable`` when
    the node does not answer, and asyncssh's ``PermissionDenied`` /
    ``HostKeyNotVerifiable`` unchanged (retrying does not fix those).
    """
    known_hosts: Any
    if node.host_key is None:
        known_hosts = None
    else:
        known_hosts = ([asyncssh.import_public_key(node.host_key)], [], [])
    try:
        return await asyncssh.connect(
            node.host,
            node.port,
            username=node.user,
            client_keys=[client_key],
            known_hosts=known_hosts,
            agent_path=None,
            config=None,
            preferred_auth="publickey",
            encryption_algs=_CIPHERS,
            connect_timeout=connect_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_count_max=3,
        )
    except (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable):
        raise
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        raise NodeUnreachable(
            f"cannot reach node {node.rank} at {node.host}:{node.port}: {exc}"
        ) from exc


# ---------------------------------------------------------------------------------------
# Short commands


def env_prefix(env: Mapping[str, str] | None) -> str:
    """``export K='v' …; `` for ``env``, quoted for any POSIX shell ('' if empty)."""
    if not env:
        return ""
    parts = []
    for key, value in env.items():
        if not _ENV_KEY_RE.match(key):
            raise ValueError(f"invalid environment variable name: {key!r}")
        parts.append(f"{key}={shlex.quote(str(value))}")
    return "export " + " ".join(parts) + "; "


async def run(
    conn: asyncssh.SSHClientConnection,
    command: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: bytes | None = None,  # noqa: A002 - same name as subprocess.run
) -> tuple[int, bytes, bytes]:
    """Run a short command; returns ``(exit_status, stdout, stderr)``.

    Output is held in memory: stream big output through a log file and ``read_log``.
    A command killed by a signal returns ``-signum``. Raises ``NodeUnreachable`` if the
    connection dies or the server ends the channel without an exit status, and
    ``CommandTimeout`` (after closing the channel) when ``timeout`` expires.
    """
    full = env_prefix(env) + command
    try:
        if input is None:
            process = await conn.create_process(full, encoding=None, stdin=asyncssh.DEVNULL)
        else:
            process = await conn.create_process(full, encoding=None, input=input)
    except (OSError, asyncssh.Error) as exc:
        raise NodeUnreachable(f"cannot start a command: {exc}") from exc
    try:
        result = await process.wait(timeout=timeout)
    except asyncssh.TimeoutError as exc:
        with contextlib.suppress(Exception):
            process.send_signal("TERM")
        process.close()
        raise CommandTimeout(f"command did not finish within {timeout} s") from exc
    except (OSError, asyncssh.Error) as exc:
        raise NodeUnreachable(f"connection lost while running a command: {exc}") from exc
    stdout = result.stdout or b""
    stderr = result.stderr or b""
    assert isinstance(stdout, bytes) and isinstance(stderr, bytes)
    if result.exit_signal:
        name = result.exit_signal[0]
        try:
            return -signal.Signals["SIG" + name].value, stdout, stderr
        except KeyError:
            return -1, stdout, stderr
    if result.exit_status is None or result.exit_status < 0:
        raise NodeUnreachable("the command ended without an exit status (server gone?)")
    return result.exit_status, stdout, stderr


async def run_checked(
    conn: asyncssh.SSHClientConnection,
    command: str,
    what: str,
    *,
    timeout: float | None = 60.0,
    input: bytes | None = None,  # noqa: A002
) -> str:
    """``run`` for a helper command: its stdout as text, or ``RemoteCommandFailed``."""
    status, out, err = await run(conn, command, timeout=timeout, input=input)
    if status != 0:
        raise RemoteCommandFailed(f"{what} failed with exit status {status}", status, err)
    return out.decode(errors="replace")
