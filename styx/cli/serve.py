"""`styx serve up / status / update / logs / down`: services, as SkyPilot's `sky serve`.

Every command talks to the API through the SDK (``styx.sdk.serve``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from styx.cli.clusters import EnvFileOpt, EnvOpt, SecretOpt, _envs, _key_values
from styx.cli.console import Table, api, console, esc, fail
from styx.cli.uploads import upload_progress

if TYPE_CHECKING:  # imported inside the commands that use them (see styx/cli/console.py)
    from styx.contracts.rest_services import ServiceInfo
    from styx.task import Task

app = typer.Typer()
serve_app = typer.Typer(
    help="Services: replicas of a task behind a load balancer, autoscaled, updated without downtime "
         "(SkyPilot's service YAML). Example: `styx serve up service.yaml -n api`",
    no_args_is_help=True)
app.add_typer(serve_app, name="serve", rich_help_panel="Services")


def _service_task(path: Path, env: list[str] | None, secret: list[str] | None, env_file: str | None) -> "Task":
    from styx.task import Task, TaskValidationError

    if not path.is_file():
        raise fail(f"SERVICE_YAML: no such file {str(path)!r}")
    try:
        task = Task.from_yaml(path)
        envs, secrets = _envs(env, env_file), _key_values("--secret", secret)
        task = task.with_overrides(envs=envs or None, secrets=secrets or None)
    except TaskValidationError as err:
        raise fail(str(err)) from None
    if task.service is None:
        raise fail(f"{path}: no `service:` section; a service YAML is a task with one "
                   "(readiness_probe, replicas or replica_policy)")
    return task


def _show(services: "list[ServiceInfo]", endpoint_only: bool = False) -> None:
    if endpoint_only:
        for s in services:
            console.print(s.endpoint, markup=False)
        return
    table = Table("NAME", "VERSION", "STATUS", "REPLICAS", "QPS", "ENDPOINT", box=None, pad_edge=False)
    for s in services:
        ready = sum(r.status == "READY" for r in s.replicas)
        version = str(s.version) if s.version == s.target_version else f"{s.version}→{s.target_version}"
        table.add_row(esc(s.name), version, esc(s.status), f"{ready}/{s.target_replicas}", f"{s.qps:g}",
                      esc(s.endpoint))
    console.print(table)
    replicas = Table("SERVICE", "ID", "VERSION", "CLUSTER", "STATUS", "ENDPOINT", "MESSAGE", box=None,
                     pad_edge=False)
    for s in services:
        for r in s.replicas:
            replicas.add_row(esc(s.name), str(r.replica_id), str(r.version), esc(r.cluster), esc(r.status),
                             esc(r.endpoint), esc((r.message or "")[:80]))
    if replicas.rows:
        console.print()
        console.print(replicas)
    for s in services:
        if s.message:
            console.print(f"{esc(s.name)}: {esc(s.message)}", highlight=False)


def _warn(info: "ServiceInfo") -> None:
    for warning in info.warnings:
        console.print(f"[yellow]warning:[/yellow] {esc(warning)}", highlight=False)


@serve_app.command("up")
def up(
    service_yaml: Path = typer.Argument(..., metavar="SERVICE_YAML", help="a task YAML with a `service:` section"),
    name: str = typer.Option(..., "-n", "--service-name", "--name", help="the service's name"),
    env: Optional[List[str]] = EnvOpt,
    secret: Optional[List[str]] = SecretOpt,
    env_file: Optional[str] = EnvFileOpt,
    yes: bool = typer.Option(False, "-y", "--yes", help="do not ask for confirmation"),
) -> None:
    """Bring a service up: replicas (clusters `NAME-1`, `NAME-2` ...) running the task, and a
    load balancer endpoint in front of the ready ones. Returns once it is started; watch it
    with `styx serve status NAME`.

    Example:  `styx serve up service.yaml -n api`   then   `curl $(styx serve status api --endpoint)/`
    """
    task = _service_task(service_yaml, env, secret, env_file)
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Bring service {name!r} up?", default=True, abort=True)
    with api() as client, upload_progress() as progress:
        info = client.serve_up(task, name, progress=progress)
    _warn(info)
    console.print(f"Service {esc(info.name)} is starting; endpoint [bold]{esc(info.endpoint)}[/bold]", highlight=False)
    console.print(f"Watch it: styx serve status {esc(info.name)}", highlight=False)


@serve_app.command("status")
def status(
    name: Optional[str] = typer.Argument(None, help="one service (default: all yours)"),
    endpoint: bool = typer.Option(False, "--endpoint", help="print only the endpoint(s)"),
) -> None:
    """Services with their replicas and states.

    Examples:  `styx serve status`   `styx serve status api --endpoint`
    """
    with api() as client:
        _show(client.serve_status(name), endpoint)


@serve_app.command("update")
def update(
    name: str = typer.Argument(..., help="the service"),
    service_yaml: Path = typer.Argument(..., metavar="SERVICE_YAML", help="the new version's task YAML"),
    mode: str = typer.Option("rolling", "--mode", help="rolling (one replica at a time) or blue_green"),
    env: Optional[List[str]] = EnvOpt,
    secret: Optional[List[str]] = SecretOpt,
    env_file: Optional[str] = EnvFileOpt,
) -> None:
    """Roll out a new version without downtime: by default one new replica at a time, an old
    one leaving as each is ready; `--mode blue_green` brings all new ones up, then switches.

    Example:  `styx serve update api service-v2.yaml`
    """
    if mode not in ("rolling", "blue_green"):
        raise fail(f"--mode: {mode!r} is not rolling or blue_green")
    task = _service_task(service_yaml, env, secret, env_file)
    with api() as client, upload_progress() as progress:
        info = client.serve_update(name, task, mode=mode, progress=progress)
    _warn(info)
    console.print(f"Service {esc(name)}: rolling out version {info.target_version} ({mode})", highlight=False)


@serve_app.command("logs")
def logs(
    name: str = typer.Argument(..., help="the service"),
    replica_id: Optional[int] = typer.Argument(None, help="a replica's id (see `styx serve status`)"),
    load_balancer: bool = typer.Option(False, "--load-balancer", help="the load balancers' log instead"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep streaming (a replica's log)"),
) -> None:
    """A replica's log (its job's), or with `--load-balancer` what the load balancers saw:
    retries, failures, replica set changes, a summary a minute.

    Examples:  `styx serve logs api 2`   `styx serve logs api --load-balancer`
    """
    if load_balancer == (replica_id is not None):
        raise fail("give a replica id or --load-balancer (one of them)")
    with api() as client:
        if load_balancer:
            sys.stdout.write(client.serve_lb_logs(name))
            return
        assert replica_id is not None
        for chunk in client.stream_serve_logs(name, replica_id, follow=follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()


@serve_app.command("down")
def down(
    name: str = typer.Argument(..., help="the service"),
    yes: bool = typer.Option(False, "-y", "--yes", help="do not ask for confirmation"),
    detach: bool = typer.Option(False, "-d", "--detach", help="return once the shutdown started"),
) -> None:
    """Take a service down: its replicas' clusters are taken down and it is forgotten.

    Example:  `styx serve down api -y`
    """
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Take service {name!r} down?", default=True, abort=True)
    from styx.sdk.transport import NotFound

    with api() as client:
        client.serve_down(name)
        console.print(f"Service {esc(name)} is shutting down", highlight=False)
        if detach:
            return
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                info = client.service(name)
            except NotFound:
                console.print(f"Service {esc(name)} is down", highlight=False)
                return
            left = [r for r in info.replicas]
            console.print(f"  {len(left)} replica(s) shutting down", highlight=False)
            time.sleep(1.0)
        raise fail(f"service {name!r} is still shutting down after 600 s; see `styx serve status {name}`")
