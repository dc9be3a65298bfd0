"""The local provider: each node is a small SSH server process on loopback.

A cluster ``C`` lives on disk under ``root/C/``; node ``r`` under ``root/C/node-<r>/``::

    cluster.json     {"user"}: the job user of the cluster (only when it has one)
    node-<r>/
      home/            the node's home directory (what a VM's disk would keep), 0700
      host_key(.pub)   its SSH host key, kept across stop/start
      authorized_keys  Styx's client key (the server also accepts keys in home/.ssh/)
      node.json        {"rank", "ip"}: the loopback address given to this node
      ready.json       {"pid", "host", "port"} written by the running server
      server.log       the server's stdout and stderr
      failsafe.json    the failsafe deadline the cluster workflow pushes (``local.failsafe``)
      failsafe_fired.json  left by a server that stopped itself at that deadline

``root/.C.lock`` (an empty file, kept after terminate) serialises operations on ``C``
across worker processes.

Job users (``isolate=True``, what the worker asks for when Styx runs as root): each cluster
gets its own unprivileged system user (``users``), its node homes are owned by it, and the
node servers — which stay root — run every SSH session's command as that user and do the
SFTP file operations with its file-system credentials. Everything else on disk stays root's:
the directories from ``root`` down to ``node-<r>`` are 0711 (a job user can reach its home
but list nothing), the files in them 0600. ``root`` must therefore lie on a path every user
can traverse (not under a 0700 home such as /root: see ``Settings.local_nodes_dir``). Stopping
a cluster kills every process of its user; ``terminate`` removes the user.

Nodes are found from disk and from the process table (``procs``), never from memory or
the database, so a retried activity (after the worker was ``kill -9``ed) reuses the
servers already running, and a lost database row leaks no process.

Each node gets its own loopback address (``127.a.b.<rank+2>``, derived from the cluster
name) when the system lets us bind it — Linux does for all of 127.0.0.0/8 — so jobs see
distinct node IPs; otherwise every node uses 127.0.0.1 with its own port.

One process per node costs ~41 MB RSS (asyncssh's import is most of it) but gives real
failure isolation: stopping a node is killing its process, as with a VM. So a cluster may
have at most ``max_nodes`` nodes (``STYX_LOCAL_MAX_NODES``), by default what the machine can
host (``styx.config.local_node_capacity``); ``provision`` refuses a larger one
(``InvalidProviderRequest``) before it makes anything. The server
program is ``nodeserver``; ``procs`` reads the process table.

Usage (the worker registers it as the ``local`` provider)::

    provider = LocalProvider(settings.local_nodes_dir(), public_key_line(client_key),
                             isolate=settings.local_isolation)
    nodes = (await provider.provision("dev", 2, {})).endpoints()
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import asyncssh

import styx
from styx.contracts.clusters import ClusterName
from styx.files import async_flock, atomic_write
from styx.config import local_node_capacity
from styx.providers.base import InvalidProviderRequest, ProvisionError, Provisioned
from styx.providers.local import failsafe, netguard, procs, users
from styx.providers.local.users import JobUser
from styx.ssh import NodeEndpoint

__all__ = ["ClusterNotFound", "LocalProvider", "NodeStartFailed"]

log = logging.getLogger("styx.providers.local")

_NODE_DIR_RE = re.compile(r"^node-(\d+)$")

#: Variables of the worker's environment that node servers (and so jobs) inherit.
#: Everything else — cloud credentials, database URLs, Temporal API keys — stays out,
#: as it would on a fresh VM.
ENV_PASSTHROUGH = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")


class ClusterNotFound(ProvisionError, LookupError):
    """The cluster has no directory under the provider's root."""


class NodeStartFailed(RuntimeError):
    """A node server did not come up (its log tail is in the message). Not a
    ``ProvisionError``: the activity's retry starts the node afresh."""


