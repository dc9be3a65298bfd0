"""Clusters and their jobs: launch, exec, status, queue, logs, cancel, stop, start, down,
autostop, share.

Every route asks ``styx.services.access.cluster_access`` who the caller is to the cluster:
to a caller with no access the cluster does not exist (the same 404 as a missing one);
a user it is shared with may use it (exec, read jobs and logs, cancel their own jobs); its
owner and the admins may also stop, start, down, set autostop, cancel any job and share it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response, StreamingResponse
from temporalio.service import RPCError

from styx.api.deps import CurrentUser, IdempotencyKey, PathId, StateDep, TemporalDep, get_temporal
from styx.api.routes.uploads import upload_access
from styx.contracts.clusters import (
    CLUSTER_GONE,
    AutostopInput,
    CancelJobInput,
    CancelJobResult,
    ClusterDescription,
    ClusterStatus,
    SubmitJobResult,
    cluster_workflow_id,
)
from styx.contracts.providers import (
    CHECK_WORKFLOW,
    RECONCILE_WORKFLOW,
    CheckInput,
    CheckOutput,
    ReconcileInput,
    ReconcileOutput,
)
from styx.contracts.rest import (
    AutostopRequest,
    CancelRequest,
    CancelResult,
    ClusterInfo,
    ExecRequest,
    JobInfo,
    DEFAULT_CLUSTER_PAGE,
    JobSubmitted,
    LaunchRequest,
    MAX_CLUSTER_PAGE,
    NodeInfo,
    Orphan,
    ProviderCheck,
    ShareRequest,
)
from styx.contracts.jobs import JOB_TERMINAL
from styx.contracts.payloads import PayloadTooLarge
from styx.db import Cluster, ClusterNotFound, Job, LimitReached, Node, User, UserNotFound
from styx.joblogs import LogReader
from styx.services import clusters as service
from styx.services import listing
from styx.services.listing import ClusterQuery
from styx.services.access import ClusterAccess, may_cancel, owner_label, resolve_cluster_access
from styx.services import costs, policy, quotas
from styx.services.launch import (
    InvalidRequest,
    check_cluster_name,
    check_for_provider,
    cluster_spec,
    load_task,
    onto_existing,
    submit_input,
)

router = APIRouter(prefix="/api/v1/clusters", tags=["clusters"])

#: ApplicationError types raised by the cluster workflow -> HTTP status.
_ERROR_STATUS = {
    "JobNotFound": 404, "NoActiveJob": 404, "JobFinished": 409, "ClusterStopped": 409,
    "ClusterNotUp": 409, "InvalidState": 409, "ResourceMismatch": 409, "JobTooLarge": 422,
    "InvalidRequest": 422, "NameTaken": 409, "TeardownFailed": 503,
}


def _bad(err: InvalidRequest) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(err))


async def _update(call: Callable[[], Awaitable[Any]]) -> Any:
    """Call the cluster service; what the workflow refuses becomes an HTTP error a user can act on."""
    try:
        return await call()
    except service.ClusterRefused as err:
        raise HTTPException(_ERROR_STATUS.get(err.type, 400), err.message) from None
    except service.ClusterNotRunning as err:
        raise HTTPException(404, str(err)) from None
    except (service.ClusterBusy, service.SearchAttributesNotRegistered) as err:
        raise HTTPException(503, str(err)) from None
    except PayloadTooLarge as err:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(err)) from None


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _not_found(name: str) -> HTTPException:
    # The one answer for a cluster that does not exist and for one the caller may not see.
    return HTTPException(404, f"cluster {name!r} not found")


def _check_local_jobs(state: StateDep, provider: str, is_admin: bool) -> None:
    try:
        policy.check_local_jobs(state.settings, provider, is_admin)
    except policy.NotAllowed as err:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(err)) from None


def _cluster_or_404(state: StateDep, name: str) -> Cluster:
    cluster = state.db.clusters.get(name)
    if cluster is None:
        raise _not_found(name)
    return cluster


async def _authorized(state: StateDep, user: User, name: str, need: ClusterAccess,
                      doing: str = "") -> tuple[Cluster, ClusterAccess]:
    """The cluster and the caller's access to it: a 404 without access, a 403 with less than
    ``need`` (``doing`` says what was refused)."""
    cluster, access, _ = await asyncio.to_thread(resolve_cluster_access, state.db, user, name)
    if cluster is None or access == ClusterAccess.NONE:
        raise _not_found(name)
    if access < need:
        raise HTTPException(403, f"{doing or 'this'} needs the owner of cluster {name!r} "
                                 f"({owner_label(cluster)}) or an admin; it is only shared with you")
    return cluster, access


def _job_or_404(state: StateDep, cluster: str, job_id: int) -> Job:
    job = state.db.clusters.get_job(cluster, job_id)
    if job is None:
        raise HTTPException(404, f"cluster {cluster!r} has no job {job_id}")
    return job


def cluster_info(state: StateDep, cluster: Cluster, shares: list[str] | None = None,
                 spent: dict[tuple[str, str], float] | None = None, nodes: list[Node] | None = None) -> ClusterInfo:
    """The public shape of ``cluster``; its shares, nodes and cost so far are read unless given
    (``spent``: cost by (cluster, launch), from ``costs.spent_by_launch``)."""
    if shares is None:
        shares = state.db.clusters.shares(cluster.name)
    if nodes is None:
        nodes = state.db.clusters.list_nodes(cluster.name)
    cost = (spent.get((cluster.name, cluster.launch_id or ""), 0.0) if spent is not None
            else costs.cost_so_far(state.db, cluster.name))
    return ClusterInfo.model_validate(cluster).model_copy(update={
        "workflow_url": state.settings.workflow_url(cluster.workflow_id),
        "nodes": [NodeInfo.model_validate(n) for n in nodes],
        "shared_with": shares,
        "hourly_rate": costs.hourly_rate(cluster),
        "cost_so_far": cost,
    })


def job_info(state: StateDep, job: Job) -> JobInfo:
    return JobInfo.model_validate(job).model_copy(update={"workflow_url": state.settings.workflow_url(job.workflow_id)})


def _submitted(state: StateDep, cluster: str, result: SubmitJobResult, warnings: list[str]) -> JobSubmitted:
    return JobSubmitted(cluster=cluster, job_id=result.job_id, workflow_id=result.workflow_id,
                        workflow_url=state.settings.workflow_url(result.workflow_id), warnings=warnings)


@router.post("", status_code=201, response_model=JobSubmitted, summary="Launch a cluster and run a task")
async def launch(req: LaunchRequest, state: StateDep, client: TemporalDep, user: CurrentUser,
                 key: IdempotencyKey = None) -> JobSubmitted:
    """Provision ``cluster`` if it does not exist, then queue the task on it, ``setup`` first.
    A cluster of that name that exists is reused when the task fits its nodes (CPUs, memory,
    accelerators, node count, provider, region, zone; what the task leaves out fits), and
    refused with 409 naming what does not. Returns at once with the job id; follow it with
    ``GET .../jobs/{id}/logs?follow=true``.

    A new cluster is the caller's. Onto an existing one the caller needs its use (owner,
    shared with, or admin); anyone else gets a 409 that the name is not available, which
    says nothing of whose it is. Sent again with the same ``Idempotency-Key``, it returns
    the first job and queues nothing.

    A new cluster larger than its provider allows is a 422 naming ``task.num_nodes`` (and how
    many would fit); one that would take a non-admin over their limits (``styx user limits``)
    a 403 naming the limit and what they hold. Either way nothing starts."""
    try:
        check_cluster_name(req.cluster)
        task = await asyncio.to_thread(load_task, req.task, may_use_upload=upload_access(state, user))
    except InvalidRequest as err:
        raise _bad(err) from None
    existing, access, _ = await asyncio.to_thread(resolve_cluster_access, state.db, user, req.cluster)
    live = existing is not None and existing.status not in CLUSTER_GONE
    if live and access == ClusterAccess.NONE:
        raise HTTPException(409, f"cluster: the name {req.cluster!r} is not available; choose another name")
    # The owner the caller expects: the workflow refuses the job if the cluster turns out to
    # be someone else's (two launches of one new name racing each other).
    owner = existing.owner if live and existing is not None else user.name
    try:
        if live and existing is not None:
            task = onto_existing(task, existing.provider, existing.region, _json_dict(existing.resources))
        spec = cluster_spec(task, req.cluster, req.idle_minutes_to_autostop, req.down, owner=owner,
                            queue_window=state.settings.queue_window)
        warnings = check_for_provider(task, spec.provider)
        submit = submit_input(task, user.name, state.settings.home, launch_spec=spec, run_setup=True)
        if not live or existing is None or spec.num_nodes != existing.num_nodes:
            quotas.check_provider_nodes(state.settings, spec)  # nothing starts beyond what the provider takes
    except InvalidRequest as err:
        raise _bad(err) from None
    _check_local_jobs(state, spec.provider, user.is_admin)
    if not live:
        try:
            await asyncio.to_thread(quotas.check_user_limits, state.db, state.settings, user, spec)
        except quotas.LimitExceeded as err:
            raise HTTPException(status.HTTP_403_FORBIDDEN, str(err)) from None
    result = await _update(lambda: service.submit_job(client, state.settings.task_queue, req.cluster, submit,
                                                      launch=spec, update_id=service.submission_id(user.name, key),
                                                      specs=state.db.jobspecs))
    return _submitted(state, req.cluster, result, warnings)


#: How many clusters ``?refresh=true`` probes at once.
REFRESH_CONCURRENCY = 8
_REFRESH_QUERY = Query(False, description="probe the nodes now (the provider's view, then SSH) and mark "
                                          "those that do not answer DOWN, those that do UP, before answering")


async def _refresh(client: Any, cluster: Cluster | ClusterInfo) -> None:
    """Ask the cluster's workflow to probe its nodes now (its ``refresh`` update)."""
    await _update(lambda: service.update_cluster(client, cluster.workflow_id, "refresh",
                                                 result_type=ClusterDescription))


