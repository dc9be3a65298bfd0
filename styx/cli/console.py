"""What every `styx` command prints with: ``console`` / ``err_console``, ``fail()`` for a
one-line error and its exit code, and ``settings_or_exit()`` for the settings or such an error."""

from __future__ import annotations

import typer
from rich.console import Console

from styx.config import Settings

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as err:
        raise fail(str(err)) from None
