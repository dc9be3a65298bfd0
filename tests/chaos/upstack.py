"""`styx up` for the chaos suite: the whole stack under its supervisor, in a fresh STYX_HOME on
free loopback ports, so that kill -9 of any part is followed by the restart a user gets.

``UpStack.pid(part)`` reads the supervisor's state file (``STYX_HOME/up.json``);
``wait_back(part, old_pid)`` waits until the supervisor has started a new one and it answers.
``stop()`` ends the supervisor (which stops its children), then every local node, then any
process still carrying this STYX_HOME or living under its nodes — and returns what it had to
kill, as orphans — and finally takes every cluster down (its job user removed, its disk gone).

The nodes live where the worker's settings put them (``Settings.local_nodes_dir()``): in a
fresh directory of this stack's own under /tmp (``STYX_LOCAL_NODES_DIR``), which every user
may traverse — as root, jobs run as per-cluster users who must reach their homes, and who
cannot reach STYX_HOME or pytest's tmp. ``shared_dir`` (beside the nodes) is where jobs can
write what the test reads back. Everything this stack looks for or kills is found under those
two unique paths, never by a name alone: other tests on the machine run their own nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from styx.config import Settings
from styx.db import Database
from styx.providers.local import procs
from styx.providers.local.provider import LocalProvider
from styx.sdk.client import Client
from styx.workers.supervisor import port_open
from styx.providers.local import users
from tests.fixtures.stack import settings_for, traversable_tmp_dir, wait_for
from tests.fixtures.temporal import free_port

#: The parts `styx up` supervises, as named in its state file.
PARTS = ("temporal", "worker", "api", "gitserver")


class UpStack:
    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "STYX_HOME": str(home),
            "STYX_API_PORT": str(free_port()),
            "STYX_TEMPORAL_PORT": str(free_port()),
            "STYX_TEMPORAL_UI_PORT": str(free_port()),
            "STYX_GIT_HTTP_PORT": str(free_port()),
            "STYX_GIT_SSH_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
            # A push cut off after its ref update is run by the restarted server's sweeper.
            "STYX_GIT_PUSH_SWEEP_SECONDS": "2",
            **(extra_env or {}),
        }
        #: Beside the nodes: a directory of this stack's own that every user may traverse.
        self.shared_dir: Path = traversable_tmp_dir()
        self.env["STYX_LOCAL_NODES_DIR"] = str(self.shared_dir / "nodes")
        for var in ("TEMPORAL_ADDRESS", "STYX_TEMPORAL_ADDRESS", "STYX_DB_URL", "STYX_API_URL", "STYX_TOKEN",
                    "STYX_TEMPORAL_UI_URL"):
            self.env.pop(var, None)
        self.settings: Settings = settings_for(self.env)
        #: Where the worker's local provider keeps the clusters (``Settings.local_nodes_dir``).
        self.nodes_root: Path = self.settings.local_nodes_dir()
        self.proc: subprocess.Popen | None = None
        #: Names of the clusters the test launches: their job users are removed at ``stop``
        #: even if their directories are gone (found by the name Styx gives them).
        self.cluster_names: list[str] = []

    # -- start and look ----------------------------------------------------------------
    def start(self, timeout: float = 180) -> "UpStack":
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.home / "up.out", "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "styx", "up"], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"styx up exited {self.proc.returncode}:\n{self.tail('up.out')}")
            return self.state() is not None

        wait_for(up, timeout, "styx up to report ready", interval=0.2)
        return self

    def state(self) -> dict | None:
        try:
            return json.loads((self.home / "up.json").read_text())
        except (OSError, ValueError):
            return None

    def pid(self, part: str) -> int | None:
        return ((self.state() or {}).get("children") or {}).get(part)

    def tail(self, name: str, size: int = 3000) -> str:
        path = self.home / name if not name.endswith(".log") else self.settings.logs_dir / name
        try:
            return path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    @property
    def token(self) -> str:
        return json.loads((self.home / "credentials").read_text())["token"]

    def client(self, timeout: float = 120.0) -> Client:
        return Client(self.settings.api_url, self.token, timeout=timeout)

    @property
    def git_http_port(self) -> int:
        return int(self.env["STYX_GIT_HTTP_PORT"])

    # -- health of each part -----------------------------------------------------------
    def answers(self, part: str, pid: int) -> bool:
        """True once ``part`` (running as ``pid``) does its job again."""
        s = self.settings
        if part == "temporal":
            return port_open(s.host, s.temporal_port)
        if part == "api":
            try:
                return httpx.get(f"{s.api_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        ready = self.home / "run" / ("worker.ready" if part == "worker" else "gitserver.ready")
        try:
            text = ready.read_text()
        except OSError:
            return False
        if part == "worker":
            return text.strip() == str(pid)
        try:
            return int(json.loads(text)["pid"]) == pid
        except (ValueError, KeyError, TypeError):
            return False

    def wait_back(self, part: str, old_pid: int, timeout: float = 120) -> int:
        """Wait for the supervisor to restart ``part`` and for the new process to answer."""
        def back() -> int | None:
            assert self.proc is not None and self.proc.poll() is None, f"styx up died:\n{self.tail('up.out')}"
            pid = self.pid(part)
            return pid if pid not in (None, old_pid) and procs.alive(pid) and self.answers(part, pid) else None

        return wait_for(back, timeout, f"{part} to be restarted and answer", interval=0.1)

    def kill(self, part: str) -> int:
        pid = self.pid(part)
        assert pid is not None, f"no {part} in {self.state()}"
        os.kill(pid, signal.SIGKILL)
        return pid

    # -- stop ---------------------------------------------------------------------------
    def db(self) -> Database:
        """The stack's database (SQLite in STYX_HOME), as the API reads it."""
        return Database(self.settings.db_url)

    def provider(self) -> LocalProvider:
        """A local provider as the worker builds it (``styx.workers.worker.build_providers``)."""
        s = self.settings
        return LocalProvider(self.nodes_root, self.client_pubkey(), isolate=s.local_isolation,
                             max_nodes=s.local_max_nodes, deny_ports=s.control_plane_ports())

    def client_pubkey(self) -> str:
        """The SSH key the worker logs in to nodes with (what every node's authorized_keys holds)."""
        return Path(f"{self.settings.client_key_path}.pub").read_text().strip()

    def stop(self) -> list[str]:
        """Stop everything this stack started; returns the processes that had to be killed
        after the supervisor and the nodes were stopped (orphans). Then every cluster is
        taken down, its job user removed, and the stack's directory outside STYX_HOME goes:
        all of it even when something before failed."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            stop_local_nodes(self.nodes_root)
            return kill_leftovers(self.home, self.nodes_root)
        finally:
            kill_leftovers(self.home, self.nodes_root)
            keep_node_logs(self.nodes_root, self.home / "node-logs")
            remove_local_clusters(self.nodes_root)
            for name in job_users(self.nodes_root, self.cluster_names):
                users.remove_user(name, lock=self.shared_dir / ".users.lock")
            shutil.rmtree(self.shared_dir, ignore_errors=True)


def stop_local_nodes(root: Path) -> None:
    """Stop every local node under ``root`` as a VM stops: its processes end (node servers,
    and with a job user every process of that user)."""
    if not root.is_dir():
        return
    provider = LocalProvider(root, "")
    for cluster in provider.list_clusters():
        asyncio.run(provider.stop(cluster, None))


def keep_node_logs(root: Path, dest: Path) -> None:
    """Copy each node server's log to ``dest/<cluster>-<node>.log`` (for a look after a
    failure: the nodes' directory goes)."""
    for log in sorted(root.glob("*/node-*/server.log")) if root.is_dir() else []:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, dest / f"{log.parent.parent.name}-{log.parent.name}.log")