@router.get("", response_model=list[ClusterInfo], summary="List clusters")
async def list_clusters(state: StateDep, user: CurrentUser,
                        all: bool = Query(False, description="include clusters taken down"),
                        refresh: bool = _REFRESH_QUERY,
                        status: list[ClusterStatus] | None = Query(
                            None, description="only clusters in these statuses (repeatable)"),
                        provider: str | None = Query(None, max_length=32, description="only this provider's"),
                        owner: str | None = Query(None, max_length=64, description="only this user's"),
                        after: str | None = Query(None, max_length=255,
                                                  description="the page after this cluster name"),
                        limit: int = Query(DEFAULT_CLUSTER_PAGE, ge=1, le=MAX_CLUSTER_PAGE,
                                           description="the most clusters in the page")) -> Response:
    """The clusters the caller may see: their own, those shared with them (admins: all), by
    name, each with its nodes and its unfinished jobs by status (``active_jobs``). A page
    holds at most ``limit`` (100 unless asked, at most 1,000); a full page may have a next
    one: ask again with ``after`` the last name. With ``refresh``, each UP one's nodes are
    probed first (a cluster whose probe fails is shown as last known)."""
    query = ClusterQuery(statuses=tuple(status) if status else None, provider=provider, owner=owner,
                         include_terminated=all, after=after, limit=limit)
    if refresh:
        client = await get_temporal(state)  # only now: a plain listing needs no Temporal
        limiter = asyncio.Semaphore(REFRESH_CONCURRENCY)

        async def one(cluster: ClusterInfo) -> None:
            async with limiter:
                await _refresh(client, cluster)

        rows = await asyncio.to_thread(listing.list_clusters, state.db, state.settings, user, query)
        await asyncio.gather(*(one(c) for c in rows if c.status == ClusterStatus.UP), return_exceptions=True)
    # The JSON straight from the rows: a response_model would validate a thousand clusters again.
    body = await asyncio.to_thread(listing.list_clusters_json, state.db, state.settings, user, query)
    return Response(body, media_type="application/json")


