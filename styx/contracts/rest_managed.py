"""The REST API's shapes for managed jobs (``/api/v1/managed-jobs``), shared by the API, the
SDK, the CLI and the dashboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from styx.contracts.managed import MANAGED_TERMINAL, MAX_PIPELINE_TASKS, MAX_RESTARTS_ON_ERRORS

#: How many managed jobs one cancel request may name.
MAX_MANAGED_CANCEL_IDS = 100
#: The most rows one listing returns.
MAX_MANAGED_LIST = 1000


class ManagedJobRequest(BaseModel):
    """A managed job: one task, or a pipeline of tasks run in order."""

    tasks: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_PIPELINE_TASKS, description=(
        "the tasks, as in task YAML (SkyPilot-compatible); more than one: a pipeline, run one after another"))
    name: str | None = Field(default=None, max_length=128, description="the job's (or pipeline's) name")
    max_restarts_on_errors: int | None = Field(default=None, ge=0, le=MAX_RESTARTS_ON_ERRORS, description=(
        "restarts when the user's program fails, for every task (default: each task's "
        "resources.job_recovery.max_restarts_on_errors, else 0)"))


class ManagedJobSubmitted(BaseModel):
    managed_id: int
    name: str
    workflow_id: str
    workflow_url: str | None = None
    warnings: list[str] = Field(default_factory=list)


class ManagedAttemptInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    task_index: int
    attempt: int
    cluster: str
    job_id: int | None = None
    status: str
    reason: str | None = None
    region: str | None = None
    zone: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class ManagedTaskInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    task_index: int
    name: str | None = None
    status: str
    recoveries: int = 0
    restarts: int = 0
    cluster: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class ManagedJobInfo(BaseModel):
    """The one public shape of a managed job (``styx jobs queue``, the dashboard)."""

    model_config = ConfigDict(from_attributes=True)

    managed_id: int = Field(validation_alias=AliasChoices("managed_id", "id"))
    name: str
    owner: str | None = None
    status: str
    num_tasks: int = 1
    current_task: int = 0
    recoveries: int = 0
    cluster: str | None = None
    message: str | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    #: Estimated cost so far in USD (catalog prices × node-hours; 0 on local nodes).
    cost: float = 0.0
    workflow_id: str
    workflow_url: str | None = None
    tasks: list[ManagedTaskInfo] = Field(default_factory=list)
    attempts: list[ManagedAttemptInfo] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in MANAGED_TERMINAL


class ManagedCancelRequest(BaseModel):
    ids: list[int] | None = Field(default=None, max_length=MAX_MANAGED_CANCEL_IDS)
    name: str | None = Field(default=None, max_length=128, description="cancel the active jobs of this name")
    all: bool = Field(default=False, description="cancel every active managed job of yours")


class ManagedCancelResult(BaseModel):
    cancelled: list[int]
