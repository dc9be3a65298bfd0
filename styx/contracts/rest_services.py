"""The REST API's shapes for services (``styx serve``), shared by the API, the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from styx.contracts.rest import RestModel


class ServeUpRequest(RestModel):
    name: str = Field(description="service name, `[a-z][a-z0-9-]{0,39}`; replicas are clusters `<name>-<n>`")
    task: dict[str, Any] = Field(description="a task with a `service:` section, as SkyPilot's service YAML")


class ServeUpdateRequest(RestModel):
    task: dict[str, Any] = Field(description="the new version's task, with its `service:` section")
    mode: Literal["rolling", "blue_green"] = Field(
        default="rolling", description="rolling: one new replica at a time, an old one leaving as each is ready; "
                                       "blue_green: all new replicas, then the old ones leave at once")


class ReplicaInfo(RestModel):
    model_config = ConfigDict(from_attributes=True)

    replica_id: int
    cluster: str
    version: int
    status: str
    endpoint: str = ""
    job_id: int | None = None
    message: str | None = None
    launched_at: datetime | None = None


class ServiceInfo(RestModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    owner: str | None = None
    status: str
    version: int = Field(description="the version the service runs (all replicas, once an update is done)")
    target_version: int = Field(description="the version being rolled out (= version when none is)")
    target_replicas: int = Field(description="how many replicas the autoscaler wants now")
    endpoint: str = Field(default="", description="where the load balancers serve it: http://<host>:<port>")
    lb_policy: str = "round_robin"
    qps: float = Field(default=0.0, description="requests per second over the autoscaler's window")
    message: str | None = None
    replicas: list[ReplicaInfo] = Field(default_factory=list)
    workflow_url: str | None = None
    warnings: list[str] = Field(default_factory=list, description=(
        "what of the service section Styx accepts and ignores, one sentence each"))
    created_at: datetime | None = None
    updated_at: datetime | None = None
