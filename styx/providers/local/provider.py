"""The local provider: each node is a small SSH server process on loopback.

A cluster ``C`` lives on disk under ``root/C/``; node ``r`` under ``root/C/node-<r>/``::

    home/            the node's home directory (what a VM's disk would keep)
    host_key(.pub)   its SSH host key, kept across stop/start
    node.json        {"rank", "ip"}: the loopback address given to this node
    ready.json       {"pid", "host", "port"} written by the running server
    server.log       the server's stdout and stderr

``root/.C.lock`` (an empty file, kept after terminate) serialises operations on ``C``
across worker processes.

Nodes are found from disk and from the process table (``/proc``), never from memory or
the database, so a retried activity (after the worker was ``kill -9``ed) reuses the
servers already running, and a lost database row leaks no process.

Each node gets its own loopback address (``127.a.b.<rank+2>``, derived from the cluster
name) when the system lets us bind it — Linux does for all of 127.0.0.0/8 — so jobs see
distinct node IPs; otherwise every node uses 127.0.0.1 with its own port.

One process per node costs ~41 MB RSS (asyncssh's import is most of it) but gives real
failure isolation: stopping a node is killing its process, as with a VM.

Usage (the worker wraps the methods as activities)::

    provider = LocalProvider(settings.home / "local", public_key_line(client_key))
    nodes = await provider.provision("dev", 2)
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import asyncssh

import styx
from styx.files import async_flock
from styx.ssh import NodeEndpoint

__all__ = ["ClusterNotFound", "LocalProvider", "NodeStartFailed"]

_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_NODE_DIR_RE = re.compile(r"^node-(\d+)$")

#: Variables of the worker's environment that node servers (and so jobs) inherit.
#: Everything else — cloud credentials, database URLs, Temporal API keys — stays out,
#: as it would on a fresh VM.
ENV_PASSTHROUGH = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")


class ClusterNotFound(LookupError):
    """The cluster has no directory under the provider's root."""


class NodeStartFailed(RuntimeError):
    """A node server did not come up (its log tail is in the message)."""


