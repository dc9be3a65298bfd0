"""The unprivileged system users that local clusters' jobs run as, when Styx runs as root.

One user per cluster, ``styx-c-<10 hex digits>`` (a hash of the provider's root directory and
the cluster's name: unique on the machine, the same again when a cluster of that name is
launched anew, at most 17 characters). Made with ``useradd --system`` (no home directory, no
password, shell ``/bin/bash``, its own group), or — where ``useradd`` is missing — by adding
the lines to ``/etc/passwd``, ``/etc/group`` (and the shadow files) under the same lock
``useradd`` takes. Removed with ``userdel`` (or the same edit in reverse) when the cluster is
taken down.

A user is only ever adopted or removed if its GECOS comment says Styx made it (``COMMENT``):
a name clash with a user someone else made is an error, never a takeover.

- ``job_user_name(root, cluster)``: the name.
- ``ensure_user(name, cluster)`` -> ``JobUser``: the user, made if missing.
- ``remove_user(name)``: delete it (nothing if it is gone).
- ``lookup(name)`` -> ``JobUser | None``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from styx.files import atomic_write, file_lock

__all__ = ["COMMENT", "JobUser", "UserError", "ensure_user", "job_user_name", "lookup", "remove_user"]

log = logging.getLogger("styx.providers.local.users")

#: The GECOS comment of every user Styx makes (followed by the cluster's name).
COMMENT = "styx job user"
PREFIX = "styx-c-"
SHELL = "/bin/bash"
#: ``useradd``/``userdel`` exit codes worth another try: /etc/passwd locked by someone else
#: (10), and (userdel) the user still has processes that are just going away (8).
_RETRY_CODES = (8, 10)


class UserError(RuntimeError):
    """A job user could not be made or removed (the message says why and what to do)."""


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int


def job_user_name(root: Path, cluster: str) -> str:
    digest = hashlib.sha256(f"{Path(root).resolve()}\0{cluster}".encode()).hexdigest()
    return PREFIX + digest[:10]


def lookup(name: str) -> JobUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return JobUser(name, entry.pw_uid, entry.pw_gid)


def _is_ours(name: str) -> bool:
    try:
        return pwd.getpwnam(name).pw_gecos.startswith(COMMENT)
    except KeyError:
        return False


def ensure_user(name: str, cluster: str, *, lock: Path) -> JobUser:
    """The job user ``name``, made now if it does not exist. ``lock`` (a file) serialises
    Styx's own user changes; the system's password-file lock covers everyone else's."""
    with file_lock(lock):
        found = lookup(name)
        if found is not None:
            if not _is_ours(name):
                raise UserError(f"a user named {name!r} exists that Styx did not make; "
                                "remove it or set STYX_LOCAL_NODES_DIR elsewhere (the name derives from it)")
            return found
        comment = f"{COMMENT} {cluster}"[:200]
        if shutil.which("useradd"):
            _run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                  "--shell", SHELL, "--user-group", "--comment", comment, name], "useradd")
        else:
            add_user_files(name, comment, Path("/etc"))
        made = lookup(name)
        if made is None:
            raise UserError(f"user {name!r} was made but cannot be looked up (nscd? NSS?)")
        log.info("made job user %s (uid %d) for cluster %s", name, made.uid, cluster)
        return made


def remove_user(name: str, *, lock: Path) -> None:
    """Delete the job user ``name`` and its group; nothing if it does not exist. Its
    processes must be gone (the provider kills them first)."""
    with file_lock(lock):
        if lookup(name) is None:
            return
        if not _is_ours(name):
            raise UserError(f"refusing to remove {name!r}: Styx did not make it")
        if shutil.which("userdel"):
            _run(["userdel", name], "userdel", ok=(6,))  # 6: no such user (gone meanwhile)
        else:
            remove_user_files(name, Path("/etc"))
        log.info("removed job user %s", name)


