"""Files on Styx's side: one atomic write and one file lock, for every module that needs them.

- ``atomic_write(path, data, mode)``: readers see the old file or the new one, never a part;
  the file is created with ``mode`` (0600 by default: most of what Styx writes is private).
- ``create_once(path, data, mode)``: the same for a file made once and never replaced (keys,
  ids): of concurrent callers one creates it, and every caller gets what it holds.
- ``file_lock(path)``: an exclusive ``flock`` held for a ``with`` block (blocking: call it in
  a thread from async code; ``wait=False`` raises ``BlockingIOError`` if it is taken).
- ``async_flock(path, local)``: the same for asyncio code, held across coroutines (``local``
  serialises this process's coroutines) and processes, polling so the loop never blocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Iterator

if TYPE_CHECKING:
    import asyncio


def atomic_write(path: Path, data: bytes | str, mode: int = 0o600, *, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file in the same directory, then
    ``os.replace``). ``fsync`` also makes it durable across a power loss."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def create_once(path: Path, data: bytes | str, mode: int = 0o600) -> bytes:
    """Create ``path`` holding ``data`` unless it exists; return what ``path`` then holds.

    Never replaces an existing file: the data goes to a temporary file that is then
    ``os.link``ed to ``path``, which fails if another caller created it first (whose
    content is then returned). Readers never see the file part-written.
    """
    path = Path(path)
    content = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()
        return content
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600 if missing) for the ``with`` block.

    With ``wait=False`` it raises ``BlockingIOError`` at once if another holder has it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.asynccontextmanager
async def async_flock(path: Path, local: asyncio.Lock) -> AsyncIterator[None]:
    """Hold ``local`` and ``flock(path)``, polling for the latter so the event loop never blocks."""
    import asyncio  # here: the CLI imports this module, and needs no event loop

    async with local:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            yield
        finally:
            os.close(fd)
