"""``push_failsafe``: write the deadline an autostopped cluster's nodes carry (see
``styx.contracts.failsafe``), and report the nodes that already acted on their own.

The cluster workflow calls it from its main loop. How the deadline reaches the nodes is the
provider's:

- a provider with ``set_failsafe`` writes it itself (local nodes: a file beside each node);
- a provider with ``failsafe_over_ssh`` (AWS, SSH pools) has it written here, over SSH, into
  ``~/.styx/failsafe`` of the login user; first it may say which nodes acted already
  (``failsafe_fired``: AWS instances that stopped themselves), prepare the nodes
  (``prepare_failsafe``: the instances' shutdown behaviour) and give a command each node runs
  first (``failsafe_setup_command``: an SSH host's watcher, started once).
- any other provider has no failsafe: the push does nothing.

The grace the nodes wait after the deadline is this worker's setting
(``STYX_FAILSAFE_GRACE_MINUTES``, or ``_SECONDS``). A node that cannot be reached is reported
(``unreachable``) and pushed again at the next push.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncssh
from temporalio import activity

from styx.activities.heartbeat import heartbeating
from styx.activities.providers import mapped_errors
from styx.contracts.failsafe import DEFAULT_GRACE_MINUTES, FailsafeInput, FailsafeOutput
from styx.providers.failsafe_script import push_command
from styx.providers.registry import ProviderRegistry
from styx.ssh import CommandTimeout, NodeEndpoint, NodeUnreachable, SshPool, run

#: Seconds one node's push may take.
PUSH_TIMEOUT = 30.0


class FailsafeActivities:
    def __init__(self, registry: ProviderRegistry, pool: SshPool | None = None,
                 grace_seconds: int = DEFAULT_GRACE_MINUTES * 60) -> None:
        self.registry = registry
        self.pool = pool
        self.grace_seconds = grace_seconds

    @activity.defn(name="push_failsafe")
    async def push_failsafe(self, inp: FailsafeInput) -> FailsafeOutput:
        with mapped_errors():
            provider = self.registry.lookup(inp.provider)
        deadline = datetime.fromisoformat(inp.deadline).timestamp() if inp.deadline else None
        async with heartbeating():
            with mapped_errors():
                if hasattr(provider, "set_failsafe"):
                    result = await provider.set_failsafe(inp.cluster, inp.region, inp.nodes, deadline,
                                                         self.grace_seconds, inp.down)
                elif getattr(provider, "failsafe_over_ssh", False) and self.pool is not None:
                    result = await self._over_ssh(provider, inp, deadline)
                else:
                    return FailsafeOutput()
        return FailsafeOutput(fired=sorted(result.get("fired", [])),
                              unreachable=sorted(result.get("unreachable", [])), action=result.get("action"))

    async def _over_ssh(self, provider: Any, inp: FailsafeInput, deadline: float | None) -> dict[str, Any]:
        fired_check = getattr(provider, "failsafe_fired", None)
        if fired_check is not None:
            done = await fired_check(inp.cluster, inp.region)
            if done.get("fired"):
                return done
        prepare = getattr(provider, "prepare_failsafe", None)
        if prepare is not None and deadline is not None:
            await prepare(inp.cluster, inp.region, inp.down)
        setup = getattr(provider, "failsafe_setup_command", None)
        first = (setup() + "; ") if setup is not None and deadline is not None else ""
        command = first + push_command(deadline, self.grace_seconds, "terminate" if inp.down else "stop")
        answers = await asyncio.gather(*(self._push_one(node, command) for node in inp.nodes))
        fired = [int(n["rank"]) for n, a in zip(inp.nodes, answers) if a and a.startswith("FIRED")]
        unreachable = [int(n["rank"]) for n, a in zip(inp.nodes, answers) if a is None]
        action = None
        if fired:
            action = "terminated" if all(a and a.split()[-1] == "terminate" for a in answers if a and a.startswith("FIRED")) \
                else "stopped"
        return {"fired": fired, "unreachable": unreachable, "action": action}

    async def _push_one(self, node: dict[str, Any], command: str) -> str | None:
        """The node's answer (``""``, or ``FIRED <action>``), or None if it could not be reached."""
        assert self.pool is not None
        endpoint = NodeEndpoint.from_dict(node)
        try:
            async with asyncio.timeout(PUSH_TIMEOUT):
                conn = await self.pool.get(endpoint)
                status, out, err = await run(conn, command, timeout=PUSH_TIMEOUT)
        except (NodeUnreachable, CommandTimeout, TimeoutError, ConnectionError, asyncssh.Error) as exc:
            self.pool.discard(endpoint)
            activity.logger.warning("failsafe push to %s failed: %s", endpoint.host, exc)
            return None
        if status != 0:
            activity.logger.warning("failsafe push to %s exited %s: %s", endpoint.host, status,
                                    err.decode(errors="replace")[:500])
            return None
        return out.decode(errors="replace").strip()
