"""Provider activities: ``plan``, ``provision``, ``start``, ``stop``, ``terminate`` and
``check_providers``.

The cluster workflow asks ``plan`` for the launch attempts to try in order (one for local
nodes and SSH pools; per zone, region and spot/on-demand choice for AWS) and calls
``provision`` once per attempt until one succeeds, so every attempt is an activity in the
workflow history. Each activity looks the request's provider up in the worker's
``ProviderRegistry`` and calls the ``styx.providers.base.Provider`` method of the same name;
the provider-neutral errors become the ``ApplicationError`` types the workflow acts on
(``ProviderErrors``): ``CapacityError`` -> ``InsufficientCapacity`` (try the next attempt),
``InvalidProviderRequest`` -> ``InvalidTask`` and ``ProvisionError`` -> ``ProvisionFailed``
(give up, leaving nothing behind). Other errors are retried by the caller's retry policy.

Each ``provision`` call counts as an attempt of its provider in the worker's metrics, and a
failed one as a failure with its error type (``styx.activities.metrics``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx.activities.heartbeat import heartbeating
from styx.activities.metrics import WorkerMetrics
from styx.contracts.providers import (
    CheckInput,
    CheckOutput,
    PlanOutput,
    ProviderErrors,
    ProviderInput,
    ProviderOutput,
)
from styx.providers.base import CapacityError, InvalidProviderRequest, Provider, Provisioned, ProvisionError
from styx.providers.registry import ProviderRegistry


@contextlib.contextmanager
def mapped_errors() -> Iterator[None]:
    """Provider errors -> ApplicationError types the cluster workflow understands."""
    try:
        yield
    except CapacityError as err:
        raise ApplicationError(str(err), type=ProviderErrors.CAPACITY, non_retryable=True) from err
    except InvalidProviderRequest as err:
        raise ApplicationError(str(err), type=ProviderErrors.INVALID, non_retryable=True) from err
    except ProvisionError as err:
        raise ApplicationError(str(err), type=ProviderErrors.FAILED, non_retryable=True) from err


def _output(result: Provisioned) -> ProviderOutput:
    return ProviderOutput(nodes=result.nodes, region=result.region, zone=result.zone)


class ProviderActivities:
    def __init__(self, registry: ProviderRegistry, metrics: WorkerMetrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics or WorkerMetrics()

    def _provider(self, name: str) -> Provider:
        with mapped_errors():
            return self.registry.lookup(name)

    @activity.defn(name="plan")
    async def plan(self, inp: ProviderInput) -> PlanOutput:
        provider = self._provider(inp.provider)
        with mapped_errors():
            return PlanOutput(attempts=await provider.plan(inp.resources, inp.num_nodes, inp.region))

    @activity.defn(name="provision")
    async def provision(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._provider(inp.provider)  # a known name from here on: a bounded label
        self.metrics.provision_attempts.labels(inp.provider).inc()
        try:
            with mapped_errors():
                async with heartbeating():
                    return _output(await provider.provision(inp.cluster, inp.num_nodes, inp.attempt))
        except Exception as err:
            reason = (err.type if isinstance(err, ApplicationError) else None) or "Error"
            self.metrics.provision_failures.labels(inp.provider, reason).inc()
            raise

    @activity.defn(name="start")
    async def start(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._provider(inp.provider)
        with mapped_errors():
            async with heartbeating():
                return _output(await provider.start(inp.cluster, inp.region))

    @activity.defn(name="stop")
    async def stop(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._provider(inp.provider)
        with mapped_errors():
            async with heartbeating():
                await provider.stop(inp.cluster, inp.region)
        return ProviderOutput()

    @activity.defn(name="terminate")
    async def terminate(self, inp: ProviderInput) -> ProviderOutput:
        provider = self._provider(inp.provider)
        with mapped_errors():
            async with heartbeating():
                await provider.terminate(inp.cluster, inp.region)
        return ProviderOutput()

    @activity.defn(name="check_providers")
    async def check_providers(self, inp: CheckInput) -> CheckOutput:
        """Which providers this worker can use, and why not."""
        results = []
        for name, provider in self.registry.items():
            ok, reason = await provider.check(inp.region)
            results.append({"provider": name, "ok": ok, "reason": reason})
        return CheckOutput(results=results)