@router.get("/{name}", response_model=ClusterInfo, summary="One cluster, with its nodes")
async def get_cluster(name: str, state: StateDep, user: CurrentUser,
                      refresh: bool = _REFRESH_QUERY) -> ClusterInfo:
    cluster, _ = await _authorized(state, user, name, ClusterAccess.USE)
    if refresh and cluster.status == ClusterStatus.UP:
        await _refresh(await get_temporal(state), cluster)
        cluster = _cluster_or_404(state, name)
    return cluster_info(state, cluster)


@router.post("/{name}/jobs", status_code=201, response_model=JobSubmitted, summary="Queue a task on a cluster")
async def exec_job(name: str, req: ExecRequest, state: StateDep, client: TemporalDep,
                   user: CurrentUser, key: IdempotencyKey = None) -> JobSubmitted:
    """Queue the task on a cluster that exists. Its ``setup`` is not run (as `sky exec`):
    launch the task onto the cluster to run it. Sent again with the same ``Idempotency-Key``,
    it returns the first job and queues nothing."""
    cluster, _ = await _authorized(state, user, name, ClusterAccess.USE)
    try:
        task = await asyncio.to_thread(load_task, req.task, may_use_upload=upload_access(state, user))
        warnings = check_for_provider(task, cluster.provider)
        submit = submit_input(task, user.name, state.settings.home, run_setup=False)  # as `sky exec`
    except InvalidRequest as err:
        raise _bad(err) from None
    _check_local_jobs(state, cluster.provider, user.is_admin)
    if cluster.status == ClusterStatus.STOPPED:
        raise HTTPException(409, f"cluster {name!r} is STOPPED; run `styx start {name}` first")
    result = await _update(lambda: service.submit_job(client, state.settings.task_queue, name, submit,
                                                      update_id=service.submission_id(user.name, key),
                                                      specs=state.db.jobspecs))
    return _submitted(state, name, result, warnings)


