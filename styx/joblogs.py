"""Reading a job's logs back, from the database, on any API replica.

The ``run_phase`` activity copies each node's log of each phase into the database
(``styx.db.joblogs``: rows of at most 256 KB, resumed after a worker crash from what the
database holds, never a byte twice). ``LogReader`` turns those streams into what
``styx logs`` prints: every node's lines, prefixed with ``(rank=N)`` when the job ran on
several nodes, rank by rank, setup before run. It reads a few rows per call, so neither a
50 MB log nor a follower that keeps up holds more than that in memory.
"""

from __future__ import annotations

from typing import Iterator

from styx.db import Database

#: Rows read per stream per call (each at most 256 KB).
ROWS_PER_READ = 8
#: A line longer than this is passed on in pieces rather than held whole.
MAX_LINE_BYTES = 1 << 20


class LogReader:
    """Reads a job's logs incrementally: every call to :meth:`read_new` returns only new
    complete lines, prefixed with ``(rank=N)`` when the job ran on several nodes."""

    def __init__(self, db: Database, cluster: str, job_id: int, num_nodes: int) -> None:
        self.db, self.cluster, self.job_id = db, cluster, job_id
        self.prefix = num_nodes > 1
        self._offsets: dict[tuple[str, int], int] = {}
        self._partial: dict[tuple[str, int], bytes] = {}
        #: Streams whose current line was already passed on in part (its prefix is out).
        self._midline: set[tuple[str, int]] = set()

    def read_new(self, final: bool = False) -> Iterator[bytes]:
        """New complete lines since the last call. With ``final`` (the job has ended), a last
        line without a newline is returned too. Call until it yields nothing to drain."""
        for stream in self.db.joblogs.streams(self.cluster, self.job_id):
            key = (stream.phase, stream.rank)
            offset = self._offsets.get(key, 0)
            if offset >= stream.size and not (final and self._partial.get(key)):
                continue
            rows = self.db.joblogs.read(self.cluster, self.job_id, stream.phase, stream.rank, offset,
                                        ROWS_PER_READ) if offset < stream.size else []
            data = b"".join(chunk for _, chunk in rows)
            self._offsets[key] = offset + len(data)
            at_end = len(rows) < ROWS_PER_READ
            out = self._lines(key, stream.rank, data, final and at_end)
            if out:
                yield out

    def _lines(self, key: tuple[str, int], rank: int, data: bytes, flush: bool) -> bytes:
        prefix = f"(rank={rank}) ".encode() if self.prefix else b""
        lines = (self._partial.pop(key, b"") + data).split(b"\n")
        tail = lines.pop()
        parts = []
        for line in lines:
            parts.append((b"" if key in self._midline else prefix) + line + b"\n")
            self._midline.discard(key)
        if tail and flush:
            parts.append((b"" if key in self._midline else prefix) + tail + b"\n")
            self._midline.discard(key)
        elif len(tail) > MAX_LINE_BYTES:
            parts.append((b"" if key in self._midline else prefix) + tail)
            self._midline.add(key)
        elif tail:
            self._partial[key] = tail
        return b"".join(parts)
