"""Push runs: the status enum, and what the push workflow and its activities exchange."""

import enum
from dataclasses import dataclass, field
from typing import Any

from styx.contracts.jobs import JobStatus


class PushRunStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        return self in PUSH_TERMINAL


PUSH_TERMINAL: frozenset[PushRunStatus] = frozenset({
    PushRunStatus.SUCCEEDED, PushRunStatus.FAILED, PushRunStatus.SKIPPED,
})


#: The push workflow's type and update names, for the git server (which starts it by name).
PUSH_WORKFLOW = "PushWorkflow"
PUSH_SUBMITTED_UPDATE = "submitted"


def push_workflow_id(owner: str, repo: str, sha: str) -> str:
    return f"push/{owner}/{repo}/{sha}"


def git_task_queue(task_queue: str) -> str:
    """The task queue of the activities that read repositories (``push_plan``,
    ``push_submit``): the git server polls it, on the host whose disk holds the repositories,
    so that worker hosts need none of them."""
    return f"{task_queue}-git"


@dataclass
class PushInput:
    owner: str
    repo: str
    repo_id: int
    sha: str
    ref: str
    #: The ref's previous value (zeros for a new branch): path filters diff against it.
    before: str
    pusher: str
    #: Where ``push_plan`` and ``push_submit`` run: the git server's queue
    #: (``git_task_queue``). Empty in runs started before there was one: the workflow's own.
    git_task_queue: str = ""


@dataclass
class PushJobPlan:
    """One job of ``.styx.yaml`` that matched the push."""

    name: str
    #: The task, as ``Task.to_dict(include_secrets=True)``, its workdir still relative.
    task: dict[str, Any]
    cluster: str | None = None
    managed: bool = False


@dataclass
class PushPlan:
    jobs: list[PushJobPlan] = field(default_factory=list)
    #: Why nothing runs (``[skip ci]``, no job matched); None when jobs run or on error.
    skipped: str | None = None
    #: A bad ``.styx.yaml``: the message names the field.
    error: str | None = None
    field: str | None = None
    #: The commit's tree as an upload (``upload:<sha256>``, in the database: any worker
    #: syncs it), when jobs run.
    workdir: str | None = None


@dataclass
class PushJobRef:
    """What one job of a push became: a job on a named cluster (``cluster``, ``job_id``), or,
    for ``managed: true``, a managed job (``managed_id``, its workflow ``managed/<id>``).
    A ref with ``managed`` but no ``managed_id`` is a run started before managed pushes were
    managed jobs: a job on a ``push-…`` cluster of its own, taken down by the run."""

    name: str
    cluster: str
    job_id: int = 0
    workflow_id: str = ""
    managed: bool = False
    status: str = JobStatus.PENDING
    message: str | None = None
    managed_id: int = 0

    @property
    def queued(self) -> bool:
        """Whether something runs for it (a job, or a managed job)."""
        return bool(self.job_id or self.managed_id)


@dataclass
class PushSummary:
    workflow_id: str
    sha: str
    status: str
    message: str | None = None
    jobs: list[PushJobRef] = field(default_factory=list)


@dataclass
class PushRecord:
    repo_id: int
    sha: str
    ref: str
    pusher: str
    workflow_id: str
    status: str
    message: str | None = None
    jobs: list[PushJobRef] | None = None


@dataclass
class ExportInput:
    owner: str
    repo: str
    sha: str


@dataclass
class SubmitPushJobInput:
    push: PushInput
    index: int
    job: PushJobPlan
    #: The commit's tree as an upload (``upload:<sha256>``); see ``PushPlan.workdir``.
    workdir: str
    #: Idempotency key of the submission (a Temporal update id).
    key: str


@dataclass
class WaitJobInput:
    cluster: str
    job_id: int


@dataclass
class WaitJobResult:
    status: str
    message: str | None = None


@dataclass
class WaitManagedInput:
    managed_id: int


@dataclass
class DownClusterInput:
    cluster: str
