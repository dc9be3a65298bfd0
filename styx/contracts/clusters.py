"""Clusters: the status enum, and the cluster workflow's inputs, updates and answers."""

import enum
import re
from dataclasses import dataclass, field
from typing import Any


class ClusterStatus(enum.StrEnum):
    INIT = "INIT"
    UP = "UP"
    STOPPED = "STOPPED"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


class NodeStatus(enum.StrEnum):
    """A node's health as the cluster workflow knows it (the ``nodes`` table's ``status``)."""

    UP = "UP"
    #: Stopped answering (a job's phase found it unreachable, or a refresh did): no job is
    #: placed on it until a refresh or ``start`` finds it alive.
    DOWN = "DOWN"


class InvalidClusterName(ValueError):
    """Not a valid cluster name; the message says what is."""


class ClusterName(str):
    """A cluster name, checked once where it enters (API, CLI, push trigger); every layer
    below takes it as given. One rule everywhere: a lowercase letter, then up to 62
    lowercase letters, digits or '-' — safe as a workflow id part, a directory name, an AWS
    tag and a DNS label.

    >>> ClusterName("gpu-1")
    'gpu-1'
    """

    PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")

    def __new__(cls, value: object) -> "ClusterName":
        if not isinstance(value, str) or not cls.PATTERN.fullmatch(value):
            raise InvalidClusterName(
                f"{value!r} is not a valid cluster name: use a lowercase letter, then up to 62 "
                "lowercase letters, digits or '-' (e.g. 'dev', 'gpu-1')")
        return super().__new__(cls, value)


#: A cluster in one of these has no node and its workflow has ended.
CLUSTER_GONE: frozenset[ClusterStatus] = frozenset({ClusterStatus.TERMINATED, ClusterStatus.FAILED})

#: The cluster workflow's type and the names of its updates, for callers that do not import
#: the workflow module (services, activities).
CLUSTER_WORKFLOW = "ClusterWorkflow"


#: The longest autostop a cluster takes (ten years): beyond it, timers and dates overflow.
MAX_AUTOSTOP_MINUTES = 525_600 * 10

#: How many idempotency keys a cluster workflow remembers (the oldest are forgotten first).
REMEMBERED_SUBMISSIONS = 1000

#: How many waiting jobs a cluster workflow holds in its state (their shapes, never their
#: bodies). Jobs beyond wait in the database, PENDING, and are fetched in submission order as
#: the window drains (``ClusterState.backlog_from``): the state stays bounded whatever the
#: queue's depth.
QUEUE_WINDOW = 200
#: The largest window a deployment may choose (``STYX_QUEUE_WINDOW``).
MAX_QUEUE_WINDOW = 1000

#: How many jobs may run on one cluster at once (jobs asking for no CPU would otherwise all
#: start, and the workflow's list of running jobs grow with them).
MAX_RUNNING_JOBS = 1000

#: The workflow's patch that bounds the queue (``workflow.patched``): runs begun before it
#: keep every waiting job's task in their state, as they did.
BOUNDED_QUEUE_PATCH = "styx-bounded-queue"
#: The patch after which a submission is answered at once and its PENDING row is written by
#: the caller and, batched, by the workflow's main loop (``record_jobs``), instead of one local
#: activity per submission inside the update.
BATCHED_ROWS_PATCH = "styx-batched-job-rows"
#: The patch after which a job runs inside the cluster workflow (its activities scheduled by
#: the cluster's own run) instead of as a child ``JobWorkflow``: no child start, no workflow
#: tasks of its own, no end signal. Runs begun before it keep starting children.
INLINE_JOBS_PATCH = "styx-inline-jobs"


def cluster_workflow_id(name: str) -> str:
    return f"cluster/{name}"


@dataclass
class ClusterSpec:
    """What was asked for at launch; a later launch of the same name must fit its nodes."""

    name: str
    provider: str
    num_nodes: int = 1
    #: The task's public resources dict, for the provider and for comparison.
    resources: dict[str, Any] = field(default_factory=dict)
    #: Capacity of each node, for the job queue.
    node_cpus: float = 1.0
    node_accelerators: dict[str, float] = field(default_factory=dict)
    autostop_minutes: int | None = None
    autostop_down: bool = False
    #: AWS region asked for, or the SSH pool's name.
    region: str | None = None
    #: The user who launched it (None: from before owners; the admins'). Not part of what a
    #: later launch must match: a user the cluster is shared with launches onto it too.
    owner: str | None = None
    #: Memory of each node in GB, where it is known (an AWS instance type's); None: unknown,
    #: so no memory request is refused (local nodes share this machine's).
    node_memory_gb: float | None = None
    #: How many waiting jobs the workflow holds (``QUEUE_WINDOW``); the rest wait in the
    #: database. The deployment's ``STYX_QUEUE_WINDOW``, at launch.
    queue_window: int = QUEUE_WINDOW