@router.get("/{name}/jobs", response_model=list[JobInfo], summary="The cluster's job queue")
async def queue(name: str, state: StateDep, user: CurrentUser) -> list[JobInfo]:
    await _authorized(state, user, name, ClusterAccess.USE)
    return [job_info(state, j) for j in await asyncio.to_thread(state.db.clusters.list_jobs, name)]


@router.get("/{name}/jobs/{job_id}", response_model=JobInfo, summary="One job")
async def get_job(name: str, job_id: PathId, state: StateDep, user: CurrentUser) -> JobInfo:
    await _authorized(state, user, name, ClusterAccess.USE)
    return job_info(state, _job_or_404(state, name, job_id))


@router.get("/{name}/jobs/{job_id}/logs", summary="A job's log (all nodes, prefixed by rank)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the log"}})
async def job_logs(name: str, job_id: PathId, state: StateDep, user: CurrentUser,
                   follow: bool = Query(False, description="stream until the job ends")) -> StreamingResponse:
    await _authorized(state, user, name, ClusterAccess.USE)
    job = _job_or_404(state, name, job_id)
    # From the database: any API replica serves any job's log, whichever worker copied it.
    reader = LogReader(state.db, name, job_id, job.num_nodes)

    async def stream() -> AsyncIterator[bytes]:
        delay = 0.02
        while True:
            current = await asyncio.to_thread(state.db.clusters.get_job, name, job_id)
            ended = current is None or current.status.is_terminal or not follow
            got = False
            while True:
                chunks = await asyncio.to_thread(lambda: list(reader.read_new(final=ended)))
                if not chunks:
                    break
                got = True
                for chunk in chunks:
                    yield chunk
            if ended:
                return
            delay = 0.02 if got else min(delay * 2, 0.5)
            await asyncio.sleep(delay)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


