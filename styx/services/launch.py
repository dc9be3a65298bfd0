"""From a task to what the cluster workflow needs: which provider, what capacity per node,
and what the job asks for. Pure functions, shared by the API and the git server's triggers.

``load_task`` is also where a task's files are checked: the worker never reads a path a
client named. From the API, a ``workdir`` or ``file_mounts`` source must be an upload the
caller may use (``upload:<sha256>``, see ``styx.contracts.uploads``); from a push, a member
of the commit's tree, which the git server stored as an upload.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from styx import task as task_module
from styx.config import aws_credentials_configured
from styx.secrets import seal
from styx.task import Resources, Task, TaskValidationError
from styx.contracts.clusters import (
    MAX_AUTOSTOP_MINUTES,
    ClusterName,
    ClusterSpec,
    InvalidClusterName,
    NodeRequest,
    SubmitJobInput,
)
from styx.contracts.uploads import InvalidUploadRef, UploadRef

PROVIDERS = ("local", "aws", "ssh")
#: Used when an SSH pool's task asks for no CPUs: its hosts' sizes are not known up front.
SSH_DEFAULT_NODE_CPUS = 2.0


class InvalidRequest(ValueError):
    """Bad input; ``field`` names the argument or task field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_cluster_name(name: str) -> ClusterName:
    try:
        return ClusterName(name)
    except InvalidClusterName as err:
        raise InvalidRequest("cluster", str(err)) from None


def load_task(data: dict, *, may_use_upload: Callable[[str], bool] | None = None) -> Task:
    """A task from its JSON form, refused (``InvalidRequest`` naming the field) when invalid
    or larger than a task file may be (``styx.task.MAX_TASK_BYTES``).

    Its ``workdir`` and every ``file_mounts`` source must be an upload that
    ``may_use_upload(sha256)`` allows (a push's are members of its commit's tree, stored as
    an upload); without it, a task may name no files."""
    size = len(json.dumps(data, default=str))
    if size > task_module.MAX_TASK_BYTES:
        biggest = max(data, key=lambda k: len(json.dumps(data[k], default=str)), default=None) \
            if isinstance(data, dict) else None
        raise InvalidRequest(f"task.{biggest}" if biggest else "task",
                             f"the task is {size} bytes; at most {task_module.MAX_TASK_BYTES} are accepted "
                             "(STYX_MAX_TASK_BYTES): keep large scripts in the workdir")
    try:
        task = Task.from_dict(data)
    except TaskValidationError as err:
        raise InvalidRequest(f"task.{err.field}" if err.field else "task", str(err)) from None
    if isinstance(task.workdir, str):  # a git workdir ({url, ref}) is cloned by the nodes
        _check_source("task.workdir", task.workdir, may_use_upload)
    for dst, mount in task.file_mounts.items():
        if not mount.is_plain_copy or not isinstance(mount.source, str) or "://" in mount.source:
            raise InvalidRequest(f"task.file_mounts.{dst}", "storage (bucket) mounts are not supported yet; "
                                 "mount a local path")
        _check_source(f"task.file_mounts.{dst}", mount.source or "", may_use_upload)
    missing = task.missing_envs()
    if missing:
        first = missing[0]
        kind, option = ("secrets", "--secret") if first in task.secrets else ("envs", "--env")
        raise InvalidRequest(f"task.{kind}.{first}",
                             f"no value given for {', '.join(missing)}; pass it with {option} {first} "
                             f"(from your environment) or {option} {first}=VALUE")
    return task


def _check_source(field: str, source: str, may_use_upload: Callable[[str], bool] | None) -> None:
    try:
        ref = UploadRef.parse(source)
    except InvalidUploadRef as err:
        raise InvalidRequest(field, str(err)) from None
    if ref is not None:
        if may_use_upload is None or not may_use_upload(ref.sha256):
            raise InvalidRequest(field, f"upload {ref.sha256} is not one you sent (or is no longer stored); "
                                 "`styx launch` and the SDK send local files as uploads")
        return
    raise InvalidRequest(field, f"{source[:200]!r} is a path on the server, which a task may not name: "
                         "name local files in the task and launch it with `styx launch` or the SDK, "
                         "which send them as uploads (upload:<sha256>)")


