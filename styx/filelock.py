"""An exclusive file lock for asyncio code, held across coroutines and processes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import AsyncIterator


@contextlib.asynccontextmanager
async def async_flock(path: Path, local: asyncio.Lock) -> AsyncIterator[None]:
    """Hold ``local`` (serialises this process's coroutines) and ``flock(path)`` (other
    processes), polling for the latter so the event loop never blocks."""
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
            os.close(fd)  # closing releases the lock