class LocalProvider:
    """Clusters of local SSH node servers under ``root``.

    ``client_pubkey`` (an OpenSSH public key line) is the key the SSH activities log in
    with; every node server accepts it. With ``isolate`` (needs root), new clusters get a
    job user (see the module's docstring). Every method is idempotent and safe to call
    concurrently (a per-cluster file lock serialises them across processes).
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
        isolate: bool = False,
        max_nodes: int | None = None,
        deny_ports: Iterable[int] = (),
        failsafe_interval: float = 5.0,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.isolate = isolate
        #: TCP ports a job user's sessions may not connect to (``Settings.control_plane_ports``;
        #: the node servers enforce it with Landlock, see ``netguard``).
        self.deny_ports = tuple(sorted({int(p) for p in deny_ports}))
        if isolate and self.deny_ports and netguard.abi_version() < netguard.NET_ABI:
            log.warning("Landlock cannot restrict TCP ports on this kernel (ABI %d < %d): local jobs "
                        "can connect to the control plane's ports %s", netguard.abi_version(),
                        netguard.NET_ABI, list(self.deny_ports))
        #: The most nodes one cluster may have (``STYX_LOCAL_MAX_NODES``); None: what the
        #: machine can host when the cluster is provisioned (``styx.config.local_node_capacity``).
        self.max_nodes = max_nodes
        self.client_pubkey = client_pubkey.strip()
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.ready_timeout = ready_timeout
        #: How often node servers look at their failsafe deadline (``local.failsafe``).
        self.failsafe_interval = failsafe_interval
        self.stop_grace = stop_grace
        self.user = getpass.getuser()
        #: Servers this process started, kept only to reap them (no zombies in a worker).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the Provider protocol ----------------------------------------------------------

    async def plan(self, resources: dict[str, Any], num_nodes: int, region: str | None) -> list[dict[str, Any]]:
        """One attempt: local nodes have no zones or instance types to choose from, and cost nothing."""
        return [{"attempt_no": 1, "hourly_price": 0.0}]

    async def provision(self, cluster: str, num_nodes: int, attempt: dict[str, Any]) -> Provisioned:
        """Ensure nodes ``0 … num_nodes-1`` of ``cluster`` run; ``attempt`` is not used.

        Nodes already running are reused, missing or dead ones started (on their existing
        home directories, if any).
        """
        if num_nodes < 1:
            raise ValueError("num_nodes must be at least 1")
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            # The API refuses such a cluster already; this is the last line of defence, before
            # anything is made: ~930 node servers once took the whole machine down.
            capacity = local_node_capacity(self.max_nodes, running=self._running_nodes(cdir))
            if num_nodes > capacity.nodes:
                raise InvalidProviderRequest(f"num_nodes: {capacity.refusal(num_nodes)}")
            _mkdir(cdir, 0o711)
            return await self._ensure_nodes(cluster, list(range(num_nodes)), None)

    async def start(self, cluster: str, region: str | None) -> Provisioned:
        """Start every node of a stopped cluster on its home directory (ports may change,
        IPs and host keys do not); running nodes are left alone."""
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            ranks = self._ranks(cdir)
            if not ranks:
                raise ClusterNotFound(f"local cluster {cluster!r} does not exist")
            return await self._ensure_nodes(cluster, ranks, region)

    async def stop(self, cluster: str, region: str | None) -> None:
        """Stop every node as a VM stops: node servers, the commands they run and every
        detached job under the nodes' homes are killed; disks (homes) stay."""
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            await self._stop_nodes(cdir)

    async def terminate(self, cluster: str, region: str | None) -> None:
        """Stop the cluster and delete its directory. Safe on a cluster already gone."""
        cdir = self._cluster_dir(cluster)
        async with self._cluster_lock(cluster):
            if cdir.exists():
                await self._stop_nodes(cdir)
                name = self._recorded_user(cdir)
                if name is not None:
                    # Before the directory goes: its cluster.json is how a retry finds the user.
                    await asyncio.to_thread(users.remove_user, name, lock=self._users_lock)
                await asyncio.to_thread(shutil.rmtree, cdir, True)

    async def describe_nodes(self, cluster: str, region: str | None) -> list[dict[str, Any]]:
        """One dict per node found on disk: rank, ip, pid, alive (its server process runs),
        endpoint (or None), home."""
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
                    "failsafe_fired": failsafe.fired(ndir),
                }
            )
        return out

    async def set_failsafe(self, cluster: str, region: str | None, nodes: list[dict[str, Any]],
                           deadline: float | None, grace: float, down: bool) -> dict[str, Any]:
        """Write each node's failsafe deadline beside it (None: remove it); report the
        nodes whose server already acted on its own (``failsafe_fired.json``)."""
        cdir = self._cluster_dir(cluster)
        fired: list[int] = []
        actions: set[str] = set()
        for rank in self._ranks(cdir):
            ndir = self._node_dir(cdir, rank)
            done = failsafe.fired(ndir)
            if done is not None:
                fired.append(rank)
                actions.add(str(done.get("action") or "stop"))
                continue
            await asyncio.to_thread(failsafe.write, ndir, deadline, grace, "terminate" if down else "stop")
        action = None if not fired else "terminated" if actions == {"terminate"} else "stopped"
        return {"fired": fired, "action": action}

    async def check(self, region: str | None) -> tuple[bool, str]:
        most = f"at most {local_node_capacity(self.max_nodes).nodes} nodes per cluster now"
        if self.isolate:
            return True, f"local SSH nodes on loopback under {self.root}; jobs run as a per-cluster user; {most}"
        return True, (f"local SSH nodes on loopback under {self.root}; jobs run as {self.user} "
                      f"(not isolated from Styx); {most}")

    # -- beyond the protocol -----------------------------------------------------------

    def list_clusters(self) -> list[str]:
        """Names of the clusters that have a directory under ``root``."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and ClusterName.PATTERN.fullmatch(p.name)
        )

    # -- paths and files ---------------------------------------------------------------

    def _cluster_dir(self, cluster: str) -> Path:
        return self.root / ClusterName(cluster)

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

    def _running_nodes(self, cdir: Path) -> int:
        """Nodes of the cluster whose server wrote its ready file (they hold memory already)."""
        return sum((self._node_dir(cdir, r) / "ready.json").exists() for r in self._ranks(cdir))

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

    @property
    def _users_lock(self) -> Path:
        return self.root / ".users.lock"

    def _recorded_user(self, cdir: Path) -> str | None:
        info = self._read_json(cdir / "cluster.json")
        name = info.get("user") if info else None
        return str(name) if name else None

    def _job_user(self, cluster: str, cdir: Path) -> JobUser | None:
        """The cluster's job user, made if the cluster has none yet and ``isolate`` is on
        (a cluster that has one keeps it: it is a property of the cluster, not of the
        provider). None: jobs run as the node server's own user."""
        name = self._recorded_user(cdir)
        if name is None:
            if not self.isolate:
                return None
            name = users.job_user_name(self.root, cluster)
        if not procs.can_switch_user():
            raise ProvisionError(f"local cluster {cluster!r} runs its jobs as {name}, which needs "
                                 "Styx to run as root on Linux")
        _check_traversable(cdir, name)
        try:
            user = users.ensure_user(name, cluster, lock=self._users_lock)
        except users.UserError as err:
            raise ProvisionError(str(err)) from None
        if self._recorded_user(cdir) != name:
            atomic_write(cdir / "cluster.json", json.dumps({"user": name}).encode(), 0o600)
        return user

    def _cluster_lock(self, cluster: str) -> contextlib.AbstractAsyncContextManager[None]:
        # A file next to the cluster directories (not in them: terminate removes those),
        # so that iterating the root's directories finds clusters only.
        if not self.root.exists():
            _mkdir(self.root, 0o711)  # job users must be able to pass through it
        return async_flock(self.root / f".{cluster}.lock", self._locks.setdefault(cluster, asyncio.Lock()))

    def _prepare_node(self, cluster: str, ndir: Path, rank: int, user: JobUser | None) -> str:
        """Create the node's directory, home, keys and authorized_keys; returns its IP.

        Nothing here writes inside the home: with a job user that is the user's ground
        (a symlink planted there must not steer a root write), so Styx's key is kept in
        the node's own directory."""
        _mkdir(ndir, 0o711)
        _ensure_home(ndir / "home", user)
        auth = ndir / "authorized_keys"
        if not auth.exists() or auth.read_text().strip() != self.client_pubkey:
            atomic_write(auth, f"{self.client_pubkey}\n".encode(), 0o600)
        key_path = ndir / "host_key"
        if not key_path.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"styx-{cluster}-{rank}")
            atomic_write(ndir / "host_key.pub", key.export_public_key(), 0o644)
            atomic_write(key_path, key.export_private_key(), 0o600)
        info = self._read_json(ndir / "node.json")
        if info and info.get("ip"):
            return str(info["ip"])
        ip = _loopback_ip(cluster, rank)
        if not _can_bind(ip):
            ip = "127.0.0.1"
        atomic_write(ndir / "node.json", json.dumps({"rank": rank, "ip": ip}).encode(), 0o600)
        return ip

    # -- processes ---------------------------------------------------------------------

    def _server_pids(self, ndir: Path) -> list[int]:
        """Live node-server processes serving this node's home."""
        home = str(ndir / "home")
        pids = []
        for pid, argv in procs.scan_cmdlines():
            if "styx.providers.local.nodeserver" in argv and procs.arg_after(argv, "--home") == home:
                if procs.alive(pid):
                    pids.append(pid)
        if pids or procs.HAVE_PROC:
            return pids
        ready = self._read_json(ndir / "ready.json")  # no /proc (macOS): trust the file
        if ready and procs.alive(int(ready["pid"])):
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

    def _spawn(self, ndir: Path, ip: str, user: JobUser | None) -> subprocess.Popen[bytes]:
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
            "--authorized-keys", str(ndir / "authorized_keys"),
            "--log-level", "WARNING",
            "--failsafe-file", str(ndir / failsafe.DEADLINE_FILE),
            "--failsafe-interval", str(self.failsafe_interval),
        ]  # fmt: skip
        failsafe.clear(ndir)  # a node started afresh: the workflow pushes its deadline again
        if user is not None:
            argv += ["--run-as", user.name]
            for port in self.deny_ports:
                argv += ["--deny-port", str(port)]
        log_fd = os.open(ndir / "server.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                # -m styx.providers.local.nodeserver must import the same styx as this worker.
                cwd=Path(styx.__file__).resolve().parent.parent,
                # What a fresh login gets, whatever this (private, 077) worker's umask is.
                umask=0o022,
            )
        self._children[proc.pid] = proc
        return proc

    async def _wait_ready(self, ndir: Path, pid: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            ready = self._read_json(ndir / "ready.json")
            if ready and int(ready.get("pid", -1)) == pid:
                if await _answers_ssh(ready["host"], int(ready["port"])):
                    atomic_write(
                        ndir / "last_port.json",
                        json.dumps({"port": int(ready["port"])}).encode(),
                        0o600,
                    )
                    return ready
            self._reap()
            if not procs.alive(pid):
                break
            await asyncio.sleep(0.02)
        procs.kill(pid, signal.SIGKILL)
        self._reap()
        raise NodeStartFailed(
            f"node server {ndir.name} (pid {pid}) did not come up:\n{_tail(ndir / 'server.log')}"
        )

    async def _ensure_node(self, cluster: str, cdir: Path, rank: int, user: JobUser | None) -> NodeEndpoint:
        ndir = self._node_dir(cdir, rank)
        ip = self._prepare_node(cluster, ndir, rank, user)
        pids = self._server_pids(ndir)
        ready = self._read_json(ndir / "ready.json")
        keep = None
        if ready and int(ready.get("pid", -1)) in pids:
            keep = int(ready["pid"])
        elif len(pids) == 1:
            keep = pids[0]  # started by an attempt that died before the server was ready
        for pid in pids:
            if pid != keep:
                procs.kill(pid, signal.SIGKILL)
        if keep is not None:
            try:
                ready = await self._wait_ready(ndir, keep)
                return self._endpoint(ndir, rank, ready)
            except NodeStartFailed:
                pass  # killed by _wait_ready: start a fresh one below
        proc = self._spawn(ndir, ip, user)
        ready = await self._wait_ready(ndir, proc.pid)
        return self._endpoint(ndir, rank, ready)

    async def _ensure_nodes(self, cluster: str, ranks: list[int], region: str | None) -> Provisioned:
        cdir = self._cluster_dir(cluster)
        user = await asyncio.to_thread(self._job_user, cluster, cdir)
        nodes = await asyncio.gather(*(self._ensure_node(cluster, cdir, r, user) for r in ranks))
        return Provisioned(nodes=[n.to_dict() for n in nodes], region=region)

    async def _stop_nodes(self, cdir: Path) -> None:
        ndirs = [self._node_dir(cdir, r) for r in self._ranks(cdir)]
        # 1. Servers first, so no new command starts; they kill their sessions' commands.
        servers = [pid for ndir in ndirs for pid in self._server_pids(ndir)]
        for pid in servers:
            procs.kill(pid, signal.SIGTERM)
        await self._wait_gone(lambda: [p for p in servers if procs.alive(p)], self.stop_grace)
        for pid in servers:
            procs.kill(pid, signal.SIGKILL)
        # 2. Everything else that lives on the nodes: with a job user, every process of that
        #    user (whatever it did to its environment); without, detached jobs (by the
        #    process groups in their pid files) and any process whose HOME is a node's home.
        homes = [str(ndir / "home") for ndir in ndirs]
        name = self._recorded_user(cdir)
        user = users.lookup(name) if name else None

        def leftovers() -> list[int]:
            if user is not None:
                return procs.processes_of_user(user.uid)
            return procs.processes_of(homes, procs.job_groups(homes))

        for pid in leftovers():
            procs.kill(pid, signal.SIGTERM)
        await self._wait_gone(leftovers, 1.0)
        for pid in leftovers():
            procs.kill(pid, signal.SIGKILL)
        await self._wait_gone(lambda: leftovers() + [p for p in servers if procs.alive(p)], 5.0)
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
# Helpers (directories, addresses, logs)


def _mkdir(path: Path, mode: int) -> None:
    """``path`` and its missing parents, each created with ``mode`` (not the umask's), and
    ``path`` itself set to ``mode``."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        os.chmod(d, mode)
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


def _ensure_home(home: Path, user: JobUser | None) -> None:
    """The node's home: 0700, owned by the job user if there is one. A home the user does
    not own yet (a cluster made before it had a job user) is handed over whole."""
    with contextlib.suppress(FileExistsError):
        home.mkdir(mode=0o700)
    st = home.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ProvisionError(f"{home} is not a directory")
    if user is not None and (st.st_uid, st.st_gid) != (user.uid, user.gid):
        _chown_tree(home, user)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(home, 0o700)


def _chown_tree(top: Path, user: JobUser) -> None:
    os.lchown(top, user.uid, user.gid)
    for dirpath, dirnames, filenames in os.walk(top):  # does not follow symlinks
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), user.uid, user.gid)


def _check_traversable(cdir: Path, user: str) -> None:
    """A job user must be able to walk from / to its home: every directory above the
    cluster's must let others search it."""
    for d in [cdir.parent, *cdir.parent.parents]:
        try:
            mode = d.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            raise ProvisionError(
                f"jobs run as {user} could not reach their node homes under {cdir.parent}: "
                f"{d} is mode {stat.S_IMODE(mode):04o}; set STYX_LOCAL_NODES_DIR to a directory "
                "on a path every user may traverse (the default is /var/lib/styx/<deployment>/nodes)")


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
