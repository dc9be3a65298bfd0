"""Page: managed jobs (``/managed``) — the viewer's own, every user's for an admin — newest
first, with their status, recoveries, current cluster, cost and Temporal link. The rows come
from ``styx.services.managed.list_jobs``, what ``styx jobs queue`` and the REST route list.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from styx.api.dashboard.columns import MANAGED_COLUMNS
from styx.api.dashboard.render import page
from styx.api.dashboard.session import ViewerDep
from styx.api.deps import StateDep
from styx.services import managed as service

router = APIRouter(include_in_schema=False)

#: Managed jobs shown on the page.
SHOWN = 200


@router.get("/managed")
async def managed_page(request: Request, state: StateDep, viewer: ViewerDep,
                       active: bool = Query(False)) -> Response:
    jobs = await asyncio.to_thread(service.list_jobs, state.db, viewer.user, all_users=viewer.user.is_admin,
                                   limit=SHOWN, active_only=active, workflow_url=state.settings.workflow_url)
    return page(request, viewer, "managed.html", jobs=jobs, columns=MANAGED_COLUMNS, active=active, shown=SHOWN)
