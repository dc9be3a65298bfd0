"""Jobs' bodies and the queue behind a cluster workflow's window: ``JobSpecStore``
(``db.jobspecs``).

A job's body (``JobSpec``: task, env, sealed secrets) is stored when it is submitted and read
by its job workflow; the cluster workflow carries its id only. The jobs a cluster workflow does
not hold in its window wait here as PENDING rows of ``jobs``, read back in submission order.

- Specs: ``put`` (before the submission reaches the cluster; pins the uploads its task
  names, ``db.uploads``), ``get``, ``forget`` (a
  submission refused, or answered with an earlier spec: only while no job names it),
  ``delete_cluster`` (the specs of a cluster's jobs, when the name starts afresh).
- ``sweep_orphans``: delete, a bounded batch at a time, specs stored before a cutoff that no
  job names — bodies whose submission never reached the cluster workflow (the submitter died
  between storing and submitting). ``styx.services.specsweep`` runs it.
- ``record_submitted``: a submitted job's PENDING row, written by the submitter as soon as the
  cluster answers (the cluster's main loop writes it too, batched).
- The queue: ``pending`` (PENDING jobs in an id range, oldest first, bounded), ``highest_job_id``,
  ``end_pending``
  (end every PENDING job of a range or list in one statement: ``down`` of a deep queue),
  ``cancel_pending`` (one job, only if still PENDING).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import sqlalchemy as sa

from styx.contracts.jobs import JOB_TERMINAL, JobSpec, JobStatus, PendingJob
from styx.db.base import Store
from styx.db.clusters import ClusterStore
from styx.db.engine import utcnow
from styx.db.models import Job, JobSpecRow
from styx.db.uploads import PIN_JOB, pin, unpin

_specs = JobSpecRow.__table__  # type: ignore[attr-defined]
_jobs = Job.__table__  # type: ignore[attr-defined]


class JobSpecStore(Store):
    # --- specs

    def put(self, spec_id: str, cluster: str, spec: JobSpec) -> None:
        """Store ``spec`` under ``spec_id`` (the same again changes nothing)."""
        body = json.dumps(dataclasses.asdict(spec), separators=(",", ":"))
        with self._write() as conn:
            self._upsert(conn, JobSpecRow, {"spec_id": spec_id}, {"cluster_name": cluster, "body": body},
                         {"created_at": utcnow()})
            pin(conn, PIN_JOB, spec_id, spec.task)  # until the job ends: the quota keeps its uploads

    def get(self, spec_id: str) -> JobSpec | None:
        with self.engine.connect() as conn:
            body = conn.execute(sa.select(_specs.c.body).where(_specs.c.spec_id == spec_id)).scalar()
        if body is None:
            return None
        return JobSpec(**json.loads(body))

    def forget(self, spec_id: str) -> bool:
        """Delete the spec unless a job runs it; True if it was deleted."""
        used = sa.exists().where(_jobs.c.spec_id == spec_id)
        with self._write() as conn:
            gone = conn.execute(sa.delete(_specs).where(_specs.c.spec_id == spec_id, ~used)).rowcount > 0
            if gone:
                unpin(conn, PIN_JOB, [spec_id])
            return gone

    def delete_cluster(self, cluster: str) -> int:
        """Delete the specs the jobs of ``cluster`` run (before its rows are forgotten)."""
        ids = sa.select(_jobs.c.spec_id).where(_jobs.c.cluster_name == cluster, _jobs.c.spec_id.is_not(None))
        with self._write() as conn:
            unpin(conn, PIN_JOB, ids.scalar_subquery())
            return conn.execute(sa.delete(_specs).where(_specs.c.spec_id.in_(ids))).rowcount

    def sweep_orphans(self, stored_before: datetime, limit: int) -> int:
        """Delete at most ``limit`` specs stored before ``stored_before`` that no job names;
        returns how many went. One anti-join per call (no index on ``jobs.spec_id`` needed);
        a spec a job names is never deleted, however old."""
        if limit < 1:
            return 0
        named = _jobs.alias("named")
        orphans = (sa.select(_specs.c.spec_id)
                   .select_from(_specs.outerjoin(named, named.c.spec_id == _specs.c.spec_id))
                   .where(named.c.spec_id.is_(None), _specs.c.created_at < stored_before)
                   .limit(limit))
        with self.engine.connect() as conn:  # found outside a write: most passes find none
            ids = list(conn.execute(orphans).scalars())
        if not ids:
            return 0
        with self._write() as conn:
            # Checked again in the delete (one pass over jobs): a job naming one of them may
            # have been committed since the select.
            used = sa.select(_jobs.c.spec_id).where(_jobs.c.spec_id.in_(ids))
            return conn.execute(sa.delete(_specs).where(_specs.c.spec_id.in_(ids),
                                                        _specs.c.spec_id.not_in(used))).rowcount

    def record_submitted(self, cluster: str, job_id: int, **fields: object) -> None:
        """The PENDING row of a job the cluster just took (forward-only: a job that already
        started or ended keeps its status)."""
        ClusterStore(self.engine).upsert_job(cluster, job_id, status=JobStatus.PENDING, **fields)

    # --- the queue behind the window

    def pending(self, cluster: str, from_job_id: int, upto_job_id: int, limit: int) -> list[PendingJob]:
        """PENDING jobs of ``cluster`` with ids in ``[from_job_id, upto_job_id)``, oldest first."""
        query = (sa.select(_jobs.c.job_id, _jobs.c.name, _jobs.c.cpus, _jobs.c.accelerators,
                           _jobs.c.num_nodes, _jobs.c.spec_id)
                 .where(_jobs.c.cluster_name == cluster, _jobs.c.job_id >= from_job_id,
                        _jobs.c.job_id < upto_job_id, _jobs.c.status == JobStatus.PENDING)
                 .order_by(_jobs.c.job_id).limit(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [PendingJob(r.job_id, r.name or f"job-{r.job_id}", float(r.cpus or 0.0),
                           {k: float(v) for k, v in json.loads(r.accelerators or "{}").items()},
                           int(r.num_nodes or 1), r.spec_id) for r in rows]

    def end_pending(self, cluster: str, status: str, message: str, job_ids: list[int],
                    from_job_id: int | None) -> int:
        """End (``status``, ``message``) the PENDING jobs of ``cluster`` among ``job_ids`` and,
        with ``from_job_id``, every one from that id on; returns how many."""
        assert JobStatus(status) in JOB_TERMINAL
        which = _jobs.c.job_id.in_(job_ids) if job_ids else sa.false()
        if from_job_id is not None:
            which = sa.or_(which, _jobs.c.job_id >= from_job_id)
        with self._write() as conn:
            return conn.execute(
                sa.update(_jobs).where(_jobs.c.cluster_name == cluster, _jobs.c.status == JobStatus.PENDING, which)
                .values(status=JobStatus(status), message=message, ended_at=utcnow())).rowcount

    def highest_job_id(self, cluster: str) -> int | None:
        """The highest job id a row of ``cluster`` holds (None: no row)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(_jobs.c.job_id)).where(_jobs.c.cluster_name == cluster)).scalar()

    def cancel_pending(self, cluster: str, job_id: int | None, from_job_id: int) -> int | None:
        """Cancel job ``job_id`` (None: the newest PENDING one from ``from_job_id`` on) if it
        is still PENDING; returns the job cancelled, or None."""
        with self._write() as conn:
            if job_id is None:
                job_id = conn.execute(sa.select(sa.func.max(_jobs.c.job_id)).where(
                    _jobs.c.cluster_name == cluster, _jobs.c.job_id >= from_job_id,
                    _jobs.c.status == JobStatus.PENDING)).scalar()
                if job_id is None:
                    return None
            done = conn.execute(
                sa.update(_jobs).where(_jobs.c.cluster_name == cluster, _jobs.c.job_id == job_id,
                                       _jobs.c.status == JobStatus.PENDING)
                .values(status=JobStatus.CANCELLED, message="cancelled before it started",
                        ended_at=utcnow())).rowcount
        return job_id if done else None
