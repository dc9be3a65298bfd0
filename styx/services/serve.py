"""Acting on a service: check a service task, start its ``ServiceWorkflow`` (by type name),
send its updates. Used by the REST routes; the replicas themselves are launched by the
workflow's activity through ``styx.services.clusters`` like any launch.

Errors: ``InvalidRequest`` (from ``styx.services.launch``) naming the task field,
``ServiceExists``, ``ServiceNotRunning``, ``ServiceRefused`` (the workflow's refusal).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from styx.contracts.services import (
    SERVICE_WORKFLOW,
    InvalidServiceName,
    InvalidServiceSpec,
    ServiceInput,
    ServiceName,
    ServiceSpec,
    service_workflow_id,
)
from styx.services import clusters as cluster_service
from styx.services.launch import InvalidRequest
from styx.task import Task

T = TypeVar("T")


class ServiceExists(Exception):
    pass


class ServiceNotRunning(LookupError):
    pass


class ServiceRefused(Exception):
    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message


def check_service_name(name: str) -> ServiceName:
    try:
        return ServiceName(name)
    except InvalidServiceName as err:
        raise InvalidRequest("name", str(err)) from None


def service_spec(task: Task) -> tuple[ServiceSpec, list[str]]:
    """The task's ``service:`` section, checked (``InvalidRequest`` naming the field)."""
    ports = task.resources.candidates()[0].ports
    try:
        return ServiceSpec.parse(task.service, ports)
    except InvalidServiceSpec as err:
        raise InvalidRequest(f"task.{err.field}", str(err).split(": ", 1)[-1]) from None


def spec_dict(spec: ServiceSpec) -> dict[str, Any]:
    return asdict(spec)


async def start(client: Client, task_queue: str, inp: ServiceInput) -> None:
    """Start the service's workflow; ``ServiceExists`` if one runs under that name."""
    try:
        await client.start_workflow(
            SERVICE_WORKFLOW, inp, id=service_workflow_id(inp.name), task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    except WorkflowAlreadyStartedError:
        raise ServiceExists(f"service {inp.name!r} exists") from None


async def running(client: Client, name: str) -> bool:
    """Whether the service's workflow runs."""
    try:
        desc = await client.get_workflow_handle(service_workflow_id(name)).describe()
    except RPCError:
        return False
    return desc.status is not None and desc.status.name == "RUNNING"


async def update(client: Client, name: str, update: str, arg: Any = None, *, result_type: type[T]) -> T:
    """Send one of the workflow's updates (``update_version``, ``down``)."""
    try:
        return await cluster_service.update_cluster(client, service_workflow_id(name), update, arg,
                                                    result_type=result_type)
    except cluster_service.ClusterRefused as err:
        raise ServiceRefused(err.type, err.message) from None
    except cluster_service.ClusterNotRunning:
        raise ServiceNotRunning(f"service {name!r} is not running") from None
