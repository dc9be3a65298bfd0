"""The API's own health.

- ``GET /healthz`` (no token; `styx up`, load balancers): 200 when the database and Temporal
  answer, 503 saying which failed.
- ``GET /api/v1/doctor`` (a token; `styx doctor`): the same two checks, Styx's search
  attributes in Temporal (with the command to create missing ones) and a worker round trip,
  a PingWorkflow that must finish within ``PING_TIMEOUT``, as a ``DoctorReport``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from temporalio.client import Client

from styx import __version__
from styx.api.deps import AppState, CurrentUser, StateDep
from styx.api.errors import AUTHENTICATED, error_responses
from styx.contracts.rest import ComponentCheck, DoctorReport, HealthReport
from styx.contracts.system import PING_WORKFLOW, PingOutput, PingWorkflowInput
from styx.temporal import create_command, missing_search_attributes

router = APIRouter()

#: How long a worker has to run the doctor's PingWorkflow (its activity included).
PING_TIMEOUT = timedelta(seconds=15)


async def _check_database(state: AppState) -> ComponentCheck:
    try:
        await asyncio.to_thread(state.db.ping)
    except Exception as err:  # any failure is the answer here
        return ComponentCheck(ok=False, detail=str(err))
    return ComponentCheck(ok=True, detail="ok")


async def _check_temporal(state: AppState, wait_seconds: float) -> tuple[ComponentCheck, Client | None]:
    try:
        client = await state.temporal(wait_seconds=wait_seconds)
        await asyncio.wait_for(client.service_client.check_health(), timeout=3)
    except Exception as err:
        return ComponentCheck(ok=False, detail=str(err)), None
    return ComponentCheck(ok=True, detail="ok"), client


async def _check_search_attributes(state: AppState, client: Client) -> ComponentCheck:
    try:
        missing = await missing_search_attributes(client, state.settings.namespace)
    except Exception as err:
        return ComponentCheck(ok=False, detail=f"cannot list them ({type(err).__name__}: {err})")
    if missing:
        return ComponentCheck(ok=False, detail=f"missing {', '.join(missing)}: run "
                                               f"{create_command(missing, state.settings.namespace)}")
    return ComponentCheck(ok=True, detail="ok")


async def _check_worker(state: AppState, client: Client) -> ComponentCheck:
    """Which worker ran a trivial workflow; a timeout means no worker polls the task queue."""
    try:
        out = await client.execute_workflow(
            PING_WORKFLOW, PingWorkflowInput("doctor"), id=f"ping/{uuid.uuid4()}", result_type=PingOutput,
            task_queue=state.settings.task_queue, execution_timeout=PING_TIMEOUT,
        )
    except Exception as err:
        return ComponentCheck(ok=False, detail=f"no answer ({type(err).__name__}: {err})")
    return ComponentCheck(ok=True, detail=out.worker)


@router.get("/healthz", tags=["health"], response_model=HealthReport,
            responses={503: {"model": HealthReport, "description": "the database or Temporal does not answer"}})
async def healthz(state: StateDep) -> JSONResponse:
    """200 when the database and Temporal both answer, 503 (saying which failed) otherwise."""
    database = await _check_database(state)
    temporal, _ = await _check_temporal(state, wait_seconds=0)
    checks = {name: "ok" if check.ok else f"error: {check.detail}"
              for name, check in (("database", database), ("temporal", temporal))}
    healthy = database.ok and temporal.ok
    return JSONResponse({"status": "ok" if healthy else "unhealthy", **checks},
                        status_code=200 if healthy else 503)


@router.get("/api/v1/doctor", response_model=DoctorReport, tags=["health"],
            summary="Database, Temporal and a worker round trip", responses=error_responses(*AUTHENTICATED))
async def doctor(state: StateDep, _: CurrentUser) -> DoctorReport:
    database = await _check_database(state)
    temporal, client = await _check_temporal(state, wait_seconds=5)
    untried = ComponentCheck(ok=False, detail="not tried: Temporal does not answer")
    attributes = await _check_search_attributes(state, client) if client is not None else untried
    worker = await _check_worker(state, client) if client is not None else untried
    return DoctorReport(version=__version__, database=database, temporal=temporal,
                        search_attributes=attributes, worker=worker)
