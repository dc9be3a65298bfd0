"""Services (``styx serve``): up, status, update, down, a replica's logs, the load balancers' log.

A service belongs to the user who brought it up; its replicas are clusters of theirs
(``<name>-<n>``). Every route asks ``_authorized``: the owner and the admins act on it; to
anyone else it does not exist (404, as for a missing one).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from styx.api.deps import CurrentUser, PathId, StateDep, TemporalDep
from styx.api.routes import clusters as cluster_routes
from styx.api.routes.uploads import upload_access
from styx.contracts.rest_services import ReplicaInfo, ServeUpdateRequest, ServeUpRequest, ServiceInfo
from styx.contracts.services import (
    ServiceDescription,
    ServiceInput,
    ServiceTiming,
    UpdateServiceInput,
    replica_cluster_name,
    service_workflow_id,
)
from styx.db import AlreadyExists, PortsExhausted, Service, User
from styx.secrets import seal
from styx.services import clusters as cluster_service
from styx.services import policy, quotas
from styx.services import serve
from styx.services.launch import InvalidRequest, check_for_provider, cluster_spec, load_task
from styx.task import Task

router = APIRouter(prefix="/api/v1/services", tags=["services"])

_REFUSED = {"ServiceShuttingDown": 409, "StaleVersion": 409, "InvalidRequest": 422, "NotReady": 503}


def _not_found(name: str) -> HTTPException:
    return HTTPException(404, f"service {name!r} not found")


def _authorized(state: StateDep, user: User, name: str) -> Service:
    row = state.db.services.get(name)
    if row is None or user.disabled or not (user.is_admin or row.owner == user.name):
        raise _not_found(name)
    return row


def service_info(state: StateDep, row: Service, warnings: list[str] | None = None) -> ServiceInfo:
    replicas = [ReplicaInfo.model_validate(r) for r in state.db.services.replicas(row.name)]
    return ServiceInfo.model_validate(row).model_copy(update={
        "endpoint": f"http://{state.settings.serve_host}:{row.lb_port}",
        "replicas": replicas, "workflow_url": state.settings.workflow_url(row.workflow_id),
        "warnings": warnings or []})


def _timing(state: StateDep) -> ServiceTiming:
    s = state.settings
    return ServiceTiming(tick_seconds=s.serve_tick_seconds, qps_window_seconds=s.serve_qps_window_seconds,
                         drain_seconds=s.serve_drain_seconds)


def _check_task(state: StateDep, user: User, name: str, data: dict) -> tuple[Task, object, list[str]]:
    """The task, its service spec and the warnings; refused (422/403) before anything starts."""
    try:
        task = load_task(data, may_use_upload=upload_access(state, user))
        spec, warnings = serve.service_spec(task)
        launch = cluster_spec(task, replica_cluster_name(name, 1), owner=user.name)
        warnings += [w for w in check_for_provider(task, launch.provider) if not w.startswith("service:")]
        quotas.check_provider_nodes(state.settings, launch)
    except InvalidRequest as err:
        raise HTTPException(422, str(err)) from None
    try:
        policy.check_local_jobs(state.settings, launch.provider, user.is_admin)
    except policy.NotAllowed as err:
        raise HTTPException(403, str(err)) from None
    return task, spec, warnings


async def _refused(call):  # type: ignore[no-untyped-def]
    try:
        return await call
    except serve.ServiceRefused as err:
        raise HTTPException(_REFUSED.get(err.type, 409), err.message) from None
    except serve.ServiceNotRunning as err:
        raise HTTPException(409, f"{err}: take it down (`styx serve down`) and bring it up again") from None
    except (cluster_service.ClusterBusy, cluster_service.SearchAttributesNotRegistered) as err:
        raise HTTPException(503, str(err)) from None


@router.post("", status_code=201, response_model=ServiceInfo, summary="Bring a service up")
async def up(req: ServeUpRequest, state: StateDep, client: TemporalDep, user: CurrentUser) -> ServiceInfo:
    """Start service ``name``: its ``ServiceWorkflow`` launches the replicas (clusters
    ``<name>-<n>`` of the caller running the task), probes them, and the load balancers
    serve the ready ones at ``endpoint``. The task's ``service:`` section is SkyServe's
    (readiness_probe, replicas or replica_policy, load_balancing_policy, ports). Returns at
    once; follow it with ``GET /api/v1/services/{name}``. A name in use is a 409."""
    try:
        name = serve.check_service_name(req.name)
    except InvalidRequest as err:
        raise HTTPException(422, str(err)) from None
    task, spec, warnings = await asyncio.to_thread(_check_task, state, user, name, req.task)
    if not user.is_admin:  # the first replica must fit the caller's limits (later ones are checked as launched)
        try:
            await asyncio.to_thread(quotas.check_user_limits, state.db, state.settings, user,
                                    cluster_spec(task, replica_cluster_name(name, 1), owner=user.name))
        except quotas.LimitExceeded as err:
            raise HTTPException(403, str(err)) from None
    existing = await asyncio.to_thread(state.db.services.get, name)
    if existing is not None and await serve.running(client, name):
        raise HTTPException(409, f"name: service {name!r} exists; `styx serve update {name} ...` changes it")
    try:
        row = await asyncio.to_thread(
            state.db.services.create, name, owner=user.name, ports=state.settings.serve_ports,
            task=task.to_dict(include_secrets=False), sealed_secrets=seal(state.settings.home, task.secret_values()),
            spec=serve.spec_dict(spec), lb_policy=spec.load_balancing_policy, workflow_id=service_workflow_id(name),
            replace=existing is not None)  # a row whose workflow is gone (a crash before it started)
    except AlreadyExists:
        raise HTTPException(409, f"name: service {name!r} exists") from None
    except PortsExhausted as err:
        raise HTTPException(503, str(err)) from None
    try:
        await serve.start(client, state.settings.task_queue,
                          ServiceInput(name, user.name, 1, spec, row.lb_port, _timing(state)))
    except serve.ServiceExists:
        raise HTTPException(409, f"name: service {name!r} exists") from None
    return service_info(state, row, warnings)


@router.get("", response_model=list[ServiceInfo], summary="List services")
async def list_services(state: StateDep, user: CurrentUser) -> list[ServiceInfo]:
    rows = await asyncio.to_thread(state.db.services.list)
    return [service_info(state, r) for r in rows if user.is_admin or r.owner == user.name]


@router.get("/{name}", response_model=ServiceInfo, summary="One service, with its replicas")
async def get_service(name: str, state: StateDep, user: CurrentUser) -> ServiceInfo:
    return service_info(state, await asyncio.to_thread(_authorized, state, user, name))


@router.post("/{name}/update", response_model=ServiceInfo, summary="Roll out a new version")
async def update(name: str, req: ServeUpdateRequest, state: StateDep, client: TemporalDep,
                 user: CurrentUser) -> ServiceInfo:
    """The task becomes the next version; the replicas are replaced by new ones running it,
    one at a time (``rolling``: an old one leaves as each new one is ready, so the service
    keeps its capacity) or all at once (``blue_green``). Owner or admin."""
    row = await asyncio.to_thread(_authorized, state, user, name)
    owner = await asyncio.to_thread(state.db.users.get, row.owner or user.name)
    task, spec, warnings = await asyncio.to_thread(_check_task, state, owner or user, name, req.task)
    if not await serve.running(client, name):
        raise HTTPException(409, f"service {name!r} is not running: take it down (`styx serve down {name}`) "
                                 "and bring it up again")
    version = await asyncio.to_thread(
        state.db.services.add_version, name, task=task.to_dict(include_secrets=False),
        sealed_secrets=seal(state.settings.home, task.secret_values()), spec=serve.spec_dict(spec), mode=req.mode)
    desc = await _refused(serve.update(client, name, "update_version", UpdateServiceInput(version, spec, req.mode),
                                       result_type=ServiceDescription))
    info = service_info(state, await asyncio.to_thread(_authorized, state, user, name), warnings)
    # The workflow's answer is newer than its last record.
    return info.model_copy(update={"status": desc.status if desc.target_version == info.target_version else "UPDATING",
                                   "target_version": desc.target_version, "message": desc.message})


@router.post("/{name}/down", response_model=ServiceInfo, summary="Take a service down")
async def down(name: str, state: StateDep, client: TemporalDep, user: CurrentUser) -> ServiceInfo:
    """Its replicas are taken down and it is forgotten (``GET`` then answers 404); returns
    at once with the service SHUTTING_DOWN. A service whose workflow is gone is cleaned up
    here: its replicas' clusters are taken down, then its rows removed."""
    row = await asyncio.to_thread(_authorized, state, user, name)
    try:
        await serve.update(client, name, "down", result_type=ServiceDescription)
    except serve.ServiceNotRunning:
        for replica in await asyncio.to_thread(state.db.services.replicas, name):
            cluster = await asyncio.to_thread(state.db.clusters.get, replica.cluster)
            if cluster is not None:
                await cluster_routes._update(lambda c=cluster: cluster_routes._down(state, client, c))
        await asyncio.to_thread(state.db.services.forget, name)
        return service_info(state, row).model_copy(update={"status": "SHUTTING_DOWN", "replicas": []})
    except serve.ServiceRefused as err:
        raise HTTPException(_REFUSED.get(err.type, 409), err.message) from None
    fresh = await asyncio.to_thread(state.db.services.get, name)
    info = service_info(state, fresh or row)
    return info.model_copy(update={"status": "SHUTTING_DOWN"})


