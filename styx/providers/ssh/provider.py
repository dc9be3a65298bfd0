"""The SSH-pool provider: clusters on machines the user already has, reached over plain SSH.

Pools are defined in ``STYX_HOME/ssh_pools.yaml`` and chosen with ``infra: ssh/<pool>``::

    lab:
      user: ubuntu                        # default for the hosts (default: the local user)
      identity_file: ~/.ssh/id_ed25519    # optional, see "Keys" below
      port: 22                            # optional default
      hosts:
        - 10.0.0.5                        # plain host
        - {host: 10.0.0.6, port: 2222, user: admin, host_key: "ssh-ed25519 AAAA…"}
      jump_host: {host: bastion, port: 22, user: ubuntu}   # optional

Reservations
------------
A host serves one cluster at a time. ``STYX_HOME/ssh_reservations.json`` maps each cluster
to the hosts it holds (in rank order), and is only read-modified-written under an ``fcntl``
lock on ``ssh_reservations.json.lock``, so two clusters never get the same host even when
two worker processes provision at once. A host is identified by ``host:port`` (plus the jump
host, if any), so two pools that list the same machine still share one reservation.

Owning a machine is not owning a VM: ``stop`` cannot power it off. Here **stop kills every
Styx job on the hosts and keeps the reservation** (the files stay); ``start`` checks the
hosts again; ``terminate`` kills the jobs, deletes Styx's directories on the hosts
(``~/.styx/jobs``, ``~/styx_workdir``) and releases the reservation. Unreachable hosts
are skipped (with a warning) by ``stop`` and ``terminate`` so that a dead machine cannot
keep a cluster alive forever. To make that safe, ``provision`` writes
``~/.styx/pool_owner`` (cluster and reservation token) on each host and, when it finds
another owner there, first kills and deletes what that owner left: job ids restart at 1
for every cluster, so a stale ``~/.styx/jobs/1`` would otherwise be re-attached to.

A pool host must not be the Styx server's own ``STYX_HOME`` (``localhost`` with the same
user and the default ``~/.styx``): Styx keeps job logs in ``STYX_HOME/jobs``, which
``terminate`` would delete. ``provision`` detects that case (a random id in
``STYX_HOME/ssh_pool_home_id``) and refuses the host.

Keys
----
Host keys are trusted on first use and recorded in ``STYX_HOME/ssh_known_hosts`` (OpenSSH
format, ``[host]:port`` unless the port is 22), unless the pool entry gives ``host_key``.
A changed key fails the check; delete the host's line from that file if the change is
expected. The returned ``NodeEndpoint.host_key`` is the key the host presented, so every
later connection is pinned to it.

Jobs are run by the SSH activities with Styx's own client key. With ``identity_file``,
``provision`` logs in with that key and **appends Styx's public key to the host's
``~/.ssh/authorized_keys``** (once), then checks that Styx's key logs in. Without it,
Styx's key (``STYX_HOME/ssh/id_ed25519.pub``) must already be authorized on the hosts.

Example::

    provider = SshPoolProvider(settings.home, ensure_client_key(key_path))
    nodes = await provider.provision("train", 2, "lab")   # -> [NodeEndpoint, NodeEndpoint]
    await provider.terminate("train")
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import asyncssh
import yaml

from styx.files import async_flock
from styx.ssh import (
    CommandTimeout,
    NodeEndpoint,
    NodeUnreachable,
    RemoteCommandFailed,
    kill_phase,
    public_key_line,
    run,
)

__all__ = [
    "HostUnreachable",
    "PoolConfigError",
    "PoolExhausted",
    "ReservationConflict",
    "ReservationNotFound",
    "SshPoolError",
    "SshPoolProvider",
]

log = logging.getLogger("styx.sshpool")

POOLS_FILE = "ssh_pools.yaml"
RESERVATIONS_FILE = "ssh_reservations.json"
KNOWN_HOSTS_FILE = "ssh_known_hosts"
HOME_ID_FILE = "ssh_pool_home_id"
#: On each host, relative to its home: which cluster (and reservation) owns the host.
OWNER_FILE = ".styx/pool_owner"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOST_FIELDS = ("host", "port", "user", "host_key")
_POOL_FIELDS = ("user", "identity_file", "port", "hosts", "jump_host")

#: Commands run on a host in parallel (stock sshd allows 10 sessions per connection).
_PARALLEL_COMMANDS = 4
_COMMAND_TIMEOUT = 60.0

# ---------------------------------------------------------------------------------------
# Errors


class SshPoolError(Exception):
    """Base of the SSH-pool provider's errors."""


