"""Prices before a launch and the bill after: the catalog, a launch's dry run, the cost report.

- ``POST /api/v1/catalog/plan`` (``styx launch --dryrun``): the body of a launch; answers
  where it would run (instance type, region/zone), at what price, the runners-up and why they
  lost. Nothing starts. A request nothing in the catalog meets is a 422 naming the field
  (``task.resources.accelerators: nothing in the catalog has H100:64 …``), as the launch is.
- ``GET /api/v1/catalog/gpus?name=A100&infra=aws/us-east-1`` (``styx show-gpus``) and
  ``GET /api/v1/catalog/instances?cpus=8%2B&memory=32%2B`` (``styx show-instances``): catalog
  rows, cheapest first.
- ``GET /api/v1/costs?days=30`` (``styx cost-report``): per cluster (alive or gone) its
  provider, type, nodes, uptime and cost in the window; a user sees their own clusters, an
  admin everyone's.

Every route wants a token; the catalog is the same for everyone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from styx.api.deps import CurrentUser, StateDep
from styx.catalog.queries import CatalogRow, InvalidQuery, gpus, instances
from styx.contracts.rest import LaunchRequest
from styx.contracts.rest_costs import MAX_REPORT_DAYS, CatalogOffer, CostReport, LaunchPlanInfo
from styx.services import costs
from styx.services.launch import InvalidRequest, check_cluster_name, cluster_spec, load_task, provider_of

router = APIRouter(prefix="/api/v1", tags=["costs"])

#: Task fields a dry run does not need (files are not sent for it; secrets are not asked).
_NOT_PLANNED = ("workdir", "file_mounts", "secrets")


def _offers(rows: list[CatalogRow]) -> list[CatalogOffer]:
    return [CatalogOffer(**r.to_dict()) for r in rows]


def _query(call: Any, *args: Any) -> list[CatalogOffer]:
    try:
        return _offers(call(*args))
    except InvalidQuery as err:
        raise HTTPException(422, f"query.{err}") from None


@router.post("/catalog/plan", response_model=LaunchPlanInfo, summary="What a launch would take, and cost")
async def plan(req: LaunchRequest, state: StateDep, user: CurrentUser) -> LaunchPlanInfo:
    """The launch's dry run (``styx launch --dryrun``): the same checks as a launch, then the
    offer it would take, its price per hour and the runners-up. Nothing starts."""
    data = {k: v for k, v in req.task.items() if k not in _NOT_PLANNED}
    if isinstance(data.get("envs"), dict):
        data["envs"] = {k: ("" if v is None else v) for k, v in data["envs"].items()}
    try:
        check_cluster_name(req.cluster)
        task = await asyncio.to_thread(load_task, data)
        if provider_of(task) != "aws":  # AWS is checked by the plan itself, with no credentials needed
            cluster_spec(task, req.cluster, req.idle_minutes_to_autostop, req.down, owner=user.name)
        return await asyncio.to_thread(costs.launch_plan, task, req.cluster)
    except InvalidRequest as err:
        raise HTTPException(422, str(err)) from None


@router.get("/catalog/gpus", response_model=list[CatalogOffer], summary="Accelerators and their prices")
async def show_gpus(user: CurrentUser,
                    name: str | None = Query(None, max_length=64, description="e.g. A100 or A100:8"),
                    infra: str | None = Query(None, max_length=64, description="aws or aws/<region>"),
                    ) -> list[CatalogOffer]:
    return _query(gpus, name, infra)


@router.get("/catalog/instances", response_model=list[CatalogOffer], summary="Instance types, cheapest first")
async def show_instances(user: CurrentUser,
                         cpus: str | None = Query(None, max_length=16, description='vCPUs: "8" exactly, "8+" at least'),
                         memory: str | None = Query(None, max_length=16, description='GB: "32" or "32+"'),
                         infra: str | None = Query(None, max_length=64),
                         gpu: str | None = Query(None, max_length=64)) -> list[CatalogOffer]:
    return _query(instances, cpus, memory, infra, gpu)


@router.get("/costs", response_model=CostReport, summary="What clusters cost")
async def cost_report(state: StateDep, user: CurrentUser,
                      days: float = Query(30, gt=0, le=MAX_REPORT_DAYS, description="the window, in days")
                      ) -> CostReport:
    """Per cluster (each launch of a name apart; alive or gone) up in the last ``days``:
    provider, instance type, nodes, hours up and USD, newest first. A user's own clusters;
    an admin's report covers everyone's."""
    return await asyncio.to_thread(costs.cost_report, state.db, owner=None if user.is_admin else user.name,
                                   days=days)