def remove_local_clusters(root: Path) -> None:
    """Take down every cluster under ``root``: its processes, its job user, its directory. A
    user whose cluster directory went before its user (a `down` cut off) is found by name."""
    if not root.is_dir():
        return
    provider = LocalProvider(root, "")
    for cluster in provider.list_clusters():
        try:
            asyncio.run(provider.terminate(cluster, None))
        except Exception as err:  # noqa: BLE001 - cleanup goes on with the next cluster
            print(f"chaos cleanup: could not take {cluster} down: {err!r}", flush=True)


def job_users(root: Path, clusters: list[str]) -> list[str]:
    """The job users Styx would make for ``clusters`` under ``root`` that exist now."""
    return [name for c in clusters if users.lookup(name := users.job_user_name(root, c)) is not None]


def leftovers(home: Path, nodes_root: Path) -> list[tuple[int, str]]:
    """Live processes that belong to this stack: anything started with its STYX_HOME in its
    environment, anything whose HOME is under its nodes (what a node runs), and any node
    server serving a home under them."""
    styx_home = b"STYX_HOME=" + os.fsencode(str(home))
    node_homes = b"HOME=" + os.fsencode(str(nodes_root)) + b"/"
    prefix = str(nodes_root) + "/"
    me = os.getpid()
    found = []
    for pid, argv in procs.scan_cmdlines():
        if pid == me or not procs.alive(pid):
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        server_home = procs.arg_after(argv, "--home") if "styx.providers.local.nodeserver" in argv else None
        if styx_home in env or any(v.startswith(node_homes) for v in env) or \
                (server_home or "").startswith(prefix):
            found.append((pid, " ".join(argv)[:200]))
    return found


def kill_leftovers(home: Path, nodes_root: Path) -> list[str]:
    found = leftovers(home, nodes_root)
    for pid, _ in found:
        procs.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(procs.alive(pid) for pid, _ in found):
        time.sleep(0.05)
    return [f"pid {pid}: {cmd}" for pid, cmd in found]
