"""`styx launch / exec / status / queue / logs / cancel / stop / start / down / autostop`.

Flags follow SkyPilot's, so its users feel at home. Every command talks to the API through
the SDK; nothing here touches SSH, a cloud or Temporal. The commands hang on ``app``, which
``styx.cli.main`` adds to the root command.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from styx.cli.console import Table, api, console, err_console, esc, fail
from styx.cli.table import Link, print_table
from styx.cli.uploads import upload_progress

if TYPE_CHECKING:  # imported inside the commands that use them: `styx status` needs none
    from styx.contracts.rest import JobInfo, JobSubmitted
    from styx.sdk.client import Client
    from styx.task import Task

app = typer.Typer()

# `styx logs --status` exit codes, as SkyPilot's `sky logs --status`.
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_NOT_FINISHED, EXIT_NOT_FOUND, EXIT_CANCELLED = 0, 100, 101, 102, 103


def _load_task(entrypoint: list[str], **overrides) -> "Task":
    """A YAML file, or the words of a bare command, with the command-line overrides applied."""
    from styx.task import Task, TaskValidationError

    try:
        if len(entrypoint) == 1 and (entrypoint[0].endswith((".yaml", ".yml")) or Path(entrypoint[0]).is_file()):
            path = Path(entrypoint[0])
            if not path.is_file():
                raise fail(f"ENTRYPOINT: no such file {str(path)!r}")
            task = Task.from_yaml(path)
        else:
            task = Task.from_command(" ".join(entrypoint))
        overrides = {k: v for k, v in overrides.items() if v is not None and v not in ([], (), {})}
        return task.with_overrides(**overrides) if overrides else task  # the SDK sends the local files
    except TaskValidationError as err:
        raise fail(str(err)) from None


def _key_values(option: str, items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` words; a bare ``KEY`` takes its value from the caller's environment (as
    SkyPilot's ``--env KEY``), and one that is not set there is a one-line error naming it."""
    values: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in os.environ:
                raise fail(f"{option} {key}: {key} is not set in your environment; "
                           f"export it, or pass {option} {key}=VALUE")
            value = os.environ[key]
        values[key] = value
    return values


def _env_file(path: str | None) -> dict[str, str]:
    """The variables of a dotenv file (``KEY=VALUE`` lines, ``#`` comments, quotes, ``export``);
    a line with a bare ``KEY`` takes its value from the caller's environment, as ``--env KEY``."""
    if path is None:
        return {}
    from dotenv import dotenv_values

    from styx.task import MAX_TASK_BYTES

    file = Path(path)
    if not file.is_file():
        raise fail(f"--env-file: no such file {path!r}")
    if file.stat().st_size > MAX_TASK_BYTES:
        raise fail(f"--env-file {path}: {file.stat().st_size} bytes; at most {MAX_TASK_BYTES} are accepted "
                   "(STYX_MAX_TASK_BYTES)")
    try:
        values = dotenv_values(file)
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"--env-file {path}: {err}") from None
    found: dict[str, str] = {}
    for key, value in values.items():
        if value is None and key not in os.environ:
            raise fail(f"--env-file {path}: {key} is not set in your environment; export it, or write {key}=VALUE")
        found[key] = os.environ[key] if value is None else value
    return found


def _envs(env: list[str] | None, env_file: str | None) -> dict[str, str]:
    """The job's variables from the command line: the env file's, then ``--env`` over them."""
    return {**_env_file(env_file), **_key_values("--env", env)}


