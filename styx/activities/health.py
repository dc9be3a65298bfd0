"""``probe_nodes``: is each node of a cluster alive now? (``styx status --refresh``)

Two looks per node, the cheap one first:

1. the provider's ``describe_nodes`` (no node contacted): a local node whose server process is
   gone, an AWS instance not ``running``, a node the provider no longer has — each is down;
2. for the others, an SSH round trip (connect, ``true``) within ``PROBE_TIMEOUT`` seconds:
   a node that does not answer is down too, whatever the provider says.

The cluster workflow acts on the answer (``ClusterWorkflow.refresh``): it marks the dead nodes
DOWN, and places jobs again on the ones that came back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
from temporalio import activity

from styx.activities.heartbeat import heartbeating
from styx.activities.providers import mapped_errors
from styx.contracts.providers import NodeProbe, ProbeNodesInput, ProbeNodesOutput
from styx.providers.registry import ProviderRegistry
from styx.ssh import CommandTimeout, NodeEndpoint, NodeUnreachable, SshPool, run

#: Seconds one node's SSH round trip may take before it counts as not answering.
PROBE_TIMEOUT = 15.0


def _provider_verdict(rank: int, node: dict[str, Any], described: list[dict[str, Any]]) -> str | None:
    """Why the provider says the node is down, or None when it does not say so."""
    mine = [d for d in described if d.get("rank") == rank]
    if node.get("instance_id"):
        mine = [d for d in mine if d.get("instance_id") in (None, node["instance_id"])]
    if not mine:
        return f"the provider has no node {rank} any more"
    if any(d.get("alive") is True or d.get("state") == "running" for d in mine):
        return None
    if any(d.get("alive") is False for d in mine):
        return "its node process is gone"
    states = sorted({str(d["state"]) for d in mine if d.get("state")})
    if states:
        return f"its instance is {'/'.join(states)}"
    return None  # the provider cannot tell (SSH pools): the SSH round trip decides


class NodeHealthActivities:
    def __init__(self, registry: ProviderRegistry, pool: SshPool) -> None:
        self.registry = registry
        self.pool = pool

    @activity.defn(name="probe_nodes")
    async def probe_nodes(self, inp: ProbeNodesInput) -> ProbeNodesOutput:
        with mapped_errors():
            provider = self.registry.lookup(inp.provider)
        async with heartbeating():
            with mapped_errors():
                described = await provider.describe_nodes(inp.cluster, inp.region)
            probes = await asyncio.gather(*(self._probe(node, described) for node in inp.nodes))
        return ProbeNodesOutput(nodes=list(probes))

    async def _probe(self, node: dict[str, Any], described: list[dict[str, Any]]) -> NodeProbe:
        rank = int(node["rank"])
        verdict = _provider_verdict(rank, node, described)
        if verdict is not None:
            return NodeProbe(rank, False, verdict)
        endpoint = NodeEndpoint.from_dict(node)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                conn = await self.pool.get(endpoint)
                status, _, _ = await run(conn, "true", timeout=PROBE_TIMEOUT)
        except (NodeUnreachable, CommandTimeout, TimeoutError, ConnectionError, asyncssh.Error) as err:
            self.pool.discard(endpoint)
            return NodeProbe(rank, False, f"does not answer over SSH ({str(err) or type(err).__name__})")
        if status != 0:
            return NodeProbe(rank, False, f"cannot run a command (exit status {status})")
        return NodeProbe(rank, True)
