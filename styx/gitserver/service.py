"""What both transports share: identity, access, and running one git service.

The pack transport is the ``git`` binary (``upload-pack``/``receive-pack``, stateless over
HTTP, plain over SSH), as Gitea and soft-serve do; dulwich's handlers are the fallback when
there is no ``git``. Either way the transport hands this module a validated
:class:`RepoName`, the caller (or None), and byte streams; this module decides access with
:func:`~styx.gitserver.access.resolve_access` and wires the push hooks.

Pushes lose no run: pre-receive journals the accepted ref updates (``push_intents``) before
git moves the refs, post-receive drops them once the runs have started, and a sweeper
(every ``STYX_GIT_PUSH_SWEEP_SECONDS``, 30 s) starts the runs of intents left behind by a
server killed in between, or by Temporal being down at push time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from styx.config import Settings
from styx.crash_seam import crash_here_if_asked
from styx.db import Database, TokenCheck, User
from styx.gitserver.access import AccessLevel, resolve_access
from styx.gitserver.config import GitServerConfig
from styx.gitserver.hooks import HookServer, PushSession, Update, install_hooks
from styx.gitserver.names import ZERO_SHA, InvalidRef, RepoName, check_ref
from styx.gitserver.storage import RepoStore

log = logging.getLogger("styx.gitserver")

#: git services a client may ask for, and the access each needs.
SERVICES: dict[str, AccessLevel] = {
    "git-upload-pack": AccessLevel.READ,
    "git-upload-archive": AccessLevel.READ,
    "git-receive-pack": AccessLevel.WRITE,
}
_PROTOCOL_PART = re.compile(r"version=[0-2]")
_CHUNK = 1 << 16

Write = Callable[[bytes], Awaitable[None]]


def clean_git_protocol(value: str | bytes | None) -> str | None:
    """The ``GIT_PROTOCOL`` a client asked for, reduced to what git may see (``version=N``)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not value or len(value) > 256:
        return None
    parts = [p for p in value.split(":") if _PROTOCOL_PART.fullmatch(p)]
    return ":".join(parts[:1]) or None


@dataclass
class Decision:
    """The outcome of an access check, with the message a refused client sees."""

    allowed: bool
    repo_id: int | None = None
    level: AccessLevel = AccessLevel.NONE
    #: 401 (log in), 403 (logged in, not enough), 404 (no such repo, or not visible).
    status: int = 200
    message: str = ""


def _pusher(session: PushSession) -> str:
    return session.user.name if session.user is not None else ""


