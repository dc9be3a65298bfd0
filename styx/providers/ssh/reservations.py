"""Which cluster holds which pool hosts: ``STYX_HOME/ssh_reservations.json``.

A host serves one cluster at a time. The table maps each cluster to the hosts it holds (in
rank order) and is only read-modified-written under an ``flock`` on
``ssh_reservations.json.lock``, so two clusters never get the same host even when two worker
processes provision at once. A host is identified by ``host:port`` (plus the jump host, if
any: ``Pool.host_id``), so two pools that list the same machine still share one reservation.
Every reservation has a random ``token``: a release only drops the reservation it made.

The methods block (file lock, fsync): call them in a thread from async code.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from styx.files import atomic_write, file_lock
from styx.providers.ssh.config import Pool, SshTarget
from styx.providers.ssh.errors import PoolExhausted, ReservationConflict, StateFileUnreadable

__all__ = ["RESERVATIONS_FILE", "Reservation", "ReservationStore"]

RESERVATIONS_FILE = "ssh_reservations.json"


@dataclass
class Reservation:
    """The hosts ``cluster`` holds, in rank order, and how to log in to them."""

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
    def from_dict(cls, cluster: str, data: Mapping[str, Any]) -> Reservation:
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
        """What ``~/.styx/pool_owner`` holds on a host this reservation owns."""
        return f"{self.cluster} {self.token}"


class ReservationStore:
    """The reservation table in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def path(self) -> Path:
        return self.home / RESERVATIONS_FILE

    def read(self) -> dict[str, Any]:
        """The whole table: ``{"version": 1, "clusters": {cluster: reservation dict}}``."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": 1, "clusters": {}}
        except (OSError, ValueError) as exc:
            # Never start over from an empty table: that would hand out busy hosts.
            raise StateFileUnreadable(f"{self.path} is unreadable ({exc}); fix or remove it by hand") from None
        if not isinstance(data, dict) or not isinstance(data.get("clusters"), dict):
            raise StateFileUnreadable(f"{self.path} has no 'clusters' mapping; fix it by hand")
        return data

    def get(self, cluster: str) -> Reservation | None:
        raw = self.read()["clusters"].get(cluster)
        return Reservation.from_dict(cluster, raw) if raw else None

    @staticmethod
    def holders(data: Mapping[str, Any]) -> dict[str, str]:
        """host id -> cluster holding it, from a table ``read`` returned."""
        return {
            str(h["id"]): name
            for name, res in data["clusters"].items()
            for h in res.get("hosts", [])
        }

    def reserve(self, cluster: str, pool: Pool, num_nodes: int) -> Reservation:
        """The cluster's reservation: the one it holds already (if it matches the request),
        else ``num_nodes`` free hosts of ``pool``, first free first."""
        with self._locked() as data:
            raw = data["clusters"].get(cluster)
            if raw:
                res = Reservation.from_dict(cluster, raw)
                if res.pool != pool.name or len(res.hosts) != num_nodes:
                    raise ReservationConflict(
                        f"cluster {cluster!r} already holds {len(res.hosts)} host(s) of pool "
                        f"{res.pool!r}; asked for {num_nodes} of {pool.name!r} (down it first)"
                    )
                return res
            holders = self.holders(data)
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
            res = Reservation(
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

    def release(self, cluster: str, token: str) -> None:
        """Drop the cluster's reservation if it is still the one with ``token``."""
        with self._locked() as data:
            raw = data["clusters"].get(cluster)
            if raw and raw.get("token") == token:
                del data["clusters"][cluster]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The table, locked; written back (atomically, durably) if the block ends without
        an exception and changed it."""
        with file_lock(self.home / f"{RESERVATIONS_FILE}.lock"):
            data = self.read()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                atomic_write(self.path, json.dumps(data, indent=2), fsync=True)
