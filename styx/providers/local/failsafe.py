"""The failsafe of a local node (see ``styx.contracts.failsafe``): the deadline lives in
``node-<r>/failsafe.json`` beside the node's home (root's when jobs run as a job user, so a
job cannot move it), written by the provider's ``set_failsafe``. The node server watches it
(``watch``): once ``max(deadline, the server's start) + grace`` has passed, it kills the
jobs under its home, writes ``failsafe_fired.json`` and exits — the node is then what a
stopped VM is, and its cluster STOPPED on disk (no server runs; ``fired`` says why).

    write(ndir, deadline=time.time() + 600, grace=600, action="stop")
    fired(ndir)        # None, or {"at", "deadline", "action"} once the node acted
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from styx.files import atomic_write

__all__ = ["DEADLINE_FILE", "FIRED_FILE", "clear", "due", "fired", "watch", "write"]

log = logging.getLogger("styx.providers.local.failsafe")

DEADLINE_FILE = "failsafe.json"
FIRED_FILE = "failsafe_fired.json"


def write(ndir: Path, deadline: float | None, grace: float, action: str = "stop") -> None:
    """Set (or, with None, remove) the node's deadline."""
    path = ndir / DEADLINE_FILE
    if deadline is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    atomic_write(path, json.dumps({"deadline": float(deadline), "grace": float(grace), "action": action}).encode(),
                 0o600)


def clear(ndir: Path) -> None:
    """Forget the deadline and the fired marker (a node started afresh)."""
    for name in (DEADLINE_FILE, FIRED_FILE):
        with contextlib.suppress(FileNotFoundError):
            (ndir / name).unlink()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes()[:4096])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fired(ndir: Path) -> dict[str, Any] | None:
    return _read(ndir / FIRED_FILE)


def due(path: Path, started: float, now: float | None = None) -> str | None:
    """The action to take now (``stop``/``terminate``), or None: no deadline, or not yet."""
    data = _read(path)
    if not data:
        return None
    try:
        deadline, grace = float(data["deadline"]), float(data["grace"])
    except (KeyError, TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return str(data.get("action") or "stop") if now >= max(deadline, started) + grace else None


async def watch(path: Path, interval: float, on_fire: Callable[[str], Awaitable[None]]) -> None:
    """Look at the deadline every ``interval`` seconds; when it passed, record it and call
    ``on_fire(action)`` once."""
    started = time.time()
    while True:
        await asyncio.sleep(interval)
        action = due(path, started)
        if action is not None:
            data = _read(path) or {}
            log.warning("failsafe: deadline %s + %ss passed with no push from Styx: %s", data.get("deadline"),
                        data.get("grace"), action)
            atomic_write(path.parent / FIRED_FILE, json.dumps(
                {"at": time.time(), "deadline": data.get("deadline"), "action": action}).encode(), 0o600)
            await on_fire(action)
            return