@router.post("/{name}/jobs/cancel", response_model=CancelResult, summary="Cancel jobs")
async def cancel(name: str, req: CancelRequest, state: StateDep, client: TemporalDep,
                 user: CurrentUser) -> CancelResult:
    """Cancel the given jobs (their processes are killed on every node), or without ids the
    latest running or waiting job. A job that already finished is a 409, and nothing changes.
    A user the cluster is shared with cancels only their own jobs (without ids: their latest)."""
    cluster, access = await _authorized(state, user, name, ClusterAccess.USE)
    job_ids: list[int | None] = list(req.job_ids or [])
    if not job_ids and access < ClusterAccess.OWN:
        active = await asyncio.to_thread(state.db.clusters.list_jobs, name)
        mine = [j.job_id for j in active if j.user == user.name and j.status not in JOB_TERMINAL]
        if not mine:
            raise HTTPException(404, f"no running or waiting job of yours on cluster {name!r}")
        job_ids = [max(mine)]
    for job_id in job_ids:
        assert job_id is not None
        job = _job_or_404(state, name, job_id)
        if not may_cancel(user, access, job):
            raise HTTPException(403, f"job {job_id} on cluster {name!r} is {job.user or 'an admin'}'s: only they, "
                                     f"the cluster's owner ({owner_label(cluster)}) or an admin may cancel it")
        if job.status.is_terminal:
            raise HTTPException(409, f"job {job_id} already finished ({job.status.value}); nothing to cancel")
    cancelled = []
    for job_id in job_ids or [None]:
        result = await _update(lambda: service.update_cluster(
            client, cluster.workflow_id, "cancel_job", CancelJobInput(job_id), result_type=CancelJobResult))
        cancelled.append(result.job_id)
    return CancelResult(cluster=name, cancelled=cancelled)


_DOING = {"stop": "stopping", "start": "starting", "down": "tearing down"}


async def _lifecycle(name: str, action: str, state: StateDep, client: TemporalDep, user: User) -> ClusterInfo:
    cluster = state.db.clusters.get(name)
    if cluster is not None:
        await _authorized(state, user, name, ClusterAccess.OWN, _DOING[action])
    elif not user.is_admin:
        raise _not_found(name)  # a workflow without its row: whose it is is unknown, so admins only
    handle = client.get_workflow_handle(cluster.workflow_id if cluster else cluster_workflow_id(name))
    if cluster is None:
        # The read model lost the row, but the cluster's workflow is the truth: if it still
        # runs, act through it (its provider finds the nodes by tag, not by this row).
        try:
            running = (await handle.describe()).status.name == "RUNNING"
        except RPCError:
            running = False
        if not running:
            raise HTTPException(404, f"cluster {name!r} not found")
        await _update(lambda: service.update_cluster(client, handle.id, action, result_type=ClusterDescription))
        return cluster_info(state, _cluster_or_404(state, name))
    if action == "down" and cluster.status == ClusterStatus.TERMINATED:
        pass  # its workflow took it down already and left no node
    elif action == "down":
        await _update(lambda: _down(state, client, cluster))
    else:
        await _update(lambda: service.update_cluster(client, handle.id, action, result_type=ClusterDescription))
    return cluster_info(state, _cluster_or_404(state, name))


async def _down(state: StateDep, client: TemporalDep, cluster: Cluster) -> Any:
    """Through the cluster's workflow while it runs; when it does not (terminated, died mid
    launch, or its launch failed), a teardown workflow removes what the provider holds."""
    try:
        return await service.update_cluster(client, cluster.workflow_id, "down", result_type=ClusterDescription)
    except service.ClusterNotRunning:
        message = f"taken down after its workflow had ended (it was {cluster.status.value}" + (
            f": {cluster.status_message[:300]})" if cluster.status_message else ")")
        return await service.teardown(client, state.settings.task_queue, cluster.name, cluster.provider,
                                      cluster.region, message)


@router.post("/{name}/stop", response_model=ClusterInfo, summary="Stop a cluster's nodes")
async def stop(name: str, state: StateDep, client: TemporalDep, user: CurrentUser) -> ClusterInfo:
    """Stops the nodes (their running jobs end, as on a stopped VM); `start` brings them back."""
    return await _lifecycle(name, "stop", state, client, user)


@router.post("/{name}/start", response_model=ClusterInfo, summary="Start a stopped cluster")
async def start(name: str, state: StateDep, client: TemporalDep, user: CurrentUser) -> ClusterInfo:
    return await _lifecycle(name, "start", state, client, user)


@router.post("/{name}/down", response_model=ClusterInfo, summary="Tear a cluster down")
async def down(name: str, state: StateDep, client: TemporalDep, user: CurrentUser) -> ClusterInfo:
    """Cancels its jobs and removes its nodes for good."""
    return await _lifecycle(name, "down", state, client, user)