def _age(then: datetime | None) -> str:
    if then is None:
        return "-"
    seconds = (datetime.now(timezone.utc) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _when(at: datetime) -> str:
    """A moment to come, as `in 9m (14:05)`."""
    seconds = (at - datetime.now(timezone.utc)).total_seconds()
    local = at.astimezone().strftime("%H:%M" if abs(seconds) < 86_400 else "%Y-%m-%d %H:%M")
    if seconds <= 0:
        return f"due ({local})"
    minutes = int(seconds // 60)
    span = f"{minutes}m" if minutes < 120 else f"{minutes // 60}h{minutes % 60:02d}m"
    return f"in {span} ({local})"


def _duration(job: "JobInfo") -> str:
    if job.started_at is None:
        return "-"
    end = job.ended_at or datetime.now(timezone.utc)
    return f"{(end - job.started_at).total_seconds():.1f}s"


def _follow(client: "Client", cluster: str, job_id: int) -> "JobInfo":
    """Wait (with a spinner) until the job starts, stream its log, return it once finished."""
    with console.status(f"job {job_id} on {esc(cluster)}: waiting…") as spinner:
        while True:
            job = client.job(cluster, job_id)
            if job.status != "PENDING":
                break
            info = client.cluster(cluster)
            if info.status in ("FAILED", "TERMINATED"):
                break
            spinner.update(f"job {job_id} PENDING; cluster {esc(cluster)} is {esc(info.status)}…")
            time.sleep(0.2)
    out = sys.stdout.buffer
    for chunk in client.stream_logs(cluster, job_id, follow=True):
        out.write(chunk)
        out.flush()
    return client.wait(cluster, job_id)


def _job_exit(job: "JobInfo") -> int:
    return {"SUCCEEDED": EXIT_SUCCEEDED, "CANCELLED": EXIT_CANCELLED}.get(job.status, EXIT_FAILED)


def _queued(submitted: "JobSubmitted", cluster: str) -> None:
    """The warnings of a submission (yellow, one line each), then where the job is."""
    for warning in submitted.warnings:
        err_console.print(f"[yellow]warning: {esc(warning)}[/yellow]", highlight=False, soft_wrap=True)
    console.print(f"job {submitted.job_id} queued on cluster {esc(cluster)}"
                  + (f" — {esc(submitted.workflow_url)}" if submitted.workflow_url else ""))


def _report(job: "JobInfo") -> None:
    colour = "green" if job.status == "SUCCEEDED" else "red" if job.finished else "yellow"
    codes = ",".join("-" if c is None else str(c) for c in job.exit_codes or [])
    extra = f" (exit codes {codes})" if codes and job.status != "SUCCEEDED" else ""
    console.print(f"job {job.job_id} on {esc(job.cluster)}: [{colour}]{job.status}[/{colour}]{extra}"
                  + (f" — {esc(job.message)}" if job.message and job.status != "SUCCEEDED" else ""), soft_wrap=True)


EnvOpt = typer.Option(None, "--env", metavar="KEY[=VALUE]",
                      help="a variable of the job's environment (repeatable); KEY alone takes its value "
                      "from your environment")
SecretOpt = typer.Option(None, "--secret", metavar="KEY[=VALUE]",
                         help="like --env, but never shown or logged; KEY alone takes its value from your "
                         "environment")
EnvFileOpt = typer.Option(None, "--env-file", metavar="FILE",
                          help="a dotenv file of KEY=VALUE lines for the job's environment (--env wins)")
# Where a new cluster's nodes come from: `launch` and `jobs launch` take the same options.
CpusOpt = typer.Option(None, "--cpus", help="vCPUs per node, e.g. 4 or 4+ (at least 4)")
MemoryOpt = typer.Option(None, "--memory", help="GB per node, e.g. 16+")
GpusOpt = typer.Option(None, "--gpus", help="accelerators per node, e.g. A100:1")
NodesOpt = typer.Option(None, "--num-nodes", help="number of nodes")
InfraOpt = typer.Option(None, "--infra", help="where: local (default), aws/us-east-1, ssh/POOL")
WorkdirOpt = typer.Option(None, "--workdir", help="local directory sent to the nodes (.skyignore / .gitignore "
                          "honoured)")
KeyOpt = typer.Option(
    None, "--idempotency-key", help="names this submission (up to 64 letters, digits, '_', '-'): run again with "
    "the same key, the command queues nothing new and follows the first job. Default: a new key each time.")


@app.command(rich_help_panel="Clusters and jobs")
def launch(
    entrypoint: List[str] = typer.Argument(..., help="a task YAML file, or a command to run"),
    cluster: Optional[str] = typer.Option(None, "-c", "--cluster", help="cluster name (new or existing)"),
    detach_run: bool = typer.Option(False, "-d", "--detach-run", help="return once the job is queued"),
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
    name: Optional[str] = typer.Option(None, "-n", "--name", help="the job's name"),
    idle_minutes_to_autostop: Optional[int] = typer.Option(
        None, "-i", "--idle-minutes-to-autostop", help="stop the cluster after this many idle minutes"),
    down: bool = typer.Option(False, "--down", help="with -i: tear down instead of stopping"),
    idempotency_key: Optional[str] = KeyOpt,
    dryrun: bool = typer.Option(False, "--dryrun", help="show where the task would run and what it would cost "
                                "(instance type, region/zone, $/hour, the runners-up and why); start nothing"),
) -> None:
    """Launch a cluster (if needed) and run a task on it, `setup` first, streaming its output.

    A cluster of that name that exists is reused when the task fits its nodes, as in SkyPilot.
    With -i, the nodes also carry a deadline of their own: if Styx is gone they stop
    themselves (STYX_FAILSAFE_GRACE_MINUTES after it).

    Examples:

      `styx launch examples/hello.yaml -c dev`

      `styx launch -c dev --num-nodes 2 --env GREETING=hi 'echo $GREETING from $STYX_NODE_RANK'`

      `HF_TOKEN=... styx launch -c dev train.yaml --secret HF_TOKEN --env-file .env`

      `styx launch --dryrun --gpus A100:8 --infra aws 'python train.py'`
    """
    if dryrun:
        task = _load_task(entrypoint, cpus=cpus, memory=memory, gpus=gpus, num_nodes=num_nodes, infra=infra, name=name)
        with api() as client:
            plan = client.dryrun(task, cluster or "dryrun", idle_minutes_to_autostop=idle_minutes_to_autostop,
                                 down=down)
        from styx.cli.costs import print_plan

        print_plan(plan)
        return
    task = _load_task(entrypoint, envs=_envs(env, env_file), secrets=_key_values("--secret", secret), cpus=cpus,
                      memory=memory, gpus=gpus, num_nodes=num_nodes, infra=infra, workdir=workdir, name=name)
    cluster = cluster or f"styx-{secrets.token_hex(2)}"
    with api() as client:
        exists = any(c.name == cluster for c in client.status())
        if not exists and not yes and sys.stdin.isatty():
            typer.confirm(f"Launch a new cluster {cluster!r} ({task.num_nodes} node(s))?", default=True, abort=True)
        with upload_progress() as progress:
            submitted = client.launch(task, cluster, idle_minutes_to_autostop=idle_minutes_to_autostop, down=down,
                                      progress=progress, idempotency_key=idempotency_key)
        _queued(submitted, cluster)
        if detach_run:
            return
        job = _follow(client, cluster, submitted.job_id)
        _report(job)
        raise typer.Exit(_job_exit(job))


@app.command("exec", rich_help_panel="Clusters and jobs")
def exec_(
    cluster: str = typer.Argument(..., help="an existing cluster"),
    entrypoint: List[str] = typer.Argument(..., help="a task YAML file, or a command to run"),
    detach_run: bool = typer.Option(False, "-d", "--detach-run", help="return once the job is queued"),
    env: Optional[List[str]] = EnvOpt,
    secret: Optional[List[str]] = SecretOpt,
    env_file: Optional[str] = EnvFileOpt,
    cpus: Optional[str] = typer.Option(None, "--cpus", help="vCPUs the job needs per node"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="accelerators the job needs per node"),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="nodes the job runs on"),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="local directory sent to the nodes "
                                          "(.skyignore / .gitignore honoured)"),
    name: Optional[str] = typer.Option(None, "-n", "--name", help="the job's name"),
    idempotency_key: Optional[str] = KeyOpt,
) -> None:
    """Queue a job on an existing cluster; prints its id and streams its output.

    As SkyPilot's `exec`, the task's `setup` is not run (its workdir and files are sent):
    `styx launch -c CLUSTER task.yaml` runs it.

    Examples:  `styx exec dev 'python -c "print(42)"'`    `styx exec dev train.yaml --idempotency-key nightly-0601`
    """
    task = _load_task(entrypoint, envs=_envs(env, env_file), secrets=_key_values("--secret", secret), cpus=cpus,
                      gpus=gpus, num_nodes=num_nodes, workdir=workdir, name=name)
    with api() as client:
        with upload_progress() as progress:
            submitted = client.exec(cluster, task, progress=progress, idempotency_key=idempotency_key)
        _queued(submitted, cluster)
        if detach_run:
            return
        job = _follow(client, cluster, submitted.job_id)
        _report(job)
        raise typer.Exit(_job_exit(job))


