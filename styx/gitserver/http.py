"""Smart HTTP: ``GET <owner>/<name>.git/info/refs?service=...`` and ``POST .../git-upload-pack``,
``POST .../git-receive-pack``, as a plain ASGI app (served by uvicorn).

Authentication is HTTP basic with a Styx user and one of their API tokens (``Bearer
<token>`` works too), checked on every request: a revoked or expired token, or a disabled
user, is a 401 at once. Anonymous clients may read public repositories; for anything else they
get a 401 so that git asks for credentials. A signed-in user without access to a repository
gets a 404, as if it did not exist. Request bodies are streamed into git and its output
streamed back; gzip request bodies (git sends them for big negotiations) are inflated with a
cap, so a zip bomb stops at the limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

from styx import __version__
from styx.db import User
from styx.gitserver.hooks import PushSession
from styx.gitserver.names import InvalidName, RepoName
from styx.gitserver.service import GitService, clean_git_protocol

log = logging.getLogger("styx.gitserver.http")

_ROUTE = re.compile(r"/(?P<repo>[^/].*)/(?P<action>info/refs|git-upload-pack|git-receive-pack)")
_NO_CACHE = [(b"cache-control", b"no-cache, max-age=0, must-revalidate"), (b"pragma", b"no-cache"),
             (b"expires", b"Fri, 01 Jan 1980 00:00:00 GMT")]


class _Reject(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class GitHttpApp:
    """The ASGI application; one per server, sharing the :class:`GitService`."""

    def __init__(self, service: GitService) -> None:
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except _Reject as err:
            await _respond(send, err.status, err.message, err.headers)

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        method: str = scope["method"]
        if path in ("/", "/healthz"):
            await _respond(send, 200, f"Styx git server {__version__}")
            return
        match = _ROUTE.fullmatch(path)
        if match is None:
            raise _Reject(404, "not found (this server speaks smart HTTP only)")
        # A repository path never needs %-escapes: an encoded '/', '.' or NUL is a trick.
        if b"%" in raw_path.split(b"?", 1)[0]:
            raise _Reject(400, "invalid repository path")
        try:
            name = RepoName.parse(match["repo"])
        except InvalidName as err:
            raise _Reject(400, str(err)) from None
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        action = match["action"]
        if action == "info/refs":
            if method not in ("GET", "HEAD"):
                raise _Reject(405, "use GET", [(b"allow", b"GET")])
            service = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("service", [""])[0]
            if service not in ("git-upload-pack", "git-receive-pack"):
                raise _Reject(403, "dumb HTTP is not supported; use a git client that speaks smart HTTP")
        else:
            if method != "POST":
                raise _Reject(405, "use POST", [(b"allow", b"POST")])
            service = action
            expected = f"application/x-{service}-request".encode()
            if headers.get(b"content-type", b"").split(b";")[0].strip() != expected:
                raise _Reject(415, f"expected Content-Type {expected.decode()}")
        user = await self._authenticate(headers.get(b"authorization"))
        decision = await self.service.decide(user, name, service)
        if not decision.allowed:
            extra = [(b"www-authenticate", b'Basic realm="Styx git"')] if decision.status == 401 else []
            raise _Reject(decision.status, decision.message, extra)
        protocol = clean_git_protocol(headers.get(b"git-protocol"))
        kind = "advertisement" if action == "info/refs" else "result"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", f"application/x-{service}-{kind}".encode()), *_NO_CACHE]})

        # uvicorn drops writes to a client that went away without a word; notice it, so that
        # git stops packing for nobody (the request body must have been read first).
        gone = asyncio.Event()
        watcher: asyncio.Task | None = None

        def body_read() -> None:
            nonlocal watcher

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            watcher = asyncio.create_task(watch())

        async def write(data: bytes) -> None:
            if gone.is_set():
                raise ConnectionResetError("the client went away")
            await send({"type": "http.response.body", "body": data, "more_body": True})

        session = None
        if service == "git-receive-pack" and action != "info/refs":
            assert user is not None and decision.repo_id is not None
            session = PushSession(repo=name, repo_id=decision.repo_id, user=user, transport="http")
        limit = (self.service.config.max_request_bytes if service == "git-upload-pack"
                 else self.service.config.max_push_bytes + (1 << 20))
        body = None
        if action == "info/refs":
            body_read()
        else:
            body = _body(receive, headers.get(b"content-encoding"), limit, body_read)
        try:
            await self.service.run(service, name, stateless=True, advertise=action == "info/refs",
                                   protocol=protocol, session=session, stdin=body, stdout=write,
                                   http_header=action == "info/refs")
        except ConnectionResetError:
            log.info("%s %s: the client went away", service, name)
        finally:
            if watcher is not None:
                watcher.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _authenticate(self, header: bytes | None) -> User | None:
        """The user of a basic (user + API token) or bearer header; None without a header."""
        if not header:
            return None
        challenge = [(b"www-authenticate", b'Basic realm="Styx git"')]
        scheme, _, value = header.decode("latin-1").partition(" ")
        user_name, token = "", ""
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _Reject(401, "malformed basic credentials", challenge) from None
            user_name, _, token = decoded.partition(":")
        elif scheme.lower() == "bearer":
            token = value.strip()
        else:
            raise _Reject(401, "use basic authentication: your Styx user name and an API token", challenge)
        if not token and not user_name:
            return None
        check = await self.service.check_token(user_name, token)
        if check.user is None:
            raise _Reject(401, check.problem or "invalid user name or API token", challenge)
        return check.user


async def _body(receive: Any, encoding: bytes | None, limit: int,
                on_end: Callable[[], None]) -> AsyncIterator[bytes]:
    """The request body as it arrives, inflated if gzip, and cut off past ``limit`` bytes;
    ``on_end`` is called once it has all been read."""
    gunzip = None
    if encoding and encoding.strip().lower() in (b"gzip", b"x-gzip"):
        gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if gunzip is not None and chunk:
            chunk = gunzip.decompress(chunk, limit + 1 - total)
            if gunzip.unconsumed_tail:
                raise _BodyTooLarge()
        total += len(chunk)
        if total > limit:
            raise _BodyTooLarge()
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            on_end()
            if gunzip is not None:
                rest = gunzip.flush()
                if rest:
                    yield rest
            return


class _BodyTooLarge(Exception):
    pass


async def _respond(send: Any, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text.rstrip("\n") + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        *_NO_CACHE, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
