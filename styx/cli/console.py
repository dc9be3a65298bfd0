"""What every `styx` command prints with: ``console`` / ``err_console``, ``fail()`` for a
one-line error and its exit code, ``settings_or_exit()`` for the settings or such an error,
and ``api()``: an SDK client whose every failure (an error answer, an API that does not
answer, bad input) becomes such a one-line error, never a traceback; and ``esc()`` for text
that is not ours.

Every command module imports at its top only typer and this module (and the plain-text
table printer ``table.py``): rich, the SDK (httpx, pydantic) and the task model load inside the
commands that use them, and ``console`` / ``err_console`` make their rich ``Console`` on first
use. So ``styx status`` loads what it prints with, and ``styx --help`` no more than typer
does (``tests/test_listing.py`` checks that no command module pulls Temporal in).

Rich reads ``[...]`` in what it prints as markup: a commit message "[skip ci]" or a job name
"[x]" would vanish or break the line. Every user-supplied string (names, messages, paths,
descriptions, anything the API answers) goes through ``esc()`` (``rich.markup.escape``)
before it is printed or put in a rich table cell; ``table.py``'s plain tables print cells
verbatim (they read no markup).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import typer

from styx.config import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from styx.sdk.client import Client


class _LazyConsole:
    """A rich ``Console`` made on first use (importing rich costs what a fast command takes)."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: "Console | None" = None

    def get(self) -> "Console":
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


console: Any = _LazyConsole()
err_console: Any = _LazyConsole(stderr=True)


def Table(*columns: Any, **options: Any) -> Any:  # noqa: N802 - stands in for the class
    """A ``rich.table.Table`` (rich is imported with the first table)."""
    from rich.table import Table as RichTable

    return RichTable(*columns, **options)


def esc(value: Any) -> str:
    """``value`` as text rich prints verbatim (no markup)."""
    from rich.markup import escape

    return escape(str(value))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error and return the Exit to raise; ``message`` is printed verbatim."""
    err_console.print(f"[red]error:[/red] {esc(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_or_exit(*, temporal: bool = True) -> Settings:
    """The settings (``temporal=False``: without Temporal's, for commands that need none)."""
    try:
        return Settings.from_env(temporal=temporal)
    except ValueError as err:
        raise fail(str(err)) from None


@contextmanager
def api() -> Iterator["Client"]:
    """An SDK client; a ``StyxError`` (the SDK's only kind of failure) becomes a one-line
    error with its hint, and exit code 1."""
    from styx.sdk.client import Client
    from styx.sdk.transport import StyxError

    with _no_pydantic_plugins():
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


@contextmanager
def _no_pydantic_plugins() -> Iterator[None]:
    """Pydantic looks for plugins (every installed package's entry points, ~25 ms) when it
    builds its first model; a command's answers need none. Typer turns them off the same way
    for its own parameters: ``PYDANTIC_DISABLE_PLUGINS``, in this process, for the call only."""
    import os

    before = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        else:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = before


def _hide_flag_types() -> None:
    """Typer (0.2x) shows ``<bool>`` as the type of every flag, ``--help`` included, as if it
    took a value; a flag takes none, so its type column is left empty."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - an older typer, which shows no type for flags
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "styx_hides_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and getattr(self, "metavar", None) is None:
            return None
        return shown(self, ctx)

    display_type_rich.styx_hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()
