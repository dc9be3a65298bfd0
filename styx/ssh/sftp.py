"""Files to and from a node over SFTP.

- ``sftp_path(path)``: a remote path as SFTP wants it (``~/x`` becomes ``x``: SFTP servers
  do not expand ``~``, and relative paths start at the login home).
- ``open_sftp(conn_or_sftp)``: an SFTP client for the ``async with`` block (a given client is
  reused, so loops pass one in and save a channel per call).
- ``read_range(conn_or_sftp, path, offset, max_bytes)``: part of a remote file, binary-safe.
- ``upload_file`` / ``upload_dir``: copy to the node, swapped in atomically.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

import asyncssh

from styx.ssh.connection import NodeUnreachable

__all__ = ["open_sftp", "read_range", "sftp_path", "upload_dir", "upload_file"]

# SFTP transfer tuning measured on loopback (~235 MB/s put vs ~180 MB/s with defaults).
_SFTP_BLOCK = 262144
_SFTP_REQUESTS = 128


def sftp_path(path: str) -> str:
    """A remote path as SFTP wants it: ``~`` and ``~/x`` become ``.`` and ``x``
    (relative to the login home); other paths are unchanged."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:].lstrip("/") or "."
    return path


@contextlib.asynccontextmanager
async def open_sftp(
    target: asyncssh.SSHClientConnection | asyncssh.SFTPClient,
) -> AsyncIterator[asyncssh.SFTPClient]:
    """An SFTP client on ``target`` for the block: ``target`` itself if it is one."""
    if isinstance(target, asyncssh.SFTPClient):
        yield target
        return
    try:
        client = await target.start_sftp_client()
    except (OSError, asyncssh.Error) as exc:
        raise NodeUnreachable(f"cannot open SFTP: {exc}") from exc
    try:
        yield client
    finally:
        client.exit()


async def read_range(
    conn_or_sftp: asyncssh.SSHClientConnection | asyncssh.SFTPClient,
    path: str,
    offset: int,
    max_bytes: int,
) -> bytes:
    """Up to ``max_bytes`` of remote ``path`` from byte ``offset`` (b'' at the end, or if
    the file does not exist)."""
    async with open_sftp(conn_or_sftp) as sftp:
        try:
            async with sftp.open(path, "rb", block_size=_SFTP_BLOCK,
                                 max_requests=_SFTP_REQUESTS) as f:
                data = await f.read(max_bytes, offset)
        except asyncssh.SFTPNoSuchFile:
            return b""
    assert isinstance(data, bytes)
    return data


async def upload_file(
    conn_or_sftp: asyncssh.SSHClientConnection | asyncssh.SFTPClient,
    local_path: Path | str,
    remote_path: str,
) -> None:
    """Copy one file to the node (mode kept), replacing ``remote_path`` atomically and
    creating its parent directories. ``~/x`` is relative to the login home."""
    remote = sftp_path(remote_path)
    parent = str(PurePosixPath(remote).parent)
    tmp = f"{parent}/.{PurePosixPath(remote).name}.styx-{uuid.uuid4().hex[:12]}"
    async with open_sftp(conn_or_sftp) as sftp:
        if parent not in (".", "/"):
            await sftp.makedirs(parent, exist_ok=True)
        await sftp.put(
            str(local_path), tmp, preserve=True,
            block_size=_SFTP_BLOCK, max_requests=_SFTP_REQUESTS,
        )
        try:
            await sftp.posix_rename(tmp, remote)
        except asyncssh.SFTPOpUnsupported:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(remote)
            await sftp.rename(tmp, remote)


async def upload_dir(
    conn_or_sftp: asyncssh.SSHClientConnection | asyncssh.SFTPClient,
    local_dir: Path | str,
    remote_dir: str,
) -> None:
    """Make ``remote_dir`` a copy of ``local_dir`` (modes and symlinks kept).

    Unlike ``cp -r`` into an existing directory this never nests: the tree is uploaded
    next to ``remote_dir`` and swapped in, and the old content is removed. ``~/x`` is
    relative to the login home.
    """
    local = Path(local_dir)
    if not local.is_dir():
        raise NotADirectoryError(f"not a directory: {local}")
    remote = sftp_path(remote_dir).rstrip("/")
    if remote in ("", ".", "/"):
        raise ValueError(f"refusing to replace {remote_dir!r}")
    path = PurePosixPath(remote)
    parent = str(path.parent)
    tag = uuid.uuid4().hex[:12]
    tmp = f"{parent}/.{path.name}.styx-new-{tag}"
    old = f"{parent}/.{path.name}.styx-old-{tag}"
    async with open_sftp(conn_or_sftp) as sftp:
        if parent not in (".", "/"):
            await sftp.makedirs(parent, exist_ok=True)
        await sftp.put(
            str(local), tmp, recurse=True, preserve=True,
            block_size=_SFTP_BLOCK, max_requests=_SFTP_REQUESTS,
        )
        had_old = await sftp.lexists(remote)
        if had_old:
            await sftp.rename(remote, old)
        await sftp.rename(tmp, remote)
        if had_old:
            await sftp.rmtree(old, ignore_errors=True)
