"""Managed jobs: the status enum, the recovery strategies, and what ``ManagedJobWorkflow``
``managed/<id>`` and its activities exchange.

A managed job is one task, or a pipeline of tasks run one after another; each task runs on a
cluster launched for it alone (``mj-<id>-<task>-<attempt>``), which is taken down when the
task ends, and launched again elsewhere when the task is preempted. The workflow carries ids
and small shapes only: the task bodies live in the database (``managed_job_tasks``).
"""


import enum
from dataclasses import dataclass, field
from typing import Any

MANAGED_JOB_WORKFLOW = "ManagedJobWorkflow"

#: At most this many tasks in one pipeline.
MAX_PIPELINE_TASKS = 32
#: ``job_recovery.max_restarts_on_errors`` (and ``--max-restarts``) is at most this.
MAX_RESTARTS_ON_ERRORS = 100
#: Default of ``STYX_MANAGED_MAX_RECOVERIES``: infrastructure recoveries of one task before
#: the job is given up (``FAILED``, saying so); bounds a job's attempts, rows and history.
DEFAULT_MAX_RECOVERIES = 50
#: A launch that finds no resources this many times in a row ends the job FAILED_NO_RESOURCE.
MAX_LAUNCH_FAILURES_IN_A_ROW = 3
#: Default of ``STYX_MANAGED_PROBE_SECONDS``: how often a running managed job's nodes are
#: probed (the provider's view, then SSH), so that a lost node is noticed while the job runs.
DEFAULT_PROBE_SECONDS = 10.0


#: Sent to a managed job waiting for a slot when one may have come free (a managed job took
#: its cluster down, or ended): it asks again at once instead of on its timer.
MANAGED_SLOT_FREED_SIGNAL = "slot_freed"


def managed_workflow_id(managed_id: int) -> str:
    return f"managed/{managed_id}"


def managed_cluster_name(managed_id: int, task_index: int, attempt: int) -> str:
    """The cluster of one attempt of one task: a fresh name per attempt, so an attempt's
    cluster is never confused with the one before it (which is down by then)."""
    return f"mj-{managed_id}-{task_index}-{attempt}"


class ManagedJobStatus(enum.StrEnum):
    """As SkyPilot names a managed job's statuses."""

    PENDING = "PENDING"
    #: Its cluster is being launched (the first time).
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    #: Preempted (or failed and restarting): the old cluster goes down, a new one comes up.
    RECOVERING = "RECOVERING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    CANCELLED = "CANCELLED"
    #: The user's program failed (more often than ``max_restarts_on_errors`` allows), or the
    #: job was given up after too many recoveries (the message says which).
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    #: No launch found resources, ``MAX_LAUNCH_FAILURES_IN_A_ROW`` times in a row.
    FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"

    @property
    def is_terminal(self) -> bool:
        return self in MANAGED_TERMINAL


MANAGED_TERMINAL: frozenset[ManagedJobStatus] = frozenset({
    ManagedJobStatus.SUCCEEDED, ManagedJobStatus.CANCELLED, ManagedJobStatus.FAILED,
    ManagedJobStatus.FAILED_SETUP, ManagedJobStatus.FAILED_NO_RESOURCE,
})


class RecoveryStrategy(enum.StrEnum):
    """``resources.job_recovery.strategy``, as SkyPilot's."""

    #: Relaunch in the zone it ran in first; if that finds nothing, anywhere the task allows.
    FAILOVER = "FAILOVER"
    #: Relaunch in another region first (the cheapest other one the task allows).
    EAGER_NEXT_REGION = "EAGER_NEXT_REGION"


class AttemptEnd(enum.StrEnum):
    """How one attempt ended, as the watch activity classifies it."""

    SUCCEEDED = "SUCCEEDED"
    #: The user's program exited non-zero in ``run`` (nodes all healthy).
    USER_FAILED = "USER_FAILED"
    #: The same in ``setup``.
    SETUP_FAILED = "SETUP_FAILED"
    #: A node lost, an instance terminated or stopped underneath, the cluster taken down by
    #: someone else: recover.
    PREEMPTED = "PREEMPTED"
    #: The cluster's launch failed (no capacity where it may run, or the provider refused).
    LAUNCH_FAILED = "LAUNCH_FAILED"
    #: The task cannot run at all (refused before launching: a bad task, a limit): give up.
    REFUSED = "REFUSED"


@dataclass
class RecoveryPolicy:
    strategy: str = RecoveryStrategy.FAILOVER
    max_restarts_on_errors: int = 0


@dataclass
class Placement:
    """Where the next launch of a task should try first (AWS); empty: where the task says."""

    region: str | None = None
    zone: str | None = None
    #: Skip this region when choosing one (EAGER_NEXT_REGION after a preemption there).
    avoid_region: str | None = None


