"""The tables' columns: each is a title and a function from a row to its cell.

Adding a column is one line in a list here, as the prices are::

    Column("$/hour", lambda r: usd(r.info.hourly_rate), "num"),

``CLUSTER_COLUMNS`` take a ``data.ClusterRow``; ``JOB_COLUMNS`` a ``contracts.rest.JobInfo``;
``RUN_JOB_COLUMNS`` a ``contracts.rest_repos.PushJobInfo``; ``MANAGED_COLUMNS`` a
``contracts.rest_managed.ManagedJobInfo``.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from styx.api.dashboard.data import ClusterRow
from styx.api.dashboard.render import Column, age, duration, link, span, status_badge, temporal_link, timestamp
from styx.contracts.rest import JobInfo
from styx.contracts.rest_costs import usd
from styx.contracts.rest_managed import ManagedJobInfo
from styx.contracts.rest_repos import PushJobInfo


def resources_text(resources: dict[str, Any]) -> str:
    """A task's ``resources:`` in a few words: ``4+ CPU, 16+ GB, A100:1``."""
    parts = []
    if resources.get("instance_type"):
        parts.append(str(resources["instance_type"]))
    if resources.get("cpus") is not None:
        parts.append(f"{resources['cpus']} CPU")
    if resources.get("memory") is not None:
        parts.append(f"{resources['memory']} GB")
    accelerators = resources.get("accelerators")
    if isinstance(accelerators, dict):
        parts.extend(f"{k}:{v}" for k, v in accelerators.items())
    elif accelerators:
        parts.append(str(accelerators))
    if resources.get("use_spot"):
        parts.append("spot")
    return ", ".join(parts)


def infra(row: ClusterRow) -> str:
    return "/".join(p for p in (row.info.provider, row.info.region, row.info.zone) if p)


def nodes(row: ClusterRow) -> Markup:
    shape = resources_text(row.info.resources)
    text = Markup("{0}{1}").format(row.info.num_nodes, f" × {shape}" if shape else "")
    if row.down_nodes:
        text += Markup(' <span class="bad">({0} DOWN)</span>').format(row.down_nodes)
    return text


def autostop(row: ClusterRow) -> Markup:
    if row.info.autostop_minutes is None:
        return Markup('<span class="muted">off</span>')
    what = "down" if row.info.autostop_down else "stop"
    text = Markup("{0} after {1}m idle").format(what, row.info.autostop_minutes)
    if row.autostop_at is not None:
        left = (row.autostop_at - row.now).total_seconds()
        text += Markup('<br><span class="muted" title="estimated from the last job">{0}</span>').format(
            f"fires in ≈{span(left)}" if left > 0 else "due now")
    return text


def jobs(row: ClusterRow) -> str:
    if not row.activity.jobs:
        return "0"
    return f"{row.activity.active} active / {row.activity.jobs}" if row.activity.active else str(row.activity.jobs)


def cluster_status(row: ClusterRow) -> Markup:
    badge = status_badge(row.info.status)
    if row.info.status_message:
        badge += Markup('<div class="message">{0}</div>').format(row.info.status_message[:200])
    return badge


CLUSTER_COLUMNS: list[Column[ClusterRow]] = [
    Column("Name", lambda r: link(f"/clusters/{r.info.name}", r.info.name), "name"),
    Column("Status", cluster_status),
    Column("Infra", infra),
    Column("Nodes", nodes),
    Column("Jobs", jobs, "num"),
    Column("Autostop", autostop),
    Column("$/hour", lambda r: usd(r.info.hourly_rate), "num"),
    Column("$ so far", lambda r: usd(r.info.cost_so_far), "num"),
    Column("Owner", lambda r: r.info.owner or "(admins)"),
    Column("Age", lambda r: timestamp(r.info.created_at, r.now)),
    Column("Temporal", lambda r: temporal_link(r.info.workflow_url)),
]


def exit_codes(job: JobInfo) -> str:
    if not job.exit_codes:
        return "-"
    return " ".join("-" if code is None else str(code) for code in job.exit_codes)


def job_status(job: JobInfo) -> Markup:
    badge = status_badge(job.status)
    if job.message:
        badge += Markup('<div class="message">{0}</div>').format(job.message[:300])
    return badge


JOB_COLUMNS: list[Column[JobInfo]] = [
    Column("ID", lambda j: link(f"/clusters/{j.cluster}/jobs/{j.job_id}", j.job_id), "num"),
    Column("Name", lambda j: j.name or "-"),
    Column("User", lambda j: j.user or "-"),
    Column("Submitted", lambda j: timestamp(j.submitted_at)),
    Column("Duration", lambda j: duration(j.started_at, j.ended_at), "num"),
    Column("Status", job_status),
    Column("Exit codes", exit_codes, "num"),
    Column("Temporal", lambda j: temporal_link(j.workflow_url)),
]


def _run_job_link(job: PushJobInfo) -> Markup:
    if job.job_id and job.cluster:
        return link(f"/clusters/{job.cluster}/jobs/{job.job_id}", f"{job.cluster} #{job.job_id}")
    return Markup('<span class="muted">{0}</span>').format(job.cluster or "-")


RUN_JOB_COLUMNS: list[Column[PushJobInfo]] = [
    Column("Job", lambda j: j.name),
    Column("Runs as", _run_job_link),
    Column("Status", lambda j: status_badge(j.status or "PENDING")),
    Column("Temporal", lambda j: temporal_link(j.workflow_url)),
]

__all__ = ["CLUSTER_COLUMNS", "JOB_COLUMNS", "RUN_JOB_COLUMNS", "Column", "age"]


def managed_status(job: ManagedJobInfo) -> Markup:
    badge = status_badge(job.status)
    if job.message:
        badge += Markup('<div class="message">{0}</div>').format(job.message[:300])
    return badge


MANAGED_COLUMNS: list[Column[ManagedJobInfo]] = [
    Column("ID", lambda j: j.managed_id, "num"),
    Column("Name", lambda j: j.name),
    Column("Owner", lambda j: j.owner or "-"),
    Column("Status", managed_status),
    Column("Tasks", lambda j: f"{min(j.current_task + 1, j.num_tasks)} of {j.num_tasks}", "num"),
    Column("Recoveries", lambda j: j.recoveries, "num"),
    Column("Cluster", lambda j: link(f"/clusters/{j.cluster}", j.cluster) if j.cluster else "-"),
    Column("Submitted", lambda j: timestamp(j.submitted_at)),
    Column("Duration", lambda j: duration(j.started_at, j.ended_at), "num"),
    Column("$", lambda j: usd(j.cost), "num"),
    Column("Temporal", lambda j: temporal_link(j.workflow_url)),
]
