"""The process table, as the local provider reads it: which processes are alive, which are a
node's server, and which belong to a node's home (so that stopping a node kills them all).

Linux's ``/proc`` is the source; without it (macOS) the provider falls back to the pid files
it wrote (``HAVE_PROC`` says which). A zombie counts as dead everywhere: ``kill -0`` alone
says yes to zombies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from pathlib import Path

__all__ = [
    "HAVE_PROC",
    "alive",
    "arg_after",
    "can_switch_user",
    "job_groups",
    "kill",
    "processes_of",
    "processes_of_user",
    "scan_cmdlines",
]

HAVE_PROC = os.path.isdir("/proc/self")


def kill(pid: int, sig: signal.Signals) -> None:
    """Send ``sig``; a process already gone (or not ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a process from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    if HAVE_PROC:
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids() -> list[int]:
    if not HAVE_PROC:
        return []
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def scan_cmdlines() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process we can read; empty without /proc."""
    out = []
    for pid in _pids():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out.append((pid, [a.decode(errors="surrogateescape") for a in raw.split(b"\0") if a]))
    return out


def arg_after(argv: list[str], flag: str) -> str | None:
    """The argument that follows ``flag`` in ``argv``, if any."""
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return None


def can_switch_user() -> bool:
    """Whether node servers can run jobs as another user: root, on Linux (the SFTP side
    needs per-thread ``setfsuid``)."""
    return HAVE_PROC and os.geteuid() == 0


def _read_small(path: Path, limit: int = 64) -> bytes:
    """The start of a regular file, never blocking (a job may have put a FIFO there)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def job_groups(homes: list[str]) -> set[int]:
    """Process group ids recorded in ``<home>/.styx/jobs/*/*.pid``."""
    groups = set()
    for home in homes:
        for pid_file in Path(home, ".styx", "jobs").glob("*/*.pid"):
            with contextlib.suppress(OSError, ValueError):
                groups.add(int(_read_small(pid_file).strip()))
    return groups


def processes_of_user(uid: int) -> list[int]:
    """Live processes whose real, effective, saved or file-system uid is ``uid``."""
    found = []
    me = os.getpid()
    for pid in _pids():
        if pid == me:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                if str(uid) in line.split()[1:] and alive(pid):
                    found.append(pid)
                break
    return found


def processes_of(homes: list[str], groups: set[int]) -> list[int]:
    """Live processes that belong to these node homes.

    A process belongs if its environment has ``HOME=<home>`` (everything a node starts
    inherits it), or if it is in a job's process group *and* some member of that group
    has such a HOME (so a recycled group id of a stranger is never hit). Without /proc,
    the job groups' leaders are trusted.
    """
    if not HAVE_PROC:
        return [g for g in groups if alive(g)]
    marks = [b"HOME=" + os.fsencode(h) for h in homes]
    me = os.getpid()
    found: list[int] = []
    in_groups: dict[int, list[int]] = {}
    owned_groups: set[int] = set()
    for pid in _pids():
        if pid == me:
            continue
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            env = []
        ours = any(m in env for m in marks)
        if ours:
            found.append(pid)
        if stat[1] in groups:
            in_groups.setdefault(stat[1], []).append(pid)
            if ours:
                owned_groups.add(stat[1])
    for group in owned_groups:
        found.extend(p for p in in_groups[group] if p not in found)
    return found
