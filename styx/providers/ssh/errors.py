"""The SSH-pool provider's errors, each a subclass of a provider-neutral one
(``styx.providers.base``) so the activities know what to do with it: a pool without enough
free hosts is a ``CapacityError``; a bad pool file or a conflicting request an
``InvalidProviderRequest``; a host that fails its check, a cluster that holds no hosts, or a
state file a human must fix a ``ProvisionError``."""

from __future__ import annotations

from styx.providers.base import CapacityError, InvalidProviderRequest, ProvisionError

__all__ = [
    "HostUnreachable",
    "PoolConfigError",
    "PoolExhausted",
    "ReservationConflict",
    "ReservationNotFound",
    "SshPoolError",
    "StateFileUnreadable",
]


class SshPoolError(Exception):
    """Base of the SSH-pool provider's errors."""


class PoolConfigError(SshPoolError, InvalidProviderRequest):
    """``ssh_pools.yaml`` is missing or wrong, or names no such pool. Not retryable."""


class PoolExhausted(SshPoolError, CapacityError):
    """The pool has fewer free hosts than the cluster needs.

    ``free`` counts the free hosts; ``busy`` maps each busy ``host:port`` to its cluster.
    """

    def __init__(self, message: str, free: int, busy: dict[str, str]) -> None:
        super().__init__(message)
        self.free = free
        self.busy = busy


class HostUnreachable(SshPoolError, ProvisionError):
    """A reserved host failed its check (no answer, key refused, host key changed …).

    ``host`` and ``port`` name the first host that failed; the message names all of them.
    Retrying does not fix this: the configuration or the machine needs a human.
    """

    def __init__(self, message: str, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class ReservationConflict(SshPoolError, InvalidProviderRequest):
    """The cluster already holds hosts of another pool, or another number of hosts."""


class ReservationNotFound(SshPoolError, ProvisionError, LookupError):
    """``start`` of a cluster that holds no hosts (never provisioned, or terminated)."""


class StateFileUnreadable(SshPoolError, ProvisionError):
    """The reservation table or the known hosts file is not what Styx wrote; a human must
    fix or remove it (starting over would hand out busy hosts or trust unknown keys)."""
