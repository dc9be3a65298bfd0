"""One service's proxy: an ASGI app (raw, so that bodies stream both ways untouched).

A request is read whole (at most ``max_body_bytes``: it may have to be sent again), counted,
and sent to the replica the policy picks. A replica that refuses the connection (or drops it
before answering a request that is safe to send again) is set aside for ``BAD_SECONDS`` and
the next one is tried, until every ready replica was. With no ready replica the request waits
up to ``wait_seconds`` (a service scaled to zero, or all its replicas being replaced) and is
then answered 503. The answer streams back as the replica sends it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

#: How long a replica that refused a connection is passed over (unless no other is left).
BAD_SECONDS = 5.0
#: Methods a request of which is sent again after the replica dropped it unanswered.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Headers that concern one connection, not the request (RFC 9110 7.6.1), and ``host``.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
                        "proxy-connection"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ServiceRoute:
    """What this load balancer knows of one service: its ready endpoints (from the database)
    and, locally, requests in flight per endpoint and endpoints that just refused."""

    name: str
    policy: str = "round_robin"
    endpoints: list[str] = field(default_factory=list)
    inflight: dict[str, int] = field(default_factory=dict)
    bad_until: dict[str, float] = field(default_factory=dict)
    _turn: itertools.count = field(default_factory=itertools.count)

    def order(self) -> list[str]:
        """Endpoints in the order to try them: the policy's pick first, the ones that just
        refused last."""
        if not self.endpoints:
            return []
        start = next(self._turn) % len(self.endpoints)
        ring = self.endpoints[start:] + self.endpoints[:start]
        if self.policy == "least_load":
            ring.sort(key=lambda e: self.inflight.get(e, 0))  # stable: ties keep the round-robin order
        now = time.monotonic()
        return sorted(ring, key=lambda e: self.bad_until.get(e, 0.0) > now)

    def refused(self, endpoint: str) -> None:
        self.bad_until[endpoint] = time.monotonic() + BAD_SECONDS


class Proxy:
    """The ASGI app of one service's port.

    ``route()`` returns the service's current ``ServiceRoute`` (the balancer replaces its
    endpoints as the database changes); ``count()`` is called once per request; ``log()``
    takes a line for the service's load balancer log."""

    def __init__(self, name: str, route: Callable[[], ServiceRoute | None], http: httpx.AsyncClient, *,
                 count: Callable[[], None], log: Callable[[str], None], max_body_bytes: int,
                 wait_seconds: float) -> None:
        self.name = name
        self.route = route
        self.http = http
        self.count = count
        self.log = log
        self.max_body_bytes = max_body_bytes
        self.wait_seconds = wait_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] != "http":  # websockets: not proxied (yet)
            await send({"type": "websocket.close", "code": 1003})
            return
        self.count()
        body = await self._body(receive)
        if body is None:
            await _answer(send, 413, f"the request body is larger than {self.max_body_bytes} bytes "
                                     "(STYX_LB_MAX_BODY_BYTES)")
            return
        method = scope["method"]
        path = scope.get("raw_path") or scope["path"].encode()
        target = path.decode("latin-1") + (("?" + scope["query_string"].decode("latin-1"))
                                           if scope.get("query_string") else "")
        headers = _forwarded(scope)
        deadline = time.monotonic() + self.wait_seconds
        tried: list[str] = []
        while True:
            route = self.route()
            order = [e for e in (route.order() if route else []) if e not in tried]
            if not order:
                if tried:
                    await _answer(send, 502, f"service {self.name!r}: every ready replica refused the connection "
                                             f"({', '.join(tried)})")
                    self.log(f"502 {method} {target[:200]}: every ready replica refused ({', '.join(tried)})")
                    return
                if time.monotonic() >= deadline:
                    await _answer(send, 503, f"service {self.name!r} has no ready replica "
                                             f"(waited {self.wait_seconds:g} s)")
                    self.log(f"503 {method} {target[:200]}: no ready replica after {self.wait_seconds:g} s")
                    return
                await asyncio.sleep(0.1)
                continue
            endpoint = order[0]
            tried.append(endpoint)
            assert route is not None
            route.inflight[endpoint] = route.inflight.get(endpoint, 0) + 1
            try:
                request = self.http.build_request(method, endpoint + target, headers=headers, content=body or None)  # b"" would add a Content-Length: 0 write
                try:
                    response = await self.http.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                    route.refused(endpoint)
                    self.log(f"{endpoint} refused {method} {target[:200]} ({type(err).__name__}); trying another replica")
                    continue
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
                    route.refused(endpoint)
                    if method in IDEMPOTENT:
                        self.log(f"{endpoint} dropped {method} {target[:200]} ({type(err).__name__}); "
                                 "trying another replica")
                        continue
                    await _answer(send, 502, f"replica {endpoint} dropped the request: {type(err).__name__}")
                    self.log(f"502 {method} {target[:200]}: {endpoint} dropped it ({type(err).__name__})")
                    return
                except httpx.TimeoutException as err:
                    await _answer(send, 504, f"replica {endpoint} did not answer: {type(err).__name__}")
                    self.log(f"504 {method} {target[:200]}: {endpoint} timed out")
                    return
                try:
                    await _relay(response, send)
                finally:
                    await response.aclose()
                return
            finally:
                route.inflight[endpoint] -= 1

    async def _body(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            data = message.get("body", b"")
            size += len(data)
            if size > self.max_body_bytes:
                return None
            chunks.append(data)
            if not message.get("more_body"):
                break
        return b"".join(chunks)


def _forwarded(scope: Scope) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP]
    client = scope.get("client")
    host = dict(scope["headers"]).get(b"host")
    if client:
        prior = dict(scope["headers"]).get(b"x-forwarded-for")
        headers = [(k, v) for k, v in headers if k.lower() != b"x-forwarded-for"]
        headers.append((b"x-forwarded-for", (prior + b", " if prior else b"") + client[0].encode()))
    if host:
        headers.append((b"x-forwarded-host", host))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    return headers


async def _relay(response: httpx.Response, send: Send) -> None:
    """The replica's answer, streamed as it comes (raw: compressed bodies stay compressed)."""
    headers = [(k, v) for k, v in response.headers.raw
               if k.decode("latin-1").lower() not in HOP_BY_HOP or k.lower() == b"content-length"]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    async for chunk in response.aiter_raw():
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
