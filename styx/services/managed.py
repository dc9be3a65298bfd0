"""Managed jobs, for every front door (the REST API, the dashboard) and the workflow's
activities: check and store a submission and start its ``ManagedJobWorkflow`` (by type
name), list and read jobs with the owner rule, cancel, and choose where a task's next
launch tries first.

Who sees what: a user sees and cancels only their own managed jobs; an admin every user's
(``list_jobs(all_users=True)``). To anyone else a job does not exist (``ManagedJobNotFound``).

Errors are this module's own; each caller turns them into its kind (an HTTP status):
``InvalidRequest`` (from ``styx.services.launch``, naming the field), ``ManagedJobNotFound``,
``ManagedJobFinished``, ``policy.NotAllowed``, ``quotas.LimitExceeded``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from styx.config import Settings
from styx.contracts.managed import (
    MANAGED_JOB_WORKFLOW,
    MANAGED_TERMINAL,
    ManagedJobInput,
    ManagedJobStatus,
    Placement,
    RecoveryPolicy,
    managed_cluster_name,
    managed_workflow_id,
    parse_job_recovery,
)
from styx.contracts.rest_managed import ManagedAttemptInfo, ManagedJobInfo, ManagedTaskInfo
from styx.contracts.uploads import task_uploads
from styx.secrets import seal, unseal
from styx.services import policy, quotas
from styx.services.launch import InvalidRequest, check_for_provider, cluster_spec, load_task, provider_of
from styx.task import Task, TaskValidationError

if TYPE_CHECKING:
    from styx.db import Database, ManagedJob, ManagedJobAttempt, User


class ManagedJobNotFound(LookupError):
    """No such managed job, or not one the caller may see (the same answer)."""


class ManagedIdTaken(Exception):
    """Temporal holds a workflow of this job's id that this database did not start."""


class ManagedJobFinished(Exception):
    """The managed job has ended already; nothing to cancel."""


@dataclass
class Prepared:
    """A checked submission: the tasks, each one's recovery policy, and warnings."""

    tasks: list[Task]
    policies: list[RecoveryPolicy]
    warnings: list[str] = field(default_factory=list)


def prepare(settings: Settings, db: "Database", user: "User", tasks: Sequence[dict[str, Any]],
            max_restarts_on_errors: int | None = None,
            may_use_upload: Callable[[str], bool] | None = None, check_limits: bool = True) -> Prepared:
    """Check every task as a launch would (``tasks[i].<field>`` named on error), and that
    ``user`` may run it: the local-jobs rule (``policy.NotAllowed``) and, with
    ``check_limits``, their limits for the first task's cluster (``quotas.LimitExceeded``;
    a retried submission whose job exists already skips it: its cluster counts already).
    Nothing is stored."""
    loaded, policies, warnings = [], [], []
    for index, data in enumerate(tasks):
        where = f"tasks[{index}]" if len(tasks) > 1 else "task"
        try:
            task = load_task(data, may_use_upload=may_use_upload)
            spec = cluster_spec(task, managed_cluster_name(1, index, 1), owner=user.name)
            warnings += [f"{where}: {w}" if len(tasks) > 1 else w for w in check_for_provider(task, spec.provider)]
            quotas.check_provider_nodes(settings, spec)
        except InvalidRequest as err:
            field_name = err.field.replace("task", where, 1) if err.field.startswith("task") else err.field
            raise InvalidRequest(field_name, str(err).split(": ", 1)[-1]) from None
        try:
            recovery = parse_job_recovery(task.resources.candidates()[0].job_recovery)
        except ValueError as err:
            raise InvalidRequest(f"{where}.resources.{str(err).split(':', 1)[0]}", str(err).split(": ", 1)[-1]) \
                from None
        if max_restarts_on_errors is not None:
            recovery.max_restarts_on_errors = max_restarts_on_errors
        policy.check_local_jobs(settings, spec.provider, user.is_admin)
        if index == 0 and check_limits:
            quotas.check_user_limits(db, settings, user, spec)
        loaded.append(task)
        policies.append(recovery)
    return Prepared(loaded, policies, warnings)


def seal_task(settings: Settings, task: Task) -> str:
    """A task's body as stored: its JSON with its secrets, encrypted."""
    sealed = seal(settings.home, {"task": task.to_dict(include_secrets=True)})  # type: ignore[dict-item]
    assert sealed is not None
    return sealed


def unseal_task(settings: Settings, body: str) -> Task:
    return Task.from_dict(unseal(settings.home, body)["task"])  # type: ignore[arg-type]


