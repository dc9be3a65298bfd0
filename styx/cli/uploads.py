"""`styx uploads list / rm`, and the progress bar `styx launch` / `exec` show while a task's
local files are sent as uploads (``styx.sdk.uploads``). The commands hang on ``app``, which
``styx.cli.main`` adds to the root command."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import typer

from styx.cli.console import Table, console, err_console, esc

if TYPE_CHECKING:
    from rich.progress import TaskID

    from styx.sdk.uploads import UploadEvent

app = typer.Typer()
uploads_app = typer.Typer(help="The files `styx launch` and `exec` sent for workdirs and file mounts.",
                          no_args_is_help=True)
app.add_typer(uploads_app, name="uploads", rich_help_panel="Clusters and jobs")


@contextmanager
def upload_progress() -> Iterator[object]:
    """A callback for ``Client.launch(progress=...)``: a bar per source while it is sent (on a
    terminal), and one line per source once the server has it."""
    from rich.filesize import decimal
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=err_console.get(), transient=True, disable=not err_console.is_terminal)
    tasks: dict[str, "TaskID"] = {}

    def on_event(event: "UploadEvent") -> None:
        if event.state == "packing":
            tasks[event.field] = bar.add_task(f"packing {esc(event.field)}", total=None)
        elif event.state == "sending":
            task = tasks.get(event.field)
            if task is None:
                task = tasks[event.field] = bar.add_task(f"sending {esc(event.field)}", total=event.size)
            bar.update(task, description=f"sending {esc(event.field)}", total=event.size, completed=event.sent)
        else:
            task = tasks.pop(event.field, None)
            if task is not None:
                bar.remove_task(task)
            files = f"{event.files} file" + ("" if event.files == 1 else "s")
            skipped = f"; left out symlinks pointing outside: {', '.join(event.skipped_links[:3])}" \
                + ("…" if len(event.skipped_links) > 3 else "") if event.skipped_links else ""
            console.print(f"{event.field}: {event.source} ({files}, {decimal(event.size)} packed{skipped}) "
                          f"{event.state}", highlight=False, soft_wrap=True, markup=False)

    with bar:
        yield on_event


@uploads_app.command("list")
def list_uploads() -> None:
    """Your uploads, most recently used first.

    Example:  `styx uploads list`
    """
    from rich.filesize import decimal

    from styx.cli.clusters import api

    with api() as client:
        rows = client.uploads()
    table = Table("SHA256", "SIZE", "CREATED", "LAST USED")
    for u in rows:
        table.add_row(u.sha256, decimal(u.size), f"{u.created_at:%Y-%m-%d %H:%M}",
                      f"{u.last_used_at:%Y-%m-%d %H:%M}" if u.last_used_at else "-")
    console.print(table)


@uploads_app.command("rm")
def remove(sha256: str = typer.Argument(..., help="the upload's sha256 (see `styx uploads list`)")) -> None:
    """Forget one of your uploads; a task naming it is refused afterwards.

    Example:  `styx uploads rm 3f5a…c2`
    """
    from styx.cli.clusters import api

    with api() as client:
        client.delete_upload(sha256)
    console.print(f"upload {sha256} removed", markup=False)
