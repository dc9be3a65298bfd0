"""The shapes of the REST API, shared by the API (responses), the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class LaunchRequest(BaseModel):
    cluster: str = Field(description="cluster name, `[a-z][a-z0-9-]{0,62}`")
    task: dict[str, Any] = Field(description="a task, as in task YAML (SkyPilot-compatible)")
    idle_minutes_to_autostop: int | None = Field(default=None, ge=0)
    down: bool = Field(default=False, description="with autostop: tear down instead of stopping")


class ExecRequest(BaseModel):
    task: dict[str, Any]


class AutostopRequest(BaseModel):
    idle_minutes: int | None = Field(default=None, ge=0, description="None disables autostop")
    down: bool = False


class CancelRequest(BaseModel):
    job_ids: list[int] | None = Field(default=None, description="none: the latest running or waiting job")


class JobSubmitted(BaseModel):
    cluster: str
    job_id: int
    workflow_id: str
    workflow_url: str | None = None


class NodeInfo(BaseModel):
    rank: int
    host: str
    port: int
    ip: str


class ClusterInfo(BaseModel):
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


class JobInfo(BaseModel):
    cluster: str
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

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED")


class CancelResult(BaseModel):
    cluster: str
    cancelled: list[int]


class ProviderCheck(BaseModel):
    provider: str
    ok: bool
    reason: str


class Orphan(BaseModel):
    instance_id: str
    cluster: str | None = None
    state: str
    region: str | None = None
    terminated: bool = False


class ErrorBody(BaseModel):
    detail: str