@app.command(rich_help_panel="Clusters and jobs")
def status(
    clusters: Optional[List[str]] = typer.Argument(None, help="only these clusters"),
    all_: bool = typer.Option(False, "-a", "--all", help="include clusters taken down"),
    orphans: bool = typer.Option(False, "--orphans", help="list cloud instances that belong to no live cluster"),
    terminate: bool = typer.Option(False, "--terminate", help="with --orphans: terminate them"),
    refresh: bool = typer.Option(False, "-r", "--refresh", help="probe the nodes now: those that do not "
                                 "answer are marked DOWN (no job goes there), those that answer UP again"),
    owner: Optional[str] = typer.Option(None, "--owner", help="only this user's clusters"),
    provider: Optional[str] = typer.Option(None, "--provider", help="only this provider's: local, aws, ssh"),
    status_: Optional[List[str]] = typer.Option(None, "--status", help="only clusters in this status "
                                                "(repeatable): INIT, UP, STOPPED, FAILED, TERMINATED"),
) -> None:
    """Show clusters: owner, provider, nodes (and how many are DOWN), running and waiting jobs,
    status (and who stopped it: user, autostop, or the failsafe), autostop and when it fires,
    $/hour, age and a Temporal UI link.

    Examples:  `styx status`    `styx status --refresh`    `styx status --owner alice --status UP`    `styx status --orphans`
    """
    if orphans:
        with api() as client, console.status("looking for orphaned instances…"):
            found = client.orphans(terminate=terminate)
        if not found:
            console.print("No orphaned instances.")
            return
        table = Table("INSTANCE", "CLUSTER TAG", "STATE", "REGION", "TERMINATED")
        for o in found:
            table.add_row(esc(o.instance_id), esc(o.cluster or "-"), esc(o.state), esc(o.region or "-"),
                          "yes" if o.terminated else "no")
        console.print(table)
        return
    filters = {"status": [s.upper() for s in status_ or []] or None, "provider": provider, "owner": owner}
    with api() as client:
        if refresh:
            with console.status("probing the nodes…"):
                rows = client.status(all=all_, refresh=True, **filters)
        else:
            rows = client.status(all=all_, **filters)
    if clusters:
        rows = [r for r in rows if r.name in clusters]
    if not rows:
        console.print("No clusters. Launch one with: styx launch examples/hello.yaml -c dev")
        return
    from styx.contracts.rest_costs import usd

    table = []
    for c in rows:
        autostop = "-" if c.autostop_minutes is None else f"{c.autostop_minutes}m" + (" (down)" if c.autostop_down else "")
        if c.autostop_minutes is not None and c.status == "UP":
            autostop += f", {_when(c.autostop_at)}" if c.autostop_at else ", after the jobs"
        stopped = f" by {c.stopped_by}" if c.stopped_by and c.status in ("STOPPED", "TERMINATED") else ""
        down = sum(n.status != "UP" for n in c.nodes)
        table.append([c.name, c.owner or "(admins)", c.provider, str(c.num_nodes) + (f" ({down} DOWN)" if down else ""),
                      _jobs(c.active_jobs), c.status + stopped + (f": {c.status_message}" if c.status_message else ""),
                      autostop, usd(c.hourly_rate), _age(c.created_at),
                      # A link labelled "open" (a terminal shows it clickable): the URL itself would not fit.
                      Link("open", c.workflow_url) if c.workflow_url else "-"])
    print_table(["CLUSTER", "OWNER", "PROVIDER", "NODES", "JOBS", "STATUS", "AUTOSTOP", "$/HOUR", "AGE", "TEMPORAL UI"],
                table, wrap={5})