class LocalProvider:
    """Clusters of local SSH node servers under ``root``.

    ``client_pubkey`` (an OpenSSH public key line) is the key the SSH activities log in
    with; it is written to every node's ``~/.ssh/authorized_keys``. Every method is
    idempotent and safe to call concurrently (a per-cluster file lock serialises them
    across processes).
    """

    def __init__(
        self,
        root: Path,
        client_pubkey: str,
        *,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
        stop_grace: float = 3.0,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.client_pubkey = client_pubkey.strip()
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.user = getpass.getuser()
        #: Servers this process started, kept only to reap them (no zombies in a worker).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- public API --------------------------------------------------------------------

    async def provision(self, cluster: str, num_nodes: int) -> list[NodeEndpoint]:
        """Ensure nodes ``0 … num_nodes-1`` of ``cluster`` run; returns their endpoints.

        Nodes already running are reused, missing or dead ones started (on their existing
        home directories, if any).
        """
        if num_nodes < 1:
            raise ValueError("num_nodes must be at least 1")
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            cdir.mkdir(parents=True, exist_ok=True)
            return await self._ensure_nodes(cluster, list(range(num_nodes)))

    async def start(self, cluster: str) -> list[NodeEndpoint]:
        """Start every node of a stopped cluster on its home directory (ports may change,
        IPs and host keys do not); running nodes are left alone."""
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            ranks = self._ranks(cdir)
            if not ranks:
                raise ClusterNotFound(f"local cluster {cluster!r} does not exist")
            return await self._ensure_nodes(cluster, ranks)

    async def stop(self, cluster: str) -> None:
        """Stop every node as a VM stops: node servers, the commands they run and every
        detached job under the nodes' homes are killed; disks (homes) stay."""
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            await self._stop_nodes(cdir)

    async def terminate(self, cluster: str) -> None:
        """Stop the cluster and delete its directory. Safe on a cluster already gone."""
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            if cdir.exists():
                await self._stop_nodes(cdir)
                await asyncio.to_thread(shutil.rmtree, cdir, True)

    async def describe(self, cluster: str) -> list[dict[str, Any]]:
        """One dict per node found on disk: rank, ip, pid, alive, endpoint (or None), home."""
        cdir = self._cluster_dir(cluster)
        out = []
        for rank in self._ranks(cdir):
            ndir = self._node_dir(cdir, rank)
            pid, ready = self._live_server(ndir)
            endpoint = None
            if pid is not None and ready is not None:
                endpoint = self._endpoint(ndir, rank, ready).to_dict()
            out.append(
                {
                    "rank": rank,
                    "ip": self._node_ip(ndir),
                    "pid": pid,
                    "alive": pid is not None,
                    "endpoint": endpoint,
                    "home": str(ndir / "home"),
                }
            )
        return out

    def list_clusters(self) -> list[str]:
        """Names of the clusters that have a directory under ``root``."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and _CLUSTER_RE.match(p.name)
        )

    # -- paths and files ---------------------------------------------------------------

    def _cluster_dir(self, cluster: str) -> Path:
        if not _CLUSTER_RE.match(cluster):
            raise ValueError(f"invalid cluster name {cluster!r}")
        return self.root / cluster

    @staticmethod
    def _node_dir(cdir: Path, rank: int) -> Path:
        return cdir / f"node-{rank}"

    @staticmethod
    def _ranks(cdir: Path) -> list[int]:
        if not cdir.is_dir():
            return []
        ranks = []
        for p in cdir.iterdir():
            m = _NODE_DIR_RE.match(p.name)
            if m and p.is_dir():
                ranks.append(int(m.group(1)))
        return sorted(ranks)

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _node_ip(self, ndir: Path) -> str | None:
        info = self._read_json(ndir / "node.json")
        return info.get("ip") if info else None

    def _endpoint(self, ndir: Path, rank: int, ready: dict[str, Any]) -> NodeEndpoint:
        return NodeEndpoint(
            host=ready["host"],
            port=int(ready["port"]),
            user=self.user,
            ip=ready["host"],
            rank=rank,
            host_key=(ndir / "host_key.pub").read_text().strip(),
        )

    def _cluster_lock(self, cluster: str) -> contextlib.AbstractAsyncContextManager[None]:
        # A file next to the cluster directories (not in them: terminate removes those),
        # so that iterating the root's directories finds clusters only.
        return async_flock(self.root / f".{cluster}.lock", self._locks.setdefault(cluster, asyncio.Lock()))

    def _prepare_node(self, cluster: str, ndir: Path, rank: int) -> str:
        """Create the node's directory, keys and authorized_keys; returns its IP."""
        home = ndir / "home"
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(ssh_dir, 0o700)
        auth = ssh_dir / "authorized_keys"
        current = auth.read_text() if auth.exists() else ""
        if self.client_pubkey not in current.splitlines():
            # Appended: keys a user added to the node for their own `ssh` stay.
            sep = "" if not current or current.endswith("\n") else "\n"
            _write_atomic(auth, f"{current}{sep}{self.client_pubkey}\n".encode(), 0o600)
        key_path = ndir / "host_key"
        if not key_path.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"styx-{cluster}-{rank}")
            _write_atomic(ndir / "host_key.pub", key.export_public_key(), 0o644)
            _write_atomic(key_path, key.export_private_key(), 0o600)
        info = self._read_json(ndir / "node.json")
        if info and info.get("ip"):
            return str(info["ip"])
        ip = _loopback_ip(cluster, rank)
        if not _can_bind(ip):
            ip = "127.0.0.1"
        _write_atomic(ndir / "node.json", json.dumps({"rank": rank, "ip": ip}).encode(), 0o644)
        return ip

    # -- processes ---------------------------------------------------------------------

    def _server_pids(self, ndir: Path) -> list[int]:
        """Live node-server processes serving this node's home."""
        home = str(ndir / "home")
        pids = []
        for pid, argv in _scan_cmdlines():
            if "styx.providers.local.nodeserver" in argv and _arg_after(argv, "--home") == home:
                if _alive(pid):
                    pids.append(pid)
        if pids or _HAVE_PROC:
            return pids
        ready = self._read_json(ndir / "ready.json")  # no /proc (macOS): trust the file
        if ready and _alive(int(ready["pid"])):
            return [int(ready["pid"])]
        return []

    def _live_server(self, ndir: Path) -> tuple[int | None, dict[str, Any] | None]:
        """(pid, ready info) of the node's running server; ready is None while starting."""
        self._reap()
        pids = self._server_pids(ndir)
        if not pids:
            return None, None
        ready = self._read_json(ndir / "ready.json")
        if ready and int(ready.get("pid", -1)) in pids:
            return int(ready["pid"]), ready
        return pids[0], None

    def _spawn(self, ndir: Path, ip: str) -> subprocess.Popen[bytes]:
        previous = self._read_json(ndir / "last_port.json") or {}
        with contextlib.suppress(FileNotFoundError):
            (ndir / "ready.json").unlink()
        env = {k: v for k, v in os.environ.items() if k in ENV_PASSTHROUGH or k.startswith("LC_")}
        env.update(self.extra_env)
        env["HOME"] = str(ndir / "home")
        argv = [
            self.python, "-m", "styx.providers.local.nodeserver",
            "--home", str(ndir / "home"),
            "--host", ip,
            "--port", str(int(previous.get("port", 0))),
            "--port-fallback",
            "--host-key", str(ndir / "host_key"),
            "--ready-file", str(ndir / "ready.json"),
            "--log-level", "WARNING",
        ]  # fmt: skip
        with open(ndir / "server.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                # -m styx.providers.local.nodeserver must import the same styx as this worker.
                cwd=Path(styx.__file__).resolve().parent.parent,
            )
        self._children[proc.pid] = proc
        return proc

    async def _wait_ready(self, ndir: Path, pid: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            ready = self._read_json(ndir / "ready.json")
            if ready and int(ready.get("pid", -1)) == pid:
                if await _answers_ssh(ready["host"], int(ready["port"])):
                    _write_atomic(
                        ndir / "last_port.json",
                        json.dumps({"port": int(ready["port"])}).encode(),
                        0o644,
                    )
                    return ready
            self._reap()
            if not _alive(pid):
                break
            await asyncio.sleep(0.02)
        _kill(pid, signal.SIGKILL)
        self._reap()
        raise NodeStartFailed(
            f"node server {ndir.name} (pid {pid}) did not come up:\n{_tail(ndir / 'server.log')}"
        )

    async def _ensure_node(self, cluster: str, cdir: Path, rank: int) -> NodeEndpoint:
        ndir = self._node_dir(cdir, rank)
        ip = self._prepare_node(cluster, ndir, rank)
        pids = self._server_pids(ndir)
        ready = self._read_json(ndir / "ready.json")
        keep = None
        if ready and int(ready.get("pid", -1)) in pids:
            keep = int(ready["pid"])
        elif len(pids) == 1:
            keep = pids[0]  # started by an attempt that died before the server was ready
        for pid in pids:
            if pid != keep:
                _kill(pid, signal.SIGKILL)
        if keep is not None:
            try:
                ready = await self._wait_ready(ndir, keep)
                return self._endpoint(ndir, rank, ready)
            except NodeStartFailed:
                pass  # killed by _wait_ready: start a fresh one below
        proc = self._spawn(ndir, ip)
        ready = await self._wait_ready(ndir, proc.pid)
        return self._endpoint(ndir, rank, ready)

    async def _ensure_nodes(self, cluster: str, ranks: list[int]) -> list[NodeEndpoint]:
        cdir = self._cluster_dir(cluster)
        return list(await asyncio.gather(*(self._ensure_node(cluster, cdir, r) for r in ranks)))

    async def _stop_nodes(self, cdir: Path) -> None:
        ndirs = [self._node_dir(cdir, r) for r in self._ranks(cdir)]
        # 1. Servers first, so no new command starts; they kill their sessions' commands.
        servers = [pid for ndir in ndirs for pid in self._server_pids(ndir)]
        for pid in servers:
            _kill(pid, signal.SIGTERM)
        await self._wait_gone(lambda: [p for p in servers if _alive(p)], self.stop_grace)
        for pid in servers:
            _kill(pid, signal.SIGKILL)
        # 2. Everything else that lives on the nodes: detached jobs (by the process groups
        #    in their pid files) and any process whose HOME is a node's home.
        homes = [str(ndir / "home") for ndir in ndirs]

        def leftovers() -> list[int]:
            return _processes_of(homes, _job_groups(homes))

        for pid in leftovers():
            _kill(pid, signal.SIGTERM)
        await self._wait_gone(leftovers, 1.0)
        for pid in leftovers():
            _kill(pid, signal.SIGKILL)
        await self._wait_gone(lambda: leftovers() + [p for p in servers if _alive(p)], 5.0)
        for ndir in ndirs:
            with contextlib.suppress(FileNotFoundError):
                (ndir / "ready.json").unlink()

    async def _wait_gone(self, remaining: Callable[[], list[int]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if not remaining():
                return
            await asyncio.sleep(0.05)

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]


# ---------------------------------------------------------------------------------------
# Helpers (process table, addresses, files)

_HAVE_PROC = os.path.isdir("/proc/self")


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return "(no log)"


def _loopback_ip(cluster: str, rank: int) -> str:
    """A stable loopback address for node ``rank`` of ``cluster``: 127.a.b.(rank+2)."""
    block = int.from_bytes(hashlib.sha256(cluster.encode()).digest()[:2], "big") % 65535 + 1
    n = (block << 8) + 2 + rank
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _can_bind(ip: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


async def _answers_ssh(host: str, port: int) -> bool:
    """True if something at host:port sends an SSH version banner."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 2)
        return line.startswith(b"SSH-")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgid) of a process from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (``kill -0`` alone says yes to zombies)."""
    if _HAVE_PROC:
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids() -> list[int]:
    if not _HAVE_PROC:
        return []
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _scan_cmdlines() -> list[tuple[int, list[str]]]:
    out = []
    for pid in _pids():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out.append((pid, [a.decode(errors="surrogateescape") for a in raw.split(b"\0") if a]))
    return out


def _arg_after(argv: list[str], flag: str) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return None


def _job_groups(homes: list[str]) -> set[int]:
    """Process group ids recorded in ``<home>/.styx/jobs/*/*.pid``."""
    groups = set()
    for home in homes:
        for pid_file in Path(home, ".styx", "jobs").glob("*/*.pid"):
            with contextlib.suppress(OSError, ValueError):
                groups.add(int(pid_file.read_text().strip()))
    return groups


def _processes_of(homes: list[str], groups: set[int]) -> list[int]:
    """Live processes that belong to these node homes.

    A process belongs if its environment has ``HOME=<home>`` (everything a node starts
    inherits it), or if it is in a job's process group *and* some member of that group
    has such a HOME (so a recycled group id of a stranger is never hit). Without /proc,
    the job groups' leaders are trusted.
    """
    if not _HAVE_PROC:
        return [g for g in groups if _alive(g)]
    marks = [b"HOME=" + os.fsencode(h) for h in homes]
    me = os.getpid()
    found: list[int] = []
    in_groups: dict[int, list[int]] = {}
    owned_groups: set[int] = set()
    for pid in _pids():
        if pid == me:
            continue
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            env = []
        ours = any(m in env for m in marks)
        if ours:
            found.append(pid)
        if stat[1] in groups:
            in_groups.setdefault(stat[1], []).append(pid)
            if ours:
                owned_groups.add(stat[1])
    for group in owned_groups:
        found.extend(p for p in in_groups[group] if p not in found)
    return found
