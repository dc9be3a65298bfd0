"""The REST API's shapes for prices and costs: the catalog (``show-gpus``, ``show-instances``),
a launch's plan (``launch --dryrun``) and the cost report (``cost-report``). Shared by the
API, the SDK and the CLI."""

from __future__ import annotations

from datetime import datetime
from pydantic import BaseModel, Field

#: The longest window a cost report covers, in days (ten years).
MAX_REPORT_DAYS = 3650


def usd(value: float | None) -> str:
    """USD as the CLI and the dashboard print it (``$1,234.50``, ``$0.0042``); ``-`` when the
    price is not known."""
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


class CatalogOffer(BaseModel):
    instance_type: str
    region: str
    vcpus: float
    memory_gib: float
    accelerator_name: str | None = None
    accelerator_count: int = 0
    price: float = Field(description="USD per hour, on-demand")
    spot_price: float | None = Field(default=None, description="USD per hour, spot (indicative)")


class PlanChoice(BaseModel):
    instance_type: str | None = None
    region: str | None = None
    zone: str | None = None
    use_spot: bool = False
    hourly_price: float = Field(description="USD per node-hour")
    vcpus: float | None = None
    memory_gib: float | None = None
    accelerators: dict[str, int] = {}
    candidate: int = 0
    why_not: str = ""
    also_in: list[str] = []


class LaunchPlanInfo(BaseModel):
    """What ``styx launch --dryrun`` shows: where the task would run, what it costs, the
    runners-up and why they lost. Nothing is started."""

    cluster: str | None = None
    provider: str
    num_nodes: int
    chosen: PlanChoice
    hourly_total: float = Field(description="USD per hour for all the nodes")
    mode: str = Field(default="single", description="single, any_of or ordered")
    runners_up: list[PlanChoice] = []
    note: str | None = None
    warnings: list[str] = []


class ClusterCost(BaseModel):
    """One cluster (one launch of its name), alive or gone."""

    cluster: str
    launch_id: str = ""
    owner: str | None = None
    provider: str
    instance_type: str | None = None
    region: str | None = None
    use_spot: bool = False
    nodes: int
    status: str = Field(description="the cluster's status now; TERMINATED when it is gone")
    started_at: datetime
    ended_at: datetime | None = Field(default=None, description="None while a node is up")
    uptime_hours: float = Field(description="hours the cluster was up in the window")
    node_hours: float
    hourly_price: float = Field(description="USD per hour of the whole cluster while up")
    cost: float = Field(description="USD in the window")


class CostReport(BaseModel):
    since: datetime | None = None
    until: datetime
    total: float
    clusters: list[ClusterCost] = []
