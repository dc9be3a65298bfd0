"""Turning data into pages: the Jinja2 environment, the navigation, table columns, formats.

- ``NAV``: the links of the top bar, in order. A new page adds its ``NavLink`` here (and its
  router to ``styx.api.dashboard.PAGES``).
- ``Column``: one column of a table — a title and a function from a row to its cell (text,
  escaped when shown, or ``Markup`` whose every value went through ``escape``).
  Tables are lists of them (``styx.api.dashboard.columns``), so a column is one line to add.
- ``table_rows``: a table's rows in one pass, each with its action buttons (``action``).
- ``page``: render a template as a full page (or, for an htmx request naming a target, the
  same page, from which htmx picks the part it swaps).
- ``age``, ``duration``, ``when``: how times read (``3m``, ``1h 5m``, ``2026-11-26 16:58 UTC``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from styx import __version__
from styx.api.dashboard.session import CSRF_FIELD, CSRF_HEADER, Viewer

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"


def _assets_version() -> str:
    """A digest of the dashboard's files: the pages link them with ``?v=`` it, so a browser
    may keep them until they change (``styx.api.dashboard.Assets``)."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


#: What the pages add to their files' URLs (``?v=``).
ASSETS_VERSION = _assets_version()
#: The vendored htmx (see static/htmx-LICENSE.txt); the name carries its version.
HTMX = "htmx-2.0.11.min.js"

Row = TypeVar("Row")

#: What a dashboard page may load and do: only this origin's files (no inline script, no eval,
#: no CDN), posting forms only here, never inside another site's frame. A job's log or a name
#: that slipped past escaping still could not run a script.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


@dataclass(frozen=True)
class NavLink:
    title: str
    href: str
    #: Paths that highlight this link (the link's own path by default).
    prefixes: tuple[str, ...] = ()

    def active(self, path: str) -> bool:
        """Whether ``path`` is under this link (``/`` matches only itself)."""
        return any(path == p or (p != "/" and path.startswith(p.rstrip("/") + "/"))
                   for p in self.prefixes or (self.href,))


NAV: list[NavLink] = [
    NavLink("Clusters", "/", ("/", "/clusters")),
    NavLink("Managed jobs", "/managed"),
    NavLink("Repos", "/repos"),
]
#: Links at the right of the bar (the API's own documentation).
NAV_EXTRA: list[NavLink] = [NavLink("API docs", "/docs"), NavLink("ReDoc", "/redoc")]


@dataclass(frozen=True)
class Column(Generic[Row]):
    title: str
    cell: Callable[[Row], Any]
    #: A CSS class for the column's cells (``num`` right-aligns).
    css: str = ""


def table_rows(columns: list[Column[Any]], rows: Iterable[Any], row_key: str = "",
               actions: Callable[[Any], Markup | str] | None = None) -> Markup:
    """A table's rows: each row's cells, ``data-row`` its ``row_key`` attribute, and its
    ``actions`` (buttons, ``action``) in a last cell. Built here in one pass: a page has a
    thousand cells, and a template's loop or macro call per cell costs several times more."""
    out = []
    for row in rows:
        key = f' data-row="{escape(getattr(row, row_key))}"' if row_key else ""
        tds = "".join([f'<td class="{c.css}">{escape(c.cell(row))}</td>' for c in columns])
        extra = f'<td class="actions">{actions(row)}</td>' if actions is not None else ""
        out.append(f"<tr{key}>{tds}{extra}</tr>\n")
    return Markup("".join(out))


def action(url: str, label: str, confirm: str, css: str = "") -> Markup:
    """A button that posts an action after the browser's confirm dialog (``hx-confirm``); the
    answer lands in ``#flash``, and the page's tables refresh (``styx.api.dashboard.actions``)."""
    return Markup(f'<button type="button" class="btn {css}" hx-post="{escape(url)}" hx-confirm="{escape(confirm)}" '
                  f'hx-target="#flash" hx-disabled-elt="this">{escape(label)}</button>')


def age(then: datetime | None, now: datetime | None = None) -> str:
    """How long ago: ``45s``, ``3m``, ``2h 5m``, ``4d 2h``; ``-`` for never."""
    if then is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    return span((now - then).total_seconds())


def span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        return f"{hours}h {minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{days}d {hours % 24}h" if hours % 24 else f"{days}d"


def duration(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    if start is None:
        return "-"
    return span(((end or now or datetime.now(timezone.utc)) - start).total_seconds())


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def timestamp(moment: datetime | None, now: datetime | None = None) -> Markup:
    """A relative time with the absolute one as its tooltip."""
    if moment is None:
        return Markup("-")
    return Markup(f'<time datetime="{moment.isoformat()}" title="{when(moment)}">{age(moment, now)} ago</time>')


def status_badge(status: str) -> Markup:
    text = escape(status)
    return Markup(f'<span class="status s-{text.lower()}">{text}</span>')


def link(href: str | None, text: Any, title: str | None = None) -> Markup:
    if not href:
        return escape(text)
    tip = f' title="{escape(title)}"' if title else ""
    return Markup(f'<a href="{escape(href)}"{tip}>{escape(text)}</a>')


def temporal_link(url: str | None) -> Markup:
    """The workflow in Temporal's web UI (opens beside the dashboard)."""
    if not url:
        return Markup('<span class="muted">-</span>')
    return Markup(f'<a class="temporal" href="{escape(url)}" target="_blank" rel="noopener" '
                  'title="this workflow in Temporal&#39;s web UI">workflow ↗</a>')


def log_lines(lines: Iterable[Any], multi: bool) -> Markup:
    """A log's lines (``data.LogLine``) as the page shows them, each marked with its node's
    rank when the job ran on several (built here, not in the template: a 2 MB log is tens of
    thousands of lines)."""
    if multi:
        return Markup("".join(
            f'<span class="line r{line.rank % 8}" data-rank="{line.rank}"><span class="rank">{line.rank}</span>'
            f'{escape(line.text)}\n</span>' for line in lines))
    return Markup("".join(f'<span class="line r{line.rank % 8}" data-rank="{line.rank}">{escape(line.text)}\n</span>'
                          for line in lines))


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(nav=NAV, nav_extra=NAV_EXTRA, version=__version__, htmx=HTMX, assets=ASSETS_VERSION,
                       csrf_field=CSRF_FIELD, csrf_header=CSRF_HEADER, status_badge=status_badge,
                       temporal_link=temporal_link, timestamp=timestamp, when=when, age=age, link=link,
                       log_lines=log_lines, table_rows=table_rows)
    return env


ENV = _environment()


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def page(request: Request, viewer: Viewer | None, template: str, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    html = render(template, request=request, path=request.url.path, viewer=viewer,
                  now=datetime.now(timezone.utc), **context)
    return HTMLResponse(html, status_code=status_code, headers={
        "Cache-Control": "no-store", "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})
