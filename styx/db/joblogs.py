"""Job logs in the database: ``JobLogStore`` (``db.joblogs``).

A job's log is one stream per (phase, rank): the bytes the node's log file held, copied by
the ``run_phase`` activity in rows of at most ``MAX_CHUNK_BYTES``. Every worker writes here
and every API replica reads here, so no host keeps anything another one needs.

- ``size``: how many bytes of a stream are stored, where a (retried) copy resumes.
- ``append``: the next bytes, at the offset the caller believes is the end. It moves the
  stream's ``size`` by compare-and-set in the same transaction as it inserts the row, so two
  copies of one stream (a retry racing an attempt thought dead) never store a byte twice or
  leave a gap: the loser gets ``LogMoved`` with the real size and resumes from there.
- ``streams``: a job's streams (phase, rank, size); ``read``: rows from an offset on, a few
  at a time, so a reader never holds more than a few chunks; ``read_range``: the bytes
  between two offsets (a window of a log: the dashboard shows a finished log's end first).
- ``delete_cluster``: forget every log of a cluster name (a fresh launch reuses job ids).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from styx.db.base import Store
from styx.db.models import JobLog, JobLogChunk

#: The most one row holds.
MAX_CHUNK_BYTES = 256 << 10

_logs = JobLog.__table__  # type: ignore[attr-defined]
_chunks = JobLogChunk.__table__  # type: ignore[attr-defined]


class LogMoved(RuntimeError):
    """The stream's stored size is not the offset the writer appended at (another copy of it
    wrote first); ``size`` is the real one."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the log is {size} bytes long already")
        self.size = size


@dataclass(frozen=True)
class LogStream:
    phase: str
    rank: int
    size: int


def _key(table: sa.Table, cluster: str, job_id: int, phase: str, rank: int) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.cluster_name == cluster, table.c.job_id == job_id, table.c.phase == phase,
                   table.c.rank == rank)


class JobLogStore(Store):
    def size(self, cluster: str, job_id: int, phase: str, rank: int) -> int:
        """Bytes stored of the stream (0 if none)."""
        with self.engine.connect() as conn:
            stored = conn.execute(sa.select(_logs.c.size).where(_key(_logs, cluster, job_id, phase, rank))).scalar()
        return int(stored or 0)

    def append(self, cluster: str, job_id: int, phase: str, rank: int, offset: int, data: bytes) -> int:
        """Store ``data`` as the stream's bytes from ``offset``, which must be its stored size;
        returns the new size. ``LogMoved`` (nothing written) when the size is not ``offset``."""
        if not data:
            return offset
        if len(data) > MAX_CHUNK_BYTES:
            raise ValueError(f"a log chunk holds at most {MAX_CHUNK_BYTES} bytes, got {len(data)}")
        key = _key(_logs, cluster, job_id, phase, rank)
        with self._write() as conn:
            if offset == 0:
                self._upsert(conn, JobLog, {"cluster_name": cluster, "job_id": job_id, "phase": phase,
                                            "rank": rank}, {}, {"size": 0})
            # Compare-and-set: a concurrent writer's UPDATE of this row waits for ours to commit,
            # then finds the size moved and updates nothing.
            moved = conn.execute(sa.update(_logs).where(key, _logs.c.size == offset)
                                 .values(size=offset + len(data)))
            if moved.rowcount != 1:
                stored = conn.execute(sa.select(_logs.c.size).where(key)).scalar()
                raise LogMoved(int(stored or 0))
            conn.execute(sa.insert(_chunks).values(cluster_name=cluster, job_id=job_id, phase=phase, rank=rank,
                                                   offset=offset, data=data))
        return offset + len(data)

    def streams(self, cluster: str, job_id: int) -> list[LogStream]:
        """The job's streams, by rank (setup before run within one)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(_logs.c.phase, _logs.c.rank, _logs.c.size).where(
                _logs.c.cluster_name == cluster, _logs.c.job_id == job_id)).all()
        order = {"setup": 0, "run": 1}
        return sorted((LogStream(r.phase, r.rank, int(r.size)) for r in rows),
                      key=lambda s: (s.rank, order.get(s.phase, 2), s.phase))

    def read(self, cluster: str, job_id: int, phase: str, rank: int, offset: int,
             max_rows: int = 8) -> list[tuple[int, bytes]]:
        """Up to ``max_rows`` rows of the stream from byte ``offset`` (a row boundary) on, as
        (offset, data)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_chunks.c.offset, _chunks.c.data)
                .where(_key(_chunks, cluster, job_id, phase, rank), _chunks.c.offset >= offset)
                .order_by(_chunks.c.offset).limit(max_rows)).all()
        return [(int(r.offset), bytes(r.data)) for r in rows]

    def read_range(self, cluster: str, job_id: int, phase: str, rank: int, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of the stream (fewer past its end), from the rows that hold
        them: one statement, at most ``end - start`` plus a row's length read."""
        if end <= start:
            return b""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_chunks.c.offset, _chunks.c.data)
                .where(_key(_chunks, cluster, job_id, phase, rank), _chunks.c.offset < end,
                       _chunks.c.offset > start - MAX_CHUNK_BYTES)  # a row holding ``start`` begins after
                .order_by(_chunks.c.offset)).all()
        if not rows:
            return b""
        first = int(rows[0].offset)
        data = b"".join(bytes(r.data) for r in rows)
        return data[max(start - first, 0):end - first]

    def delete_cluster(self, cluster: str) -> int:
        """Forget every log of the cluster name; returns how many streams went."""
        with self._write() as conn:
            conn.execute(sa.delete(_chunks).where(_chunks.c.cluster_name == cluster))
            return conn.execute(sa.delete(_logs).where(_logs.c.cluster_name == cluster)).rowcount