def _jobs(active: dict[str, int]) -> str:
    """``2 running, 5 waiting`` (setting up counts as running); ``-`` for none."""
    running = sum(n for status, n in active.items() if status != "PENDING")
    parts = [f"{running} running"] if running else []
    parts += [f"{active['PENDING']} waiting"] if active.get("PENDING") else []
    return ", ".join(parts) or "-"


@app.command(rich_help_panel="Clusters and jobs")
def queue(cluster: str = typer.Argument(..., help="the cluster")) -> None:
    """Show a cluster's jobs: id, name, submitted, status, duration, exit code.

    Example:  `styx queue dev`
    """
    with api() as client:
        jobs = client.queue(cluster)
    table = []
    for j in jobs:
        # One code per rank; "-" for a rank Styx stopped (killed when another failed, or lost).
        codes = "-" if not j.exit_codes else ",".join("-" if c is None else str(c) for c in j.exit_codes)
        status = j.status + (f": {j.message}" if j.message and j.status != "SUCCEEDED" else "")
        table.append([str(j.job_id), j.name or "-", _age(j.submitted_at) + " ago", status, _duration(j), codes,
                      j.run_summary or ""])
    print_table(["ID", "NAME", "SUBMITTED", "STATUS", "DURATION", "EXIT CODE", "COMMAND"], table, wrap={1, 3, 6})


