"""The `styx` command line: the root command, which gathers the command groups, and its own
commands.

- ``up`` / ``worker`` / ``api`` / ``lb``: start servers (their modules are imported inside the command,
  so the other commands load only the SDK); ``gitserver`` is in ``git.py``.
- ``doctor``: asks the API whether the database, Temporal and a worker answer.
- ``version``.
- ``clusters.app`` (launch, exec, status ...), ``managed.app`` (jobs launch/queue/logs/cancel), ``git.app`` (user, key, repo, branch, gitserver)
  and ``access.app`` (token, cluster share) are added to ``app`` at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from styx import __version__
from styx.cli import access, clusters, costs, git, managed, serve, uploads
from styx.cli import console as cli_console
from styx.cli.console import console, esc, fail, settings_or_exit

if TYPE_CHECKING:
    from styx.contracts.rest import ComponentCheck

app = typer.Typer(
    name="styx",
    help=(
        "Styx: launch clusters (local, AWS, your own machines over SSH), run jobs on them, "
        "and run jobs on `git push`; every long operation is a durable Temporal workflow.\n\n"
        "Start everything on this machine with:  styx up"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("asyncssh", "alembic"):  # a line per SFTP file / migration plugin
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def up(
    launch: Optional[Path] = typer.Option(
        None, "--launch", help="once the stack is up, launch this task YAML and show its output"),
    cluster: str = typer.Option("dev", "-c", "--cluster", help="the cluster --launch uses"),
) -> None:
    """Start the embedded stack: Temporal dev server, a worker and the API, on loopback.

    Prints the URLs, restarts any part that dies, and stops everything on Ctrl-C.
    State lives in `STYX_HOME` (default `~/.styx`); each part logs to `STYX_HOME/logs/<part>.log`.
    The admin's API token is written to `STYX_HOME/credentials` on first start.

    Examples:  `styx up`    `STYX_HOME=/tmp/styx styx up --launch examples/hello.yaml -c dev`
    """
    from styx.workers.supervisor import AlreadyRunning, Supervisor

    settings = settings_or_exit()
    if launch is not None and not launch.is_file():
        raise fail(f"--launch: no such file {str(launch)!r}")
    then = ["launch", "-y", "-c", cluster, str(launch.resolve())] if launch else None
    try:
        code = Supervisor(settings, then=then).run()
    except AlreadyRunning as err:
        console.print(str(err), markup=False)
        raise typer.Exit(0) from None
    except (RuntimeError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run one Styx worker: it hosts every workflow and activity. Run as many as you like.

    Example:  `TEMPORAL_ADDRESS=temporal.internal:7233 styx worker`
    """
    import asyncio

    from styx.ssh import ClientKeyMissing
    from styx.temporal import SearchAttributesMissing, TemporalUnavailable
    from styx.workers.worker import run_worker

    _setup_logging()
    try:
        asyncio.run(run_worker(settings_or_exit()))
    except (SearchAttributesMissing, ClientKeyMissing) as err:
        raise fail(str(err)) from None
    except TemporalUnavailable as err:
        raise fail(f"{err}; is Temporal running? (`styx up` starts one; STYX_TEMPORAL_ADDRESS points elsewhere)") from None


@app.command()
def api() -> None:
    """Run the REST API (FastAPI on uvicorn) on `STYX_HOST:STYX_API_PORT` (default 127.0.0.1:7780).

    Example:  `STYX_API_PORT=9000 styx api`   then open http://127.0.0.1:9000/docs
    """
    import uvicorn

    from styx.api.app import create_app

    settings = settings_or_exit()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.api_port, log_level="info")


@app.command()
def lb() -> None:
    """Run a load balancer for the services (`styx serve`): one listener per service, on
    `STYX_SERVE_HOST` (default `STYX_HOST`) and the service's port. Stateless: run as many as
    you like (on other hosts, or behind a TCP balancer); `styx up` runs one.

    Example:  `STYX_SERVE_HOST=0.0.0.0 styx lb`
    """
    import asyncio

    from styx.lb.server import run_lb

    _setup_logging()
    asyncio.run(run_lb(settings_or_exit()))


@app.command()
def doctor() -> None:
    """Check that the API, the database, Temporal and a worker all answer.

    The API runs a trivial workflow through a worker and reports which worker answered.

    Example:  `styx doctor`
    """
    settings_or_exit()
    with cli_console.api() as client:
        report = client.doctor()

    def show(name: str, check: "ComponentCheck", ok: str) -> None:
        console.print(f"{name}: {esc(ok)}" if check.ok else f"{name}: [red]{esc(check.detail)}[/red]")

    console.print(f"API {client.url}: styx {report.version}", markup=False)
    show("database", report.database, "ok")
    show("Temporal", report.temporal, "ok")
    show("search attributes", report.search_attributes, "registered")
    show("worker", report.worker, f"answered from {report.worker.detail}")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def version() -> None:
    """Print the Styx version.

    Example:  `styx version`
    """
    console.print(f"styx {__version__}")


app.add_typer(clusters.app)
app.add_typer(git.app)
app.add_typer(access.app)
app.add_typer(uploads.app)
app.add_typer(serve.app)
app.add_typer(costs.app)
app.add_typer(managed.app)
