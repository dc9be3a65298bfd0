"""SDK methods for prices and costs: a launch's dry run, the catalog and the cost report.

Mixed into ``styx.Client`` / ``styx.AsyncClient`` (``CostsMixin`` / ``AsyncCostsMixin``)::

    import styx

    with styx.Client() as client:
        plan = client.dryrun("train.yaml", cluster="gpu")        # nothing starts
        print(plan.chosen.instance_type, plan.chosen.region, plan.hourly_total)
        for runner_up in plan.runners_up:
            print(runner_up.instance_type, runner_up.why_not)
        print(client.show_gpus("A100", infra="aws/us-east-1")[0].price)
        print(client.show_instances(cpus="8+", memory="32+")[0].instance_type)
        report = client.cost_report(days=30)
        print(report.total, [(c.cluster, c.uptime_hours, c.cost) for c in report.clusters])

A request nothing in the catalog meets raises ``styx.Invalid`` naming the field, as a launch does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from styx.contracts.rest_costs import CatalogOffer, CostReport, LaunchPlanInfo
from styx.sdk.tasks import as_task as _as_task
from styx.sdk.transport import Request

if TYPE_CHECKING:
    from styx.task import Task

#: Task fields a dry run does not send (its files are not uploaded for it).
_NOT_SENT = ("workdir", "file_mounts", "secrets")


def _params(**kwargs: Any) -> dict[str, str]:
    return {k: str(v) for k, v in kwargs.items() if v is not None}


class _CostRoutes:
    @staticmethod
    def plan(task: Task, cluster: str, idle_minutes_to_autostop: int | None, down: bool) -> Request:
        body = {k: v for k, v in task.to_dict(include_secrets=False).items() if k not in _NOT_SENT}
        return Request("POST", "/api/v1/catalog/plan", {"cluster": cluster, "task": body,
                                                         "idle_minutes_to_autostop": idle_minutes_to_autostop,
                                                         "down": down})

    @staticmethod
    def gpus(name: str | None, infra: str | None) -> Request:
        return Request("GET", "/api/v1/catalog/gpus", params=_params(name=name, infra=infra))

    @staticmethod
    def instances(cpus: str | int | None, memory: str | int | None, infra: str | None, gpu: str | None) -> Request:
        return Request("GET", "/api/v1/catalog/instances", params=_params(cpus=cpus, memory=memory, infra=infra, gpu=gpu))

    @staticmethod
    def costs(days: float) -> Request:
        return Request("GET", "/api/v1/costs", params={"days": str(days)})


class CostsMixin:
    _send: Callable[[Request], Any]  # from the transport it is mixed with

    def dryrun(self, task: Task | dict | str | Path, cluster: str = "dryrun", *,
               idle_minutes_to_autostop: int | None = None, down: bool = False) -> LaunchPlanInfo:
        """What ``launch(task, cluster)`` would take and cost, the runners-up and why they
        lost; nothing starts and no file is sent."""
        return LaunchPlanInfo(**self._send(_CostRoutes.plan(_as_task(task), cluster, idle_minutes_to_autostop, down)))

    def show_gpus(self, name: str | None = None, infra: str | None = None) -> list[CatalogOffer]:
        """Accelerator instance types with their hourly prices (``name``: ``A100``, ``A100:8``)."""
        return [CatalogOffer(**o) for o in self._send(_CostRoutes.gpus(name, infra))]

    def show_instances(self, cpus: str | int | None = None, memory: str | int | None = None,
                       infra: str | None = None, gpu: str | None = None) -> list[CatalogOffer]:
        """Instance types with ``cpus`` vCPUs and ``memory`` GB (``"8"`` exactly, ``"8+"`` at least), cheapest first."""
        return [CatalogOffer(**o) for o in self._send(_CostRoutes.instances(cpus, memory, infra, gpu))]

    def cost_report(self, days: float = 30) -> CostReport:
        """What your clusters (an admin: everyone's), alive or gone, cost in the last ``days``."""
        return CostReport(**self._send(_CostRoutes.costs(days)))


class AsyncCostsMixin:
    _send: Callable[[Request], Any]

    async def dryrun(self, task: Task | dict | str | Path, cluster: str = "dryrun", *,
                     idle_minutes_to_autostop: int | None = None, down: bool = False) -> LaunchPlanInfo:
        return LaunchPlanInfo(**await self._send(_CostRoutes.plan(_as_task(task), cluster, idle_minutes_to_autostop,
                                                                  down)))

    async def show_gpus(self, name: str | None = None, infra: str | None = None) -> list[CatalogOffer]:
        return [CatalogOffer(**o) for o in await self._send(_CostRoutes.gpus(name, infra))]

    async def show_instances(self, cpus: str | int | None = None, memory: str | int | None = None,
                             infra: str | None = None, gpu: str | None = None) -> list[CatalogOffer]:
        return [CatalogOffer(**o) for o in await self._send(_CostRoutes.instances(cpus, memory, infra, gpu))]

    async def cost_report(self, days: float = 30) -> CostReport:
        return CostReport(**await self._send(_CostRoutes.costs(days)))
