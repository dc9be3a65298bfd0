"""Request bodies over a limit are refused with 413 before anything reads them whole.

Pure ASGI middleware: it checks ``Content-Length`` up front and counts the bytes of bodies
sent without one (chunked), so a 50 MB body costs neither memory nor a trip to Temporal.
``STYX_MAX_REQUEST_BYTES`` sets the limit (``Settings.max_request_bytes``, 4 MB by default:
a task file of the largest size ``styx.task`` accepts, JSON-escaped, fits). A route that
takes larger bodies says so with a ``RouteLimit``: ``PUT /api/v1/uploads/...`` takes up to
``STYX_MAX_UPLOAD_BYTES`` (and no more).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class RouteLimit:
    """Bodies of ``method`` requests under ``path_prefix`` may be up to ``max_bytes``
    (the setting ``setting`` says so)."""

    method: str
    path_prefix: str
    max_bytes: int
    setting: str


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, routes: Sequence[RouteLimit] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = tuple(routes)

    def _limit_for(self, scope: Scope) -> tuple[int, str]:
        path = scope.get("path") or ""
        for route in self.routes:
            if scope.get("method") == route.method and path.startswith(route.path_prefix):
                return route.max_bytes, route.setting
        return self.max_bytes, "STYX_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self._limit_for(scope)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            await self._refuse(send, max_bytes, setting)
            return
        seen = 0
        refused = started = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    # Answer now and tell the app the client went away: it stops reading.
                    refused = True
                    if not started:
                        await self._refuse(send, max_bytes, setting)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Send, max_bytes: int, setting: str) -> None:
        body = json.dumps({"detail": f"request body larger than {max_bytes} bytes ({setting})"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
