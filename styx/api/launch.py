"""From a task to what the cluster workflow needs: which provider, what capacity per node,
and what the job asks for. Pure functions, shared by the API and the git server's triggers."""

from __future__ import annotations

import os
import re
from pathlib import Path

from styx.secrets import seal
from styx.task import Task, TaskValidationError
from styx.workflows.cluster import ClusterSpec, SubmitJobInput

CLUSTER_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
#: Providers this release can launch on (AWS and SSH pools come with their own issue).
PROVIDERS = ("local",)


class InvalidRequest(ValueError):
    """Bad input; ``field`` names the argument or task field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_cluster_name(name: str) -> str:
    if not isinstance(name, str) or not CLUSTER_NAME.fullmatch(name):
        raise InvalidRequest(
            "cluster", f"{name!r} is not a valid cluster name: use a lowercase letter, then up to 62 "
            "lowercase letters, digits or '-' (e.g. 'dev', 'gpu-1')")
    return name


def load_task(data: dict) -> Task:
    try:
        task = Task.from_dict(data)
    except TaskValidationError as err:
        raise InvalidRequest(f"task.{err.field}" if err.field else "task", str(err)) from None
    for dst, mount in task.file_mounts.items():
        if not mount.is_plain_copy or "://" in (mount.source or ""):
            raise InvalidRequest(f"task.file_mounts.{dst}", "storage (bucket) mounts are not supported yet; "
                                 "mount a local path")
    missing = task.missing_envs()
    if missing:
        raise InvalidRequest(f"task.envs.{missing[0]}",
                             f"no value given for {', '.join(missing)}; pass it with --env {missing[0]}=...")
    return task


def provider_of(task: Task) -> str:
    resources = task.resources.candidates()[0]
    cloud = resources.cloud or "local"
    if cloud not in PROVIDERS:
        raise InvalidRequest("task.resources.infra",
                             f"provider {cloud!r} is not available yet (available: {', '.join(PROVIDERS)})")
    return cloud


def cluster_spec(task: Task, cluster: str, autostop_minutes: int | None = None,
                 autostop_down: bool = False) -> ClusterSpec:
    """What a ``launch`` of ``task`` asks of cluster ``cluster``."""
    resources = task.resources.candidates()[0]
    provider = provider_of(task)
    if provider == "local" and resources.accelerators:
        raise InvalidRequest("task.resources.accelerators",
                             "local nodes have no accelerators; launch on a cloud with --infra")
    cpus = resources.cpus_min()
    if cpus is None:
        # A local node offers this machine's CPUs; cloud nodes get their size from the catalog.
        cpus = float(os.cpu_count() or 1)
    if autostop_minutes is None and task.resources.autostop not in (None, False):
        autostop_minutes, autostop_down = _task_autostop(task.resources.autostop)
    return ClusterSpec(
        name=cluster, provider=provider, num_nodes=task.num_nodes,
        resources=task.resources.to_dict(), node_cpus=cpus,
        node_accelerators=dict(resources.accelerators or {}),
        autostop_minutes=autostop_minutes, autostop_down=autostop_down,
    )


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


def submit_input(task: Task, user: str | None, home: Path,
                 launch_spec: ClusterSpec | None = None) -> SubmitJobInput:
    """The ``submit_job`` update's input; the task's secrets are sealed (see ``styx.secrets``)."""
    return SubmitJobInput(
        task=task.to_dict(include_secrets=False), name=task.name or "", cpus=task.job_cpus(),
        accelerators=task.job_accelerators(), num_nodes=task.num_nodes,
        env={k: v for k, v in task.envs.items() if v is not None}, user=user,
        launch_spec=launch_spec, sealed_secrets=seal(home, task.secret_values()),
    )