def check_for_provider(task: Task, provider: str) -> list[str]:
    """What ``provider``'s nodes make of ``task``: ``InvalidRequest`` naming the field for what
    they cannot honour (before anything starts), and a warning, one sentence each, for what
    they ignore. Called for a launch, an exec and a push alike."""
    warnings: list[str] = []
    if task.service is not None:
        warnings.append("service: ignored: launch runs the task as one job; serve it (replicas behind "
                        "a load balancer) with `styx serve up`")
    if provider == "local":
        for dst in task.file_mounts:
            if dst.startswith("/"):
                raise InvalidRequest(f"task.file_mounts.{dst}",
                                     "local nodes keep a job's files under the node's home (their SFTP is "
                                     f"confined there); mount under ~ instead (e.g. ~{dst})")
        types = sorted({c.instance_type for c in task.resources.candidates() if c.instance_type})
        if types:
            warnings.append(f"resources.instance_type: {', '.join(types)} ignored: local nodes are "
                            "processes on this machine, sized by resources.cpus")
    return warnings


def provider_of(task: Task) -> str:
    resources = task.resources.candidates()[0]
    cloud = resources.cloud or "local"
    if cloud not in PROVIDERS:
        raise InvalidRequest("task.resources.infra",
                             f"provider {cloud!r} is not available yet (available: {', '.join(PROVIDERS)})")
    return cloud


def cluster_spec(task: Task, cluster: str, autostop_minutes: int | None = None,
                 autostop_down: bool = False, owner: str | None = None) -> ClusterSpec:
    """What a ``launch`` of ``task`` by ``owner`` asks of cluster ``cluster``."""
    if autostop_minutes is not None and not 0 <= autostop_minutes <= MAX_AUTOSTOP_MINUTES:
        raise InvalidRequest("idle_minutes_to_autostop", f"must be between 0 and {MAX_AUTOSTOP_MINUTES}")
    resources = task.resources.candidates()[0]
    provider = provider_of(task)
    if provider == "local" and resources.accelerators:
        raise InvalidRequest("task.resources.accelerators",
                             "local nodes have no accelerators; launch on a cloud with --infra")
    region = resources.region
    memory: float | None = None
    if provider == "aws":
        cpus, accelerators, memory = _aws_node_size(resources)
    else:
        # A node holds whole devices: a fractional request (T4:0.5) needs a node with one.
        accelerators = {k: math.ceil(v - 1e-9) for k, v in (resources.accelerators or {}).items()}
        cpus = resources.cpus_min()
        if cpus is None:
            # A local node offers this machine's CPUs; an SSH host a modest default.
            cpus = float(os.cpu_count() or 1) if provider == "local" else SSH_DEFAULT_NODE_CPUS
        if provider == "ssh" and not region:
            raise InvalidRequest("task.resources.infra", "name the SSH pool: --infra ssh/<pool> "
                                 "(pools are defined in STYX_HOME/ssh_pools.yaml)")
    if autostop_minutes is None and task.resources.autostop not in (None, False):
        autostop_minutes, autostop_down = _task_autostop(task.resources.autostop)
    return ClusterSpec(
        name=cluster, provider=provider, num_nodes=task.num_nodes,
        resources=task.resources.to_dict(), node_cpus=cpus, node_accelerators=accelerators,
        autostop_minutes=autostop_minutes, autostop_down=autostop_down, region=region, owner=owner,
        node_memory_gb=memory,
    )


