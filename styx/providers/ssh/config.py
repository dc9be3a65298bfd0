"""The pool file, ``STYX_HOME/ssh_pools.yaml``: what pools there are and which hosts each
has. Pools are chosen with ``infra: ssh/<pool>``::

    lab:
      user: ubuntu                        # default for the hosts (default: the local user)
      identity_file: ~/.ssh/id_ed25519    # optional: log in with it once to authorize Styx's key
      port: 22                            # optional default
      hosts:
        - 10.0.0.5                        # plain host
        - {host: 10.0.0.6, port: 2222, user: admin, host_key: "ssh-ed25519 AAAA…"}
      jump_host: {host: bastion, port: 22, user: ubuntu}   # optional
      hourly_price: 0.35                  # optional: USD per host-hour, for `styx cost-report`

``load_pools(path)`` parses it into ``Pool`` values (hosts are ``SshTarget``); every error is
a ``PoolConfigError`` naming the file and the field (``lab.hosts[1].port must be an
integer``).
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from styx.providers.ssh.errors import PoolConfigError

__all__ = ["POOLS_FILE", "Pool", "SshTarget", "key_line", "load_pools"]

POOLS_FILE = "ssh_pools.yaml"

_POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOST_FIELDS = ("host", "port", "user", "host_key")
_POOL_FIELDS = ("user", "identity_file", "port", "hosts", "jump_host", "hourly_price")



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
    #: USD per host-hour (what a machine of the pool costs you), for the cost report.
    hourly_price: float = 0.0

    def host_id(self, host: SshTarget) -> str:
        """What a reservation is keyed by: the machine, whatever pool lists it."""
        if self.jump_host is None:
            return host.address
        return f"{host.address} via {self.jump_host.address}"



def load_pools(path: Path, *, missing_ok: bool = False) -> dict[str, Pool]:
    """The pools of the file at ``path`` (``{}`` for a missing file if ``missing_ok``)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise PoolConfigError(
            f"{path} does not exist: define SSH pools there (see styx.providers.ssh.config)"
        ) from None
    except OSError as exc:
        raise PoolConfigError(f"{path}: cannot read: {exc}") from None
    return _PoolParser(path).parse(text)


def key_line(key: asyncssh.SSHKey) -> str:
    """``"ssh-ed25519 AAAA…"``: a public key without its comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


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
            if not isinstance(name, str) or not _POOL_NAME_RE.match(name):
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
        price = body.get("hourly_price", 0.0)
        if isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price < 1e6:
            raise self.fail(f"{name}.hourly_price", f"must be a number of USD per host-hour, 0 or more (got {price!r})")
        return Pool(name, tuple(hosts), identity, jump, float(price))

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
        return key_line(key)
