"""The REST API's shapes for clusters and jobs, shared by the API (responses), the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import json

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from styx.contracts.clusters import MAX_AUTOSTOP_MINUTES
from styx.contracts.jobs import JOB_TERMINAL


class RestModel(BaseModel):
    """The base of every REST shape. Schemas are built on first use, not at import: a CLI
    command uses two or three of the models, and building all of them took longer than the
    command's request."""

    model_config = ConfigDict(defer_build=True)


#: The largest id (job, key …) a request may name: ids are 32-bit in every database Styx uses.
MAX_ID = 2**31 - 1
#: A job id in a request body.
JobId = Annotated[int, Field(ge=1, le=MAX_ID)]
#: How many jobs one cancel request may name.
MAX_CANCEL_IDS = 100
#: How many clusters a page of ``GET /api/v1/clusters`` holds unless ``limit`` says, and the
#: most it may say: a listing costs the same however many clusters there are, and the SDK asks
#: for the next page (``after`` the last name) while pages come full.
DEFAULT_CLUSTER_PAGE = 100
MAX_CLUSTER_PAGE = 1000
#: An ``Idempotency-Key`` header: what a client sends with every attempt of one submission.
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class LaunchRequest(RestModel):
    cluster: str = Field(description="cluster name, `[a-z][a-z0-9-]{0,62}`")
    task: dict[str, Any] = Field(description="a task, as in task YAML (SkyPilot-compatible)")
    idle_minutes_to_autostop: int | None = Field(default=None, ge=0, le=MAX_AUTOSTOP_MINUTES)
    down: bool = Field(default=False, description="with autostop: tear down instead of stopping")


class ExecRequest(RestModel):
    task: dict[str, Any]


class AutostopRequest(RestModel):
    idle_minutes: int | None = Field(default=None, ge=0, le=MAX_AUTOSTOP_MINUTES,
                                     description="None disables autostop")
    down: bool = False


class ShareRequest(RestModel):
    user: str = Field(description="the user who may use the cluster from now on", min_length=1, max_length=64)


class CancelRequest(RestModel):
    job_ids: list[JobId] | None = Field(default=None, max_length=MAX_CANCEL_IDS,
                                        description="none: the latest running or waiting job")


class JobSubmitted(RestModel):
    cluster: str
    job_id: int
    workflow_id: str
    workflow_url: str | None = None
    warnings: list[str] = Field(default_factory=list, description=(
        "what of the task Styx ignores or does differently from SkyPilot, one sentence each "
        "(e.g. a service section that launch does not serve)"))


def _json_text(value: Any) -> Any:
    """Rows keep dicts and lists as JSON text; answers carry them decoded."""
    return json.loads(value) if isinstance(value, str) else value


class NodeInfo(RestModel):
    model_config = ConfigDict(from_attributes=True)

    rank: int
    host: str
    port: int
    ip: str = Field(validation_alias=AliasChoices("ip", "internal_ip"))
    #: UP, or DOWN: it stopped answering, and no job is placed on it (see ``styx status --refresh``).
    status: str = "UP"


class ClusterInfo(RestModel):
    """The one public shape of a cluster: built from its row with ``model_validate``."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    provider: str
    status: str
    num_nodes: int
    resources: dict[str, Any] = {}
    region: str | None = None
    zone: str | None = None
    autostop_minutes: int | None = None
    autostop_down: bool = False
    status_message: str | None = None
    created_at: datetime
    launched_at: datetime | None = None
    workflow_id: str
    workflow_url: str | None = None
    nodes: list[NodeInfo] = []
    #: Who launched it (None: a cluster from before owners were recorded; the admins').
    owner: str | None = None
    #: The other users who may use it (see ``styx cluster share``).
    shared_with: list[str] = []
    #: What its nodes are and cost: the instance type (AWS), spot or not, USD per node-hour.
    instance_type: str | None = None
    use_spot: bool = False
    hourly_price: float | None = None
    #: USD per hour the whole cluster costs now (0 when stopped; None: price unknown), and
    #: USD this launch of it has cost so far.
    hourly_rate: float | None = None
    cost_so_far: float | None = None
    #: When autostop fires if nothing runs meanwhile (None: no autostop, or jobs run or wait).
    autostop_at: datetime | None = None
    #: Who stopped or took it down: ``user``, ``autostop`` or ``failsafe`` (its nodes' own
    #: deadline passed while Styx was gone).
    stopped_by: str | None = None
    #: Its unfinished jobs by status (``{"RUNNING": 1, "PENDING": 4}``; none: ``{}``).
    active_jobs: dict[str, int] = {}

    _decode = field_validator("resources", mode="before")(lambda cls, v: _json_text(v) or {})


class JobInfo(RestModel):
    """The one public shape of a job: built from its row with ``model_validate``."""

    model_config = ConfigDict(from_attributes=True)

    cluster: str = Field(validation_alias=AliasChoices("cluster", "cluster_name"))
    job_id: int
    name: str | None = None
    status: str
    submitted_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_codes: list[int | None] | None = None
    cpus: float = 0.0
    accelerators: dict[str, Any] = {}
    num_nodes: int = 1
    run_summary: str | None = None
    user: str | None = None
    message: str | None = None
    workflow_id: str
    workflow_url: str | None = None

    _decode = field_validator("exit_codes", "accelerators", mode="before")(lambda cls, v: _json_text(v))

    @property
    def finished(self) -> bool:
        return self.status in JOB_TERMINAL


class CancelResult(RestModel):
    cluster: str
    cancelled: list[int]


class ProviderCheck(RestModel):
    provider: str
    ok: bool
    reason: str


class Orphan(RestModel):
    instance_id: str
    cluster: str | None = None
    state: str
    region: str | None = None
    terminated: bool = False


class ComponentCheck(RestModel):
    ok: bool
    detail: str = Field(description="'ok', what answered, or the error")


class DoctorReport(RestModel):
    """``GET /api/v1/doctor``: whether the API's database and Temporal answer, and whether a
    worker runs a trivial workflow (PingWorkflow) within a few seconds."""

    version: str = Field(description="the API's Styx version")
    database: ComponentCheck
    temporal: ComponentCheck
    search_attributes: ComponentCheck = Field(
        description="whether Temporal knows Styx's search attributes (else: the command to create them)")
    worker: ComponentCheck

    @property
    def ok(self) -> bool:
        return self.database.ok and self.temporal.ok and self.search_attributes.ok and self.worker.ok


class HealthReport(RestModel):
    """``GET /healthz``: 200 when both answer, 503 otherwise."""

    status: str = Field(description="'ok' or 'unhealthy'")
    database: str = Field(description="'ok' or 'error: ...'")
    temporal: str = Field(description="'ok' or 'error: ...'")


class ErrorBody(RestModel):
    """Every error answer of the API: one line a user can act on (a 422 names the field)."""

    detail: str
