"""Inputs and outputs of Styx's activities: one dataclass in, one dataclass out.

Workflows import these (they are plain data), activities implement them. Adding a field
with a default never breaks a running workflow.
"""

from dataclasses import dataclass, field
from typing import Any

# Job statuses, as SkyPilot names them.
PENDING = "PENDING"
SETTING_UP = "SETTING_UP"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
FAILED_SETUP = "FAILED_SETUP"
CANCELLED = "CANCELLED"
JOB_TERMINAL = frozenset({SUCCEEDED, FAILED, FAILED_SETUP, CANCELLED})

# Cluster statuses.
INIT = "INIT"
UP = "UP"
STOPPED = "STOPPED"
TERMINATED = "TERMINATED"
CLUSTER_FAILED = "FAILED"


@dataclass
class ProviderInput:
    """Which cluster, on which provider; ``resources`` is the task's public resources dict."""

    cluster: str
    provider: str
    num_nodes: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    #: One entry of ``PlanOutput.attempts`` (for ``provision``).
    attempt: dict[str, Any] = field(default_factory=dict)
    #: Where the cluster is (AWS region, SSH pool name), once known.
    region: str | None = None


@dataclass
class PlanOutput:
    #: Launch attempts in the order to try them (AWS: zone, type, spot or not).
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckInput:
    region: str | None = None


@dataclass
class CheckOutput:
    #: ``{"provider", "ok", "reason"}`` per provider.
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ProviderOutput:
    #: One ``NodeEndpoint.to_dict()`` per node, in rank order.
    nodes: list[dict[str, Any]] = field(default_factory=list)
    region: str | None = None
    zone: str | None = None


@dataclass
class ClusterRecord:
    """A cluster's row in the read model (upserted by name)."""

    name: str
    provider: str
    status: str
    num_nodes: int
    resources: dict[str, Any] = field(default_factory=dict)
    workflow_id: str = ""
    region: str | None = None
    zone: str | None = None
    autostop_minutes: int | None = None
    autostop_down: bool = False
    status_message: str | None = None
    nodes: list[dict[str, Any]] | None = None
    mark_launched: bool = False
    #: First write of a new cluster: forget an earlier cluster of the same name.
    fresh: bool = False


@dataclass
class JobRecord:
    """A job's row in the read model (upserted by cluster and job id)."""

    cluster: str
    job_id: int
    status: str
    name: str | None = None
    cpus: float | None = None
    accelerators: dict[str, int] | None = None
    num_nodes: int | None = None
    run_summary: str | None = None
    workflow_id: str | None = None
    user: str | None = None
    exit_codes: list[int | None] | None = None
    message: str | None = None


@dataclass
class SyncFilesInput:
    cluster: str
    job_id: int
    node: dict[str, Any]
    #: Local directory uploaded to ``~/styx_workdir/<job_id>`` on the node, or None.
    workdir: str | None = None
    #: Remote path -> local path.
    file_mounts: dict[str, str] = field(default_factory=dict)


@dataclass
class RunPhaseInput:
    cluster: str
    job_id: int
    phase: str  # "setup" | "run"
    rank: int
    node: dict[str, Any]
    script: str
    env: dict[str, str] = field(default_factory=dict)
    sealed_secrets: str | None = None
    #: The job is this one phase on one node: the activity records its end itself.
    record_end: bool = False


@dataclass
class RunPhaseOutput:
    exit_code: int | None
    #: Bytes of log copied from the node in total.
    log_bytes: int = 0


@dataclass
class KillJobInput:
    cluster: str
    job_id: int
    nodes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReconcileInput:
    terminate: bool = False
    region: str | None = None
    #: None: run once. Otherwise repeat every so many minutes.
    interval_minutes: float | None = None


@dataclass
class ReconcileOutput:
    #: Instances of this deployment whose cluster is not live (id, state, region, cluster …).
    orphans: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