@router.post("/{name}/autostop", response_model=ClusterInfo, summary="Set or clear autostop")
async def autostop(name: str, req: AutostopRequest, state: StateDep, client: TemporalDep,
                   user: CurrentUser) -> ClusterInfo:
    cluster, _ = await _authorized(state, user, name, ClusterAccess.OWN, "setting autostop")
    await _update(lambda: service.update_cluster(client, cluster.workflow_id, "set_autostop",
                                                 AutostopInput(req.idle_minutes, req.down),
                                                 result_type=ClusterDescription))
    return cluster_info(state, _cluster_or_404(state, name))


@router.post("/{name}/shares", response_model=ClusterInfo, summary="Let another user use a cluster")
async def share(name: str, req: ShareRequest, state: StateDep, user: CurrentUser) -> ClusterInfo:
    """The user may then see the cluster, queue jobs on it, read its jobs and logs, and cancel
    their own jobs; stopping, starting, tearing down, autostop and sharing stay with the owner
    and the admins. Sharing twice is harmless. Owner or admin only."""
    cluster, _ = await _authorized(state, user, name, ClusterAccess.OWN, "sharing")
    target = await asyncio.to_thread(state.db.users.get, req.user)
    if target is None:
        raise HTTPException(404, f"user: no user {req.user!r}")
    if target.name == cluster.owner:
        raise HTTPException(409, f"user: {req.user!r} owns cluster {name!r} already")
    try:
        await asyncio.to_thread(state.db.clusters.add_share, name, target.name,
                                limit=state.settings.max_cluster_shares)
    except LimitReached as err:
        raise HTTPException(409, str(err)) from None
    except (ClusterNotFound, UserNotFound) as err:
        raise HTTPException(404, str(err)) from None
    return cluster_info(state, _cluster_or_404(state, name))


@router.delete("/{name}/shares/{share_user}", response_model=ClusterInfo, summary="Stop sharing a cluster")
async def unshare(name: str, share_user: str, state: StateDep, user: CurrentUser) -> ClusterInfo:
    """The user's jobs already queued keep running; they can no longer see the cluster."""
    await _authorized(state, user, name, ClusterAccess.OWN, "unsharing")
    if not await asyncio.to_thread(state.db.clusters.remove_share, name, share_user):
        raise HTTPException(404, f"cluster {name!r} is not shared with {share_user!r}")
    return cluster_info(state, _cluster_or_404(state, name))


def _require_admin(user: Any, what: str) -> None:
    if not user.is_admin:
        raise HTTPException(403, f"{what} needs an admin token")


check_router = APIRouter(prefix="/api/v1", tags=["providers"])


@check_router.get("/check", response_model=list[ProviderCheck], summary="Which providers are usable, and why not")
async def check(state: StateDep, client: TemporalDep, user: CurrentUser,
                region: str | None = Query(None, description="AWS region to check")) -> list[ProviderCheck]:
    """Asked of a worker: its credentials and configuration are what launches use. Admin
    only: it makes the worker talk to the cloud providers."""
    _require_admin(user, "checking providers")
    out = await client.execute_workflow(
        CHECK_WORKFLOW, CheckInput(region), id=f"check/{uuid.uuid4()}", result_type=CheckOutput, task_queue=state.settings.task_queue,
        execution_timeout=timedelta(seconds=90))
    return [ProviderCheck(**r) for r in out.results]


@check_router.get("/orphans", response_model=list[Orphan], summary="Instances that belong to no live cluster")
async def orphans(state: StateDep, client: TemporalDep, user: CurrentUser,
                  terminate: bool = Query(False, description="also terminate them"),
                  region: str | None = Query(None, description="one AWS region (default: all)")) -> list[Orphan]:
    """Cloud instances tagged with this Styx deployment whose cluster is not live (admin only)."""
    _require_admin(user, "listing orphans")
    out = await client.execute_workflow(
        RECONCILE_WORKFLOW, ReconcileInput(terminate=terminate, region=region), id=f"reconcile/once/{uuid.uuid4()}",
        result_type=ReconcileOutput,
        task_queue=state.settings.task_queue, execution_timeout=timedelta(minutes=30))
    return [Orphan(instance_id=o["instance_id"], cluster=o.get("cluster"), state=o.get("state", ""),
                   region=o.get("region"), terminated=o["instance_id"] in out.terminated) for o in out.orphans]
