"""Reading a job's logs back, from the database, on any API replica.

The ``run_phase`` activity copies each node's log of each phase into the database
(``styx.db.joblogs``: rows of at most 256 KB, resumed after a worker crash from what the
database holds, never a byte twice). ``LogReader`` turns those streams into what
``styx logs`` prints: every node's lines, prefixed with ``(rank=N)`` when the job ran on
several nodes, rank by rank, setup before run. It reads a few rows per call, so neither a
50 MB log nor a follower that keeps up holds more than that in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from styx.db import Database

#: Rows read per stream per call (each at most 256 KB), unless a reader asks for fewer.
ROWS_PER_READ = 8
#: A line longer than this is passed on in pieces rather than held whole.
MAX_LINE_BYTES = 1 << 20


def split_lines(text: bytes) -> list[bytes]:
    """``text`` cut after each newline (only ``\\n``: a ``\\r`` stays inside its line)."""
    parts = text.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


@dataclass(frozen=True)
class LogPiece:
    """New lines of one stream. ``text`` ends with a newline unless its last line is the first
    part of one longer than ``MAX_LINE_BYTES``; ``continues``: its first line is the rest of
    the previous piece's last."""

    phase: str
    rank: int
    text: bytes
    continues: bool = False


class LogReader:
    """Reads a job's logs incrementally: every call to :meth:`read_new` returns only new
    complete lines, prefixed with ``(rank=N)`` when the job ran on several nodes;
    :meth:`read_pieces` the same lines unprefixed, each with the stream it came from (the
    dashboard marks each node's lines itself)."""

    def __init__(self, db: Database, cluster: str, job_id: int, num_nodes: int,
                 rows_per_read: int = ROWS_PER_READ) -> None:
        self.db, self.cluster, self.job_id = db, cluster, job_id
        self.prefix = num_nodes > 1
        self.rows_per_read = rows_per_read
        self._offsets: dict[tuple[str, int], int] = {}
        self._partial: dict[tuple[str, int], bytes] = {}
        #: Streams whose current line was already passed on in part (its prefix is out).
        self._midline: set[tuple[str, int]] = set()

    def read_new(self, final: bool = False) -> Iterator[bytes]:
        """New complete lines since the last call. With ``final`` (the job has ended), a last
        line without a newline is returned too. Call until it yields nothing to drain."""
        for piece in self.read_pieces(final):
            out = []
            for i, line in enumerate(split_lines(piece.text)):
                continued = i == 0 and piece.continues
                out.append(line if continued or not self.prefix else f"(rank={piece.rank}) ".encode() + line)
            yield b"".join(out)

    def read_pieces(self, final: bool = False) -> Iterator[LogPiece]:
        """As :meth:`read_new`, without prefixes: one ``LogPiece`` per stream read."""
        for stream in self.db.joblogs.streams(self.cluster, self.job_id):
            key = (stream.phase, stream.rank)
            offset = self._offsets.get(key, 0)
            if offset >= stream.size and not (final and self._partial.get(key)):
                continue
            rows = self.db.joblogs.read(self.cluster, self.job_id, stream.phase, stream.rank, offset,
                                        self.rows_per_read) if offset < stream.size else []
            data = b"".join(chunk for _, chunk in rows)
            self._offsets[key] = offset + len(data)
            at_end = len(rows) < self.rows_per_read
            continues = key in self._midline
            out = self._lines(key, data, final and at_end)
            if out:
                yield LogPiece(stream.phase, stream.rank, out, continues)

    def _lines(self, key: tuple[str, int], data: bytes, flush: bool) -> bytes:
        lines = (self._partial.pop(key, b"") + data).split(b"\n")
        tail = lines.pop()
        parts = [line + b"\n" for line in lines]
        if lines:
            self._midline.discard(key)
        if tail and flush:
            parts.append(tail + b"\n")
            self._midline.discard(key)
        elif len(tail) > MAX_LINE_BYTES:
            parts.append(tail)
            self._midline.add(key)
        elif tail:
            self._partial[key] = tail
        return b"".join(parts)
