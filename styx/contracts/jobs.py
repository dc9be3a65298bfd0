"""Jobs: the status enum (as SkyPilot names them), and what the job workflow and its
activities exchange."""

import enum
from dataclasses import dataclass, field
from typing import Any

from styx.contracts.clusters import NodeDown


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    SETTING_UP = "SETTING_UP"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in JOB_TERMINAL


#: A job in one of these has ended for good; nothing moves it again.
JOB_TERMINAL: frozenset[JobStatus] = frozenset({
    JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.FAILED_SETUP, JobStatus.CANCELLED,
})


class JobErrors:
    """``ApplicationError`` types of the job activities and of a failed job workflow."""

    #: A node did not answer (connection refused, reset or timed out). Not retried by the
    #: activity's retry policy: the job workflow retries it on its own clock, and gives the
    #: node up once it has been unreachable for the worker's ``STYX_NODE_LOST_SECONDS``
    #: (the error's first detail).
    NODE_UNREACHABLE = "NodeUnreachable"
    #: A phase's process vanished without an exit code (node stopped, process killed).
    JOB_LOST = "JobLost"
    #: The job workflow's own failure: a rank's run failed (details: the exit codes).
    JOB_FAILED = "JobFailed"
    #: The job workflow's own failure: a rank's setup failed (details: the exit codes).
    SETUP_FAILED = "JobSetupFailed"


def job_workflow_id(cluster: str, job_id: int) -> str:
    return f"cluster/{cluster}/job/{job_id}"


@dataclass
class JobInput:
    cluster: str
    job_id: int
    task: dict[str, Any]
    #: The nodes this job runs on, ``NodeEndpoint.to_dict()`` each; index = the job's rank.
    nodes: list[dict[str, Any]]
    cluster_workflow_id: str
    #: Environment (``envs`` and ``secrets`` of the task, and overrides), already merged.
    env: dict[str, str] = field(default_factory=dict)
    #: Per node; a fraction (0.5) shares a device. Float: Temporal turns 0.5 into 0 for an int.
    accelerators: dict[str, float] = field(default_factory=dict)
    sealed_secrets: str | None = None
    #: Where the cluster is, for ``SKYPILOT_CLUSTER_INFO``: provider, region (an SSH pool's
    #: name), zone.
    provider: str = ""
    region: str | None = None
    zone: str | None = None
    #: False for an exec: ``setup`` is skipped (files are still synced).
    run_setup: bool = True


@dataclass
class JobFinished:
    """The ``job_finished`` signal a job sends its cluster workflow when it ends."""

    job_id: int
    status: str
    exit_codes: list[int | None] = field(default_factory=list)
    #: Nodes the job found unreachable for good: the cluster places no job on them.
    lost_nodes: list[NodeDown] = field(default_factory=list)


@dataclass
class JobRecord:
    """A job's row in the read model (upserted by cluster and job id)."""

    cluster: str
    job_id: int
    status: str
    name: str | None = None
    cpus: float | None = None
    accelerators: dict[str, float] | None = None
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
    #: Copied to ``~/styx_workdir/<job_id>`` on the node (``~/sky_workdir`` then points at it),
    #: or None: an upload (``upload:<sha256>``), a directory of a commit the worker exported
    #: for a push, or a git repository ``{"url", "ref"}`` the node clones.
    workdir: str | dict[str, Any] | None = None
    #: Remote path -> source, of the same two kinds.
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