@router.get("/{name}/replicas/{replica_id}/logs", summary="A replica's log (its job's, every node)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the log"}})
async def replica_logs(name: str, replica_id: PathId, state: StateDep, user: CurrentUser,
                       follow: bool = Query(False, description="stream until the replica's job ends")) -> StreamingResponse:
    await asyncio.to_thread(_authorized, state, user, name)
    replica = next((r for r in await asyncio.to_thread(state.db.services.replicas, name)
                    if r.replica_id == replica_id), None)
    if replica is None:
        raise HTTPException(404, f"service {name!r} has no replica {replica_id}")
    if replica.job_id is None:
        raise HTTPException(409, f"replica {replica_id} has no job yet (it is {replica.status})")
    return await cluster_routes.job_logs(replica.cluster, replica.job_id, state, user, follow)


@router.get("/{name}/lb-logs", response_class=PlainTextResponse, summary="The load balancers' log of a service")
async def lb_logs(name: str, state: StateDep, user: CurrentUser,
                  lines: int = Query(200, ge=1, le=500, description="the latest this many lines")) -> str:
    """Retries, failures, replica set changes and a summary a minute, from every load
    balancer (``[lb-id] time line``)."""
    await asyncio.to_thread(_authorized, state, user, name)
    rows = await asyncio.to_thread(state.db.services.lb_logs, name, lines)
    return "".join(f"[{r.lb_id}] {r.at.isoformat(timespec='seconds')} {r.line}\n" for r in rows)