@dataclass
class TaskProgress:
    """One task's counters, carried across continue-as-new."""

    attempt: int = 0
    recoveries: int = 0
    restarts: int = 0
    launch_failures_in_a_row: int = 0
    #: Where the last attempt ran (for the next placement).
    region: str | None = None
    zone: str | None = None
    placement: Placement = field(default_factory=Placement)


@dataclass
class ManagedState:
    """What the workflow carries across continue-as-new: small and bounded."""

    task_index: int = 0
    progress: TaskProgress = field(default_factory=TaskProgress)
    #: The cluster of the attempt in flight (down before the next one starts), or None.
    cluster: str | None = None
    provider: str | None = None
    region: str | None = None
    #: Total recoveries over the whole job (for display).
    recoveries: int = 0


@dataclass
class ManagedJobInput:
    managed_id: int
    num_tasks: int
    owner: str
    #: ``STYX_MANAGED_MAX_RECOVERIES`` as the API read it (bounded per task).
    max_recoveries: int = DEFAULT_MAX_RECOVERIES
    #: Per task: strategy and restarts on errors (resolved at submission: task and CLI).
    policies: list[RecoveryPolicy] = field(default_factory=list)
    probe_seconds: float = DEFAULT_PROBE_SECONDS
    #: Set only when continuing as new.
    state: ManagedState | None = None


@dataclass
class ManagedSubmitInput:
    managed_id: int
    task_index: int
    attempt: int
    cluster: str
    placement: Placement = field(default_factory=Placement)


@dataclass
class ManagedSubmitResult:
    job_id: int
    job_workflow_id: str
    provider: str
    region: str | None = None
    #: No slot (``STYX_MANAGED_MAX_ACTIVE``, or the owner's limits): nothing was launched, and
    #: this says why; the workflow waits for ``MANAGED_SLOT_FREED_SIGNAL`` (or its timer).
    waiting: str | None = None


@dataclass
class WatchInput:
    managed_id: int
    task_index: int
    attempt: int
    cluster: str
    job_id: int
    job_workflow_id: str
    probe_seconds: float = DEFAULT_PROBE_SECONDS


@dataclass
class WatchResult:
    end: str
    #: One line for the user: ``rank 0 (127.0.3.4) lost: ...``, ``exited 1``.
    message: str | None = None
    #: Where the attempt ran, once known.
    region: str | None = None
    zone: str | None = None


@dataclass
class ManagedDownInput:
    cluster: str
    provider: str | None = None
    region: str | None = None


@dataclass
class ManagedRecord:
    """One write to the read model: the job's row, and optionally one task's and one
    attempt's (upserts keyed by ids: safe to repeat)."""

    managed_id: int
    status: str | None = None
    message: str | None = None
    recoveries: int | None = None
    current_task: int | None = None
    cluster: str | None = None
    #: Clear ``cluster`` (it is down).
    clear_cluster: bool = False
    started: bool = False
    ended: bool = False
    task_index: int | None = None
    task_status: str | None = None
    task_recoveries: int | None = None
    task_restarts: int | None = None
    task_message: str | None = None
    #: The tasks after ``task_index`` that will not run (a task failed or the job was cancelled).
    skip_rest: str | None = None
    attempt: int | None = None
    #: The attempt's cluster (the job's own ``cluster`` is set when it takes a slot).
    attempt_cluster: str | None = None
    attempt_status: str | None = None
    attempt_job_id: int | None = None
    attempt_reason: str | None = None
    attempt_ended: bool = False
    attempt_region: str | None = None
    attempt_zone: str | None = None


@dataclass
class ManagedJobResult:
    managed_id: int
    status: str
    message: str | None = None


def parse_job_recovery(value: Any) -> RecoveryPolicy:
    """``resources.job_recovery`` as SkyPilot writes it: a strategy name, or a mapping of
    ``strategy`` and ``max_restarts_on_errors``. ``ValueError`` naming the key otherwise."""
    if value is None:
        return RecoveryPolicy()
    if isinstance(value, str):
        value = {"strategy": value}
    if not isinstance(value, dict):
        raise ValueError(f"job_recovery: a strategy name or a mapping, not {value!r}")
    unknown = set(value) - {"strategy", "max_restarts_on_errors"}
    if unknown:
        raise ValueError(f"job_recovery.{sorted(unknown)[0]}: unknown key (known: strategy, max_restarts_on_errors)")
    strategy = value.get("strategy") or RecoveryStrategy.FAILOVER
    if not isinstance(strategy, str) or strategy.upper() not in RecoveryStrategy.__members__:
        raise ValueError(f"job_recovery.strategy: {strategy!r} is not one of "
                         f"{', '.join(RecoveryStrategy.__members__)}")
    restarts = value.get("max_restarts_on_errors", 0)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or not 0 <= restarts <= MAX_RESTARTS_ON_ERRORS:
        raise ValueError(f"job_recovery.max_restarts_on_errors: an integer from 0 to {MAX_RESTARTS_ON_ERRORS}, "
                         f"not {restarts!r}")
    return RecoveryPolicy(RecoveryStrategy[strategy.upper()], restarts)
