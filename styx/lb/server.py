"""``styx lb``: the load balancer process (see the package docstring).

Every ``lb_refresh_seconds``:

1. read the routes (``db.services.routes``): each service's port, policy, READY endpoints;
2. open a listener (uvicorn, on ``STYX_SERVE_HOST``) for each new service's port, close those
   of services gone; log the replica set of each service when it changed;
3. report the request counts of whole seconds past (``db.services.add_requests``: written
   once per second and load balancer, so a report sent again changes nothing) and the log
   lines; once a minute a summary line per service that had requests.

A port another program holds is logged (once) and tried again at each refresh.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import uvicorn

from styx.config import Settings
from styx.db import Database, Route
from styx.lb.proxy import Proxy, ServiceRoute

log = logging.getLogger("styx.lb")

#: Seconds between the summary lines of a service's log.
SUMMARY_SECONDS = 60.0
#: Log lines kept in memory between reports (the oldest dropped beyond).
MAX_PENDING_LINES = 1000


class _Listener(uvicorn.Server):
    """A uvicorn server that leaves signals to the load balancer (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LoadBalancer:
    def __init__(self, settings: Settings, db: Database | None = None, lb_id: str | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.db_url)
        self.lb_id = lb_id or f"{socket.gethostname()[:40]}-{os.getpid()}"
        self.routes: dict[str, ServiceRoute] = {}
        self.listeners: dict[str, tuple[int, _Listener, asyncio.Task[None]]] = {}
        self.counts: dict[str, collections.Counter[int]] = {}
        self.minute: collections.Counter[str] = collections.Counter()
        self.lines: collections.deque[tuple[str, str, datetime, str]] = collections.deque(maxlen=MAX_PENDING_LINES)
        self._bind_failed: set[tuple[str, int]] = set()
        self._last_summary = time.monotonic()
        self.http = httpx.AsyncClient(
            trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(connect=5.0, read=None, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))

    # ------------------------------------------------------------------ what the proxies call

    def _count(self, service: str) -> None:
        self.counts.setdefault(service, collections.Counter())[int(time.time())] += 1
        self.minute[service] += 1

    def _log(self, service: str, line: str) -> None:
        log.info("%s: %s", service, line)
        self.lines.append((service, self.lb_id, datetime.now(timezone.utc), line))

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event, ready_file: Path | None = None) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.refresh()
                except Exception:  # the database restarting, say: keep serving what we know
                    log.exception("refresh failed; serving the last routes known")
                if ready_file is not None and not ready_file.exists():
                    ready_file.write_text(str(os.getpid()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.lb_refresh_seconds)
        finally:
            await self.close()

    async def refresh(self) -> None:
        routes = await asyncio.to_thread(self.db.services.routes)
        await self._apply(routes)
        await self._report()

    async def _apply(self, routes: list[Route]) -> None:
        seen = set()
        for r in routes:
            seen.add(r.service)
            route = self.routes.get(r.service)
            if route is None:
                route = self.routes[r.service] = ServiceRoute(r.service, r.policy)
            endpoints = list(r.endpoints)
            if endpoints != route.endpoints:
                self._log(r.service, f"ready replicas: {', '.join(endpoints) or 'none'}")
            route.endpoints, route.policy = endpoints, r.policy
            listener = self.listeners.get(r.service)
            if listener is not None and listener[0] != r.port:
                await self._close(r.service)
                listener = None
            if listener is None:
                self._open(r.service, r.port)
        for name in [n for n in self.routes if n not in seen]:
            await self._close(name)
            del self.routes[name]

    def _open(self, service: str, port: int) -> None:
        host = self.settings.serve_host
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Inherited by the accepted connections: without it an answer written as headers
            # then body waits ~40 ms for the client's delayed ACK (measured: 48 ms vs 2 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as err:
            if (service, port) not in self._bind_failed:
                self._bind_failed.add((service, port))
                self._log(service, f"cannot listen on {host}:{port}: {err.strerror}; trying again each refresh")
            return
        self._bind_failed.discard((service, port))
        app = Proxy(service, lambda: self.routes.get(service), self.http,
                    count=lambda: self._count(service), log=lambda line: self._log(service, line),
                    max_body_bytes=self.settings.lb_max_body_bytes, wait_seconds=self.settings.lb_wait_seconds)
        server = _Listener(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                                          timeout_keep_alive=30))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        self.listeners[service] = (port, server, task)
        self._log(service, f"listening on http://{host}:{port}")

    async def _close(self, service: str) -> None:
        listener = self.listeners.pop(service, None)
        if listener is None:
            return
        port, server, task = listener
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        self._log(service, f"stopped listening on port {port}")

    async def _report(self) -> None:
        now = time.time()
        done: dict[str, dict[int, int]] = {}
        for service, seconds in self.counts.items():
            past = {s: n for s, n in seconds.items() if s < int(now)}
            if past:
                done[service] = past
        if done:
            await asyncio.to_thread(self.db.services.add_requests, self.lb_id, done, now=now)
            for service, past in done.items():
                for s in past:
                    del self.counts[service][s]
        if time.monotonic() - self._last_summary >= SUMMARY_SECONDS:
            for service, n in self.minute.items():
                if n and service in self.routes:
                    self._log(service, f"{n} requests in the last {SUMMARY_SECONDS:.0f} s")
            self.minute.clear()
            self._last_summary = time.monotonic()
        if self.lines:
            lines = list(self.lines)
            known = set(self.routes)
            await asyncio.to_thread(self.db.services.add_lb_logs, [ln for ln in lines if ln[0] in known])
            for _ in lines:
                self.lines.popleft()

    async def close(self) -> None:
        for name in list(self.listeners):
            await self._close(name)
        with contextlib.suppress(Exception):
            await self._report()
        await self.http.aclose()


async def run_lb(settings: Settings) -> None:
    """``styx lb``: serve until SIGINT/SIGTERM."""
    from styx import db as styx_db

    settings.ensure_home()
    styx_db.migrate(settings.db_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready = os.environ.get("STYX_READY_FILE")
    balancer = LoadBalancer(settings)
    log.info("load balancer %s reading services from %s", balancer.lb_id, balancer.db)
    await balancer.run(stop, Path(ready) if ready else None)
