"""Managed jobs: launch (one task or a pipeline), list, one job, its logs across recoveries,
cancel — ``/api/v1/managed-jobs``.

Every route asks ``styx.services.managed`` who may see what: a user sees and cancels their
own managed jobs, an admin everyone's; to anyone else a job does not exist (404).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from styx.api.deps import CurrentUser, IdempotencyKey, PathId, StateDep, TemporalDep
from styx.api.routes.uploads import upload_access
from styx.contracts.managed import ManagedJobStatus
from styx.contracts.rest_managed import (
    MAX_MANAGED_LIST,
    ManagedCancelRequest,
    ManagedCancelResult,
    ManagedJobInfo,
    ManagedJobRequest,
    ManagedJobSubmitted,
)
from styx.joblogs import LogReader
from styx.services import managed as service
from styx.services import policy, quotas
from styx.services.launch import InvalidRequest

router = APIRouter(prefix="/api/v1/managed-jobs", tags=["managed jobs"])


@router.post("", status_code=201, response_model=ManagedJobSubmitted,
             summary="Launch a managed job (one task, or a pipeline of tasks)")
async def launch(req: ManagedJobRequest, state: StateDep, client: TemporalDep, user: CurrentUser,
                 key: IdempotencyKey = None) -> ManagedJobSubmitted:
    """Each task runs on a cluster launched for it alone, taken down when it ends; a task
    preempted (a node lost, an instance terminated or stopped underneath) is launched again
    elsewhere, as its ``resources.job_recovery`` says, and one whose program fails is run
    again up to ``max_restarts_on_errors`` times. Tasks of a pipeline run one after another;
    a failed task stops the pipeline. Returns at once with the managed job's id. Sent again
    with the same ``Idempotency-Key``, it returns the first job and starts nothing."""
    try:
        prepared = await asyncio.to_thread(service.prepare, state.settings, state.db, user, req.tasks,
                                           req.max_restarts_on_errors, upload_access(state, user))
    except InvalidRequest as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(err)) from None
    except (policy.NotAllowed, quotas.LimitExceeded) as err:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(err)) from None
    try:
        job = await service.submit(client, state.db, state.settings, user, prepared, req.name, key)
    except service.ManagedIdTaken as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from None
    return ManagedJobSubmitted(managed_id=job.id, name=job.name, workflow_id=job.workflow_id,
                               workflow_url=state.settings.workflow_url(job.workflow_id),
                               warnings=prepared.warnings)


@router.get("", response_model=list[ManagedJobInfo], summary="List managed jobs")
async def list_jobs(state: StateDep, user: CurrentUser,
                    all_users: bool = Query(False, description="every user's (admins only)"),
                    active: bool = Query(False, description="only the jobs that have not ended"),
                    limit: int = Query(100, ge=1, le=MAX_MANAGED_LIST)) -> list[ManagedJobInfo]:
    """Your managed jobs, newest first, with their tasks (a pipeline's, in order), status,
    recoveries, current cluster and cost so far."""
    try:
        return await asyncio.to_thread(service.list_jobs, state.db, user, all_users=all_users, limit=limit,
                                       active_only=active, workflow_url=state.settings.workflow_url)
    except policy.NotAllowed as err:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(err)) from None


@router.get("/{managed_id}", response_model=ManagedJobInfo, summary="One managed job, with its attempts")
async def get_job(managed_id: PathId, state: StateDep, user: CurrentUser) -> ManagedJobInfo:
    try:
        return await asyncio.to_thread(service.get_job, state.db, user, managed_id, state.settings.workflow_url)
    except service.ManagedJobNotFound as err:
        raise HTTPException(404, str(err)) from None


@router.get("/{managed_id}/logs", summary="A managed job's log, attempt after attempt",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the log"}})
async def logs(managed_id: PathId, state: StateDep, user: CurrentUser,
               follow: bool = Query(False, description="stream until the managed job ends")) -> StreamingResponse:
    """Every attempt's log in order (each task of a pipeline, each recovery), each headed by
    a line naming the task, the attempt and its cluster, and followed by how it ended."""
    await get_job(managed_id, state, user)
    db = state.db

    async def stream() -> AsyncIterator[bytes]:
        shown: set[tuple[str, int]] = set()
        delay = 0.05
        while True:
            job = await asyncio.to_thread(db.managed.get, managed_id)
            finished = job is None or ManagedJobStatus(job.status).is_terminal
            parts = await asyncio.to_thread(service.log_parts, db, managed_id)
            progressed = False
            for part in parts:
                if (part.cluster, part.job_id) in shown:
                    continue
                progressed = True
                yield f"{part.header} ──\n".encode()
                async for chunk in _attempt_log(db, part, follow):
                    yield chunk
                shown.add((part.cluster, part.job_id))
                if part.end is None and follow:  # how it ended, once it has
                    part = next((p for p in await asyncio.to_thread(service.log_parts, db, managed_id)
                                 if (p.cluster, p.job_id) == (part.cluster, part.job_id)), part)
                if part.end:
                    yield f"── {part.end} ──\n".encode()
            if finished or not follow:
                if job is not None and finished:
                    message = f": {job.message}" if job.message else ""
                    yield f"── managed job {managed_id}: {job.status}{message} ──\n".encode()
                return
            delay = 0.05 if progressed else min(delay * 2, 1.0)
            await asyncio.sleep(delay)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


async def _attempt_log(db: Any, part: service.LogPart, follow: bool) -> AsyncIterator[bytes]:
    """One attempt's job log (with ``follow``, until its job ends)."""
    reader = LogReader(db, part.cluster, part.job_id, part.num_nodes)
    delay = 0.05
    while True:
        row = await asyncio.to_thread(db.clusters.get_job, part.cluster, part.job_id)
        done = row is None or row.status.is_terminal or not follow
        chunks = await asyncio.to_thread(lambda: list(reader.read_new(final=done)))
        for chunk in chunks:
            yield chunk
        if done and not chunks:
            return
        delay = 0.05 if chunks else min(delay * 2, 0.5)
        await asyncio.sleep(delay)


@router.post("/cancel", response_model=ManagedCancelResult, summary="Cancel managed jobs")
async def cancel(req: ManagedCancelRequest, state: StateDep, client: TemporalDep,
                 user: CurrentUser) -> ManagedCancelResult:
    """Cancel the named jobs (``ids``), those of a ``name``, or ``all`` your active ones: each
    is killed, its cluster taken down, and it ends CANCELLED. A job that already ended is a
    409, one you may not see a 404; either way nothing is cancelled."""
    try:
        jobs = await asyncio.to_thread(service.cancel_targets, state.db, user, req.ids, req.name, req.all)
    except InvalidRequest as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(err)) from None
    except service.ManagedJobNotFound as err:
        raise HTTPException(404, str(err)) from None
    except service.ManagedJobFinished as err:
        raise HTTPException(409, str(err)) from None
    if not jobs and (req.name or req.all):
        what = f"named {req.name!r}" if req.name else "of yours"
        raise HTTPException(404, f"no running or waiting managed job {what}")
    return ManagedCancelResult(cancelled=await service.cancel(client, state.db, jobs))
