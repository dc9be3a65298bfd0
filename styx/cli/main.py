"""The `styx` command line."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from styx import __version__
from styx.config import Settings

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
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as err:
        raise fail(str(err)) from None


def _setup_logging() -> None:
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
        console.print(str(err))
        raise typer.Exit(0) from None
    except (RuntimeError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run one Styx worker: it hosts every workflow and activity. Run as many as you like.

    Example:  `TEMPORAL_ADDRESS=temporal.internal:7233 styx worker`
    """
    from styx.workers.worker import run_worker

    _setup_logging()
    asyncio.run(run_worker(settings_or_exit()))


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
def doctor() -> None:
    """Check that the API, the database, Temporal and a worker all answer.

    Runs a trivial workflow through a worker and reports which worker answered.

    Example:  `styx doctor`
    """
    import httpx

    from styx.temporal import TemporalUnavailable, connect
    from styx.workflows.ping import PingWorkflow, PingWorkflowInput

    settings = settings_or_exit()
    ok = True
    try:
        r = httpx.get(f"{settings.api_url}/healthz", timeout=5)
        console.print(f"API {settings.api_url}: {r.json()}")
        ok &= r.status_code == 200
    except httpx.HTTPError as err:
        console.print(f"API {settings.api_url}: [red]{err}[/red]")
        ok = False

    async def ping() -> str:
        client = await connect(settings, wait_seconds=5)
        out = await client.execute_workflow(
            PingWorkflow.run, PingWorkflowInput("doctor"), id=f"ping/{uuid.uuid4()}",
            task_queue=settings.task_queue, execution_timeout=timedelta(seconds=15),
        )
        return out.worker

    try:
        console.print(f"worker: answered from {asyncio.run(ping())}")
    except TemporalUnavailable as err:
        console.print(f"Temporal: [red]{err}[/red]")
        ok = False
    except Exception as err:  # a timeout means no worker polls the task queue
        console.print(f"worker: [red]no answer ({type(err).__name__}: {err})[/red]")
        ok = False
    raise typer.Exit(0 if ok else 1)


@app.command()
def version() -> None:
    """Print the Styx version.

    Example:  `styx version`
    """
    console.print(f"styx {__version__}")




# Command groups register themselves on `app` when imported.
from styx.cli import clusters, git  # noqa: E402,F401
