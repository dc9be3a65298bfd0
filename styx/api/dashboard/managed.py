"""Pages: managed jobs (``/managed``) — the viewer's own, every user's for an admin — newest
first, one managed job with its tasks and attempts (``/managed/{id}``), and cancel
(``POST /managed/{id}/cancel``).

The rows come from ``styx.services.managed`` (``list_jobs``, ``get_job``: what ``styx jobs
queue`` and the REST routes answer, with the same rule — a user sees and cancels their own,
an admin everyone's; anyone else gets a 404). Cancel calls the REST route's own function
(``styx.api.routes.managed.cancel``), so its checks and messages are the API's. Each attempt
links to its job's page on its cluster, where its log is followed live while it runs.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from styx.api.dashboard.actions import perform
from styx.api.dashboard.clusters import not_found
from styx.api.dashboard.columns import ATTEMPT_COLUMNS, MANAGED_COLUMNS, TASK_COLUMNS, AttemptRow, cancel_managed
from styx.api.dashboard.render import page
from styx.api.dashboard.session import ViewerDep, read_form
from styx.api.deps import PathId, StateDep, get_temporal
from styx.api.routes import clusters as cluster_api
from styx.api.routes import managed as api
from styx.contracts.rest_managed import MAX_MANAGED_LIST, ManagedCancelRequest, ManagedCancelResult, ManagedJobInfo
from styx.services import managed as service

router = APIRouter(include_in_schema=False)

#: Managed jobs shown at first, newest first (``?limit=`` more, at most ``MAX_MANAGED_LIST``,
#: what ``styx jobs queue --limit`` allows).
SHOWN = 50


@router.get("/managed")
async def managed_page(request: Request, state: StateDep, viewer: ViewerDep,
                       active: bool = Query(False)) -> Response:
    raw_limit = request.query_params.get("limit", "")
    limit = max(1, min(int(raw_limit) if raw_limit.isdigit() else SHOWN, MAX_MANAGED_LIST))
    jobs = await asyncio.to_thread(service.list_jobs, state.db, viewer.user, all_users=viewer.user.is_admin,
                                   limit=limit + 1, active_only=active, workflow_url=state.settings.workflow_url)
    return page(request, viewer, "managed.html", jobs=jobs[:limit], more=len(jobs) > limit, limit=limit,
                next_limit=min(limit * 2, MAX_MANAGED_LIST), columns=MANAGED_COLUMNS, active=active,
                actions=_cancel_if_running)


def _cancel_if_running(job: ManagedJobInfo) -> str:
    return cancel_managed(job) if not job.finished and job.status != "CANCELLING" else ""


@router.get("/managed/{managed_id}")
async def managed_job_page(managed_id: PathId, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    def read() -> tuple[ManagedJobInfo, list[AttemptRow]] | None:
        try:
            job = service.get_job(state.db, viewer.user, managed_id, workflow_url=state.settings.workflow_url)
        except service.ManagedJobNotFound:
            return None
        rows = []
        for attempt in job.attempts:  # bounded: the recoveries and restarts a job may have
            ran = state.db.clusters.get_job(attempt.cluster, attempt.job_id) if attempt.job_id else None
            rows.append(AttemptRow(attempt, cluster_api.job_info(state, ran).exit_codes if ran is not None else None))
        return job, rows

    found = await asyncio.to_thread(read)
    if found is None:
        return not_found(request, viewer, f"managed job {managed_id} not found")
    job, attempts = found
    return page(request, viewer, "managed_job.html", job=job, attempts=attempts, task_columns=TASK_COLUMNS,
                attempt_columns=ATTEMPT_COLUMNS, cancel=_cancel_if_running(job))


@router.post("/managed/{managed_id}/cancel")
async def cancel(managed_id: PathId, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    await read_form(request, viewer)

    async def call() -> ManagedCancelResult:
        return await api.cancel(ManagedCancelRequest(ids=[managed_id]), state, await get_temporal(state), viewer.user)

    return await perform(request, call, lambda r: f"managed job {managed_id}: cancelling (its job is killed, "
                                                  "its cluster taken down)", f"/managed/{managed_id}")
