"""``styx gitserver``: smart HTTP and SSH git in one process.

    from styx.config import Settings
    from styx.gitserver.server import run_gitserver

    run_gitserver(Settings.from_env())   # blocks; SIGINT/SIGTERM stop it

Listens on ``STYX_HOST`` (default 127.0.0.1), HTTP on ``STYX_GIT_HTTP_PORT`` (7781) and SSH
on ``STYX_GIT_SSH_PORT`` (7722); see :mod:`styx.gitserver.config` for the rest. When
``STYX_READY_FILE`` is set, writes ``{"pid", "http_port", "ssh_port"}`` there once both
listen (for supervisors and tests).

Beside the transports, the process polls the git task queue for the push runs' activities
that read repositories (``styx.workers.gitqueue``), since only this host has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from styx.config import Settings
from styx.db import Database, migrate
from styx.files import atomic_write
from styx.gitserver.config import GitServerConfig
from styx.gitserver.http import GitHttpApp
from styx.gitserver.service import GitService
from styx.gitserver.ssh import GitSSHServer, load_or_create_host_key

log = logging.getLogger("styx.gitserver")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class GitServer:
    """Both transports over one :class:`GitService`; ``await start()``, ``await stop()``."""

    def __init__(self, settings: Settings, config: GitServerConfig | None = None) -> None:
        self.settings = settings
        self.config = config or GitServerConfig.from_settings(settings)
        self.service: GitService | None = None
        self.ssh: GitSSHServer | None = None
        self._http: _Uvicorn | None = None
        self._http_task: asyncio.Task | None = None

    async def start(self) -> None:
        settings, config = self.settings, self.config
        settings.ensure_home()
        await asyncio.to_thread(migrate, settings.db_url)
        config.repo_root.mkdir(parents=True, exist_ok=True)
        self.service = GitService(settings, config, Database(settings.db_url))
        await self.service.start()
        host_key = await asyncio.to_thread(load_or_create_host_key, config.state_dir / "ssh_host_ed25519_key")
        self.ssh = GitSSHServer(self.service, host_key)
        try:
            await self.ssh.start(config.host, config.ssh_port)
        except OSError as err:
            raise OSError(f"cannot listen for SSH on {config.host}:{config.ssh_port}: {err.strerror or err}; "
                          "choose another port with STYX_GIT_SSH_PORT") from None
        sock = _listen(config.host, config.http_port)
        uv_config = uvicorn.Config(GitHttpApp(self.service), lifespan="off", access_log=False,
                                   log_level="warning", timeout_keep_alive=30,
                                   h11_max_incomplete_event_size=1 << 20)
        self._http = _Uvicorn(uv_config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                await self._http_task  # raises what went wrong (a port in use)
                raise RuntimeError(f"the git HTTP server stopped while starting on port {config.http_port}")
            await asyncio.sleep(0.02)
        log.info("git server: HTTP %s, SSH %s, repositories in %s (%s)", config.http_url, config.ssh_url,
                 config.repo_root, "git " + config.git if config.git else "dulwich")

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 10)
        if self.ssh is not None:
            await self.ssh.close()
        if self.service is not None:
            await self.service.close()


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP listening socket, bound here so that a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen for HTTP on {host}:{port}: {err.strerror or err}; "
                      "choose another port with STYX_GIT_HTTP_PORT") from None
    sock.set_inheritable(False)
    return sock


#: Something that runs beside the server until ``stop`` is set (its task queue's worker).
Companion = Callable[[Settings, asyncio.Event], Awaitable[None]]


async def serve(settings: Settings, stop: asyncio.Event | None = None,
                companions: Sequence[Companion] = ()) -> None:
    server = GitServer(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    beside: list[asyncio.Task] = []
    try:
        await server.start()
        ready = os.environ.get("STYX_READY_FILE")
        if ready:
            atomic_write(Path(ready), json.dumps({"pid": os.getpid(), "http_port": server.config.http_port,
                                                  "ssh_port": server.ssh.port if server.ssh else None}),
                         mode=0o644)
        host_key = server.ssh.host_key.get_fingerprint("sha256") if server.ssh else "-"
        print(f"styx git server: {server.config.http_url}  {server.config.ssh_url}  (host key {host_key})",
              flush=True)
        beside = [asyncio.create_task(companion(settings, stop)) for companion in companions]
        await stop.wait()
    finally:
        stop.set()
        if beside:
            await asyncio.wait(beside, timeout=15)
        await server.stop()


def run_gitserver(settings: Settings, companions: Sequence[Companion] = ()) -> None:
    """Serve until SIGINT or SIGTERM, with ``companions`` running beside (the entry points
    pass ``styx.workers.gitqueue.serve_repo_activities``: the push runs' repository reads)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    asyncio.run(serve(settings, companions=companions))
