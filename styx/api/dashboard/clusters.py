"""Pages: the clusters (``/``), one cluster with its jobs (``/clusters/{name}``), and the
cluster actions — stop, start, down, set autostop (``POST /clusters/{name}/{action}``).

Actions go through the REST routes' functions (``styx.api.dashboard.actions``); the pages
read through ``styx.api.dashboard.data``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from styx.api.dashboard.actions import flash, perform
from styx.api.dashboard.columns import (
    CLUSTER_COLUMNS,
    JOB_COLUMNS,
    cluster_actions,
    job_actions,
    owned_cluster_actions,
)
from styx.api.dashboard.data import (
    JOBS_SHOWN,
    MAX_JOBS_SHOWN,
    NO_JOBS,
    ClusterFilters,
    ClusterRow,
    autostop_at,
    cluster_page,
)
from styx.api.dashboard.render import page
from styx.api.dashboard.session import Viewer, ViewerDep, read_form
from styx.api.deps import StateDep, get_temporal
from styx.api.routes import clusters as api
from styx.contracts.rest import AutostopRequest, ClusterInfo, JobInfo
from styx.db import User
from styx.services.access import ClusterAccess, may_cancel, resolve_cluster_access

router = APIRouter(include_in_schema=False)


@router.get("/")
async def clusters_view(request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    filters, problems = ClusterFilters.from_query(request.query_params)
    data = await asyncio.to_thread(cluster_page, state, viewer.user, filters)
    return page(request, viewer, "clusters.html", status_code=422 if problems else 200,
                data=data, problems=problems, columns=CLUSTER_COLUMNS, actions=owned_cluster_actions)


def not_found(request: Request, viewer: Viewer, detail: str) -> Response:
    return page(request, viewer, "error.html", status_code=404, title="Not found", detail=detail)


@router.get("/clusters/{name}")
async def cluster_view(name: str, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    raw_limit = request.query_params.get("limit", "")
    limit = int(raw_limit) if raw_limit.isdigit() else JOBS_SHOWN
    limit = max(1, min(limit, MAX_JOBS_SHOWN))

    def read() -> tuple[ClusterRow, ClusterAccess, list[JobInfo]] | None:
        cluster, access, shares = resolve_cluster_access(state.db, viewer.user, name)
        if cluster is None or access == ClusterAccess.NONE:
            return None
        jobs = state.db.clusters.list_jobs(name, limit=limit + 1)
        activity = state.db.clusters.job_activity([name]).get(name, NO_JOBS)
        info = api.cluster_info(state, cluster, shares)
        row = ClusterRow(info, access, activity, autostop_at(info, cluster.updated_at, activity),
                         datetime.now(timezone.utc))
        return row, access, [api.job_info(state, j) for j in jobs]

    found = await asyncio.to_thread(read)
    if found is None:
        return not_found(request, viewer, f"cluster {name!r} not found")
    row, access, jobs = found
    more = len(jobs) > limit
    jobs = jobs[:limit]
    cancellable = {j.job_id for j in jobs if not j.finished and may_cancel(viewer.user, access, j)}
    return page(request, viewer, "cluster.html", row=row, cluster=row.info,
                jobs=jobs, more=more, limit=limit, next_limit=min(limit * 2, MAX_JOBS_SHOWN),
                columns=CLUSTER_COLUMNS, job_columns=JOB_COLUMNS, job_actions=job_actions(cancellable),
                cluster_actions=cluster_actions)


def _said(action: str) -> Callable[[ClusterInfo], str]:
    def done(info: ClusterInfo) -> str:
        return f"cluster {info.name}: {action}, now {info.status}"
    return done


@router.post("/clusters/{name}/{action}")
async def cluster_action(name: str, action: str, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    fields = await read_form(request, viewer)
    back = f"/clusters/{name}"
    user = viewer.user
    if action in ("stop", "start", "down"):
        route = {"stop": api.stop, "start": api.start, "down": api.down}[action]
        verb = {"stop": "stopped", "start": "started", "down": "taken down"}[action]
        return await perform(request, lambda: _lifecycle(route, name, state, user), _said(verb), back)
    if action == "autostop":
        raw = (fields.get("idle_minutes") or "").strip()
        try:
            req = AutostopRequest(idle_minutes=None if raw in ("", "off") else raw,  # type: ignore[arg-type]
                                  down=fields.get("down") in ("1", "on", "true"))
        except ValidationError as err:
            first = err.errors()[0]
            return flash(request, f"idle_minutes: {first['msg']}", 422, back)

        async def call():
            return await api.autostop(name, req, state, await get_temporal(state), user)

        def done(info: ClusterInfo) -> str:
            if info.autostop_minutes is None:
                return f"cluster {info.name}: autostop off"
            return (f"cluster {info.name}: {'down' if info.autostop_down else 'stop'} after "
                    f"{info.autostop_minutes} idle minutes")
        return await perform(request, call, done, back)
    return flash(request, f"action: no action {action!r} (stop, start, down or autostop)", 404, back)


async def _lifecycle(route: Callable[..., Awaitable[ClusterInfo]], name: str, state: StateDep,
                     user: User) -> ClusterInfo:
    return await route(name, state, await get_temporal(state), user)