class PoolConfigError(SshPoolError, ValueError):
    """``ssh_pools.yaml`` is missing or wrong, or names no such pool. Not retryable."""


class PoolExhausted(SshPoolError):
    """The pool has fewer free hosts than the cluster needs.

    ``free`` counts the free hosts; ``busy`` maps each busy ``host:port`` to its cluster.
    """

    def __init__(self, message: str, free: int, busy: dict[str, str]) -> None:
        super().__init__(message)
        self.free = free
        self.busy = busy


class HostUnreachable(SshPoolError):
    """A reserved host failed its check (no answer, key refused, host key changed …).

    ``host`` and ``port`` name the first host that failed; the message names all of them.
    Retrying does not fix this: the configuration or the machine needs a human.
    """

    def __init__(self, message: str, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class ReservationConflict(SshPoolError):
    """The cluster already holds hosts of another pool, or another number of hosts."""


class ReservationNotFound(SshPoolError, LookupError):
    """``start`` of a cluster that holds no hosts (never provisioned, or terminated)."""


# ---------------------------------------------------------------------------------------
# The pool file


@dataclass(frozen=True)
class SshTarget:
    """One SSH login: a pool host or a jump host."""

    host: str
    port: int
    user: str
    host_key: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "host_key": self.host_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SshTarget:
        return cls(str(data["host"]), int(data["port"]), str(data["user"]), data.get("host_key"))


@dataclass(frozen=True)
class Pool:
    name: str
    hosts: tuple[SshTarget, ...]
    identity_file: str | None = None
    jump_host: SshTarget | None = None

    def host_id(self, host: SshTarget) -> str:
        """What a reservation is keyed by: the machine, whatever pool lists it."""
        if self.jump_host is None:
            return host.address
        return f"{host.address} via {self.jump_host.address}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _PoolParser:
    """Turns the YAML document into ``Pool`` values, with errors that name the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> PoolConfigError:
        return PoolConfigError(f"{self.path}: {where} {problem}")

    def parse(self, text: str) -> dict[str, Pool]:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise PoolConfigError(f"{self.path}: not valid YAML{where}: {problem}") from None
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise PoolConfigError(
                f"{self.path}: must be a mapping of pool names to pools, got {type(doc).__name__}"
            )
        pools = {}
        for name, body in doc.items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise PoolConfigError(
                    f"{self.path}: pool name {name!r} is invalid: use letters, digits, '.', '_', '-'"
                )
            pools[name] = self.pool(name, body)
        return pools

    def pool(self, name: str, body: Any) -> Pool:
        if not isinstance(body, dict):
            raise self.fail(name, "must be a mapping with a 'hosts' list")
        self.no_unknown(name, body, _POOL_FIELDS)
        user = self.string(f"{name}.user", body.get("user"), default=getpass.getuser())
        port = self.port(f"{name}.port", body.get("port"), default=22)
        identity = None
        if body.get("identity_file") is not None:
            identity = self.string(f"{name}.identity_file", body["identity_file"])
        jump = None
        if body.get("jump_host") is not None:
            jump = self.target(f"{name}.jump_host", body["jump_host"], user, 22)
        hosts_raw = body.get("hosts")
        if hosts_raw is None:
            raise self.fail(f"{name}.hosts", "is missing (a list of hosts)")
        if not isinstance(hosts_raw, list) or not hosts_raw:
            raise self.fail(f"{name}.hosts", "must be a non-empty list")
        hosts: list[SshTarget] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(hosts_raw):
            where = f"{name}.hosts[{i}]"
            host = self.target(where, raw, user, port)
            if host.address in seen:
                first = f"{name}.hosts[{seen[host.address]}]"
                raise self.fail(where, f"is {host.address} again (already {first})")
            seen[host.address] = i
            hosts.append(host)
        return Pool(name, tuple(hosts), identity, jump)

    def target(self, where: str, raw: Any, user: str, port: int) -> SshTarget:
        if isinstance(raw, str):
            return SshTarget(self.hostname(where, raw), port, user)
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a host name or a mapping with 'host'")
        self.no_unknown(where, raw, _HOST_FIELDS)
        if raw.get("host") is None:
            raise self.fail(f"{where}.host", "is missing")
        host = self.hostname(f"{where}.host", raw["host"])
        key = None
        if raw.get("host_key") is not None:
            key = self.host_key(f"{where}.host_key", raw["host_key"])
        return SshTarget(
            host,
            self.port(f"{where}.port", raw.get("port"), default=port),
            self.string(f"{where}.user", raw.get("user"), default=user),
            key,
        )

    def no_unknown(self, where: str, body: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in body:
            if key not in allowed:
                expected = ", ".join(allowed)
                raise self.fail(f"{where}.{key}", f"is not a known field (expected: {expected})")

    def string(self, where: str, value: Any, default: str | None = None) -> str:
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def hostname(self, where: str, value: Any) -> str:
        host = self.string(where, value)
        if any(c.isspace() for c in host) or host.startswith("-") or "@" in host:
            raise self.fail(where, f"is not a host name or address: {host!r}")
        return host

    def port(self, where: str, value: Any, default: int) -> int:
        if value is None:
            return default
        if not _is_int(value):
            raise self.fail(where, f"must be an integer, got {value!r}")
        if not 0 < value < 65536:
            raise self.fail(where, f"must be between 1 and 65535, got {value}")
        return int(value)

    def host_key(self, where: str, value: Any) -> str:
        text = self.string(where, value)
        try:
            key = asyncssh.import_public_key(text)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise self.fail(where, f"is not an OpenSSH public key ({exc})") from None
        return _key_line(key)


def _key_line(key: asyncssh.SSHKey) -> str:
    """``"ssh-ed25519 AAAA…"``: a public key without its comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


# ---------------------------------------------------------------------------------------
# Files on the Styx side


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing). Blocks: call in a thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


