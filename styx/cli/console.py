"""What every `styx` command prints with: ``console`` / ``err_console``, ``fail()`` for a
one-line error and its exit code, ``settings_or_exit()`` for the settings or such an error,
and ``api()``: an SDK client whose every failure (an error answer, an API that does not
answer, bad input) becomes such a one-line error, never a traceback."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from styx.config import Settings
from styx.sdk.client import Client
from styx.sdk.transport import StyxError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    # Escaped: a message may quote input with [brackets]; unwrapped: one line, however long.
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as err:
        raise fail(str(err)) from None


@contextmanager
def api() -> Iterator[Client]:
    """An SDK client; a ``StyxError`` (the SDK's only kind of failure) becomes a one-line
    error with its hint, and exit code 1."""
    try:
        client = Client()
    except StyxError as err:
        raise fail(str(err)) from None
    try:
        yield client
    except StyxError as err:
        raise fail(str(err)) from None
    finally:
        client.close()
