"""``pre-receive`` and ``post-receive`` for pushes through the ``git`` binary.

``git receive-pack`` runs hook scripts and sends what they print to the pusher on the
sideband (``remote: ...``). Styx's hook scripts are tiny stdlib-only Python programs (in
``STYX_HOME/gitserver/hooks``, given to git with ``-c core.hooksPath``, so a repository's
own ``hooks/`` never runs) that forward their input to the git server process over a
loopback socket, authenticated with a per-push random token, and print its answer.
They are bash (``/dev/tcp``), with a stdlib-only Python twin as the fallback. The
decisions, ref checks and workflow starts, are thus made in the server, with the pusher's
identity that the transport established, never in a script that could be fooled.

``post-receive`` is fed only the refs whose update succeeded (git skips failed commands),
each with its new sha: the commit that runs is pinned there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from styx.files import atomic_write
from styx.gitserver.names import RepoName

log = logging.getLogger("styx.gitserver.hooks")

HOOK_NAMES = ("pre-receive", "post-receive")
#: Ref updates one push may carry (git sends one line per ref).
_MAX_UPDATES = 100_000

# The protocol, one line each way at a time (so that bash can speak it):
#   hook -> server:  "styx-hook <hook> <token>", then git's "<old> <new> <ref>" lines, then "end"
#   server -> hook:  "out <text>" (printed, so git relays it as "remote: <text>"), then "exit <n>"
# Bash's /dev/tcp starts in ~3 ms where Python needs ~40; the Python twin is the fallback for
# a bash built without network redirections.
_BASH_HOOK = """#!/bin/bash
# Written by the Styx git server: forwards this hook to the server process. Do not edit.
hook=${{0##*/}}
if [ -z "$STYX_HOOK_ADDR" ] || [ -z "$STYX_HOOK_TOKEN" ]; then
  echo "styx: pushes are accepted only through the Styx git server" >&2
  exit 1
fi
if ! {{ exec 3<>"/dev/tcp/${{STYX_HOOK_ADDR%:*}}/${{STYX_HOOK_ADDR##*:}}"; }} 2>/dev/null; then
  exec {python} -IS {fallback} "$hook"
fi
{{ printf 'styx-hook %s %s\\n' "$hook" "$STYX_HOOK_TOKEN"; cat; printf 'end\\n'; }} >&3
while IFS= read -r line <&3; do
  case $line in
    "exit "*) exit "${{line#exit }}" ;;
    "out "*) printf '%s\\n' "${{line#out }}" ;;
  esac
done
echo "styx: the git server closed the hook connection" >&2
exit 1
"""

_PYTHON_HOOK = """# Written by the Styx git server: the hook forwarder for a bash without /dev/tcp.
import os, socket, sys


def main():
    hook = sys.argv[1]
    addr, token = os.environ.get("STYX_HOOK_ADDR"), os.environ.get("STYX_HOOK_TOKEN")
    if not addr or not token:
        print("styx: pushes are accepted only through the Styx git server", file=sys.stderr)
        return 1
    host, _, port = addr.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
    except OSError as err:
        print("styx: cannot reach the git server's hook endpoint: %s" % err, file=sys.stderr)
        return 1
    with sock:
        sock.settimeout(None)
        sock.sendall(("styx-hook %s %s\\n" % (hook, token)).encode() + sys.stdin.buffer.read() + b"end\\n")
        for raw in sock.makefile("rb"):
            line = raw.decode(errors="replace").rstrip("\\n")
            if line.startswith("out "):
                sys.stdout.write(line[4:] + "\\n")
                sys.stdout.flush()
            elif line.startswith("exit "):
                return int(line[5:])
    print("styx: the git server closed the hook connection", file=sys.stderr)
    return 1


