"""The SSH-pool provider: clusters on machines the user already has, reached over plain SSH.

The package's rooms: ``config`` (the pool file, ``ssh_pools.yaml``), ``reservations`` (which
cluster holds which hosts), ``known_hosts`` (host keys, trusted on first use) and ``errors``.
This module holds the provider: checking, claiming and cleaning hosts over SSH.

Stop, start, terminate
----------------------
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
user and the default ``~/.styx``): the Styx server keeps its state there (keys, uploads
cache, the git server's repositories), which ``terminate`` would delete. ``provision`` detects that case (a random id in
``STYX_HOME/ssh_pool_home_id``) and refuses the host.

Keys
----
The returned node's ``host_key`` is the key the host presented (see ``known_hosts``), so
every later connection is pinned to it. Jobs are run by the SSH activities with Styx's own
client key. With ``identity_file``, ``provision`` logs in with that key and **appends
Styx's public key to the host's ``~/.ssh/authorized_keys``** (once), then checks that
Styx's key logs in. Without it, Styx's key (``STYX_HOME/ssh/id_ed25519.pub``) must already
be authorized on the hosts.

Example::

    provider = SshPoolProvider(settings.home, ensure_client_key(key_path))
    attempt = (await provider.plan({}, 2, "lab"))[0]             # {"pool": "lab", …}
    nodes = (await provider.provision("train", 2, attempt)).endpoints()
    await provider.terminate("train", "lab")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Callable

import asyncssh

from styx.contracts.clusters import ClusterName
from styx.files import async_flock
from styx.providers.base import Provisioned
from styx.contracts.failsafe import FAILSAFE_FILE, FIRED_FILE
from styx.providers.failsafe_script import ssh_watcher_command
from styx.providers.ssh.config import POOLS_FILE, Pool, SshTarget, key_line, load_pools
from styx.providers.ssh.errors import HostUnreachable, PoolConfigError, ReservationNotFound
from styx.providers.ssh.known_hosts import KNOWN_HOSTS_FILE, KnownHosts
from styx.providers.ssh.reservations import Reservation, ReservationStore
from styx.ssh import (
    CommandTimeout,
    NodeEndpoint,
    NodeUnreachable,
    RemoteCommandFailed,
    kill_phase,
    public_key_line,
    run,
)

__all__ = ["SshPoolProvider"]

log = logging.getLogger("styx.sshpool")

HOME_ID_FILE = "ssh_pool_home_id"
#: On each host, relative to its home: which cluster (and reservation) owns the host.
OWNER_FILE = ".styx/pool_owner"

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: Commands run on a host in parallel (stock sshd allows 10 sessions per connection).
_PARALLEL_COMMANDS = 4
_COMMAND_TIMEOUT = 60.0


class SshPoolProvider:
    """Clusters made of hosts reserved from the pools in ``home/ssh_pools.yaml``.

    A cluster's ``region`` is its pool's name. Every method is idempotent and safe to call
    from several worker processes at once. ``client_key`` is Styx's own SSH key, the one the
    SSH activities log in with.
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
        self.reservations = ReservationStore(self.home)
        self.known_hosts = KnownHosts(self.home / KNOWN_HOSTS_FILE)
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def pools_file(self) -> Path:
        return self.home / POOLS_FILE

    @property
    def reservations_file(self) -> Path:
        return self.reservations.path

    @property
    def known_hosts_file(self) -> Path:
        return self.known_hosts.path

    # -- the Provider protocol ----------------------------------------------------------

    async def plan(self, resources: dict[str, Any], num_nodes: int, region: str | None) -> list[dict[str, Any]]:
        """One attempt: the pool named by ``region`` (``infra: ssh/<pool>``), at the pool's
        ``hourly_price`` per host (0 when the file does not say)."""
        price = 0.0
        with contextlib.suppress(PoolConfigError):
            price = self._pool(region).hourly_price if region else 0.0
        return [{"pool": region, "attempt_no": 1, "hourly_price": price}]

    # -- the failsafe: a watcher on each host (``failsafe_script``), the deadline over SSH --

    #: ``push_failsafe`` writes the deadline to ``~/.styx/failsafe`` over SSH.
    failsafe_over_ssh = True

    @staticmethod
    def failsafe_setup_command() -> str:
        """Start the host's watcher unless it runs: past the deadline it kills Styx's jobs
        there and removes their directories (as ``terminate`` does, keeping the host)."""
        return ssh_watcher_command()

    async def provision(self, cluster: str, num_nodes: int, attempt: dict[str, Any]) -> Provisioned:
        """Reserve ``num_nodes`` free hosts of ``attempt["pool"]`` for ``cluster`` and check
        each answers over SSH; returns their endpoints in rank order, and the pool as region.

        A retried call returns the hosts already reserved. Raises ``PoolConfigError`` (bad
        file, unknown pool), ``PoolExhausted`` (not enough free hosts),
        ``ReservationConflict`` (the cluster holds other hosts) and ``HostUnreachable`` (a
        host failed its check: the cluster's reservation is then released).
        """
        cluster = ClusterName(cluster)
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
        pool_name = attempt.get("pool")
        if not pool_name:
            raise PoolConfigError("no SSH pool named: launch with --infra ssh/<pool>")
        spec = self._pool(pool_name)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self.reservations.reserve, cluster, spec, num_nodes)
            try:
                nodes = await self._check_all(res)
            except Exception:
                await asyncio.to_thread(self.reservations.release, cluster, res.token)
                raise
        return Provisioned(nodes=[n.to_dict() for n in nodes], region=pool_name)

    async def start(self, cluster: str, region: str | None) -> Provisioned:
        """Check the cluster's hosts again and return their endpoints. The reservation is
        kept even if a host fails (``HostUnreachable``): start again once it is back."""
        cluster = ClusterName(cluster)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self.reservations.get, cluster)
            if res is None:
                raise ReservationNotFound(f"SSH-pool cluster {cluster!r} holds no hosts")
            nodes = await self._check_all(res)
        return Provisioned(nodes=[n.to_dict() for n in nodes], region=region)

    async def stop(self, cluster: str, region: str | None) -> None:
        """Kill every Styx job on the cluster's hosts; the hosts stay reserved (a machine
        you own is not powered off). Hosts that cannot be reached are skipped."""
        cluster = ClusterName(cluster)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self.reservations.get, cluster)
            if res is not None:
                await self._on_all(res, "stop", lambda conn: self._stop_host(conn))

    async def terminate(self, cluster: str, region: str | None) -> None:
        """Kill the jobs, delete ``~/.styx/jobs`` and ``~/styx_workdir`` on the hosts and
        release them. Hosts that cannot be reached are skipped (and released). A cluster
        that holds no hosts is a no-op."""
        cluster = ClusterName(cluster)
        async with self._cluster_lock(cluster):
            res = await asyncio.to_thread(self.reservations.get, cluster)
            if res is None:
                return
            await self._on_all(res, "terminate", lambda conn: self._wipe(conn, None))
            await asyncio.to_thread(self.reservations.release, cluster, res.token)

    async def describe_nodes(self, cluster: str, region: str | None) -> list[dict[str, Any]]:
        """The hosts the cluster holds, by rank (``[]`` if none): rank, host, port, user,
        host_key (pinned by the pool, else None), id (what the reservation is keyed by), pool.
        Read from the reservation table; no host is contacted."""
        cluster = ClusterName(cluster)
        res = await asyncio.to_thread(self.reservations.get, cluster)
        if res is None:
            return []
        return [{"rank": rank, **host.to_dict(), "id": host_id, "pool": res.pool}
                for rank, (host, host_id) in enumerate(zip(res.hosts, res.host_ids))]

    async def check(self, region: str | None) -> tuple[bool, str]:
        """Whether the pool file exists and parses; the message says what was found.
        ``region`` is not used: the whole file is checked."""
        if not self.pools_file.exists():
            return False, f"{self.pools_file} does not exist (no SSH pools defined)"
        try:
            pools = await asyncio.to_thread(load_pools, self.pools_file)
        except PoolConfigError as exc:
            return False, str(exc)
        if not pools:
            return False, f"{self.pools_file} defines no pools"
        summary = ", ".join(
            f"{name} ({len(p.hosts)} host{'' if len(p.hosts) == 1 else 's'})"
            for name, p in pools.items()
        )
        return True, f"{len(pools)} SSH pool(s): {summary}"

    # -- beyond the protocol -----------------------------------------------------------

    def list_pools(self) -> dict[str, dict[str, Any]]:
        """Every pool with its hosts and who holds them::

            {"lab": {"total": 2, "free": 1, "identity_file": None, "jump_host": None,
                     "hosts": [{"host": "10.0.0.5", "port": 22, "user": "ubuntu",
                                "cluster": "train"}, …]}}

        ``{}`` if the pool file does not exist; ``PoolConfigError`` if it is wrong.
        """
        pools = load_pools(self.pools_file, missing_ok=True)
        holders = self.reservations.holders(self.reservations.read())
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

    # -- pools (sync: run in a thread when called from async code) ---------------------

    def _pool(self, name: str) -> Pool:
        pools = load_pools(self.pools_file)
        if name not in pools:
            known = ", ".join(sorted(pools)) or "none"
            raise PoolConfigError(f"no SSH pool {name!r} in {self.pools_file} (known pools: {known})")
        return pools[name]

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

    # -- connections ---------------------------------------------------------------------

    def _client_keys(self, res: Reservation, styx_only: bool) -> list[asyncssh.SSHKey]:
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
        known = await asyncio.to_thread(self.known_hosts.keys, target)
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
            line = key_line(server_key)
            if not known:
                await asyncio.to_thread(self.known_hosts.remember, target, line)
        except BaseException:
            conn.close()
            raise
        return conn, line

    @contextlib.asynccontextmanager
    async def _open(
        self, res: Reservation, target: SshTarget, *, styx_only: bool = False
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

    async def _check_all(self, res: Reservation) -> list[NodeEndpoint]:
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

    async def _check_host(self, res: Reservation, rank: int, home_id: str) -> NodeEndpoint:
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
        res: Reservation,
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

    async def _stop_host(self, conn: asyncssh.SSHClientConnection) -> None:
        """Kill the jobs, and forget the failsafe (the watcher, its deadline and its marker):
        a stopped cluster carries none, and a start gets a fresh one."""
        await self._kill_jobs(conn)
        await _checked(conn, _FORGET_FAILSAFE, "removing the failsafe")

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
            conn, f'{_FORGET_FAILSAFE}; rm -rf "$HOME/.styx/jobs" "$HOME/styx_workdir" && {mark}',
            "deleting ~/.styx/jobs and ~/styx_workdir",
        )

    async def _on_all(
        self,
        res: Reservation,
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


#: Stop a host's failsafe watcher and remove its deadline and fired marker.
_FORGET_FAILSAFE = (
    'p="$HOME/.styx/failsafe.pid"; [ -r "$p" ] && kill "$(cat "$p")" 2>/dev/null; '
    f'rm -f "$p" "$HOME/{FAILSAFE_FILE}" "$HOME/{FIRED_FILE}"; true'
)


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