async def submit(client: Client, db: "Database", settings: Settings, user: "User", prepared: Prepared,
                 name: str | None, idempotency_key: str | None = None) -> "ManagedJob":
    """Store the job and start its workflow ``managed/<id>``; returns the job's row. With a
    key this user sent before, the first job (whose workflow is started if it was not)."""
    job_name = name or prepared.tasks[0].name or "managed"
    bodies = [(t.name, seal_task(settings, t)) for t in prepared.tasks]
    uploads = {sha for t in prepared.tasks for sha in task_uploads(t.to_dict(include_secrets=False))}
    job, created = db.managed.create(job_name[:128], user.name, bodies, idempotency_key, uploads=uploads)
    assert job.id is not None
    try:
        await client.start_workflow(
            MANAGED_JOB_WORKFLOW,
            ManagedJobInput(job.id, job.num_tasks, user.name, max_recoveries=settings.managed_max_recoveries,
                            policies=prepared.policies, probe_seconds=float(settings.managed_probe_seconds)),
            id=managed_workflow_id(job.id), task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A finished job's id is never run again (a retried submission finds it done).
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        if created:
            # A closed workflow holds this id, and this database did not start it: another Styx
            # (or this one before its database was reset) on the same Temporal namespace.
            message = (f"Temporal already has a finished workflow {managed_workflow_id(job.id)} that this "
                       "database did not start: one Temporal namespace serves one Styx database")
            db.managed.record(job.id, {"status": ManagedJobStatus.FAILED, "message": message, "ended": True})
            raise ManagedIdTaken(message) from None
    except Exception as err:
        db.managed.record(job.id, {"status": ManagedJobStatus.FAILED, "message": f"could not start: {err}",
                                   "ended": True})
        raise
    return job


def visible(user: "User", job: "ManagedJob | None") -> bool:
    """Whether ``user`` may see (and cancel) ``job``: its owner, or an admin."""
    return job is not None and not user.disabled and (user.is_admin or job.owner == user.name)


def list_jobs(db: "Database", user: "User", *, all_users: bool = False, limit: int = 100,
              active_only: bool = False, name: str | None = None,
              workflow_url: Callable[[str], str | None] | None = None) -> list[ManagedJobInfo]:
    """The managed jobs ``user`` may see, newest first: their own, or with ``all_users``
    (admins only: ``policy.NotAllowed`` otherwise) everyone's. What ``styx jobs queue``,
    ``GET /api/v1/managed-jobs`` and the dashboard list."""
    if all_users and not user.is_admin:
        raise policy.NotAllowed("listing every user's managed jobs needs an admin token")
    rows = db.managed.list(None if all_users else user.name, limit=limit, active_only=active_only, name=name)
    return _infos(db, rows, workflow_url, with_attempts=False)


def get_job(db: "Database", user: "User", managed_id: int,
            workflow_url: Callable[[str], str | None] | None = None) -> ManagedJobInfo:
    job = db.managed.get(managed_id)
    if not visible(user, job):
        raise ManagedJobNotFound(f"managed job {managed_id} not found")
    return _infos(db, [job], workflow_url, with_attempts=True)[0]  # type: ignore[list-item]


def _infos(db: "Database", rows: list["ManagedJob"], workflow_url: Callable[[str], str | None] | None,
           with_attempts: bool) -> list[ManagedJobInfo]:
    ids = [r.id for r in rows if r.id is not None]
    tasks = db.managed.tasks(ids)
    attempts = db.managed.attempts(ids)
    out = []
    for row in rows:
        info = ManagedJobInfo.model_validate(row)
        mine = attempts.get(row.id or 0, [])
        update: dict[str, Any] = {
            "tasks": [ManagedTaskInfo.model_validate(t) for t in tasks.get(row.id or 0, [])],
            "cost": round(sum(_cost(a) for a in mine), 6),
            "workflow_url": workflow_url(row.workflow_id) if workflow_url else None,
        }
        if with_attempts:
            update["attempts"] = [ManagedAttemptInfo.model_validate(a) for a in mine]
        out.append(info.model_copy(update=update))
    return out


def _cost(attempt: "ManagedJobAttempt") -> float:
    if not attempt.hourly_price:
        return 0.0
    end = attempt.ended_at or datetime.now(timezone.utc)
    return max((end - attempt.started_at).total_seconds(), 0.0) / 3600 * attempt.hourly_price


def cancel_targets(db: "Database", user: "User", ids: Sequence[int] | None = None, name: str | None = None,
                   all_active: bool = False) -> list["ManagedJob"]:
    """The jobs a cancel names that ``user`` may cancel: by id (``ManagedJobNotFound`` for one
    they may not see, ``ManagedJobFinished`` for one that ended), by name or all — their
    active ones (an admin's own, unless they name ids)."""
    if ids:
        found = []
        for managed_id in ids:
            job = db.managed.get(managed_id)
            if not visible(user, job):
                raise ManagedJobNotFound(f"managed job {managed_id} not found")
            assert job is not None
            if ManagedJobStatus(job.status) in MANAGED_TERMINAL:
                raise ManagedJobFinished(f"managed job {managed_id} already finished ({job.status}); "
                                         "nothing to cancel")
            found.append(job)
        return found
    if name is None and not all_active:
        raise InvalidRequest("ids", "name the managed jobs to cancel: ids, name or all")
    return db.managed.list(user.name, limit=10_000, active_only=True, name=name)


async def cancel(client: Client, db: "Database", jobs: Sequence["ManagedJob"]) -> list[int]:
    """Ask each job's workflow to cancel: it kills the job, takes its cluster down and ends
    CANCELLED. Returns at once (the job shows CANCELLING, then CANCELLED)."""
    from temporalio.service import RPCError, RPCStatusCode

    done = []
    for job in jobs:
        assert job.id is not None
        try:
            await client.get_workflow_handle(job.workflow_id).cancel()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Its workflow never started (the submission failed half way): nothing runs.
            db.managed.record(job.id, {"status": ManagedJobStatus.CANCELLED, "message": "cancelled", "ended": True},
                              task_index=-1, skip_rest=ManagedJobStatus.CANCELLED)
        else:
            db.managed.record(job.id, {"status": ManagedJobStatus.CANCELLING})
        done.append(job.id)
    return done


@dataclass
class LogPart:
    """One attempt's log: the line before it, where it is, and how the attempt ended."""

    header: str
    cluster: str
    job_id: int
    num_nodes: int
    #: ``PREEMPTED: node 0 lost: ...`` once the attempt has ended, else None.
    end: str | None


def log_parts(db: "Database", managed_id: int) -> list[LogPart]:
    """A managed job's logs, attempt after attempt (each task of a pipeline, each recovery),
    for every attempt that queued a job."""
    parts = []
    job = db.managed.get(managed_id)
    tasks = {t.task_index: t for t in db.managed.tasks([managed_id])[managed_id]}
    for attempt in db.managed.attempts([managed_id])[managed_id]:
        if attempt.job_id is None:
            continue
        row = db.clusters.get_job(attempt.cluster, attempt.job_id)
        task = tasks.get(attempt.task_index)
        name = f" ({task.name})" if task is not None and task.name else ""
        what = f"task {attempt.task_index}{name}, " if job is not None and job.num_tasks > 1 else ""
        end = None
        if attempt.ended_at is not None:
            end = attempt.status + (f": {attempt.reason}" if attempt.reason else "")
        parts.append(LogPart(f"── {what}attempt {attempt.attempt} on cluster {attempt.cluster}", attempt.cluster,
                             attempt.job_id, row.num_nodes if row else 1, end))
    return parts


# ------------------------------------------------------------------ placement


def placed_task(task: Task, placement: Placement) -> Task:
    """``task`` to launch with ``placement`` applied: pinned to a zone or region the task
    allows, or to the cheapest region other than ``avoid_region``. Only AWS tasks move;
    a placement the task does not allow leaves it as it is."""
    resources = task.resources.candidates()[0]
    if provider_of(task) != "aws":
        return task
    region = placement.region
    if placement.avoid_region and not resources.region:
        from styx.catalog import optimizer

        others = [r for _, r, _ in optimizer.cheapest(task.resources) if r != placement.avoid_region]
        region = others[0] if others else None
    if region is None or (resources.region and resources.region != region):
        return task
    zone = placement.zone if placement.zone and (resources.zone in (None, placement.zone)) else None
    infra = f"aws/{region}" + (f"/{zone}" if zone else "")
    try:
        return task.with_overrides(infra=infra)
    except TaskValidationError:
        return task


def hourly_price(task: Task) -> float | None:
    """The catalog's price of the task's nodes per hour (the cheapest type that fits, spot
    when it asks for spot), or None off AWS."""
    if provider_of(task) != "aws":
        return None
    from styx.catalog import optimizer

    fits = optimizer.cheapest(task.resources)
    return round(fits[0][2] * task.num_nodes, 6) if fits else None