@app.command(rich_help_panel="Clusters and jobs")
def logs(
    cluster: str = typer.Argument(..., help="the cluster"),
    job_id: Optional[int] = typer.Argument(None, help="the job (default: the latest)"),
    follow: bool = typer.Option(False, "-f", "--follow", help="keep streaming until the job ends"),
    status_only: bool = typer.Option(
        False, "--status", help="print the job's status (and why it failed) instead of its log; exit 0 "
        "succeeded, 100 failed, 101 not finished, 102 not found, 103 cancelled"),
) -> None:
    """Print a job's full log (every node, lines prefixed by node rank).

    Example:  `styx logs dev 3 --follow`
    """
    with api() as client:
        if job_id is None:
            jobs = client.queue(cluster)
            if not jobs:
                if status_only:
                    raise typer.Exit(EXIT_NOT_FOUND)
                raise fail(f"cluster {cluster!r} has no jobs")
            job_id = max(j.job_id for j in jobs)
        if status_only:
            from styx.sdk.transport import StyxError

            try:
                job = client.job(cluster, job_id)
            except StyxError as err:
                if err.status_code == 404:
                    raise typer.Exit(EXIT_NOT_FOUND) from None
                raise
            _report(job)
            raise typer.Exit(_job_exit(job) if job.finished else EXIT_NOT_FINISHED)
        out = sys.stdout.buffer
        for chunk in client.stream_logs(cluster, job_id, follow=follow):
            out.write(chunk)
            out.flush()


@app.command(rich_help_panel="Clusters and jobs")
def cancel(
    cluster: str = typer.Argument(..., help="the cluster"),
    job_ids: Optional[List[int]] = typer.Argument(None, help="jobs to cancel (default: the latest running one)"),
    all_: bool = typer.Option(False, "-a", "--all", help="cancel every running or waiting job you may cancel"),
) -> None:
    """Cancel jobs: their processes are killed on every node.

    Example:  `styx cancel dev 3`
    """
    with api() as client:
        ids = job_ids or None
        if all_:
            # On a cluster shared with you, only your own jobs are yours to cancel.
            me = client.me()
            owns = me.is_admin or client.cluster(cluster).owner == me.name
            ids = [j.job_id for j in client.queue(cluster) if not j.finished and (owns or j.user == me.name)]
            if not ids:
                console.print(f"no running or waiting job on {esc(cluster)}")
                return
        result = client.cancel(cluster, ids)
    console.print(f"cancelled job(s) {', '.join(map(str, result.cancelled))} on {esc(cluster)}")


