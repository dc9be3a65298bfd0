"""`styx jobs launch / queue / logs / cancel`: managed jobs and pipelines, as SkyPilot's
`sky jobs`. Talks to the API through the SDK (``client.jobs``) only."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from styx.cli.clusters import (CpusOpt, EnvFileOpt, EnvOpt, GpusOpt, InfraOpt, KeyOpt, MemoryOpt, NodesOpt,
                                SecretOpt, WorkdirOpt, _age, _envs, _key_values)
from styx.cli.console import Table, api, console, esc, fail
from styx.cli.uploads import upload_progress

if TYPE_CHECKING:
    from styx.contracts.rest_managed import ManagedJobInfo
    from styx.task import Task

app = typer.Typer()
jobs_app = typer.Typer(help="Managed jobs: a cluster of their own, recovered on preemption, taken down at the end.",
                       no_args_is_help=True)
app.add_typer(jobs_app, name="jobs", rich_help_panel="Clusters and jobs")

# Exit codes of a followed job, as `styx logs --status`.
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED = 0, 100, 103


def _load(entrypoint: list[str], **overrides) -> tuple[str | None, list["Task"]]:
    """A task or pipeline YAML, or the words of a bare command, with the overrides applied to every task."""
    from styx.task import Task, TaskValidationError, load_pipeline  # here: `jobs queue` needs no task model

    try:
        if len(entrypoint) == 1 and (entrypoint[0].endswith((".yaml", ".yml")) or Path(entrypoint[0]).is_file()):
            path = Path(entrypoint[0])
            if not path.is_file():
                raise fail(f"ENTRYPOINT: no such file {str(path)!r}")
            pipeline = load_pipeline(path)
            name, tasks = pipeline.name, pipeline.tasks
        else:
            name, tasks = None, [Task.from_command(" ".join(entrypoint))]
        overrides = {k: v for k, v in overrides.items() if v is not None and v not in ([], (), {})}
        return name, [t.with_overrides(**overrides) if overrides else t for t in tasks]
    except TaskValidationError as err:
        raise fail(str(err)) from None


def _duration(job: "ManagedJobInfo") -> str:
    if job.started_at is None:
        return "-"
    seconds = ((job.ended_at or datetime.now(timezone.utc)) - job.started_at).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _exit(job: "ManagedJobInfo") -> int:
    if job.status == "SUCCEEDED":
        return EXIT_SUCCEEDED
    return EXIT_CANCELLED if job.status == "CANCELLED" else EXIT_FAILED


@jobs_app.command("launch")
def launch(
    entrypoint: List[str] = typer.Argument(..., help="a task or pipeline YAML file, or a command to run"),
    name: Optional[str] = typer.Option(None, "-n", "--name", help="the job's (or pipeline's) name"),
    max_restarts: Optional[int] = typer.Option(
        None, "--max-restarts", min=0, max=100,
        help="run a task again this many times when its program fails (default: the task's "
        "resources.job_recovery.max_restarts_on_errors, else 0); preemptions are always recovered"),
    detach_run: bool = typer.Option(False, "-d", "--detach-run", help="return once the job is launched"),
    yes: bool = typer.Option(False, "-y", "--yes", help="do not ask for confirmation"),
    env: Optional[List[str]] = EnvOpt,
    secret: Optional[List[str]] = SecretOpt,
    env_file: Optional[str] = EnvFileOpt,
    cpus: Optional[str] = CpusOpt,
    memory: Optional[str] = MemoryOpt,
    gpus: Optional[str] = GpusOpt,
    num_nodes: Optional[int] = NodesOpt,
    infra: Optional[str] = InfraOpt,
    workdir: Optional[str] = WorkdirOpt,
    idempotency_key: Optional[str] = KeyOpt,
) -> None:
    """Launch a managed job: each task on a cluster of its own, launched again elsewhere when
    preempted (a node lost, an instance terminated underneath), taken down when it ends. A
    pipeline file (a header document with `name`, then one document per task) runs its tasks
    in order. Prints the managed job's id, then follows its log (across recoveries) unless `-d`.

    Examples:

      `styx jobs launch train.yaml --name train --max-restarts 3 -d`

      `styx jobs launch pipeline.yaml`

      `styx jobs launch --infra aws --gpus A100:1 'python train.py --resume ~/ckpt'`
    """
    file_name, tasks = _load(entrypoint, envs=_envs(env, env_file), secrets=_key_values("--secret", secret),
                             cpus=cpus, memory=memory, gpus=gpus, num_nodes=num_nodes, infra=infra, workdir=workdir)
    what = f"a pipeline of {len(tasks)} tasks" if len(tasks) > 1 else "a managed job"
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Launch {what} (a cluster of its own per task)?", default=True, abort=True)
    with api() as client:
        with upload_progress() as progress:
            submitted = client.jobs.launch_pipeline(tasks, name=name or file_name, max_restarts_on_errors=max_restarts,
                                                    progress=progress, idempotency_key=idempotency_key)
        for warning in submitted.warnings:
            console.print(f"[yellow]warning:[/yellow] {esc(warning)}")
        console.print(f"managed job {submitted.managed_id} launched ({esc(submitted.name)})"
                      + (f" — {esc(submitted.workflow_url)}" if submitted.workflow_url else ""), soft_wrap=True)
        if detach_run:
            console.print(f"follow it with: styx jobs logs {submitted.managed_id} --follow", highlight=False)
            return
        for chunk in client.jobs.stream_logs(submitted.managed_id, follow=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        job = client.jobs.get(submitted.managed_id)
    raise typer.Exit(_exit(job))


@jobs_app.command("queue")
def queue(
    all_users: bool = typer.Option(False, "-a", "--all", help="every user's managed jobs (admins only)"),
    active: bool = typer.Option(False, "--active", help="only those that have not ended"),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="at most this many, newest first"),
) -> None:
    """Show managed jobs: id, name, status, recoveries, cluster, started, duration, cost so far;
    a pipeline's tasks below it.

    Example:  `styx jobs queue`    `styx jobs queue --all`
    """
    with api() as client:
        jobs = client.jobs.queue(all_users=all_users, active=active, limit=limit)
    table = Table("ID", "NAME", *(["USER"] if all_users else []), "STATUS", "RECOVERIES", "CLUSTER", "STARTED",
                  "DURATION", "$")
    for job in jobs:
        status = job.status + (f": {job.message}" if job.message and job.status != "SUCCEEDED" else "")
        started = _age(job.started_at) + " ago" if job.started_at else "-"
        table.add_row(str(job.managed_id), esc(job.name), *([esc(job.owner or "-")] if all_users else []),
                      esc(status), str(job.recoveries), esc(job.cluster or "-"), started, _duration(job),
                      f"{job.cost:.2f}")
        if job.num_tasks > 1:
            for task in job.tasks:
                table.add_row("", f"  ↳ {task.task_index} {esc(task.name or '')}".rstrip(),
                              *([""] if all_users else []), esc(task.status), str(task.recoveries),
                              esc(task.cluster or "-") if task.status not in ("SUCCEEDED", "CANCELLED") else "-",
                              "", "", "")
    console.print(table)


@jobs_app.command("logs")
def logs(
    managed_id: int = typer.Argument(..., help="the managed job"),
    follow: bool = typer.Option(False, "-f", "--follow", help="keep streaming until the managed job ends"),
) -> None:
    """Print a managed job's log: every attempt in order (each task, each recovery), each
    headed by a line naming it and followed by how it ended.

    Example:  `styx jobs logs 7 --follow`
    """
    with api() as client:
        for chunk in client.jobs.stream_logs(managed_id, follow=follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()


@jobs_app.command("cancel")
def cancel(
    ids: Optional[List[int]] = typer.Argument(None, help="managed job ids"),
    name: Optional[str] = typer.Option(None, "-n", "--name", help="cancel your active jobs of this name"),
    all_jobs: bool = typer.Option(False, "-a", "--all", help="cancel all your active managed jobs"),
    yes: bool = typer.Option(False, "-y", "--yes", help="do not ask for confirmation"),
) -> None:
    """Cancel managed jobs: each is killed, its cluster taken down, and it ends CANCELLED.

    Examples:  `styx jobs cancel 7`    `styx jobs cancel --name train`    `styx jobs cancel --all -y`
    """
    if sum(bool(x) for x in (ids, name, all_jobs)) != 1:
        raise fail("name what to cancel: managed job ids, --name NAME or --all")
    if all_jobs and not yes and sys.stdin.isatty():
        typer.confirm("Cancel all your active managed jobs?", default=False, abort=True)
    with api() as client:
        result = client.jobs.cancel(list(ids) if ids else None, name=name, all=all_jobs)
    console.print(f"cancelling managed job(s) {', '.join(map(str, result.cancelled))}: their clusters are "
                  "being taken down", highlight=False)