class GitService:
    def __init__(self, settings: Settings, config: GitServerConfig, db: Database,
                 store: RepoStore | None = None) -> None:
        from styx.gitserver.pushes import PushStarter

        self.settings = settings
        self.config = config
        self.db = db
        self.store = store or RepoStore(config.repo_root, git=config.git, max_push_bytes=config.max_push_bytes,
                                        git_home=config.state_dir / "home")
        self.hooks_dir = install_hooks(config.state_dir / "hooks")
        self.pushes = PushStarter(settings, config, self.store, db)
        self.hook_server = HookServer(self.pre_receive, self.post_receive_async, host="127.0.0.1")
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        await self.hook_server.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.hook_server.close()
        await self.pushes.close()

    # ------------------------------------------------------------------ identity and access

    async def user_for_token(self, user: str, token: str) -> User | None:
        return (await self.check_token(user, token)).user

    async def check_token(self, user: str, token: str) -> TokenCheck:
        """The user of ``token`` (who must be ``user`` when one is named), or why not: a revoked
        or expired token and a disabled user are refused on every request."""
        check = await asyncio.to_thread(self.db.users.check_token, token)
        if check.user is not None and user and user != check.user.name:
            return TokenCheck(None, "invalid user name or API token")
        return check

    async def decide(self, user: User | None, name: RepoName, service: str) -> Decision:
        needed = SERVICES[service]
        repo, level = await asyncio.to_thread(resolve_access, self.db, user, name)
        who = user.name if user else "anonymous"
        if repo is not None and level >= needed:
            if not await asyncio.to_thread(self.store.exists, name):
                log.error("repository %s is in the database but missing on disk", name)
                return Decision(False, status=404, message=f"repository {name} is missing on the server")
            return Decision(True, repo_id=repo.id, level=level)
        if user is None:
            return Decision(False, status=401, message=f"authentication required for {name}")
        if repo is not None and level >= AccessLevel.READ:
            return Decision(False, repo_id=repo.id, level=level, status=403,
                            message=f"{who} has {level.label} access to {name}; pushing needs write")
        return Decision(False, status=404, message=f"repository {name} not found")

    # ------------------------------------------------------------------ hooks

    async def pre_receive(self, session: PushSession, updates: list[Update]) -> list[str]:
        """Refuse the whole push if any ref is not acceptable; returns the reasons."""
        repo = await asyncio.to_thread(self.db.repos.get_by_id, session.repo_id)
        refusals = []
        for old, new, ref in updates:
            try:
                check_ref(ref)
            except InvalidRef as err:
                refusals.append(str(err))
                continue
            if repo is not None and new == ZERO_SHA and ref == f"refs/heads/{repo.default_branch}":
                refusals.append(f"refusing to delete {repo.default_branch}, the default branch of {session.repo}; "
                                "make another branch the default first")
                continue
            current = await asyncio.to_thread(self.store.ref_sha, session.repo, ref) or ZERO_SHA
            if current != old:
                refusals.append(f"{ref} moved since you fetched (it is at {current[:10]} now): "
                                "non-fast-forward; fetch, merge or rebase, and push again")
        if not refusals:
            # Journalled before git moves the refs: a server killed before post-receive loses no run.
            runnable = [u for u in updates if u[1] != ZERO_SHA and u[2].startswith(("refs/heads/", "refs/tags/"))]
            session.intents = await asyncio.to_thread(self.db.repos.add_push_intents, session.repo_id,
                                                      _pusher(session), runnable)
        return refusals

    async def post_receive_async(self, session: PushSession, updates: list[Update],
                                 emit: Callable[[str], Awaitable[None]]) -> None:
        """After the refs moved (only the updates that succeeded): start the push's runs."""
        crash_here_if_asked("git_post_receive")
        await self._adopt_default_branch(session, updates, emit)
        if await self.pushes.on_push(session.repo, session.repo_id, _pusher(session), updates, emit):
            await asyncio.to_thread(self.db.repos.drop_push_intents, session.intents)

    async def _sweep_forever(self) -> None:
        every = self.config.intent_sweep_seconds
        while True:
            try:
                await self.sweep_intents(timedelta(seconds=every))
            except Exception:  # the database or a repository unreadable for now: next time
                log.exception("sweeping push intents failed; trying again in %.0f s", every)
            await asyncio.sleep(every)

    async def sweep_intents(self, min_age: timedelta) -> int:
        """Start the runs of pushes older than ``min_age`` whose post-receive never did (the server
        died between the ref update and post-receive, or Temporal was down); returns how many
        intents were settled. An intent whose ref never took its commit (the push failed) is
        dropped; one whose run still cannot start is kept for the next sweep."""
        cutoff = datetime.now(timezone.utc) - min_age
        settled = 0
        for intent in await asyncio.to_thread(self.db.repos.push_intents_before, cutoff):
            repo = await asyncio.to_thread(self.db.repos.get_by_id, intent.repo_id)
            name = RepoName(repo.owner, repo.name) if repo is not None else None
            if name is None or not await asyncio.to_thread(self.store.ref_contains, name, intent.ref, intent.new):
                await asyncio.to_thread(self.db.repos.drop_push_intents, [intent.id])
                settled += 1
                continue

            async def emit(line: str, name: RepoName = name) -> None:
                log.info("%s (a push whose run had not started): %s", name, line)

            update = (intent.old, intent.new, intent.ref)
            if await self.pushes.on_push(name, intent.repo_id, intent.pusher, [update], emit):
                await asyncio.to_thread(self.db.repos.drop_push_intents, [intent.id])
                settled += 1
        return settled

    async def _adopt_default_branch(self, session: PushSession, updates: list[Update],
                                    emit: Callable[[str], Awaitable[None]]) -> None:
        """A repository whose default branch does not exist takes the first branch pushed."""
        repo = await asyncio.to_thread(self.db.repos.get_by_id, session.repo_id)
        if repo is None:
            return
        branches = await asyncio.to_thread(self.store.branches, session.repo)
        if repo.default_branch in branches:
            return
        created = [ref[len("refs/heads/"):] for _old, new, ref in updates
                   if new != ZERO_SHA and ref.startswith("refs/heads/") and ref[len("refs/heads/"):] in branches]
        if not created:
            return
        branch = created[0]
        await asyncio.to_thread(self.store.set_head, session.repo, branch)
        await asyncio.to_thread(self.db.repos.update, session.repo_id, default_branch=branch)
        await emit(f"styx: default branch of {session.repo} set to {branch}")

    # ------------------------------------------------------------------ running a service

    async def run(self, service: str, name: RepoName, *, stateless: bool, advertise: bool = False,
                  protocol: str | None = None, session: PushSession | None = None,
                  stdin: AsyncIterator[bytes] | None = None, stdout: Write, stderr: Write | None = None,
                  http_header: bool = False) -> int:
        """Run ``service`` on the repository; returns its exit code.

        ``http_header``: prefix the advertisement with ``# service=...`` as smart HTTP wants
        (left out for protocol v2, like git http-backend does).
        """
        assert service in SERVICES
        if self.config.git is None:
            protocol = None  # dulwich speaks v0/v1 only; git clients fall back to it
        if http_header and not (protocol and protocol.startswith("version=2") and service == "git-upload-pack"):
            from dulwich.protocol import pkt_line

            await stdout(pkt_line(f"# service={service}\n".encode()) + pkt_line(None))
        env: dict[str, str] = {}
        if protocol:
            env["GIT_PROTOCOL"] = protocol
        if session is not None:
            env.update(self.hook_server.open_session(session))
        try:
            if self.config.git is not None:
                return await self._run_git(service, name, stateless, advertise, env, stdin, stdout, stderr)
            return await self._run_dulwich(service, name, stateless, advertise, session, stdin, stdout, stderr)
        finally:
            if session is not None:
                self.hook_server.close_session(session)

    async def _run_git(self, service: str, name: RepoName, stateless: bool, advertise: bool,
                       env: dict[str, str], stdin: AsyncIterator[bytes] | None, stdout: Write,
                       stderr: Write | None) -> int:
        verb = service.removeprefix("git-")
        args = [verb]
        if stateless:
            args.append("--stateless-rpc")
        if advertise:
            args.append("--advertise-refs")
        path = str(self.store.path(name))  # absolute: never read as an option
        argv = self.store.git_argv(*args, path, hooks_dir=self.hooks_dir if verb == "receive-pack" else None)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.store.git_env(env), limit=1 << 20)
        errors = bytearray()

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                if stdin is not None:
                    async for chunk in stdin:
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # git stopped reading (it refused the input); its exit code says why
            finally:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                    proc.stdin.close()

        async def pump_err() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(_CHUNK):
                if stderr is not None:
                    await stderr(chunk)
                if len(errors) < 8192:
                    errors.extend(chunk[: 8192 - len(errors)])

        feeder = asyncio.create_task(feed())
        err_task = asyncio.create_task(pump_err())
        try:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(1 << 18):
                await stdout(chunk)
            await err_task
            rc = await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            for task in (feeder, err_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if rc != 0:
            log.info("git %s on %s exited %s: %s", verb, name, rc, errors.decode(errors="replace").strip())
        return rc

    # ------------------------------------------------------------------ dulwich fallback

    async def _run_dulwich(self, service: str, name: RepoName, stateless: bool, advertise: bool,
                           session: PushSession | None, stdin: AsyncIterator[bytes] | None,
                           stdout: Write, stderr: Write | None) -> int:
        """The same service through dulwich's handlers, in a thread (they block)."""
        from dulwich.errors import HookError
        from dulwich.protocol import Protocol
        from dulwich.repo import Repo as DulwichRepo
        from dulwich.server import Backend, ReceivePackHandler, UploadArchiveHandler, UploadPackHandler

        loop = asyncio.get_running_loop()
        inbox: "asyncio.Queue[bytes]" = asyncio.Queue(maxsize=64)
        pending: list[asyncio.Task] = []
        buffer = bytearray()
        eof = threading.Event()
        path = str(self.store.path(name))
        service_self = self

        def read(n: int) -> bytes:
            while len(buffer) < n and not eof.is_set():
                chunk = asyncio.run_coroutine_threadsafe(inbox.get(), loop).result()
                if not chunk:
                    eof.set()
                    break
                buffer.extend(chunk)
            data = bytes(buffer[:n])
            del buffer[:n]
            return data

        def recv(n: int) -> bytes:
            if not buffer and not eof.is_set():
                chunk = asyncio.run_coroutine_threadsafe(inbox.get(), loop).result()
                if not chunk:
                    eof.set()
                buffer.extend(chunk)
            data = bytes(buffer[:n])
            del buffer[:n]
            return data

        def write(data: bytes) -> None:
            asyncio.run_coroutine_threadsafe(stdout(bytes(data)), loop).result()

        class _PreHook:
            def execute(self, refs: list) -> tuple[bytes, bytes]:
                assert session is not None
                updates = [(o.decode(), n.decode(), r.decode()) for o, n, r in refs]
                refusals = asyncio.run_coroutine_threadsafe(service_self.pre_receive(session, updates), loop).result()
                if refusals:
                    raise HookError("\n".join(f"styx: {r}" for r in refusals))
                return b"", b""

        class _PostHook:
            def execute(self, refs: list) -> bytes:
                assert session is not None
                updates = [(o.decode(), n.decode(), r.decode()) for o, n, r in refs]
                lines: list[str] = []

                async def emit(text: str) -> None:
                    lines.append(text)

                asyncio.run_coroutine_threadsafe(
                    service_self.post_receive_async(session, updates, emit), loop).result()
                return "".join(f"{line}\n" for line in lines).encode()

        class _Backend(Backend):
            def open_repository(self, _path: str):  # type: ignore[no-untyped-def]
                repo = DulwichRepo(path)
                repo.hooks = {"pre-receive": _PreHook(), "post-receive": _PostHook()}  # type: ignore[attr-defined]
                return repo

        handler_cls = {"git-upload-pack": UploadPackHandler, "git-receive-pack": ReceivePackHandler,
                       "git-upload-archive": UploadArchiveHandler}[service]

        def serve() -> int:
            proto = Protocol(read, write)
            proto.recv = recv  # type: ignore[attr-defined]
            if handler_cls is UploadArchiveHandler:
                handler = handler_cls(_Backend(), [path], proto, stateless_rpc=stateless)
            else:
                handler = handler_cls(_Backend(), [path], proto, stateless_rpc=stateless,
                                      advertise_refs=advertise)
            try:
                handler.handle()
                return 0
            finally:
                handler.repo.close()

        async def feed() -> None:
            try:
                if stdin is not None:
                    async for chunk in stdin:
                        if chunk:
                            await inbox.put(chunk)
            finally:
                # Never leave the handler's thread waiting for input that will not come.
                try:
                    inbox.put_nowait(b"")
                except asyncio.QueueFull:
                    pending.append(loop.create_task(inbox.put(b"")))

        feeder = asyncio.create_task(feed())
        try:
            return await asyncio.to_thread(serve)
        except Exception as err:  # a protocol error from the client: tell it, like git does
            log.info("dulwich %s on %s failed: %s", service, name, err)
            if stderr is not None:
                await stderr(f"error: {err}\n".encode())
            return 128
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
