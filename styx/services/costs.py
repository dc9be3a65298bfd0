"""What clusters cost: the cost report (``styx cost-report``), a cluster's rate and its
cost so far (``styx status``, the dashboard), and the price a launch would pay
(``styx launch --dryrun``). Reads the ``node_uptime`` intervals the cluster workflow records
(launch/start → stop/down, each node at its price when it came up: the catalog's on-demand
or spot price on AWS, 0 for local nodes, an SSH pool's ``hourly_price``).

    report = cost_report(db, owner=None, days=30)          # every cluster, last 30 days
    rate = hourly_rate(db.clusters.get("dev"))              # USD/hour now (0 when stopped)
    spent = cost_so_far(db, "dev")                          # USD since this launch
    spent = spent_by_launch(db, ["dev"])[("dev", launch_id)]  # the same, for many clusters at once

``launch_plan(task, cluster)`` is the dry run: what ``launch`` would take and at what price,
with the runners-up; it raises ``InvalidRequest`` (naming the field) for what nothing
satisfies, as the launch itself would.
"""

from __future__ import annotations

from collections.abc import Collection

from collections import defaultdict
from datetime import datetime, timedelta, timezone

from styx.catalog.choose import Unsatisfiable, choose
from styx.contracts.clusters import CLUSTER_GONE, ClusterStatus
from styx.contracts.rest_costs import MAX_REPORT_DAYS, ClusterCost, CostReport, LaunchPlanInfo, PlanChoice
from styx.db import Database
from styx.db.engine import aware_utc
from styx.db.models import Cluster, NodeUptime
from styx.services.launch import InvalidRequest, check_for_provider, provider_of
from styx.task import Task

__all__ = ["cost_report", "cost_so_far", "hourly_rate", "launch_plan", "rate", "spent_by_launch"]


def _now(now: datetime | None) -> datetime:
    return aware_utc(now) if now is not None else datetime.now(timezone.utc)


def hourly_rate(cluster: Cluster | None) -> float | None:
    """USD per hour the cluster costs now: its nodes' price while UP (or starting), 0 when
    stopped or gone, None when its price is not known (a cluster from before prices)."""
    if cluster is None:
        return None
    return rate(cluster.status, cluster.provider, cluster.hourly_price, cluster.num_nodes)


def rate(status: str, provider: str, node_price: float | None, num_nodes: int) -> float | None:
    """``hourly_rate`` from a cluster's columns (the listing reads rows, not models)."""
    if status in CLUSTER_GONE or status == ClusterStatus.STOPPED:
        return 0.0
    if node_price is None:
        return 0.0 if provider == "local" else None
    return node_price * num_nodes


def _hours(row: NodeUptime, since: datetime | None, until: datetime) -> float:
    start = aware_utc(row.started_at)
    end = aware_utc(row.ended_at) if row.ended_at is not None else until
    if since is not None:
        start = max(start, since)
    end = min(end, until)
    return max((end - start).total_seconds(), 0.0) / 3600


