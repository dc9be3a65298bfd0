"""Plain-text tables for the listings that may run to thousands of rows (`styx status`,
`styx queue`): rich lays a table out at about half a millisecond a row, so a thousand
clusters took longer to print than to fetch; this takes a few milliseconds and needs no rich.

- ``Link(text, url)``: a cell shown as ``text``, clickable on a terminal (an OSC 8 hyperlink,
  as rich prints them).
- ``print_table(headers, rows, wrap=...)``: columns two spaces apart, as wide as the terminal
  (``COLUMNS``, else the terminal's width, else 80, as rich); when a row is too wide the
  ``wrap`` columns (free text: statuses with their message, commands) are narrowed and their
  text wrapped onto the next lines. The header is bold on a terminal. Cells are printed
  verbatim (no markup to escape); control characters become spaces.

>>> import io
>>> out = io.StringIO()
>>> print_table(["NAME", "STATUS"], [["dev", "UP"], ["train", "STOPPED: idle for 30 min"]],
...             wrap={1}, width=24, out=out)
>>> print(out.getvalue(), end="")
NAME   STATUS
dev    UP
train  STOPPED: idle for
       30 min
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from dataclasses import dataclass
from typing import IO, Iterable, Sequence

_GAP = "  "
#: A wrapped column is never made narrower than this (or its header).
_MIN_WRAP = 12
_CONTROLS = {code: " " for code in (*range(32), 127)}


@dataclass(frozen=True)
class Link:
    text: str
    url: str | None


Cell = str | Link


def _plain(cell: Cell) -> str:
    text = cell.text if isinstance(cell, Link) else cell
    return text.translate(_CONTROLS)


def _widths(natural: list[int], headers: Sequence[str], wrap: set[int], width: int) -> list[int]:
    """Each column's width: the wrap columns share what the others leave, the narrowest first."""
    widths = list(natural)
    flexible = sorted((i for i in wrap if i < len(widths)), key=lambda i: natural[i])
    fixed = sum(w for i, w in enumerate(widths) if i not in flexible) + len(_GAP) * (len(widths) - 1)
    room = width - fixed
    for n, i in enumerate(flexible):
        share = room // (len(flexible) - n)
        widths[i] = max(min(natural[i], share), min(natural[i], max(_MIN_WRAP, len(headers[i]))))
        room -= widths[i]
    return widths


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], *, wrap: Iterable[int] = (),
                width: int | None = None, out: IO[str] | None = None) -> None:
    """Print ``rows`` under ``headers`` (see the module's docstring)."""
    out = out or sys.stdout
    tty = out.isatty()
    styled = tty and not os.environ.get("NO_COLOR")
    width = width or shutil.get_terminal_size((80, 24)).columns
    raw = [list(row) for row in rows]
    texts = [[_plain(cell) for cell in row] for row in raw]
    natural = [max([len(h), *(len(row[i]) for row in texts)]) for i, h in enumerate(headers)]
    widths = _widths(natural, headers, set(wrap), width)
    last = len(headers) - 1

    def line(cells: list[list[str]], links: Sequence[Cell] = ()) -> Iterable[str]:
        for n in range(max(len(c) for c in cells)):
            parts = []
            for i, cell in enumerate(cells):
                text = cell[n] if n < len(cell) else ""
                pad = "" if i == last else " " * (widths[i] - len(text))
                link = links[i] if i < len(links) else None
                if tty and isinstance(link, Link) and link.url and text:
                    text = f"\x1b]8;;{link.url}\x1b\\{text}\x1b]8;;\x1b\\"
                parts.append(text + pad)
            yield _GAP.join(parts).rstrip()

    head = _GAP.join(h.ljust(widths[i]) if i != last else h for i, h in enumerate(headers)).rstrip()
    lines = [f"\x1b[1m{head}\x1b[0m" if styled else head]
    for row, text_row in zip(raw, texts):
        cells = [textwrap.wrap(t, widths[i], break_on_hyphens=False) or [""] if len(t) > widths[i] else [t]
                 for i, t in enumerate(text_row)]
        lines.extend(line(cells, row))
    out.write("\n".join(lines) + "\n")
    out.flush()