def onto_existing(task: Task, provider: str, region: str | None, resources: dict | None = None) -> Task:
    """``task`` launched onto a cluster that exists: a task that names no provider asks for
    the cluster's provider and region (as SkyPilot fills what a task leaves out from the
    cluster it reuses), so `styx launch -c gpu --gpus A100:1 cmd` reuses an AWS cluster
    instead of asking local nodes for a GPU. A task that names one is left for the cluster
    to check. ``resources`` is what the cluster was launched with: its ``infra`` says where
    a cluster still being provisioned (no region recorded yet) is."""
    if task.resources.candidates()[0].cloud is not None:
        return task
    infra = f"{provider}/{region}" if region else str((resources or {}).get("infra") or provider)
    try:
        return task.with_overrides(infra=infra)
    except TaskValidationError as err:
        raise InvalidRequest("task.resources.infra", str(err)) from None


def _aws_node_size(resources: Resources) -> tuple[float, dict[str, int], float]:
    """What one node offers (vCPUs, accelerators, GB of memory): the cheapest catalog type that fits (checked here, offline, so a
    bad request fails before any workflow starts; the worker re-plans with the same catalog)."""
    from styx.catalog import optimizer

    if resources.region and resources.region not in optimizer.regions():
        raise InvalidRequest("task.resources.infra", f"unknown AWS region {resources.region!r} "
                             f"(known: {', '.join(optimizer.regions())})")
    if not _aws_credentials_configured():
        raise InvalidRequest("task.resources.infra", "no AWS credentials found: set AWS_ACCESS_KEY_ID/"
                             "AWS_SECRET_ACCESS_KEY or AWS_PROFILE (or ~/.aws/credentials) where Styx runs; "
                             "`styx check` tells which providers are usable")
    if resources.instance_type:
        offers = optimizer.offers_for(resources.instance_type)
        if not offers:
            raise InvalidRequest("task.resources.instance_type",
                                 f"unknown instance type {resources.instance_type!r} (not in Styx's AWS catalog)")
    else:
        fits = optimizer.cheapest(resources)
        if not fits:
            raise InvalidRequest("task.resources", "no AWS instance type in the catalog fits this request")
        offers = optimizer.offers_for(fits[0][0])
    offer = offers[0]
    accelerators = {offer.accelerator_name: offer.accelerator_count} if offer.accelerator_name else {}
    return float(offer.vcpus), accelerators, float(offer.memory_gib)


def _aws_credentials_configured() -> bool:
    """Credentials boto3 would find without asking the network (no instance-metadata call)."""
    return aws_credentials_configured()


def _task_autostop(value: object) -> tuple[int | None, bool]:
    """``resources.autostop`` as SkyPilot writes it: true, minutes, "10m"/"2h", or a mapping."""
    if value is True:
        return 5, False
    if isinstance(value, dict):
        minutes, _ = _task_autostop(value.get("idle_minutes", True))
        return minutes, bool(value.get("down", False))
    if isinstance(value, int):
        return value, False
    text = str(value).strip().lower()
    if text.endswith("h"):
        return int(float(text[:-1]) * 60), False
    return int(float(text.rstrip("m"))), False


def submit_input(task: Task, user: str | None, home: Path, launch_spec: ClusterSpec | None = None,
                 *, run_setup: bool) -> SubmitJobInput:
    """The ``submit_job`` update's input; the task's secrets are sealed (see ``styx.secrets``).

    ``run_setup``: a launch runs the task's ``setup``, an exec does not (as SkyPilot). With
    ``launch_spec`` (a launch), the submission also says where the task asks to run, so that
    a cluster that exists takes the job only if it fits."""
    node_request = None
    if launch_spec is not None:
        resources = task.resources.candidates()[0]
        node_request = NodeRequest(provider=resources.cloud, region=resources.region, zone=resources.zone,
                                   memory_gb=resources.memory_min_gb())
    return SubmitJobInput(
        task=task.to_dict(include_secrets=False), name=task.name or "", cpus=task.job_cpus(),
        accelerators=task.job_accelerators(), num_nodes=task.num_nodes,
        env={k: v for k, v in task.envs.items() if v is not None}, user=user,
        launch_spec=launch_spec, sealed_secrets=seal(home, task.secret_values()),
        run_setup=run_setup, node_request=node_request,
    )
