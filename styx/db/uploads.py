"""Uploads in the database: ``UploadStore`` (``db.uploads``).

An upload's bytes live in ``upload_chunks`` rows of at most ``UPLOAD_CHUNK_BYTES``, written
and read one row at a time, so neither the API nor a worker holds a whole archive in memory,
and every worker can read every upload (a directory would be on one host only). One copy of
the bytes serves every user who sent them; ``upload_owners`` says who did.

- ``store``: the bytes (already checked against their sha256) and the sender as an owner, in
  one transaction, evicting the sender's least recently used uploads beyond their quota —
  never one that live work still names (pinned): ``UploadQuotaFull`` when only pinned ones
  could make room (nothing is stored or evicted then).
- Pins (``upload_pins``): ``pin(conn, kind, holder, task)`` is called by the stores that
  keep work, in the transaction that stores it: a job's spec (``db.jobspecs.put``), a
  service's version (``db.services``), a managed job's tasks (``db.managed.create``). A pin
  holds while its holder is live (``_live``): a job not finished (or, before the cluster
  took it, for ``PIN_SUBMIT_GRACE``), a service not shutting down, a managed job not ended.
  Pins of holders no longer live are dropped when eviction looks at them.
- ``use``: whether a user may name an upload in a task (its owner, or an admin), marking it used.
- ``get``, ``list``, ``forget``, ``count``; ``read``: the bytes, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import select

from styx.contracts.jobs import JOB_TERMINAL, JobStatus
from styx.contracts.managed import MANAGED_TERMINAL
from styx.contracts.uploads import task_uploads
from styx.db.base import Store
from styx.db.engine import utcnow
from styx.db.models import Job, ManagedJob, Service, Upload, UploadChunk, UploadOwner, UploadPin, User

_uploads = Upload.__table__  # type: ignore[attr-defined]
_chunks = UploadChunk.__table__  # type: ignore[attr-defined]
_owners = UploadOwner.__table__  # type: ignore[attr-defined]
_pins = UploadPin.__table__  # type: ignore[attr-defined]
_jobs = Job.__table__  # type: ignore[attr-defined]
_services = Service.__table__  # type: ignore[attr-defined]
_managed = ManagedJob.__table__  # type: ignore[attr-defined]

#: A job spec pins its uploads before the cluster has taken the job (its row does not exist
#: yet) for this long: a submission that never reached a cluster stops pinning after it.
PIN_SUBMIT_GRACE = timedelta(hours=1)
#: Holder kinds (``UploadPin.holder_kind``).
PIN_JOB, PIN_SERVICE, PIN_MANAGED = "job", "service", "managed"
#: How many pinned uploads (and holders of each) ``UploadQuotaFull`` names.
_NAMED_IN_ERROR = 3


def pin(conn: Connection, kind: str, holder: str, task: object) -> None:
    """Pin the uploads ``task`` (a task's JSON form) names for ``holder``, in ``conn``'s
    transaction (the one that stores the work)."""
    for sha256 in sorted(task_uploads(task)):
        Store._upsert(conn, UploadPin, {"sha256": sha256, "holder_kind": kind, "holder": holder}, {},
                      {"created_at": utcnow()})


def unpin(conn: Connection, kind: str, holders: Iterable[str] | sa.ColumnElement[Any]) -> None:
    """Drop the pins of ``holders`` (ids, or a subquery of them)."""
    which = holders if isinstance(holders, sa.ColumnElement) else list(holders)
    conn.execute(sa.delete(_pins).where(_pins.c.holder_kind == kind, _pins.c.holder.in_(which)))


def _live(now: datetime) -> sa.ColumnElement[bool]:
    """Whether a pin's holder is live (a condition on ``upload_pins`` rows)."""
    job_named = _jobs.c.spec_id == _pins.c.holder
    job = sa.or_(sa.exists().where(job_named, _jobs.c.status.not_in([JobStatus(s) for s in JOB_TERMINAL])),
                 sa.and_(~sa.exists().where(job_named), _pins.c.created_at > now - PIN_SUBMIT_GRACE))
    service = sa.exists().where(_services.c.name == _pins.c.holder, _services.c.status != "SHUTTING_DOWN")
    managed = sa.exists().where(sa.cast(_managed.c.id, sa.String) == _pins.c.holder,
                                _managed.c.status.not_in([str(s) for s in MANAGED_TERMINAL]))
    return sa.or_(sa.and_(_pins.c.holder_kind == PIN_JOB, job),
                  sa.and_(_pins.c.holder_kind == PIN_SERVICE, service),
                  sa.and_(_pins.c.holder_kind == PIN_MANAGED, managed))


class UploadQuotaFull(Exception):
    """The quota cannot be met without evicting uploads live work still needs; the message
    names the quota and what pins them."""


class UploadGone(LookupError):
    """The upload is not (or no longer) stored."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"upload {sha256[:12]}… is not stored (removed, or never sent)")
        self.sha256 = sha256


class UploadStore(Store):
    def store(self, sha256: str, size: int, chunks: Iterable[bytes], owner: str,
              quota: int | None = None) -> tuple[bool, list[str]]:
        """Keep the upload ``sha256`` (its bytes are ``chunks``, ``size`` in all) and record
        ``owner`` as one who sent it. Returns whether the bytes were new (False: another send
        stored them already, ``chunks`` is not read) and the sha256s evicted to keep the
        owner's uploads within ``quota`` bytes (least recently used first)."""
        now = utcnow()
        with self._write() as conn:
            owned = conn.execute(sa.select(_owners.c.sha256).where(
                _owners.c.sha256 == sha256, _owners.c.user_name == owner)).first() is not None
            evicted = [] if owned or quota is None else self._evict(conn, owner, quota, size)
            exists = conn.execute(sa.select(_uploads.c.sha256).where(_uploads.c.sha256 == sha256)).first()
            if exists is None:
                conn.execute(sa.insert(_uploads).values(sha256=sha256, size=size, chunks=0, created_at=now))
                seq = 0
                for data in chunks:
                    conn.execute(sa.insert(_chunks).values(sha256=sha256, seq=seq, data=data))
                    seq += 1
                conn.execute(sa.update(_uploads).where(_uploads.c.sha256 == sha256).values(chunks=seq))
            self._upsert(conn, UploadOwner, {"sha256": sha256, "user_name": owner}, {"last_used_at": now},
                         {"created_at": now})
        return exists is None, evicted

    @staticmethod
    def _evict(conn: Connection, owner: str, quota: int, size: int) -> list[str]:
        """Drop ``owner``'s least recently used uploads until theirs and ``size`` more total at
        most ``quota`` bytes, skipping those live work names; bytes nobody owns any more are
        deleted. ``UploadQuotaFull`` if the unpinned ones are not enough (nothing dropped)."""
        room = quota - size
        rows = conn.execute(
            sa.select(_owners.c.sha256, _uploads.c.size)
            .join(_uploads, _uploads.c.sha256 == _owners.c.sha256)
            .where(_owners.c.user_name == owner)
            .order_by(_owners.c.last_used_at, _owners.c.sha256)).all()
        used = sum(r.size for r in rows)
        if used <= room:
            return []
        candidates = [r.sha256 for r in rows]
        now = utcnow()
        # Pins whose holders ended pin nothing: forget them (the table stays as big as live work).
        conn.execute(sa.delete(_pins).where(_pins.c.sha256.in_(candidates), ~_live(now)))
        pinned = set(conn.execute(sa.select(_pins.c.sha256).distinct().where(_pins.c.sha256.in_(candidates))).scalars())
        evicted = []
        for row in rows:
            if used <= room:
                break
            if row.sha256 in pinned:
                continue
            evicted.append(row.sha256)
            used -= row.size
        if used > room:
            raise UploadQuotaFull(_quota_full(conn, owner, quota, size, used, [r for r in rows if r.sha256 in pinned]))
        if evicted:
            conn.execute(sa.delete(_owners).where(_owners.c.sha256.in_(evicted), _owners.c.user_name == owner))
            orphans = ~sa.exists().where(_owners.c.sha256 == _uploads.c.sha256)
            conn.execute(sa.delete(_chunks).where(_chunks.c.sha256.in_(evicted),
                                                  ~sa.exists().where(_owners.c.sha256 == _chunks.c.sha256)))
            conn.execute(sa.delete(_uploads).where(_uploads.c.sha256.in_(evicted), orphans))
        return evicted

    def pins(self, sha256: str) -> list[tuple[str, str]]:
        """``(kind, holder)`` of the live work that pins the upload ``sha256``."""
        with self.engine.connect() as conn:
            return [(r.holder_kind, r.holder) for r in conn.execute(
                sa.select(_pins.c.holder_kind, _pins.c.holder)
                .where(_pins.c.sha256 == sha256, _live(utcnow()))
                .order_by(_pins.c.holder_kind, _pins.c.holder)).all()]

    def use(self, sha256: str, user: User) -> bool:
        """Whether ``user`` may name the upload in a task: they sent it, or they are an admin
        and it is stored. Marks it used (the quota evicts the least recently used first)."""
        with self._write() as conn:
            touched = conn.execute(sa.update(_owners).where(
                _owners.c.sha256 == sha256, _owners.c.user_name == user.name).values(last_used_at=utcnow()))
            if touched.rowcount:
                return True
            if user.is_admin:
                return conn.execute(sa.select(_uploads.c.sha256).where(_uploads.c.sha256 == sha256)).first() is not None
        return False

    def get(self, sha256: str) -> Upload | None:
        return self._fetch(Upload, sha256)

    def owner_row(self, sha256: str, user: str) -> UploadOwner | None:
        return self._fetch(UploadOwner, sha256, user)

    def list(self, user: str) -> list[tuple[Upload, UploadOwner]]:
        """``user``'s uploads, most recently used first."""
        with self._session() as session:
            rows = session.exec(select(Upload, UploadOwner).join(UploadOwner, UploadOwner.sha256 == Upload.sha256)
                                .where(UploadOwner.user_name == user)
                                .order_by(UploadOwner.last_used_at.desc())).all()  # type: ignore[attr-defined]
            return [(u, o) for u, o in rows]

    def forget(self, sha256: str, user: str) -> bool:
        """``user`` no longer owns the upload; its bytes go when nobody does. False if they did not."""
        with self._write() as conn:
            gone = conn.execute(sa.delete(_owners).where(_owners.c.sha256 == sha256, _owners.c.user_name == user))
            if gone.rowcount:
                orphan = ~sa.exists().where(_owners.c.sha256 == sha256)
                conn.execute(sa.delete(_chunks).where(_chunks.c.sha256 == sha256, orphan))
                conn.execute(sa.delete(_uploads).where(_uploads.c.sha256 == sha256, orphan))
            return bool(gone.rowcount)

    def count(self) -> int:
        """How many distinct uploads are stored."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(_uploads)).scalar_one()

    def read(self, sha256: str) -> Iterator[bytes]:
        """The upload's bytes, one chunk (one row) at a time; ``UploadGone`` if not stored."""
        upload = self.get(sha256)
        if upload is None:
            raise UploadGone(sha256)
        with self.engine.connect() as conn:
            for seq in range(upload.chunks):
                data = conn.execute(sa.select(_chunks.c.data).where(
                    _chunks.c.sha256 == sha256, _chunks.c.seq == seq)).scalar_one_or_none()
                if data is None:  # evicted while being read
                    raise UploadGone(sha256)
                yield bytes(data)


def _quota_full(conn: Connection, owner: str, quota: int, size: int, used: int, pinned: list[Any]) -> str:
    """Why ``owner``'s quota cannot be met: the quota, what they hold, and what pins it."""
    pinned_bytes = sum(r.size for r in pinned)
    named = []
    for row in pinned[:_NAMED_IN_ERROR]:
        holders = conn.execute(sa.select(_pins.c.holder_kind, _pins.c.holder).where(_pins.c.sha256 == row.sha256)
                               .order_by(_pins.c.holder_kind, _pins.c.holder).limit(_NAMED_IN_ERROR + 1)).all()
        what = ", ".join(_holder(conn, h.holder_kind, h.holder) for h in holders[:_NAMED_IN_ERROR])
        more = " and more" if len(holders) > _NAMED_IN_ERROR else ""
        named.append(f"upload {row.sha256[:12]}… ({row.size} bytes) by {what}{more}")
    others = f"; and {len(pinned) - len(named)} more" if len(pinned) > len(named) else ""
    return (f"upload quota of {quota} bytes (STYX_UPLOAD_QUOTA_BYTES) full: {owner}'s uploads take {used} bytes "
            f"after evicting every one it could, and {size} more do not fit; {pinned_bytes} bytes are pinned by "
            f"live work that still needs them: {'; '.join(named)}{others}. Send it again once that work has "
            "ended (or cancel it), or ask an admin to raise the quota")


def _holder(conn: Connection, kind: str, holder: str) -> str:
    if kind == PIN_JOB:
        job = conn.execute(sa.select(_jobs.c.cluster_name, _jobs.c.job_id, _jobs.c.status)
                           .where(_jobs.c.spec_id == holder)).first()
        return f"job {job.job_id} on cluster {job.cluster_name} ({job.status})" if job else "a job being submitted"
    if kind == PIN_SERVICE:
        return f"service {holder}"
    return f"managed job {holder}"
