"""Provider activities: ``plan``, ``provision``, ``stop``, ``start``, ``terminate``.

The cluster workflow asks ``plan`` for the launch attempts to try in order (one for local
nodes and SSH pools; per zone, region and spot/on-demand choice for AWS) and calls
``provision`` once per attempt until one succeeds, so every attempt is an activity in the
workflow history. Providers are plain objects (``styx.providers.local.provider``, ``.aws``,
``.sshpool``); this class adapts them and turns their errors into ``ApplicationError``
types the workflow acts on: ``InsufficientCapacity`` (try the next attempt), ``InvalidTask``
and ``ProvisionFailed`` (give up, leaving nothing behind).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx.contracts.providers import CheckInput, CheckOutput, PlanOutput, ProviderInput, ProviderOutput
from styx.activities.heartbeat import heartbeating
from styx.task import TaskValidationError


def _nodes(endpoints: list[Any]) -> list[dict[str, Any]]:
    return [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in endpoints]


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Provider exceptions -> ApplicationError types the cluster workflow understands."""
    from styx.providers.aws.provider import CapacityError, ProvisionError
    from styx.providers.ssh.provider import PoolConfigError, PoolExhausted, ReservationConflict, SshPoolError

    try:
        yield
    except (CapacityError, PoolExhausted) as err:
        raise ApplicationError(str(err), type="InsufficientCapacity", non_retryable=True) from err
    except (TaskValidationError, PoolConfigError, ReservationConflict) as err:
        raise ApplicationError(str(err), type="InvalidTask", non_retryable=True) from err
    except (ProvisionError, SshPoolError) as err:
        raise ApplicationError(str(err), type="ProvisionFailed", non_retryable=True) from err
    except LookupError as err:  # unknown pool, cluster gone, pool exhausted …
        raise ApplicationError(str(err), type="ProvisionFailed", non_retryable=True) from err


class ProviderActivities:
    def __init__(self, local: Any, aws: Any | None = None, ssh: Any | None = None) -> None:
        self.local, self.aws, self.ssh = local, aws, ssh

    def _get(self, name: str) -> Any:
        provider = {"local": self.local, "aws": self.aws, "ssh": self.ssh}.get(name)
        if provider is None:
            raise ApplicationError(f"provider {name!r} is not configured on this worker",
                                   type="InvalidTask", non_retryable=True)
        return provider

    @activity.defn(name="plan")
    async def plan(self, inp: ProviderInput) -> PlanOutput:
        with _mapped_errors():
            if inp.provider == "aws":
                attempts = [a.to_dict() for a in self._get("aws").plan(inp.resources, inp.num_nodes)]
            elif inp.provider == "ssh":
                attempts = [{"pool": inp.region, "attempt_no": 1}]
            else:
                attempts = [{"attempt_no": 1}]
        return PlanOutput(attempts=attempts)

    @activity.defn(name="provision")
    async def provision(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._get(inp.provider)
        with _mapped_errors():
            async with heartbeating():
                if inp.provider == "aws":
                    result = await provider.provision(inp.cluster, inp.num_nodes, inp.attempt)
                    return ProviderOutput(nodes=_nodes(result.nodes), region=result.region, zone=result.zone)
                if inp.provider == "ssh":
                    nodes = await provider.provision(inp.cluster, inp.num_nodes, inp.attempt["pool"])
                    return ProviderOutput(nodes=_nodes(nodes), region=inp.attempt["pool"])
                return ProviderOutput(nodes=_nodes(await provider.provision(inp.cluster, inp.num_nodes)))

    @activity.defn(name="start")
    async def start(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._get(inp.provider)
        with _mapped_errors():
            async with heartbeating():
                if inp.provider == "aws":
                    result = await provider.start(inp.cluster, inp.region)
                    return ProviderOutput(nodes=_nodes(result.nodes), region=result.region, zone=result.zone)
                return ProviderOutput(nodes=_nodes(await provider.start(inp.cluster)), region=inp.region)

    @activity.defn(name="stop")
    async def stop(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._get(inp.provider)
        with _mapped_errors():
            async with heartbeating():
                if inp.provider == "aws":
                    await provider.stop(inp.cluster, inp.region)
                else:
                    await provider.stop(inp.cluster)
        return ProviderOutput()

    @activity.defn(name="terminate")
    async def terminate(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._get(inp.provider)
        with _mapped_errors():
            async with heartbeating():
                if inp.provider == "aws":
                    await provider.terminate(inp.cluster, inp.region)
                else:
                    await provider.terminate(inp.cluster)
        return ProviderOutput()

    @activity.defn(name="check_providers")
    async def check_providers(self, inp: CheckInput) -> CheckOutput:
        """Which providers this worker can use, and why not."""
        import asyncio

        results = [{"provider": "local", "ok": True, "reason": "local SSH nodes on loopback"}]
        if self.aws is None:
            results.append({"provider": "aws", "ok": False, "reason": "not configured on this worker"})
        else:
            ok, reason = await asyncio.to_thread(self.aws.check, inp.region)
            results.append({"provider": "aws", "ok": ok, "reason": reason})
        if self.ssh is None:
            results.append({"provider": "ssh", "ok": False, "reason": "not configured on this worker"})
        else:
            ok, reason = self.ssh.check()
            results.append({"provider": "ssh", "ok": ok, "reason": reason})
        return CheckOutput(results=results)