def _run(argv: list[str], what: str, ok: tuple[int, ...] = ()) -> None:
    for attempt in range(20):
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0 or proc.returncode in ok:
            return
        if proc.returncode not in _RETRY_CODES:
            break
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise UserError(f"{what} {argv[-1]} failed (exit {proc.returncode}): {proc.stderr.strip()}")


# ---------------------------------------------------------------------------------------
# Without useradd: the same edit of the account files, under the same lock (lckpwdf's).


@contextlib.contextmanager
def _pwd_lock(etc: Path) -> Iterator[None]:
    """The lock ``lckpwdf(3)`` takes (an fcntl write lock on ``/etc/.pwd.lock``)."""
    fd = os.open(etc / ".pwd.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise UserError(f"cannot lock {etc / 'passwd'}: someone else holds it") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _rewrite(path: Path, lines: list[str]) -> None:
    """Replace ``path`` atomically, keeping its mode and owner (shadow files are 0640 root:shadow)."""
    st = path.stat()
    atomic_write(path, "".join(line + "\n" for line in lines), 0o600, fsync=True)
    with contextlib.suppress(PermissionError):
        os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)  # not through the umask: shadow stays group-readable


def _login_defs(etc: Path, key: str, default: int) -> int:
    for line in _read_lines(etc / "login.defs"):
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return default


def add_user_files(name: str, comment: str, etc: Path) -> tuple[int, int]:
    """Add a locked system user ``name`` with its own group to the account files in ``etc``
    (as ``useradd --system --user-group`` would); returns (uid, gid)."""
    with _pwd_lock(etc):
        passwd, group = _read_lines(etc / "passwd"), _read_lines(etc / "group")
        if any(line.split(":", 1)[0] == name for line in passwd):
            raise UserError(f"user {name!r} already exists")
        used_uids = {int(f[2]) for f in (line.split(":") for line in passwd) if len(f) > 2 and f[2].isdigit()}
        used_gids = {int(f[2]) for f in (line.split(":") for line in group) if len(f) > 2 and f[2].isdigit()}
        low, high = _login_defs(etc, "SYS_UID_MIN", 100), _login_defs(etc, "SYS_UID_MAX", 999)
        # Like useradd --system: the highest free id, the same for the group when it can be.
        free = [i for i in range(high, low - 1, -1) if i not in used_uids]
        if not free:
            raise UserError(f"no free system uid between {low} and {high}")
        uid = next((i for i in free if i not in used_gids), free[0])
        gid = uid if uid not in used_gids else next(
            (i for i in range(high, low - 1, -1) if i not in used_gids), None)
        if gid is None:
            raise UserError(f"no free system gid between {low} and {high}")
        safe_comment = comment.replace(":", " ").replace("\n", " ")
        # Group first: a passwd line whose group does not exist yet would be half a user.
        _rewrite(etc / "group", [*group, f"{name}:x:{gid}:"])
        if (etc / "gshadow").exists():
            _rewrite(etc / "gshadow", [*_read_lines(etc / "gshadow"), f"{name}:!::"])
        if (etc / "shadow").exists():
            days = int(time.time() // 86400)
            _rewrite(etc / "shadow", [*_read_lines(etc / "shadow"), f"{name}:!:{days}::::::"])
        _rewrite(etc / "passwd", [*passwd, f"{name}:x:{uid}:{gid}:{safe_comment}:/nonexistent:{SHELL}"])
        return uid, gid


def remove_user_files(name: str, etc: Path) -> None:
    """Remove ``name`` (and its group of the same name) from the account files in ``etc``."""
    with _pwd_lock(etc):
        for file in ("passwd", "shadow", "group", "gshadow"):
            path = etc / file
            if not path.exists():
                continue
            lines = _read_lines(path)
            kept = [line for line in lines if line.split(":", 1)[0] != name]
            if kept != lines:
                _rewrite(path, kept)