@dataclass
class _Reservation:
    cluster: str
    pool: str
    token: str
    hosts: list[SshTarget]
    host_ids: list[str]
    identity_file: str | None
    jump_host: SshTarget | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "token": self.token,
            "hosts": [{"id": i, **h.to_dict()} for i, h in zip(self.host_ids, self.hosts)],
            "identity_file": self.identity_file,
            "jump_host": self.jump_host.to_dict() if self.jump_host else None,
            "reserved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    @classmethod
    def from_dict(cls, cluster: str, data: Mapping[str, Any]) -> _Reservation:
        jump = data.get("jump_host")
        return cls(
            cluster=cluster,
            pool=str(data["pool"]),
            token=str(data["token"]),
            hosts=[SshTarget.from_dict(h) for h in data["hosts"]],
            host_ids=[str(h["id"]) for h in data["hosts"]],
            identity_file=data.get("identity_file"),
            jump_host=SshTarget.from_dict(jump) if jump else None,
        )

    @property
    def owner_mark(self) -> str:
        return f"{self.cluster} {self.token}"


# ---------------------------------------------------------------------------------------
# The provider


class SshPoolProvider:
    """Clusters made of hosts reserved from the pools in ``home/ssh_pools.yaml``.

    Same method shape as ``LocalProvider`` (plus the pool name for ``provision``); every
    method is idempotent and safe to call from several worker processes at once.
    ``client_key`` is Styx's own SSH key, the one the SSH activities log in with.
    """

    def __init__(
        self,
        home: Path,
        client_key: asyncssh.SSHKey,
        *,
        connect_timeout: float = 10,
        kill_grace: float = 5.0,
    ) -> None:
        self.home = Path(home).expanduser()
        self.client_key = client_key
        self.connect_timeout = connect_timeout
        self.kill_grace = kill_grace
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def pools_file(self) -> Path:
        return self.home / POOLS_FILE

    @property
    def reservations_file(self) -> Path:
        return self.home / RESERVATIONS_FILE

    @property
    def known_hosts_file(self) -> Path:
        return self.home / KNOWN_HOSTS_FILE

    # -- public API --------------------------------------------------------------------

    async def provision(self, cluster: str, num_nodes: int, pool: str) -> list[NodeEndpoint]:
        """Reserve ``num_nodes`` free hosts of ``pool`` for ``cluster`` and check each
        answers over SSH; returns their endpoints in rank order.

        A retried call returns the hosts already reserved. Raises ``PoolConfigError`` (bad
        file, unknown pool), ``PoolExhausted`` (not enough free hosts),
        ``ReservationConflict`` (the cluster holds other hosts) and ``HostUnreachable`` (a
        host failed its check: the cluster's reservation is then released).
        """
        _check_cluster(cluster)
        if not _is_int(num_nodes) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
        spec = self._pool(pool)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self._reserve, cluster, spec, num_nodes)
            try:
                return await self._check_all(res)
            except Exception:
                await asyncio.to_thread(self._release, cluster, res.token)
                raise

    async def start(self, cluster: str) -> list[NodeEndpoint]:
        """Check the cluster's hosts again and return their endpoints. The reservation is
        kept even if a host fails (``HostUnreachable``): start again once it is back."""
        _check_cluster(cluster)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self._reservation, cluster)
            if res is None:
                raise ReservationNotFound(f"SSH-pool cluster {cluster!r} holds no hosts")
            return await self._check_all(res)

    async def stop(self, cluster: str) -> None:
        """Kill every Styx job on the cluster's hosts; the hosts stay reserved (a machine
        you own is not powered off). Hosts that cannot be reached are skipped."""
        _check_cluster(cluster)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self._reservation, cluster)
            if res is not None:
                await self._on_all(res, "stop", lambda conn: self._kill_jobs(conn))

    async def terminate(self, cluster: str) -> None:
        """Kill the jobs, delete ``~/.styx/jobs`` and ``~/styx_workdir`` on the hosts and
        release them. Hosts that cannot be reached are skipped (and released). A cluster
        that holds no hosts is a no-op."""
        _check_cluster(cluster)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self._reservation, cluster)
            if res is None:
                return
            await self._on_all(res, "terminate", lambda conn: self._wipe(conn, None))
            await asyncio.to_thread(self._release, cluster, res.token)

    def list_pools(self) -> dict[str, dict[str, Any]]:
        """Every pool with its hosts and who holds them::

            {"lab": {"total": 2, "free": 1, "identity_file": None, "jump_host": None,
                     "hosts": [{"host": "10.0.0.5", "port": 22, "user": "ubuntu",
                                "cluster": "train"}, …]}}

        ``{}`` if the pool file does not exist; ``PoolConfigError`` if it is wrong.
        """
        pools = self._load_pools(missing_ok=True)
        holders = self._holders(self._read_reservations())
        out: dict[str, dict[str, Any]] = {}
        for name, pool in pools.items():
            hosts = []
            for h in pool.hosts:
                hosts.append({"host": h.host, "port": h.port, "user": h.user,
                              "cluster": holders.get(pool.host_id(h))})
            out[name] = {
                "total": len(hosts),
                "free": sum(1 for h in hosts if h["cluster"] is None),
                "identity_file": pool.identity_file,
                "jump_host": pool.jump_host.to_dict() if pool.jump_host else None,
                "hosts": hosts,
            }
        return out

    def check(self) -> tuple[bool, str]:
        """Whether the pool file exists and parses; the message says what was found."""
        if not self.pools_file.exists():
            return False, f"{self.pools_file} does not exist (no SSH pools defined)"
        try:
            pools = self._load_pools()
        except PoolConfigError as exc:
            return False, str(exc)
        if not pools:
            return False, f"{self.pools_file} defines no pools"
        summary = ", ".join(
            f"{name} ({len(p.hosts)} host{'' if len(p.hosts) == 1 else 's'})"
            for name, p in pools.items()
        )
        return True, f"{len(pools)} SSH pool(s): {summary}"

    # -- pools and reservations (sync: run in a thread when called from async code) ----

    def _load_pools(self, missing_ok: bool = False) -> dict[str, Pool]:
        try:
            text = self.pools_file.read_text()
        except FileNotFoundError:
            if missing_ok:
                return {}
            raise PoolConfigError(
                f"{self.pools_file} does not exist: define SSH pools there "
                "(see styx.providers.ssh.provider)"
            ) from None
        except OSError as exc:
            raise PoolConfigError(f"{self.pools_file}: cannot read: {exc}") from None
        return _PoolParser(self.pools_file).parse(text)

    def _pool(self, name: str) -> Pool:
        pools = self._load_pools()
        if name not in pools:
            known = ", ".join(sorted(pools)) or "none"
            raise PoolConfigError(f"no SSH pool {name!r} in {self.pools_file} (known pools: {known})")
        return pools[name]

    def _read_reservations(self) -> dict[str, Any]:
        try:
            data = json.loads(self.reservations_file.read_text())
        except FileNotFoundError:
            return {"version": 1, "clusters": {}}
        except (OSError, ValueError) as exc:
            # Never start over from an empty table: that would hand out busy hosts.
            raise SshPoolError(
                f"{self.reservations_file} is unreadable ({exc}); fix or remove it by hand"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("clusters"), dict):
            raise SshPoolError(f"{self.reservations_file} has no 'clusters' mapping; fix it by hand")
        return data

    @contextlib.contextmanager
    def _reservations_locked(self) -> Iterator[dict[str, Any]]:
        """The reservation table, locked; written back (atomically) if the block ends
        without an exception."""
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / f"{RESERVATIONS_FILE}.lock"):
            data = self._read_reservations()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                _write_atomic(self.reservations_file, json.dumps(data, indent=2).encode())

    @staticmethod
    def _holders(data: Mapping[str, Any]) -> dict[str, str]:
        """host id -> cluster holding it."""
        return {
            str(h["id"]): name
            for name, res in data["clusters"].items()
            for h in res.get("hosts", [])
        }

    def _reservation(self, cluster: str) -> _Reservation | None:
        raw = self._read_reservations()["clusters"].get(cluster)
        return _Reservation.from_dict(cluster, raw) if raw else None

    def _reserve(self, cluster: str, pool: Pool, num_nodes: int) -> _Reservation:
        with self._reservations_locked() as data:
            raw = data["clusters"].get(cluster)
            if raw:
                res = _Reservation.from_dict(cluster, raw)
                if res.pool != pool.name or len(res.hosts) != num_nodes:
                    raise ReservationConflict(
                        f"cluster {cluster!r} already holds {len(res.hosts)} host(s) of pool "
                        f"{res.pool!r}; asked for {num_nodes} of {pool.name!r} (down it first)"
                    )
                return res
            holders = self._holders(data)
            free = [h for h in pool.hosts if pool.host_id(h) not in holders]
            if len(free) < num_nodes:
                busy = {
                    h.address: holders[pool.host_id(h)]
                    for h in pool.hosts if pool.host_id(h) in holders
                }
                by_whom = ", ".join(f"{a} (cluster {c!r})" for a, c in busy.items()) or "none"
                raise PoolExhausted(
                    f"SSH pool {pool.name!r} has {len(free)} free host(s) of {len(pool.hosts)}, "
                    f"cluster {cluster!r} needs {num_nodes}; busy: {by_whom}",
                    free=len(free), busy=busy,
                )
            chosen = free[:num_nodes]
            res = _Reservation(
                cluster=cluster,
                pool=pool.name,
                token=secrets.token_hex(8),
                hosts=chosen,
                host_ids=[pool.host_id(h) for h in chosen],
                identity_file=pool.identity_file,
                jump_host=pool.jump_host,
            )
            data["clusters"][cluster] = res.to_dict()
            return res

    def _release(self, cluster: str, token: str) -> None:
        """Drop the cluster's reservation if it is still the one with ``token``."""
        with self._reservations_locked() as data:
            raw = data["clusters"].get(cluster)
            if raw and raw.get("token") == token:
                del data["clusters"][cluster]

    def _home_id(self) -> str:
        """A random id in ``STYX_HOME``: seen through SSH, it means a host's ``~/.styx``
        is this Styx server's home."""
        path = self.home / HOME_ID_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(16) + "\n")
        try:
            os.link(tmp, path)  # first writer wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()

    # -- host keys -----------------------------------------------------------------------

    def _known_keys(self, target: SshTarget) -> list[str]:
        """Keys recorded for ``target`` (exact name match, no wildcards or hashes)."""
        if target.host_key:
            return [target.host_key]
        name = _known_hosts_name(target.host, target.port)
        try:
            lines = self.known_hosts_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        keys = []
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
                continue
            if name in fields[0].split(","):
                key = f"{fields[1]} {fields[2]}"
                try:
                    asyncssh.import_public_key(key)
                except (asyncssh.KeyImportError, ValueError):
                    raise SshPoolError(
                        f"{self.known_hosts_file}:{number}: not an OpenSSH public key; fix or "
                        "delete the line"
                    ) from None
                keys.append(key)
        return keys

    def _remember_key(self, target: SshTarget, key: str) -> None:
        """Record a first-seen host key; raises if another one was recorded meanwhile."""
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / f"{KNOWN_HOSTS_FILE}.lock"):
            known = self._known_keys(target)
            if key in known:
                return
            if known:
                raise asyncssh.HostKeyNotVerifiable(
                    f"another host key was recorded for {target.address} meanwhile"
                )
            name = _known_hosts_name(target.host, target.port)
            with open(self.known_hosts_file, "a") as f:
                f.write(f"{name} {key}\n")

    # -- connections ---------------------------------------------------------------------

    def _client_keys(self, res: _Reservation, styx_only: bool) -> list[asyncssh.SSHKey]:
        keys = [self.client_key]
        if res.identity_file and not styx_only:
            path = Path(res.identity_file).expanduser()
            try:
                keys.append(asyncssh.read_private_key(str(path)))
            except (OSError, asyncssh.KeyImportError) as exc:
                raise PoolConfigError(
                    f"{self.pools_file}: {res.pool}.identity_file: cannot load {path}: {exc}"
                ) from None
        return keys

    async def _connect_one(
        self,
        target: SshTarget,
        keys: list[asyncssh.SSHKey],
        tunnel: asyncssh.SSHClientConnection | None,
    ) -> tuple[asyncssh.SSHClientConnection, str]:
        """Connect with host-key pinning (or trust on first use); returns the connection
        and the host key the server presented."""
        known = await asyncio.to_thread(self._known_keys, target)
        known_hosts: Any = None
        if known:
            known_hosts = ([asyncssh.import_public_key(k) for k in known], [], [])
        conn = await asyncssh.connect(
            target.host,
            target.port,
            tunnel=tunnel,
            username=target.user,
            client_keys=keys,
            known_hosts=known_hosts,
            agent_path=None,
            config=None,
            preferred_auth="publickey",
            connect_timeout=self.connect_timeout,
        )
        try:
            server_key = conn.get_server_host_key()
            if server_key is None:  # pragma: no cover - only without host key algorithms
                raise asyncssh.HostKeyNotVerifiable(f"{target.address} presented no host key")
            line = _key_line(server_key)
            if not known:
                await asyncio.to_thread(self._remember_key, target, line)
        except BaseException:
            conn.close()
            raise
        return conn, line

    @contextlib.asynccontextmanager
    async def _open(
        self, res: _Reservation, target: SshTarget, *, styx_only: bool = False
    ) -> AsyncIterator[tuple[asyncssh.SSHClientConnection, str]]:
        """A connection to ``target`` (through the jump host if any) and its host key.

        Connection failures (not auth or host key ones) are retried once after 0.5 s.
        """
        keys = self._client_keys(res, styx_only)
        opened: list[asyncssh.SSHClientConnection] = []
        try:
            for attempt in (1, 2):
                try:
                    tunnel = None
                    if res.jump_host is not None:
                        tunnel, _ = await self._connect_one(res.jump_host, keys, None)
                        opened.append(tunnel)
                    conn, key = await self._connect_one(target, keys, tunnel)
                    opened.append(conn)
                    break
                except (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable):
                    raise
                except (OSError, asyncio.TimeoutError, asyncssh.Error):
                    await _close_all(opened)
                    opened.clear()
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5)
            yield conn, key
        finally:
            await _close_all(opened)

    # -- checks ------------------------------------------------------------------------

    async def _check_all(self, res: _Reservation) -> list[NodeEndpoint]:
        home_id = await asyncio.to_thread(self._home_id)
        results = await asyncio.gather(
            *(self._check_host(res, rank, home_id) for rank in range(len(res.hosts))),
            return_exceptions=True,
        )
        failed = [(res.hosts[i], r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        for _, exc in failed:
            if not isinstance(exc, HostUnreachable):
                raise exc  # a configuration error or a cancellation: not the host's fault
        if failed:
            first_host, first = failed[0]
            message = "; ".join(str(e) for _, e in failed)
            raise HostUnreachable(message, first_host.host, first_host.port) from first
        return [r for r in results if isinstance(r, NodeEndpoint)]

    async def _check_host(self, res: _Reservation, rank: int, home_id: str) -> NodeEndpoint:
        """Connect, run ``true``, and claim the host for the cluster (wiping what another
        owner left). Every failure becomes ``HostUnreachable`` naming the host."""
        target = res.hosts[rank]
        via = f" (via jump host {res.jump_host.address})" if res.jump_host else ""
        what = f"host {target.address}{via} of SSH pool {res.pool!r}"
        try:
            if res.identity_file:
                async with self._open(res, target) as (conn, _):
                    await self._authorize_styx_key(conn)
            async with self._open(res, target, styx_only=True) as (conn, host_key):
                await _checked(conn, "true", "true")
                await self._claim(conn, res, target, home_id, what)
        except HostUnreachable:
            raise
        except asyncssh.PermissionDenied as exc:
            keys = "Styx's key" + (f" or {res.identity_file}" if res.identity_file else "")
            raise HostUnreachable(
                f"{what} refused {keys} for user {target.user!r} ({exc.reason}); authorize "
                f"{public_key_line(self.client_key)!r} in its ~/.ssh/authorized_keys"
                + ("" if res.identity_file else " or set identity_file in the pool"),
                target.host, target.port,
            ) from exc
        except asyncssh.HostKeyNotVerifiable as exc:
            where = "the pool's host_key" if target.host_key else str(self.known_hosts_file)
            raise HostUnreachable(
                f"{what} presented a host key that does not match {where} ({exc.reason}); "
                f"if the change is expected, remove its line from {where}",
                target.host, target.port,
            ) from exc
        except (OSError, asyncio.TimeoutError, asyncssh.Error, NodeUnreachable,
                CommandTimeout, RemoteCommandFailed) as exc:
            raise HostUnreachable(
                f"{what} did not answer over SSH: {_describe(exc)}", target.host, target.port
            ) from exc
        return NodeEndpoint(
            host=target.host, port=target.port, user=target.user, ip=target.host,
            rank=rank, host_key=host_key,
        )

    async def _authorize_styx_key(self, conn: asyncssh.SSHClientConnection) -> None:
        line = public_key_line(self.client_key)
        script = (
            'umask 077; mkdir -p "$HOME/.ssh" && f="$HOME/.ssh/authorized_keys" && '
            f'{{ grep -qxF {shlex.quote(line)} "$f" 2>/dev/null || '
            f'{{ [ ! -s "$f" ] || [ -z "$(tail -c 1 "$f")" ] || echo >> "$f"; '
            f'echo {shlex.quote(line)} >> "$f"; }}; }}'
        )
        await _checked(conn, script, "adding Styx's key to ~/.ssh/authorized_keys")

    async def _claim(
        self,
        conn: asyncssh.SSHClientConnection,
        res: _Reservation,
        target: SshTarget,
        home_id: str,
        what: str,
    ) -> None:
        """Make the host the cluster's: refuse the Styx server's own home, and wipe what
        another owner left before writing ours into ``~/.styx/pool_owner``."""
        probe = (
            f'h="$HOME/.styx"; [ "$(cat "$h/{HOME_ID_FILE}" 2>/dev/null)" = {shlex.quote(home_id)} ]'
            f' && echo SAME_HOME; echo "owner=$(cat "$HOME/{OWNER_FILE}" 2>/dev/null)"'
        )
        out = await _checked(conn, probe, "reading ~/.styx/pool_owner")
        if "SAME_HOME" in out.splitlines():
            raise HostUnreachable(
                f"{what} refused: its ~/.styx is this Styx server's STYX_HOME ({self.home}), "
                "whose job logs terminate would delete; use another user for the pool or "
                "set STYX_HOME elsewhere",
                target.host, target.port,
            )
        owner = next((ln[6:] for ln in out.splitlines() if ln.startswith("owner=")), "")
        if owner.strip() != res.owner_mark:
            await self._wipe(conn, res.owner_mark)

    # -- cleaning ------------------------------------------------------------------------

    async def _job_ids(self, conn: asyncssh.SSHClientConnection) -> list[str]:
        out = await _checked(
            conn, 'ls -1A "$HOME/.styx/jobs" 2>/dev/null; true', "listing ~/.styx/jobs"
        )
        return [name for name in out.split() if _JOB_ID_RE.match(name)]

    async def _kill_jobs(self, conn: asyncssh.SSHClientConnection) -> None:
        """``kill_phase`` on every job dir under ``~/.styx/jobs`` (a few at a time)."""
        jobs = await self._job_ids(conn)
        gate = asyncio.Semaphore(_PARALLEL_COMMANDS)

        async def kill(job_id: str) -> None:
            async with gate:
                await kill_phase(conn, job_id, None, grace=self.kill_grace)

        await asyncio.gather(*(kill(j) for j in jobs))

    async def _wipe(self, conn: asyncssh.SSHClientConnection, new_owner: str | None) -> None:
        """Kill the jobs and delete Styx's directories; then write ``new_owner`` as the
        host's owner (or delete the owner file)."""
        await self._kill_jobs(conn)
        if new_owner is None:
            mark = f'rm -f "$HOME/{OWNER_FILE}"'
        else:
            mark = (
                f'mkdir -p "$HOME/.styx" && printf "%s\\n" {shlex.quote(new_owner)} '
                f'> "$HOME/{OWNER_FILE}.tmp" && mv -f "$HOME/{OWNER_FILE}.tmp" "$HOME/{OWNER_FILE}"'
            )
        await _checked(
            conn, f'rm -rf "$HOME/.styx/jobs" "$HOME/styx_workdir" && {mark}',
            "deleting ~/.styx/jobs and ~/styx_workdir",
        )

    async def _on_all(
        self,
        res: _Reservation,
        what: str,
        action: Callable[[asyncssh.SSHClientConnection], Any],
    ) -> None:
        """Run ``action`` on every host of ``res``; hosts that fail are logged and skipped."""

        async def one(target: SshTarget) -> None:
            try:
                async with self._open(res, target, styx_only=False) as (conn, _):
                    await action(conn)
            except (OSError, asyncio.TimeoutError, asyncssh.Error, NodeUnreachable,
                    CommandTimeout, RemoteCommandFailed, PoolConfigError) as exc:
                log.warning(
                    "%s of cluster %s: skipped host %s of pool %s: %s",
                    what, res.cluster, target.address, res.pool, _describe(exc),
                )

        await asyncio.gather(*(one(h) for h in res.hosts))

    def _cluster_lock(self, cluster: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Serialises operations on one cluster, across coroutines and processes."""
        return async_flock(self.home / "ssh_pool_locks" / f"{cluster}.lock",
                           self._locks.setdefault(cluster, asyncio.Lock()))


# ---------------------------------------------------------------------------------------
# Helpers


def _check_cluster(cluster: str) -> None:
    if not isinstance(cluster, str) or not _NAME_RE.match(cluster):
        raise ValueError(f"invalid cluster name {cluster!r}")


async def _checked(conn: asyncssh.SSHClientConnection, command: str, what: str) -> str:
    status, out, err = await run(conn, command, timeout=_COMMAND_TIMEOUT)
    if status != 0:
        raise RemoteCommandFailed(f"{what} failed with exit status {status}", status, err)
    return out.decode(errors="replace")


async def _close_all(conns: list[asyncssh.SSHClientConnection]) -> None:
    for conn in reversed(conns):
        conn.close()
    for conn in reversed(conns):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 5)


def _describe(exc: BaseException) -> str:
    text = str(exc) or getattr(exc, "reason", "") or ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
