"""What every provider is: the ``Provider`` protocol, what ``provision`` returns, and the
three errors the cluster workflow acts on.

- ``Provider``: one signature per operation, the same for local nodes, AWS and SSH pools.
  Every method is a coroutine; providers that block (boto3, file locks) use
  ``asyncio.to_thread`` inside. Every method is idempotent: a retried activity (after a
  worker was killed mid-call) finds what the first try left and carries on from it.
- ``Provisioned``: the nodes (``styx.ssh.NodeEndpoint`` dicts, in rank order) and where they
  are (``region``: the AWS region or the SSH pool; ``zone``).
- Errors: ``CapacityError`` (no room for this attempt: try the next one), ``ProvisionError``
  (give up, leaving nothing behind) and ``InvalidProviderRequest`` (the task or pool cannot
  be served as asked). Providers raise these or their own subclasses;
  ``styx.activities.providers`` maps them to ``styx.contracts.providers.ProviderErrors``.
  Anything else a provider raises is retried by the activity's retry policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from styx.ssh import NodeEndpoint

__all__ = ["CapacityError", "InvalidProviderRequest", "Provider", "ProvisionError", "Provisioned"]


class CapacityError(Exception):
    """No capacity (or no quota) for this launch attempt; the next attempt may work."""


class ProvisionError(Exception):
    """The operation failed in a way another attempt would not fix: give up."""


class InvalidProviderRequest(ValueError):
    """The request cannot be served as asked (unknown pool, resources nothing fits …)."""


@dataclass
class Provisioned:
    """Nodes in rank order, each a ``NodeEndpoint.to_dict()`` (providers may add keys, e.g.
    AWS's ``instance_id``), and where they run."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    #: AWS region, SSH pool name; None for local nodes.
    region: str | None = None
    zone: str | None = None

    def endpoints(self) -> list[NodeEndpoint]:
        return [NodeEndpoint.from_dict(n) for n in self.nodes]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Provider(Protocol):
    """Clusters of SSH-reachable nodes, found by cluster name (never by memory or database).

    ``region`` is where the cluster is (AWS region, SSH pool name) when known, else None.

    Beyond the protocol, optional: the autostop failsafe (``styx.activities.failsafe``) —
    ``set_failsafe`` (the provider writes its nodes' deadline itself: local), or
    ``failsafe_over_ssh = True`` with ``failsafe_fired``, ``prepare_failsafe`` and
    ``failsafe_setup_command`` (AWS, SSH pools). ``plan``'s attempts may carry
    ``hourly_price`` (USD per node-hour), which the cost report bills.
    """

    async def plan(self, resources: dict[str, Any], num_nodes: int, region: str | None) -> list[dict[str, Any]]:
        """The launch attempts to try in order; each is JSON-able and goes to ``provision``."""
        ...

    async def provision(self, cluster: str, num_nodes: int, attempt: dict[str, Any]) -> Provisioned:
        """Bring up nodes ``0 … num_nodes-1`` as ``attempt`` says, reusing what is there."""
        ...

    async def start(self, cluster: str, region: str | None) -> Provisioned:
        """Bring a stopped cluster back (its disks kept); running nodes are left alone."""
        ...

    async def stop(self, cluster: str, region: str | None) -> None:
        """Stop every node, keeping its disk."""
        ...

    async def terminate(self, cluster: str, region: str | None) -> None:
        """Delete every node and what it holds. A cluster already gone is a no-op."""
        ...

    async def describe_nodes(self, cluster: str, region: str | None) -> list[dict[str, Any]]:
        """What is there now, one dict per node (or instance, or reserved host), by rank."""
        ...

    async def check(self, region: str | None) -> tuple[bool, str]:
        """``(usable, one-line reason)`` for ``styx check``."""
        ...
