"""Provider activities: ``provision``, ``stop``, ``start``, ``terminate`` for every provider.

Each provider is a plain object with those async methods (``styx.activities.local`` for
local nodes); this class picks one by name and exposes it to Temporal, heartbeating while
the provider works so that a dead worker is noticed within seconds.
"""

from __future__ import annotations

from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx.activities import types as t
from styx.activities.heartbeat import heartbeating


class Provider(Protocol):
    async def provision(self, cluster: str, num_nodes: int) -> list[Any]: ...
    async def stop(self, cluster: str) -> None: ...
    async def start(self, cluster: str) -> list[Any]: ...
    async def terminate(self, cluster: str) -> None: ...


def _nodes(endpoints: list[Any]) -> list[dict[str, Any]]:
    return [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in endpoints]


class ProviderActivities:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers

    def _get(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise ApplicationError(
                f"provider {name!r} is not available on this worker (have: {', '.join(sorted(self.providers))})",
                type="InvalidTask", non_retryable=True,
            ) from None

    @activity.defn(name="provision")
    async def provision(self, inp: t.ProviderInput) -> t.ProviderOutput:
        async with heartbeating():
            nodes = await self._get(inp.provider).provision(inp.cluster, inp.num_nodes)
        return t.ProviderOutput(nodes=_nodes(nodes))

    @activity.defn(name="start")
    async def start(self, inp: t.ProviderInput) -> t.ProviderOutput:
        async with heartbeating():
            nodes = await self._get(inp.provider).start(inp.cluster)
        return t.ProviderOutput(nodes=_nodes(nodes))

    @activity.defn(name="stop")
    async def stop(self, inp: t.ProviderInput) -> t.ProviderOutput:
        async with heartbeating():
            await self._get(inp.provider).stop(inp.cluster)
        return t.ProviderOutput()

    @activity.defn(name="terminate")
    async def terminate(self, inp: t.ProviderInput) -> t.ProviderOutput:
        async with heartbeating():
            await self._get(inp.provider).terminate(inp.cluster)
        return t.ProviderOutput()
