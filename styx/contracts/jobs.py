"""Jobs: the status enum (as SkyPilot names them), and what the job workflow and its
activities exchange."""

import enum
from dataclasses import dataclass, field
from typing import Any

from styx.contracts.clusters import JobSpecShape, NodeDown


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


def run_summary(run: Any) -> str | None:
    """The first line of a task's ``run`` (at most 120 characters), as job listings show it."""
    if not run:
        return None
    text = run if isinstance(run, str) else "\n".join(run)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:120]


@dataclass
class JobSpec:
    """A job's body: what it runs and with what. Stored in the database (``job_specs``) when
    it is submitted, under ``spec_id``; the cluster workflow carries only the id, and the job
    workflow loads it when it starts (``load_job_spec``). At most
    ``payloads.MAX_PAYLOAD_BYTES`` (checked where it is stored)."""

    task: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    #: The task's secrets, encrypted (``styx.secrets``).
    sealed_secrets: str | None = None
    #: False for an exec: ``setup`` is skipped.
    run_setup: bool = True

    def shape(self) -> JobSpecShape:
        """What a job run inline decides by, of this body."""
        mounts = [v for v in (self.task.get("file_mounts") or {}).values() if isinstance(v, str)]
        return JobSpecShape(setup=bool(self.task.get("setup")) and self.run_setup,
                            files=bool(self.task.get("workdir") or mounts))


@dataclass
class LoadJobSpecInput:
    spec_id: str


@dataclass
class PendingJobsInput:
    """The PENDING jobs of ``cluster`` with ids in ``[from_job_id, upto_job_id)``, oldest
    first, at most ``limit`` (the cluster workflow refilling its window from the database)."""

    cluster: str
    from_job_id: int
    upto_job_id: int
    limit: int


@dataclass
class PendingJob:
    """A queued job's shape as the database holds it (its body stays there)."""

    job_id: int
    name: str
    cpus: float
    accelerators: dict[str, float]
    num_nodes: int
    spec_id: str | None


@dataclass
class PendingJobsOutput:
    jobs: list[PendingJob] = field(default_factory=list)


@dataclass
class EndPendingJobsInput:
    """End, with ``status`` and ``message``, the jobs of ``cluster`` still PENDING among
    ``job_ids`` and (when ``from_job_id`` is set) every one from that id on: one write however
    deep the queue."""

    cluster: str
    status: str
    message: str
    job_ids: list[int] = field(default_factory=list)
    from_job_id: int | None = None


@dataclass
class CancelPendingJobInput:
    """Cancel job ``job_id`` of ``cluster`` if it is still PENDING (None: the newest PENDING
    one from ``from_job_id`` on)."""

    cluster: str
    job_id: int | None
    from_job_id: int


@dataclass
class CancelPendingJobOutput:
    #: The job cancelled, or None when it was no longer PENDING (or none was).
    job_id: int | None = None


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
    #: The job's body is in the database under this id (``JobSpec``): ``task``, ``env``,
    #: ``sealed_secrets`` and ``run_setup`` come from there. None: they are given here (a job
    #: queued before specs were stored, or a workflow test).
    spec_id: str | None = None
    #: When the job started (ISO, workflow time), for ``SKYPILOT_TASK_ID``; None: the start of
    #: the job's own workflow.
    started_at: str | None = None
    #: What a job run inline decides by, of its body (None: it reads it, ``job_spec_shape``).
    shape: JobSpecShape | None = None


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
    #: Where the job's body is (``JobSpec``), set with its PENDING row.
    spec_id: str | None = None


@dataclass
class RecordJobsInput:
    """Several job rows at once (the PENDING rows of the submissions a cluster took since its
    main loop last wrote), in one transaction."""

    jobs: list[JobRecord] = field(default_factory=list)


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
    #: The job's body is in the database under this id: ``workdir`` and ``file_mounts`` come
    #: from there (the activity loads it).
    spec_id: str | None = None


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
    #: The job's body is in the database under this id: the activity loads the phase's script,
    #: the task's env (over ``env``) and its sealed secrets from there.
    spec_id: str | None = None


@dataclass
class RunPhaseOutput:
    exit_code: int | None
    #: Bytes of log copied from the node in total.
    log_bytes: int = 0
    #: The activity recorded the job SUCCEEDED itself (``record_end``, exit 0, not cancelled).
    recorded_end: bool = False


@dataclass
class KillJobInput:
    cluster: str
    job_id: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    #: The job's rank on each of ``nodes``: once its processes there are dead, what their logs
    #: hold past Styx's copy is stored (None: from a workflow older than this, nothing is).
    ranks: list[int] | None = None