sys.exit(main())
"""


def install_hooks(directory: Path, use_bash: bool | None = None) -> Path:
    """Write (or refresh) the hook scripts; returns the directory for ``core.hooksPath``.

    The hooks are bash scripts when there is a bash (``use_bash=None``), else the Python
    forwarder itself.
    """
    import shlex
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    fallback = directory / "styx-hook.py"
    files = {fallback.name: _PYTHON_HOOK}
    bash = shutil.which("bash") if use_bash is not False else None
    if bash:
        script = f"#!{bash}\n" + _BASH_HOOK.split("\n", 1)[1].format(
            python=shlex.quote(sys.executable), fallback=shlex.quote(str(fallback)))
    else:
        script = f"#!{sys.executable} -IS\n" + _PYTHON_HOOK.replace(
            "    hook = sys.argv[1]", "    hook = os.path.basename(sys.argv[0])")
    files.update({name: script for name in HOOK_NAMES})
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text, mode=stat.S_IRWXU)
    return directory


Update = tuple[str, str, str]  # (old sha, new sha, full ref)
Emit = Callable[[str], Awaitable[None]]


@dataclass
class PushSession:
    """Who is pushing where: fixed by the transport before receive-pack starts."""

    repo: RepoName
    repo_id: int
    user: Any  # styx.db.User
    transport: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: The ``push_intents`` rows pre-receive wrote, for post-receive to drop once runs started.
    intents: list[int] = field(default_factory=list)


#: ``pre(session, updates) -> list of refusals`` (empty: accept).
PreReceive = Callable[[PushSession, list[Update]], Awaitable[list[str]]]
#: ``post(session, updates, emit)``: start runs, print through ``emit``.
PostReceive = Callable[[PushSession, list[Update], Emit], Awaitable[None]]


class HookServer:
    """The loopback endpoint the hook scripts talk to; one per git server process."""

    def __init__(self, pre: PreReceive, post: PostReceive, host: str = "127.0.0.1") -> None:
        self._pre = pre
        self._post = post
        self._host = host
        self._sessions: dict[str, PushSession] = {}
        self._server: asyncio.AbstractServer | None = None
        self.address = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, 0, limit=1 << 22)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{self._host}:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def open_session(self, session: PushSession) -> dict[str, str]:
        """Register a push; returns the environment its receive-pack needs."""
        self._sessions[session.token] = session
        return {"STYX_HOOK_ADDR": self.address, "STYX_HOOK_TOKEN": session.token}

    def close_session(self, session: PushSession) -> None:
        self._sessions.pop(session.token, None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(line: str) -> None:
            writer.write(line.encode() + b"\n")
            await writer.drain()

        async def emit(text: str) -> None:
            for line in text.splitlines() or [""]:
                await send(f"out {line}")

        try:
            head = (await asyncio.wait_for(reader.readline(), 30)).decode(errors="replace").split()
            lines = []
            while True:  # read the whole request first: a hook cut off mid-write dies of SIGPIPE
                line = (await asyncio.wait_for(reader.readline(), 30)).decode(errors="replace").rstrip("\n")
                if line == "end":
                    break
                if not line and reader.at_eof():
                    raise ValueError("hook input ended early")
                if line:
                    lines.append(line.split(" "))
                    if len(lines) > _MAX_UPDATES:
                        raise ValueError(f"more than {_MAX_UPDATES} ref updates in one push")
            session = self._sessions.get(head[2]) if len(head) == 3 and head[0] == "styx-hook" else None
            hook = head[1] if len(head) == 3 else ""
            if session is None or hook not in HOOK_NAMES:
                await send("out styx: hook refused (unknown push)")
                await send("exit 1")
                return
            updates = _parse_updates(lines)
            if updates is None:
                await send("out styx: malformed hook input")
                await send("exit 1")
                return
            if hook == "pre-receive":
                refusals = await self._pre(session, updates)
                for text in refusals:
                    await emit(f"styx: {text}")
                await send(f"exit {1 if refusals else 0}")
            else:
                try:
                    await self._post(session, updates, emit)
                except Exception as err:  # a push is accepted whatever happens after it
                    log.exception("post-receive failed for %s", session.repo)
                    await emit(f"styx: could not start the push's runs: {err}")
                await send("exit 0")
        except (ConnectionError, asyncio.TimeoutError, ValueError, asyncio.LimitOverrunError) as err:
            log.warning("hook connection failed: %s", err)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


def _parse_updates(raw: Any) -> list[Update] | None:
    from styx.gitserver.names import is_sha

    if not isinstance(raw, list):
        return None
    updates = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 3 or not all(isinstance(x, str) for x in item)
                or not is_sha(item[0]) or not is_sha(item[1])):
            return None
        updates.append((item[0], item[1], item[2]))
    return updates
