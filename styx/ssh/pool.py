"""``SshPool``: one cached SSH connection per node, reconnected when it dies."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncssh

from styx.ssh.connection import NodeEndpoint, NodeUnreachable, connect

__all__ = ["SshPool"]


class SshPool:
    """A small cache of SSH connections, one per node endpoint.

    ``get`` drops connections that have died and reconnects (retrying a failed connect
    once). After a ``NodeUnreachable`` from a command, call ``discard`` so the next
    ``get`` opens a fresh connection.
    """

    def __init__(
        self,
        client_key: asyncssh.SSHKey,
        *,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 15.0,
        retry_delay: float = 0.5,
    ) -> None:
        self.client_key = client_key
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self.retry_delay = retry_delay
        self._conns: dict[tuple[Any, ...], asyncssh.SSHClientConnection] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    @staticmethod
    def _key(node: NodeEndpoint) -> tuple[Any, ...]:
        return (node.host, node.port, node.user, node.host_key)

    async def get(self, node: NodeEndpoint) -> asyncssh.SSHClientConnection:
        """A live connection to ``node``, reused when possible."""
        key = self._key(node)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and not conn.is_closed():
                return conn
            self._conns.pop(key, None)
            try:
                conn = await self._connect(node)
            except NodeUnreachable:
                await asyncio.sleep(self.retry_delay)
                conn = await self._connect(node)
            self._conns[key] = conn
            return conn

    async def _connect(self, node: NodeEndpoint) -> asyncssh.SSHClientConnection:
        return await connect(
            node,
            self.client_key,
            connect_timeout=self.connect_timeout,
            keepalive_interval=self.keepalive_interval,
        )

    def discard(self, node: NodeEndpoint) -> None:
        """Forget (and close) the cached connection to ``node``."""
        conn = self._conns.pop(self._key(node), None)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Close every cached connection."""
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)