@dataclass
class NodeRequest:
    """What a launch asks of where and on what its nodes run, as the task wrote it: a field
    left None fits any cluster. The CPUs, accelerators and node count a job needs are the
    submission's own fields (``SubmitJobInput.cpus`` ...)."""

    provider: str | None = None
    region: str | None = None
    zone: str | None = None
    memory_gb: float | None = None


@dataclass
class NodeDown:
    """A node of the cluster that stopped answering, why, and since when."""

    #: The node's rank in the cluster (its ``rank`` key), not in a job.
    rank: int
    reason: str
    #: ISO time it was found down (workflow time); "" when the finder did not say.
    since: str = ""
    #: Jobs that failed because of it: their processes may still run there, so they are
    #: killed if the node comes back (bounded: the latest ``MAX_DOWN_JOBS``).
    jobs: list[int] = field(default_factory=list)


#: How many job ids a ``NodeDown`` keeps.
MAX_DOWN_JOBS = 20


@dataclass
class JobSpecShape:
    """What a job's workflow decides by, of its body (``job_spec_shape``): a job run inside its
    cluster's workflow never carries its body (which lands in the history), its activities
    load it (``spec_id``)."""

    #: ``setup`` runs (there is one, and the job is a launch's).
    setup: bool = False
    #: A workdir or file mounts are copied first.
    files: bool = False


@dataclass
class SubmitJobInput:
    #: The task, inline; empty when it is stored in the database under ``spec_id`` (what the
    #: service sends: the workflow then carries only the id and the shape below).
    task: dict[str, Any]
    name: str = ""
    cpus: float = 0.5
    #: Per node; a fraction (``T4:0.5``) shares a device (float: Temporal would make 0.5 an int 0).
    accelerators: dict[str, float] = field(default_factory=dict)
    num_nodes: int = 1
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    #: Given by ``launch``: the spec a new cluster is launched with; an existing cluster
    #: takes the job when ``node_request`` and the job's size fit its nodes.
    launch_spec: ClusterSpec | None = None
    #: The task's secrets, encrypted (``styx.secrets``): never in clear in the history.
    sealed_secrets: str | None = None
    #: A retried submission sends the same key: the cluster returns the first one's job
    #: instead of queueing another (scoped by the caller, e.g. ``submit/<user>/<key>``).
    idempotency_key: str | None = None
    #: Run the task's ``setup`` before ``run``: a launch does, an exec does not (as SkyPilot).
    run_setup: bool = True
    #: Given by ``launch``: where and on what the task asks to run (None: anywhere).
    node_request: NodeRequest | None = None
    #: The job's body (``JobSpec``: task, env, sealed secrets, run_setup) in the database.
    spec_id: str | None = None
    #: The first line of the task's ``run`` (for listings), when the task is not inline.
    run_summary: str | None = None
    #: What the job's workflow decides by, of the body under ``spec_id`` (None: it reads it).
    shape: JobSpecShape | None = None


@dataclass
class SubmitJobResult:
    job_id: int
    workflow_id: str
    #: The spec the job runs (a retried submission's answer names the first one's).
    spec_id: str | None = None


@dataclass
class CancelJobInput:
    #: None: the latest job that is running or waiting.
    job_id: int | None = None


@dataclass
class CancelJobResult:
    job_id: int
    previous_status: str


@dataclass
class AutostopInput:
    minutes: int | None
    down: bool = False


