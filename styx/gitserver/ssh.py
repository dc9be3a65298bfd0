"""Git over SSH (asyncssh): ``git-upload-pack``, ``git-receive-pack``, ``git-upload-archive``.

Public-key authentication only. Identity is bound **after** the signature is verified:
asyncssh asks :meth:`validate_public_key` both for unsigned probes ("would you accept this
key?") and for the signed attempt, so a server that remembers the user of the last key it
was asked about can be fooled into thinking the caller is whoever's public key was offered
first (soft-serve GHSA-pchf-49fh-w34r). Here the probe only says yes or no; the key that
counts is the one whose signature asyncssh verified, captured at that moment, and looked
up once the session starts. A key no user registered is anonymous (read access to public
repositories), unless ``STYX_GIT_SSH_ANONYMOUS=0``. The key of a disabled user is refused
at authentication, and again when the session starts (it may have been disabled meanwhile).

The command is split with :func:`shlex.split`, never given to a shell; only the three git
verbs are allowed, with exactly one repository argument. Of the client's environment only a
validated ``GIT_PROTOCOL`` reaches git.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.public_key import decode_ssh_public_key

from styx.files import atomic_write, create_once
from styx.gitserver.hooks import PushSession
from styx.gitserver.names import InvalidName, RepoName
from styx.gitserver.service import SERVICES, GitService, clean_git_protocol

log = logging.getLogger("styx.gitserver.ssh")

_VERIFIED_KEY = "styx_verified_key"


def key_fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def parse_public_key(text: str) -> tuple[asyncssh.SSHKey, str, str]:
    """``(key, fingerprint, normalised "type base64")`` of an OpenSSH public key line.

    Raises ValueError with a readable message for anything else (a private key included).
    """
    text = (text or "").strip()
    if not text or "PRIVATE KEY" in text:
        raise ValueError("expected an SSH public key (the contents of ~/.ssh/id_ed25519.pub), "
                         "not a private key")
    try:
        key = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as err:
        raise ValueError(f"not an SSH public key: {err}") from None
    normalised = key.export_public_key("openssh").decode().split()
    return key, key_fingerprint(key), " ".join(normalised[:2])


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key at ``path``, made (0600, plus ``path.pub``) the first time."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    made = asyncssh.generate_private_key("ssh-ed25519")
    key = asyncssh.import_private_key(create_once(path, made.export_private_key()))
    atomic_write(path.with_name(path.name + ".pub"), key.export_public_key(), mode=0o644)
    return key


class _GitSSHServer(asyncssh.SSHServer):
    def __init__(self, service: GitService) -> None:
        self.service = service
        self.conn: asyncssh.SSHServerConnection | None = None
        self.verified_key: bytes | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        inner = conn.validate_public_key

        async def validate_and_capture(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            ok = await inner(username, key_data, msg, signature)
            if ok and msg:  # a signed request whose signature asyncssh has just verified
                self.verified_key = key_data
            return ok

        # asyncssh has no public hook for "this key's signature verified"; wrapping the
        # connection's own check is the narrowest place that knows it.
        conn.validate_public_key = validate_and_capture  # type: ignore[method-assign]

    def begin_auth(self, username: str) -> bool:
        return True  # every user must authenticate

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Answers probes and signed attempts alike, so it must not decide who the caller is.
        owner = await asyncio.to_thread(self.service.db.users.by_ssh_key, key_fingerprint(key))
        if owner is not None:
            return not owner.disabled  # never anonymous: a disabled user's key is refused
        return self.service.config.anonymous_ssh

    def auth_completed(self) -> None:
        assert self.conn is not None
        if self.verified_key is None:  # cannot happen with public-key auth only; refuse anyway
            self.conn.close()
            return
        self.conn.set_extra_info(**{_VERIFIED_KEY: self.verified_key})


class GitSSHServer:
    def __init__(self, service: GitService, host_key: asyncssh.SSHKey) -> None:
        self.service = service
        self.host_key = host_key
        self._server: asyncssh.SSHAcceptor | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        extra: dict[str, Any] = {}
        if self.service.config.ssh_ciphers:
            extra["encryption_algs"] = list(self.service.config.ssh_ciphers)
        self._server = await asyncssh.create_server(
            lambda: _GitSSHServer(self.service), host, port, server_host_keys=[self.host_key], **extra,
            process_factory=self._handle, encoding=None, allow_scp=False, agent_forwarding=False,
            x11_forwarding=False, line_editor=False, sftp_factory=None, keepalive_interval=30,
            login_timeout=60)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _identity(self, process: asyncssh.SSHServerProcess) -> Any:
        key_data = process.get_extra_info(_VERIFIED_KEY)
        if not key_data:
            return None
        key = decode_ssh_public_key(key_data)
        return await asyncio.to_thread(self.service.db.users.by_ssh_key, key_fingerprint(key))

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        rc = 1
        try:
            rc = await self._serve(process)
        except (BrokenPipeError, ConnectionError, asyncssh.Error) as err:
            log.info("ssh session ended early: %s", err)
        except Exception:  # an escaping error would drop the connection's other channels
            log.exception("ssh session failed")
            with contextlib.suppress(Exception):
                process.stderr.write(b"styx: internal error\n")
        with contextlib.suppress(Exception):
            await process.stdout.drain()
            process.exit(rc)

    async def _serve(self, process: asyncssh.SSHServerProcess) -> int:
        user = await self._identity(process)
        command = process.command

        def refuse(message: str, code: int = 1) -> int:
            process.stderr.write(f"styx: {message}\n".encode())
            return code

        if user is not None and user.disabled:
            return refuse(f"user {user.name!r} is disabled; an admin can enable it again")

        if command is None:
            who = user.name if user else "anonymous"
            process.stderr.write(f"Hi {who}! Styx serves git here; there is no shell.\n".encode())
            return 1
        if isinstance(command, bytes):
            command = command.decode(errors="replace")
        try:
            argv = shlex.split(command)
        except ValueError:
            return refuse("could not parse the command")
        if len(argv) == 3 and argv[0] == "git" and f"git-{argv[1]}" in SERVICES:
            argv = [f"git-{argv[1]}", argv[2]]
        if not argv or argv[0] not in SERVICES:
            return refuse(f"command not allowed: only {', '.join(SERVICES)}")
        if len(argv) != 2:
            return refuse(f"usage: {argv[0]} '<owner>/<repo>.git'")
        service = argv[0]
        try:
            name = RepoName.parse(argv[1])
        except InvalidName as err:
            return refuse(str(err))
        decision = await self.service.decide(user, name, service)
        if not decision.allowed:
            if decision.status == 401:
                return refuse(f"repository {name} not found, or your key gives no access to it "
                              "(register it with `styx key add`)")
            return refuse(decision.message)
        env = process.env or {}
        protocol = clean_git_protocol(env.get("GIT_PROTOCOL") or env.get(b"GIT_PROTOCOL"))  # type: ignore[call-overload]
        session = None
        if service == "git-receive-pack":
            assert decision.repo_id is not None
            session = PushSession(repo=name, repo_id=decision.repo_id, user=user, transport="ssh")

        async def stdin() -> AsyncIterator[bytes]:
            while True:
                try:
                    data = await process.stdin.read(1 << 16)
                except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
                    continue
                except (asyncssh.Error, OSError):
                    return
                if not data:
                    return
                yield data

        async def stdout(data: bytes) -> None:
            process.stdout.write(data)
            await process.stdout.drain()

        async def stderr(data: bytes) -> None:
            process.stderr.write(data)
            await process.stderr.drain()

        return await self.service.run(service, name, stateless=False, protocol=protocol, session=session,
                                      stdin=stdin(), stdout=stdout, stderr=stderr)
