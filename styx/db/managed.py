"""Managed jobs in the read model: ``ManagedJobStore`` (``db.managed``).

- ``create``: the job and its tasks' (sealed) bodies in one transaction; a second call with the
  same owner and idempotency key returns the first job.
- ``get``, ``list`` (newest first, by owner or everyone's, bounded), ``tasks``, ``attempts``,
  ``task_body``.
- ``record``: the workflow's writes (job, one task, one attempt) in one transaction; upserts
  keyed by ids, and a job or task that reached a terminal status never moves again, so a
  repeated or late write is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from styx.contracts.managed import MANAGED_TERMINAL, managed_workflow_id
from styx.db.base import Store
from styx.db.engine import aware_utc, utcnow
from styx.db.models import ManagedJob, ManagedJobAttempt, ManagedJobTask, UploadPin
from styx.db.uploads import PIN_MANAGED

_jobs = ManagedJob.__table__  # type: ignore[attr-defined]
_tasks = ManagedJobTask.__table__  # type: ignore[attr-defined]
_attempts = ManagedJobAttempt.__table__  # type: ignore[attr-defined]
_pins = UploadPin.__table__  # type: ignore[attr-defined]
_TERMINAL = [str(s) for s in MANAGED_TERMINAL]
_ENDING = {*_TERMINAL, "CANCELLING"}


class ManagedJobStore(Store):
    def create(self, name: str, owner: str, tasks: Iterable[tuple[str | None, str]],
               idempotency_key: str | None = None, uploads: Iterable[str] = ()) -> tuple[ManagedJob, bool]:
        """Store a new managed job of ``tasks`` (``(name, sealed body)`` each), PENDING; returns
        it and True, or — for a key this owner used before — the first job and False. The
        ``uploads`` its tasks name (sha256s) are pinned until it ends (``db.uploads``)."""
        if idempotency_key:
            first = self.by_key(owner, idempotency_key)
            if first is not None:
                return first, False
        tasks = list(tasks)
        try:
            with self._write() as conn:
                managed_id = conn.execute(sa.insert(_jobs).values(
                    name=name, owner=owner, status="PENDING", num_tasks=len(tasks), current_task=0, recoveries=0,
                    workflow_id="", idempotency_key=idempotency_key, submitted_at=utcnow(),
                )).inserted_primary_key[0]
                conn.execute(sa.update(_jobs).where(_jobs.c.id == managed_id).values(
                    workflow_id=managed_workflow_id(managed_id)))
                for index, (task_name, body) in enumerate(tasks):
                    conn.execute(sa.insert(_tasks).values(
                        managed_id=managed_id, task_index=index, name=task_name, body=body, status="PENDING",
                        recoveries=0, restarts=0))
                for sha256 in sorted(set(uploads)):
                    conn.execute(sa.insert(_pins).values(sha256=sha256, holder_kind=PIN_MANAGED,
                                                         holder=str(managed_id), created_at=utcnow()))
        except IntegrityError:
            if idempotency_key:  # the same key sent twice at once: the other one won
                first = self.by_key(owner, idempotency_key)
                if first is not None:
                    return first, False
            raise
        job = self.get(managed_id)
        assert job is not None
        return job, True

    def by_key(self, owner: str, key: str) -> ManagedJob | None:
        with self._session() as session:
            return session.exec(select(ManagedJob).where(
                ManagedJob.owner == owner, ManagedJob.idempotency_key == key)).first()

    def get(self, managed_id: int) -> ManagedJob | None:
        return self._fetch(ManagedJob, managed_id)

    def list(self, owner: str | None = None, *, limit: int = 100, active_only: bool = False,
             name: str | None = None) -> list[ManagedJob]:
        """Newest first: ``owner``'s (None: everyone's), at most ``limit``."""
        query = select(ManagedJob)
        if owner is not None:
            query = query.where(ManagedJob.owner == owner)
        if active_only:
            query = query.where(ManagedJob.status.not_in(_TERMINAL))  # type: ignore[attr-defined]
        if name is not None:
            query = query.where(ManagedJob.name == name)
        with self._session() as session:
            return list(session.exec(query.order_by(ManagedJob.id.desc()).limit(limit)))  # type: ignore[union-attr]

    def tasks(self, managed_ids: Iterable[int]) -> dict[int, list[ManagedJobTask]]:
        ids = list(managed_ids)
        out: dict[int, list[ManagedJobTask]] = {i: [] for i in ids}
        if not ids:
            return out
        with self._session() as session:
            rows = session.exec(select(ManagedJobTask).where(ManagedJobTask.managed_id.in_(ids))  # type: ignore[attr-defined]
                                .order_by(ManagedJobTask.managed_id, ManagedJobTask.task_index))
            for row in rows:
                out[row.managed_id].append(row)
        return out

    def attempts(self, managed_ids: Iterable[int]) -> dict[int, list[ManagedJobAttempt]]:
        ids = list(managed_ids)
        out: dict[int, list[ManagedJobAttempt]] = {i: [] for i in ids}
        if not ids:
            return out
        with self._session() as session:
            rows = session.exec(select(ManagedJobAttempt).where(ManagedJobAttempt.managed_id.in_(ids))  # type: ignore[attr-defined]
                                .order_by(ManagedJobAttempt.managed_id, ManagedJobAttempt.task_index,
                                          ManagedJobAttempt.attempt))
            for row in rows:
                out[row.managed_id].append(row)
        return out

    def claim(self, managed_id: int, task_index: int, cluster: str, limit: int, status: str) -> int | None:
        """Take one of ``limit`` slots for ``cluster`` (the job's ``cluster`` column: the jobs
        holding a cluster): None when taken (or this job holds it already), else how many are
        in use. On success the job and its task show ``status`` and the cluster."""
        with self._write() as conn:
            held = conn.execute(sa.select(_jobs.c.cluster).where(_jobs.c.id == managed_id)).scalar()
            if held == cluster:
                return None
            in_use = conn.execute(sa.select(sa.func.count()).select_from(_jobs).where(
                _jobs.c.cluster.is_not(None), _jobs.c.status.not_in(_TERMINAL))).scalar() or 0
            if in_use >= limit:
                return int(in_use)
            conn.execute(sa.update(_jobs).where(_jobs.c.id == managed_id, _jobs.c.status.not_in(_ENDING)).values(
                cluster=cluster, status=status, message=None))
            conn.execute(sa.update(_tasks).where(_tasks.c.managed_id == managed_id,
                                                 _tasks.c.task_index == task_index).values(cluster=cluster))
        return None

    def waiting(self, slots: int, owner: str | None = None, exclude: int | None = None) -> list[int]:
        """Who to wake when a slot comes free: the oldest PENDING jobs, as many as slots are
        free now (at most ``slots``, and one at least), and ``owner``'s oldest PENDING one
        (whose own limits may have held it back)."""
        with self.engine.connect() as conn:
            in_use = conn.execute(sa.select(sa.func.count()).select_from(_jobs).where(
                _jobs.c.cluster.is_not(None), _jobs.c.status.not_in(_TERMINAL))).scalar() or 0
            pending = sa.select(_jobs.c.id).where(_jobs.c.status == "PENDING", _jobs.c.id != (exclude or 0))
            ids = list(conn.execute(pending.order_by(_jobs.c.id).limit(max(slots - in_use, 1))).scalars())
            if owner is not None:
                ids += conn.execute(pending.where(_jobs.c.owner == owner).order_by(_jobs.c.id).limit(1)).scalars()
        return list(dict.fromkeys(ids))

    def task_body(self, managed_id: int, task_index: int) -> str | None:
        row = self._fetch(ManagedJobTask, managed_id, task_index)
        return None if row is None else row.body

    def record(self, managed_id: int, job: Mapping[str, Any] | None = None, *,
               task_index: int | None = None, task: Mapping[str, Any] | None = None,
               skip_rest: str | None = None, attempt: int | None = None,
               attempt_fields: Mapping[str, Any] | None = None) -> None:
        """One write of the workflow: fields of the job, of task ``task_index``, of its attempt
        ``attempt`` (created if new), and ``skip_rest``: the later tasks that have not ended
        take that status. ``started``/``ended`` (True) set the times once."""
        now = utcnow()
        with self._write() as conn:
            if job:
                values = self._times(job, now, _jobs)
                where = [_jobs.c.id == managed_id, _jobs.c.status.not_in(_TERMINAL)]
                if "status" in values and values["status"] not in _ENDING:
                    where.append(_jobs.c.status != "CANCELLING")  # a cancel in progress is not undone
                if values:
                    conn.execute(sa.update(_jobs).where(*where).values(values))
            if task_index is not None and task:
                values = self._times(task, now, _tasks)
                if values:
                    conn.execute(sa.update(_tasks).where(
                        _tasks.c.managed_id == managed_id, _tasks.c.task_index == task_index,
                        _tasks.c.status.not_in(_TERMINAL)).values(values))
            if skip_rest is not None and task_index is not None:
                conn.execute(sa.update(_tasks).where(
                    _tasks.c.managed_id == managed_id, _tasks.c.task_index > task_index,
                    _tasks.c.status.not_in(_TERMINAL)).values(status=skip_rest, ended_at=now))
            if task_index is not None and attempt is not None:
                fields = dict(attempt_fields or {})
                ended = fields.pop("ended", False)
                if ended:
                    fields["ended_at"] = sa.func.coalesce(_attempts.c.ended_at, now)
                keys = {"managed_id": managed_id, "task_index": task_index, "attempt": attempt}
                insert = {"cluster": fields.get("cluster", ""), "status": fields.get("status", "STARTING"),
                          "started_at": now}
                exists = conn.execute(sa.select(_attempts.c.attempt).where(
                    *(getattr(_attempts.c, k) == v for k, v in keys.items()))).first()
                if exists is None:
                    conn.execute(sa.insert(_attempts).values(
                        **keys, **insert, **{k: v for k, v in fields.items() if k not in insert and k != "ended_at"},
                        ended_at=now if ended else None))
                elif fields:
                    conn.execute(sa.update(_attempts).where(
                        *(getattr(_attempts.c, k) == v for k, v in keys.items())).values(fields))

    @staticmethod
    def _times(fields: Mapping[str, Any], now: Any, table: sa.Table) -> dict[str, Any]:
        values = {k: v for k, v in fields.items() if k not in ("started", "ended")}
        if fields.get("started"):
            values["started_at"] = sa.func.coalesce(table.c.started_at, now)
        if fields.get("ended"):
            values["ended_at"] = sa.func.coalesce(table.c.ended_at, now)
        for key in ("started_at", "ended_at"):
            if key in fields:
                values[key] = aware_utc(fields[key])
        return values
