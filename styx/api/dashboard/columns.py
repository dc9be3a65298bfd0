"""The tables' columns: each is a title and a function from a row to its cell.

Adding a column is one line in a list here, as the prices are::

    Column("$/hour", lambda r: usd(r.info.hourly_rate), "num"),

``CLUSTER_COLUMNS`` take a ``data.ClusterRow``; ``JOB_COLUMNS`` a ``contracts.rest.JobInfo``;
``RUN_JOB_COLUMNS`` a ``contracts.rest_repos.PushJobInfo``; ``MANAGED_COLUMNS`` a
``contracts.rest_managed.ManagedJobInfo``, ``TASK_COLUMNS`` its tasks, ``ATTEMPT_COLUMNS`` its
attempts (``AttemptRow``). The functions named for an action (``cluster_actions``,
``cancel_job``, ``cancel_managed``) are the buttons of a table's last cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from markupsafe import Markup, escape

from styx.api.dashboard.data import ClusterRow
from styx.api.dashboard.render import (
    Column,
    action,
    age,
    duration,
    link,
    span,
    status_badge,
    temporal_link,
    timestamp,
    when,
)
from styx.contracts.rest import ClusterInfo, JobInfo
from styx.contracts.rest_costs import usd
from styx.contracts.rest_managed import ManagedAttemptInfo, ManagedJobInfo, ManagedTaskInfo
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
    text = f"{row.info.num_nodes} × {escape(shape)}" if shape else str(row.info.num_nodes)
    if row.down_nodes:
        text += f' <span class="bad">({row.down_nodes} DOWN)</span>'
    return Markup(text)


def autostop(row: ClusterRow) -> Markup:
    minutes = row.info.autostop_minutes
    if minutes is None:
        return Markup('<span class="muted">off</span>')
    text = f"{'down' if row.info.autostop_down else 'stop'} after {int(minutes)}m idle"
    if row.autostop_at is not None:
        left = (row.autostop_at - row.now).total_seconds()
        text += (f'<br><span class="muted" title="{when(row.autostop_at)}">'
                 f'{f"fires in ≈{span(left)}" if left > 0 else "due now"}</span>')
    return Markup(text)


def jobs(row: ClusterRow) -> str:
    if not row.activity.jobs:
        return "0"
    return f"{row.activity.active} active / {row.activity.jobs}" if row.activity.active else str(row.activity.jobs)


def cluster_status(row: ClusterRow) -> Markup:
    badge = status_badge(row.info.status)
    if row.info.status_message:
        return Markup(f'{badge}<div class="message">{escape(row.info.status_message[:200])}</div>')
    return badge


def cluster_actions(info: ClusterInfo) -> Markup:
    """Stop / start / down, as the cluster's status allows (for a viewer who owns it, or an admin)."""
    name, out = info.name, []
    if info.status == "UP":
        out.append(action(f"/clusters/{name}/stop", "Stop",
                          f"Stop cluster {name}? Its running jobs end; `start` brings its nodes back."))
    if info.status == "STOPPED":
        out.append(action(f"/clusters/{name}/start", "Start", f"Start cluster {name}?"))
    if info.status != "TERMINATED":
        out.append(action(f"/clusters/{name}/down", "Down", f"Tear down cluster {name}? Its jobs are cancelled "
                          "and its nodes removed for good.", "danger"))
    return Markup("\n".join(out))


def owned_cluster_actions(row: ClusterRow) -> Markup | str:
    return cluster_actions(row.info) if row.owns else ""


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
        return Markup(f'{badge}<div class="message">{escape(job.message[:300])}</div>')
    return badge


def cancel_job(job: JobInfo) -> Markup:
    return action(f"/clusters/{job.cluster}/jobs/{job.job_id}/cancel", "Cancel",
                  f"Cancel job {job.job_id} on {job.cluster}? Its processes are killed on every node.", "danger")


def job_actions(cancellable: set[int]) -> Callable[[JobInfo], Markup | str]:
    """The actions cell of a cluster's jobs: *Cancel* on those the viewer may cancel."""
    return lambda job: cancel_job(job) if job.job_id in cancellable else ""


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
    return Markup(f'<span class="muted">{escape(job.cluster or "-")}</span>')


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
        return Markup(f'{badge}<div class="message">{escape(job.message[:300])}</div>')
    return badge


MANAGED_COLUMNS: list[Column[ManagedJobInfo]] = [
    Column("ID", lambda j: link(f"/managed/{j.managed_id}", j.managed_id), "num"),
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


def cancel_managed(job: ManagedJobInfo) -> Markup:
    return action(f"/managed/{job.managed_id}/cancel", "Cancel",
                  f"Cancel managed job {job.managed_id} ({job.name})? Its job is killed and its cluster taken "
                  "down; it is not recovered.", "danger")


def _ended(status: Markup, message: str | None) -> Markup:
    return Markup(f'{status}<div class="message">{escape(message[:300])}</div>') if message else status


TASK_COLUMNS: list[Column[ManagedTaskInfo]] = [
    Column("Task", lambda t: t.task_index, "num"),
    Column("Name", lambda t: t.name or "-"),
    Column("Status", lambda t: _ended(status_badge(t.status), t.message)),
    Column("Recoveries", lambda t: t.recoveries, "num"),
    Column("Restarts", lambda t: t.restarts, "num"),
    Column("Cluster", lambda t: t.cluster or "-"),
    Column("Started", lambda t: timestamp(t.started_at)),
    Column("Duration", lambda t: duration(t.started_at, t.ended_at), "num"),
]


@dataclass(frozen=True)
class AttemptRow:
    """One attempt of a managed job's task, with the exit codes of the job it ran as."""

    attempt: ManagedAttemptInfo
    exit_codes: list[int | None] | None

    @property
    def key(self) -> str:
        return f"{self.attempt.task_index}.{self.attempt.attempt}"


def _attempt_job(row: AttemptRow) -> Markup | str:
    a = row.attempt
    if a.job_id is None:
        return "-"
    return link(f"/clusters/{a.cluster}/jobs/{a.job_id}", f"{a.cluster} #{a.job_id}",
                "its job: the log, live while it runs")


ATTEMPT_COLUMNS: list[Column[AttemptRow]] = [
    Column("Task", lambda r: r.attempt.task_index, "num"),
    Column("Attempt", lambda r: r.attempt.attempt, "num"),
    Column("Job (log)", _attempt_job),
    Column("Status", lambda r: _ended(status_badge(r.attempt.status), r.attempt.reason)),
    Column("Where", lambda r: "/".join(p for p in (r.attempt.region, r.attempt.zone) if p) or "-"),
    Column("Started", lambda r: timestamp(r.attempt.started_at)),
    Column("Duration", lambda r: duration(r.attempt.started_at, r.attempt.ended_at), "num"),
    Column("Exit codes", lambda r: " ".join("-" if c is None else str(c) for c in r.exit_codes or []) or "-", "num"),
]