@dataclass
class ClusterDescription:
    name: str
    status: str
    provider: str
    num_nodes: int
    nodes: list[dict[str, Any]]
    queued: list[int]
    running: list[int]
    next_job_id: int
    autostop_minutes: int | None
    autostop_down: bool
    message: str | None = None
    #: Nodes that stopped answering: no job is placed on them.
    down_nodes: list[NodeDown] = field(default_factory=list)
    #: When autostop fires if nothing runs meanwhile (ISO), and who stopped the cluster.
    autostop_at: str | None = None
    stopped_by: str | None = None
    #: The deadline the nodes carry (ISO; the failsafe acts a grace period after it).
    failsafe_deadline: str | None = None
    #: ``queued`` lists the window only; jobs from this id on wait in the database as well.
    backlog_from: int | None = None


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
    #: The spec's owner; None leaves the stored owner as it is.
    owner: str | None = None
    #: Workflow time of this record (ISO): where node up-intervals open and close.
    at: str | None = None
    #: The cluster's incarnation (its workflow's first run id): intervals are grouped by it.
    launch_id: str | None = None
    #: What the nodes are and cost per node-hour (None: not known yet).
    instance_type: str | None = None
    use_spot: bool = False
    hourly_price: float | None = None
    #: When autostop fires if nothing runs meanwhile (ISO; None: not armed now).
    autostop_at: str | None = None
    #: Who stopped or took the cluster down: ``user``, ``autostop`` or ``failsafe``.
    stopped_by: str | None = None


@dataclass
class QueuedJob:
    """A job in the cluster workflow's window: its shape, and its body's id (``spec_id``).
    ``task``, ``env`` and ``sealed_secrets`` are set only for a job queued inline (before
    specs were stored in the database, or by a workflow test)."""

    job_id: int
    name: str
    cpus: float
    accelerators: dict[str, float]
    num_nodes: int
    task: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    sealed_secrets: str | None = None
    run_setup: bool = True
    spec_id: str | None = None
    #: What the job decides by, of its body (from the submission; None: read when it starts).
    shape: JobSpecShape | None = None


@dataclass
class RunningJob:
    job_id: int
    #: The workflow the job runs in: its own ``JobWorkflow`` (a child), or, for a job run
    #: inline, the cluster's.
    workflow_id: str
    ranks: list[int]
    cpus: float
    accelerators: dict[str, float]
    #: Run inside the cluster workflow (``INLINE_JOBS_PATCH``), not as a child.
    inline: bool = False
    #: What an inline job needs to be taken up again by the next run after continue-as-new:
    #: the job as it was queued (its body's id, or its task for a job queued inline) …
    queued: QueuedJob | None = None
    #: … when it started (ISO, workflow time: ``SKYPILOT_TASK_ID``), how far it got
    #: (``""``: copying files; ``setup``; ``run``), and whether a cancel was asked.
    started_at: str | None = None
    stage: str = ""
    cancelled: bool = False


@dataclass
class ClusterState:
    """What the cluster workflow carries across continue-as-new."""

    status: str = ClusterStatus.INIT
    nodes: list[dict[str, Any]] = field(default_factory=list)
    next_job_id: int = 1
    queue: list[QueuedJob] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    #: ISO time of the last moment the cluster was busy (for autostop).
    idle_since: str | None = None
    message: str | None = None
    region: str | None = None
    zone: str | None = None
    #: Idempotency key -> the job its submission queued, oldest first (at most
    #: ``REMEMBERED_SUBMISSIONS``). Temporal forgets update ids when the run continues as new;
    #: this does not.
    submissions: dict[str, SubmitJobResult] = field(default_factory=dict)
    #: Nodes that stopped answering, by cluster rank; placement skips them.
    down_nodes: list[NodeDown] = field(default_factory=list)
    #: The launch attempt that succeeded: ``instance_type``, ``use_spot``, ``hourly_price``.
    offer: dict[str, Any] = field(default_factory=dict)
    #: Who stopped the cluster (``StoppedBy``); None while it runs.
    stopped_by: str | None = None
    #: The deadline the nodes carry (ISO), as last pushed; None: none (see ``failsafe``).
    failsafe_deadline: str | None = None
    #: The nodes may carry a deadline from before a stop: push (or clear) it once they are up.
    failsafe_stale: bool = False
    #: The first job id waiting in the database only (not in ``queue``): every job from it
    #: to ``next_job_id`` is there, PENDING or ended. None: the whole queue is in ``queue``.
    backlog_from: int | None = None


class StoppedBy(enum.StrEnum):
    """Who stopped a cluster (``styx status``)."""

    USER = "user"
    AUTOSTOP = "autostop"
    #: The nodes' own deadline passed while no Styx process pushed it (see ``failsafe``).
    FAILSAFE = "failsafe"


@dataclass
class ClusterInput:
    spec: ClusterSpec
    #: Set only when continuing as new.
    state: ClusterState | None = None