def cost_report(db: Database, *, owner: str | None, days: float | None = 30,
                now: datetime | None = None, cluster: str | Collection[str] | None = None) -> CostReport:
    """Every cluster (each launch of a name apart) up in the last ``days`` (None: ever),
    ``owner``'s only unless None, ``cluster``'s only (a name or several) if given; newest first."""
    if days is not None and not 0 < days <= MAX_REPORT_DAYS:
        raise InvalidRequest("days", f"must be more than 0 and at most {MAX_REPORT_DAYS}")
    until = _now(now)
    since = until - timedelta(days=days) if days is not None else None
    groups: dict[tuple[str, str], list[NodeUptime]] = defaultdict(list)
    for row in db.uptime.intervals(since, owner, cluster=cluster):
        groups[(row.cluster_name, row.launch_id)].append(row)
    clusters: list[ClusterCost] = []
    rows_now = db.clusters.get_many(name for name, _ in groups)
    for (name, launch_id), rows in groups.items():
        live = rows_now.get(name)
        same = live is not None and (live.launch_id or "") == launch_id
        per_rank: dict[int, float] = defaultdict(float)
        cost = 0.0
        for row in rows:
            hours = _hours(row, since, until)
            per_rank[row.rank] += hours
            cost += hours * row.hourly_price
        first, last = rows[0], max(rows, key=lambda r: r.started_at)
        up = any(r.ended_at is None for r in rows)
        ended = None if up else max(aware_utc(r.ended_at) for r in rows if r.ended_at is not None)
        status = live.status if same and live is not None else ClusterStatus.TERMINATED
        clusters.append(ClusterCost(
            cluster=name, launch_id=launch_id, owner=first.owner, provider=first.provider,
            instance_type=last.instance_type, region=last.region, use_spot=last.use_spot,
            nodes=len(per_rank), status=str(status), started_at=min(aware_utc(r.started_at) for r in rows),
            ended_at=ended, uptime_hours=max(per_rank.values(), default=0.0), node_hours=sum(per_rank.values()),
            hourly_price=sum(r.hourly_price for r in rows if r.ended_at is None) if up else 0.0, cost=cost))
    clusters.sort(key=lambda c: c.started_at, reverse=True)
    return CostReport(since=since, until=until, total=sum(c.cost for c in clusters), clusters=clusters)


def spent_by_launch(db: Database, names: Collection[str], now: datetime | None = None) -> dict[tuple[str, str], float]:
    """USD each launch of the clusters ``names`` has cost since it was launched, in one read
    (a page of ``styx status`` or of the dashboard)."""
    if not names:
        return {}
    report = cost_report(db, owner=None, days=None, now=now, cluster=names)
    return {(c.cluster, c.launch_id): c.cost for c in report.clusters}


def cost_so_far(db: Database, name: str, now: datetime | None = None) -> float:
    """USD the cluster's current launch has cost since it was launched."""
    cluster = db.clusters.get(name)
    if cluster is None:
        return 0.0
    report = cost_report(db, owner=None, days=None, now=now, cluster=name)
    return sum(c.cost for c in report.clusters if c.cluster == name and c.launch_id == (cluster.launch_id or ""))


def launch_plan(task: Task, cluster: str | None = None, max_runners_up: int = 5) -> LaunchPlanInfo:
    """What ``launch`` of ``task`` would take, at what price, and the runners-up; nothing
    starts. ``InvalidRequest`` (naming the field) for a request nothing satisfies."""
    provider = provider_of(task)
    warnings = check_for_provider(task, provider)
    if provider == "local":
        return LaunchPlanInfo(cluster=cluster, provider="local", num_nodes=task.num_nodes,
                              chosen=PlanChoice(hourly_price=0.0), hourly_total=0.0, warnings=warnings,
                              note="local nodes: processes on the Styx server, at no cost")
    if provider == "ssh":
        pool = task.resources.candidates()[0].region
        return LaunchPlanInfo(cluster=cluster, provider="ssh", num_nodes=task.num_nodes,
                              chosen=PlanChoice(region=pool, hourly_price=0.0), hourly_total=0.0, warnings=warnings,
                              note=f"SSH pool {pool}: billed at the pool's hourly_price in ssh_pools.yaml "
                                   "(the worker's; 0 unless set)")
    try:
        plan = choose(task.resources, task.num_nodes, max_runners_up)
    except Unsatisfiable as err:
        raise InvalidRequest(f"task.resources.{err.field}", str(err).split(": ", 1)[1]) from None
    return LaunchPlanInfo(
        cluster=cluster, provider="aws", num_nodes=task.num_nodes, mode=plan.mode,
        chosen=PlanChoice(**plan.chosen.to_dict()), hourly_total=plan.hourly_total,
        runners_up=[PlanChoice(**c.to_dict()) for c in plan.runners_up], warnings=warnings)
