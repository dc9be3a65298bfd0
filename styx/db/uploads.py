"""Uploads in the database: ``UploadStore`` (``db.uploads``).

An upload's bytes live in ``upload_chunks`` rows of at most ``UPLOAD_CHUNK_BYTES``, written
and read one row at a time, so neither the API nor a worker holds a whole archive in memory,
and every worker can read every upload (a directory would be on one host only). One copy of
the bytes serves every user who sent them; ``upload_owners`` says who did.

- ``store``: the bytes (already checked against their sha256) and the sender as an owner, in
  one transaction, evicting the sender's least recently used uploads beyond their quota.
- ``use``: whether a user may name an upload in a task (its owner, or an admin), marking it used.
- ``get``, ``list``, ``forget``, ``count``; ``read``: the bytes, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import select

from styx.db.base import Store
from styx.db.engine import utcnow
from styx.db.models import Upload, UploadChunk, UploadOwner, User

_uploads = Upload.__table__  # type: ignore[attr-defined]
_chunks = UploadChunk.__table__  # type: ignore[attr-defined]
_owners = UploadOwner.__table__  # type: ignore[attr-defined]


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
            evicted = [] if owned or quota is None else self._evict(conn, owner, quota - size)
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
    def _evict(conn: Connection, owner: str, room: int) -> list[str]:
        """Drop ``owner``'s least recently used uploads until theirs total at most ``room``
        bytes; bytes nobody owns any more are deleted."""
        rows = conn.execute(
            sa.select(_owners.c.sha256, _uploads.c.size)
            .join(_uploads, _uploads.c.sha256 == _owners.c.sha256)
            .where(_owners.c.user_name == owner)
            .order_by(_owners.c.last_used_at, _owners.c.sha256)).all()
        used = sum(r.size for r in rows)
        evicted = []
        for row in rows:
            if used <= room:
                break
            conn.execute(sa.delete(_owners).where(_owners.c.sha256 == row.sha256, _owners.c.user_name == owner))
            used -= row.size
            evicted.append(row.sha256)
        if evicted:
            orphans = ~sa.exists().where(_owners.c.sha256 == _uploads.c.sha256)
            conn.execute(sa.delete(_chunks).where(_chunks.c.sha256.in_(evicted),
                                                  ~sa.exists().where(_owners.c.sha256 == _chunks.c.sha256)))
            conn.execute(sa.delete(_uploads).where(_uploads.c.sha256.in_(evicted), orphans))
        return evicted

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