def _targets(client: "Client", names: list[str] | None, all_: bool, verb: str) -> list[str]:
    if all_:
        # Yours only: clusters shared with you are not yours to stop, and an admin's --all
        # must not sweep every user's clusters.
        me = client.me()
        return [c.name for c in client.status() if c.owner == me.name or (c.owner is None and me.is_admin)]
    if not names:
        raise fail(f"name the cluster(s) to {verb}, or pass --all")
    return names


def _lifecycle(verb: str, names: list[str] | None, all_: bool, yes: bool) -> None:
    with api() as client:
        targets = _targets(client, names, all_, verb)
        if not targets:
            console.print(f"no cluster of yours to {verb}")
            return
        if verb != "start" and not yes and sys.stdin.isatty() and targets:
            typer.confirm(f"{verb.capitalize()} cluster(s) {', '.join(targets)}?", default=True, abort=True)
        for name in targets:
            with console.status(f"{verb} {esc(name)}…"):
                info = getattr(client, verb)(name)
            console.print(f"cluster {esc(name)}: {esc(info.status)}")


@app.command(rich_help_panel="Clusters and jobs")
def stop(
    clusters: Optional[List[str]] = typer.Argument(None, help="clusters to stop"),
    all_: bool = typer.Option(False, "-a", "--all", help="every cluster you own"),
    yes: bool = typer.Option(False, "-y", "--yes", help="do not ask for confirmation"),
) -> None:
    """Stop clusters: nodes are stopped (their jobs end); `styx start` brings them back.

    Example:  `styx stop dev`
    """
    _lifecycle("stop", clusters, all_, yes)


@app.command(rich_help_panel="Clusters and jobs")
def start(
    clusters: Optional[List[str]] = typer.Argument(None, help="clusters to start"),
    all_: bool = typer.Option(False, "-a", "--all", help="every cluster you own"),
    yes: bool = typer.Option(False, "-y", "--yes", help="accepted for SkyPilot's `sky start -y`; start asks nothing"),
) -> None:
    """Start stopped clusters on the same nodes (same home directories).

    Example:  `styx start dev -y`
    """
    _lifecycle("start", clusters, all_, True)


@app.command(rich_help_panel="Clusters and jobs")
def down(
    clusters: Optional[List[str]] = typer.Argument(None, help="clusters to tear down"),
    all_: bool = typer.Option(False, "-a", "--all", help="every cluster you own"),
    yes: bool = typer.Option(False, "-y", "--yes", help="do not ask for confirmation"),
) -> None:
    """Tear clusters down: jobs are cancelled and nodes removed for good.

    Example:  `styx down dev -y`
    """
    _lifecycle("down", clusters, all_, yes)


@app.command(rich_help_panel="Clusters and jobs")
def autostop(
    cluster: str = typer.Argument(..., help="the cluster"),
    idle_minutes: Optional[int] = typer.Option(None, "-i", "--idle-minutes", help="idle minutes before stopping"),
    cancel_: bool = typer.Option(False, "--cancel", help="turn autostop off"),
    down: bool = typer.Option(False, "--down", help="tear down instead of stopping"),
) -> None:
    """Stop (or tear down) a cluster after it has been idle for a while.

    Example:  `styx autostop dev -i 30`
    """
    if not cancel_ and idle_minutes is None:
        raise fail("give --idle-minutes N, or --cancel")
    with api() as client:
        info = client.autostop(cluster, None if cancel_ else idle_minutes, down)
    console.print(f"cluster {esc(cluster)}: autostop "
                  f"{'off' if info.autostop_minutes is None else f'after {info.autostop_minutes} idle minutes'}")


@app.command(rich_help_panel="Clusters and jobs")
def check(region: Optional[str] = typer.Option(None, "--region", help="AWS region to check")) -> None:
    """Show which providers (local, aws, ssh) the workers can use, and why not.

    Example:  `styx check`
    """
    with api() as client:
        results = client.check(region)
    table = Table("PROVIDER", "USABLE", "WHY")
    for r in results:
        table.add_row(esc(r.provider), "[green]yes[/green]" if r.ok else "[red]no[/red]", esc(r.reason))
    console.print(table)
