"""`styx up`: the embedded stack under one supervisor.

Starts the Temporal dev server (persisted to ``STYX_HOME/temporal.db``), one worker, the
API and the git server on loopback, waits until each is healthy, prints the URLs, restarts any child that dies
(with backoff, logged), and on Ctrl-C stops them all — workers and API first, Temporal last.
Each child's output goes to ``STYX_HOME/logs/<part>.log``.

Children run in their own sessions (so a terminal's Ctrl-C reaches only the supervisor,
which then stops them in order) and get ``PR_SET_PDEATHSIG`` so that even a SIGKILLed
supervisor leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from styx.config import Settings, find_temporal_binary
from styx.contracts.search import SEARCH_ATTRIBUTES
from styx.files import atomic_write, file_lock
from styx.gitserver.config import GitServerConfig

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 30.0
HEALTHY_RESET_SECONDS = 60.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, ValueError):
        return False


@dataclass
class Part:
    """One supervised child process."""

    name: str
    argv: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    before_start: Callable[[], None] = lambda: None
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.5


class AlreadyRunning(RuntimeError):
    pass


class Supervisor:
    def __init__(self, settings: Settings, out: TextIO = sys.stdout,
                 then: list[str] | None = None) -> None:
        self.settings = settings
        self.out = out
        #: A `styx` command run once the stack is up (``make run`` launches the example).
        self.then = then
        self.parts: list[Part] = []
        self._stopping = False
        self._lock = contextlib.ExitStack()

    # -- output -----------------------------------------------------------------------
    def say(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} styx up: {message}"
        print(line, file=self.out, flush=True)
        with open(self.settings.logs_dir / "supervisor.log", "a") as f:
            f.write(line + "\n")

    # -- single instance --------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.settings.home / "up.json"

    def acquire_lock(self) -> None:
        """Hold ``STYX_HOME/up.lock`` for our lifetime; a second ``styx up`` finds it taken."""
        try:
            self._lock.enter_context(file_lock(self.settings.home / "up.lock", wait=False))
        except BlockingIOError:
            try:
                info = json.loads(self.state_file.read_text())
            except (OSError, ValueError):
                info = {}
            raise AlreadyRunning(
                f"Styx is already running for {self.settings.home} (pid {info.get('pid', '?')}); "
                f"API at {info.get('api', self.settings.api_url)}. Stop it with Ctrl-C in its "
                "terminal, or set STYX_HOME to run a second, separate stack."
            ) from None

    def check_ports_free(self) -> None:
        s = self.settings
        git = GitServerConfig.from_settings(s)
        wanted = [("STYX_API_PORT", s.api_port), ("STYX_GIT_HTTP_PORT", git.http_port),
                  ("STYX_GIT_SSH_PORT", git.ssh_port)]
        if not s.external_temporal:
            wanted += [("STYX_TEMPORAL_PORT", s.temporal_port), ("STYX_TEMPORAL_UI_PORT", s.temporal_ui_port)]
        for var, port in wanted:
            if port_open(s.host, port):
                raise RuntimeError(
                    f"port {s.host}:{port} is already in use by another program; "
                    f"choose another with {var}=<port>"
                )

    # -- the parts --------------------------------------------------------------------
    def build_parts(self) -> list[Part]:
        s = self.settings
        py = sys.executable
        parts: list[Part] = []
        if not s.external_temporal:
            argv = [
                find_temporal_binary(), "server", "start-dev",
                "--db-filename", str(s.home / "temporal.db"),
                "--ip", s.host, "--port", str(s.temporal_port),
                "--ui-ip", s.host, "--ui-port", str(s.temporal_ui_port),
                "--namespace", s.namespace,
                "--log-level", "warn", "--ui-disable-news-fetch",
            ]
            for name, kind in SEARCH_ATTRIBUTES.items():
                argv += ["--search-attribute", f"{name}={kind}"]
            argv += [f"--dynamic-config-value={kv}" for kv in _extra_dynamic_config()]
            parts.append(Part(
                "temporal", argv,
                healthy=lambda: port_open(s.host, s.temporal_port) and http_ok(s.temporal_ui_url or ""),
            ))
        ready = s.home / "run" / "worker.ready"
        parts.append(Part(
            "worker", [py, "-m", "styx", "worker"],
            healthy=ready.exists,
            env={"STYX_READY_FILE": str(ready)},
            before_start=lambda: ready.unlink(missing_ok=True),
        ))
        parts.append(Part(
            "api", [py, "-m", "styx", "api"],
            healthy=lambda: http_ok(f"http://{s.host}:{s.api_port}/healthz"),
        ))
        lb_ready = s.home / "run" / "lb.ready"
        parts.append(Part(
            "lb", [py, "-m", "styx", "lb"],
            healthy=lb_ready.exists,
            env={"STYX_READY_FILE": str(lb_ready)},
            before_start=lambda: lb_ready.unlink(missing_ok=True),
        ))
        git_ready = s.home / "run" / "gitserver.ready"
        parts.append(Part(
            "gitserver", [py, "-m", "styx", "gitserver"],
            healthy=git_ready.exists,
            env={"STYX_READY_FILE": str(git_ready)},
            before_start=lambda: git_ready.unlink(missing_ok=True),
        ))
        return parts

    def start(self, part: Part) -> None:
        part.before_start()
        env = {**os.environ, **part.env, "STYX_HOME": str(self.settings.home), "PYTHONUNBUFFERED": "1"}
        log = open(self.settings.logs_dir / f"{part.name}.log", "ab")
        try:
            part.proc = subprocess.Popen(
                part.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        part.started_at = time.monotonic()

    def wait_healthy(self, parts: list[Part], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(parts)
        while pending:
            if self._stopping:
                return
            for part in list(pending):
                assert part.proc is not None
                if part.proc.poll() is not None:
                    raise RuntimeError(
                        f"{part.name} exited with code {part.proc.returncode} while starting; "
                        f"see {self.settings.logs_dir / (part.name + '.log')}"
                    )
                if part.healthy():
                    pending.remove(part)
            if pending and time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise RuntimeError(f"{names} did not become healthy within {timeout:.0f}s; see {self.settings.logs_dir}")
            time.sleep(0.1)

    # -- lifecycle --------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        s = self.settings
        s.ensure_home()
        (s.home / "run").mkdir(exist_ok=True)
        self.acquire_lock()
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self.check_ports_free()
            from styx.workers.credentials import ensure_admin_credentials

            ensure_admin_credentials(s)  # migrates the DB first
            self.parts = self.build_parts()
            temporal = [p for p in self.parts if p.name == "temporal"]
            rest = [p for p in self.parts if p.name != "temporal"]
            if temporal:
                self.say(f"starting Temporal dev server on {s.temporal_address}")
                self.start(temporal[0])
                self.wait_healthy(temporal, timeout=60)
            for part in rest:
                self.say(f"starting {part.name}")
                self.start(part)
            self.wait_healthy(rest, timeout=90)
            if self._stopping:
                return 0
            self._write_state()
            self._print_urls()
            if self.then:
                self.say(f"running: styx {' '.join(self.then)}")
                subprocess.Popen([sys.executable, "-m", "styx", *self.then], stdin=subprocess.DEVNULL,
                                 env={**os.environ, "STYX_HOME": str(s.home)})
            self.monitor()
            return 0
        finally:
            self.shutdown()

    def _write_state(self) -> None:
        s = self.settings
        info = {
            "pid": os.getpid(),
            "api": s.api_url,
            "temporal": s.temporal_address,
            "temporal_ui": s.temporal_ui_url,
            "children": {p.name: p.proc.pid for p in self.parts if p.proc},
        }
        atomic_write(self.state_file, json.dumps(info, indent=2), mode=0o644)

    def _print_urls(self) -> None:
        s = self.settings
        self.say("Styx is up.")
        self.say(f"  API          {s.api_url}   (docs: {s.api_url}/docs)")
        if s.temporal_ui_url:
            self.say(f"  Temporal UI  {s.temporal_ui_url}")
        self.say(f"  Temporal     {s.temporal_address} namespace {s.namespace}")
        git = GitServerConfig.from_settings(s)
        self.say(f"  git          {git.http_url}/<owner>/<repo>.git   {git.ssh_url}/<owner>/<repo>.git")
        self.say(f"  services     http://{s.serve_host}:<port> (`styx serve status --endpoint NAME`)")
        self.say(f"  logs         {s.logs_dir}")
        self.say(f"  credentials  {s.home / 'credentials'} (the admin's API token; the CLI and SDK read it)")
        self.say("Press Ctrl-C to stop.")

    def monitor(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            for part in self.parts:
                proc = part.proc
                if proc is not None and proc.poll() is not None:
                    part.restarts += 1
                    if now - part.started_at > HEALTHY_RESET_SECONDS:
                        part.backoff = 0.5
                    self.say(
                        f"{part.name} (pid {proc.pid}) exited with code {proc.returncode}; "
                        f"restarting in {part.backoff:.1f}s (restart #{part.restarts})"
                    )
                    part.proc = None
                    part.next_start = now + part.backoff
                    part.backoff = min(part.backoff * 2, MAX_BACKOFF_SECONDS)
                elif proc is None and now >= part.next_start:
                    self.start(part)
                    assert part.proc is not None
                    self.say(f"{part.name} restarted (pid {part.proc.pid})")
                    self._write_state()
            time.sleep(0.1)

    def shutdown(self) -> None:
        """Stop every child: workers, API (and git server) first, Temporal last."""
        others = [p for p in self.parts if p.name != "temporal"]
        temporal = [p for p in self.parts if p.name == "temporal"]
        for group in (others, temporal):
            running = [p for p in group if p.proc is not None and p.proc.poll() is None]
            for part in running:
                self.say(f"stopping {part.name} (pid {part.proc.pid})")
                part.proc.terminate()
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for part in running:
                try:
                    part.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say(f"{part.name} did not stop in {STOP_GRACE_SECONDS:.0f}s; killing it")
                    part.proc.kill()
                    part.proc.wait()
        self.state_file.unlink(missing_ok=True)
        self._lock.close()


def _extra_dynamic_config() -> list[str]:
    """``STYX_TEMPORAL_DYNAMIC_CONFIG="k=v;k2=v2"``: extra dev-server settings (tests use it)."""
    raw = os.environ.get("STYX_TEMPORAL_DYNAMIC_CONFIG", "")
    return [kv.strip() for kv in raw.split(";") if kv.strip()]
