"""The git server's rows: ``RepoDb`` (``db.repos``) — repositories, collaborators, push runs.

Not to be confused with ``styx.gitserver.storage.RepoStore``, the repositories on disk.

- Repositories: ``create`` (``AlreadyExists`` if taken, ``UserNotFound`` without owner),
  ``get`` (by owner and name), ``get_by_id``, ``update``, ``delete`` (with collaborators
  and push runs), ``list`` (optionally of one owner).
- Collaborators: ``set_collaborator``, ``get_collaborator``, ``list_collaborators``,
  ``collaborator_levels`` (every repository of one user), ``remove_collaborator``.
- Push runs: ``upsert_push_run`` (one per repository and commit; a finished run is never
  changed again), ``get_push_run``, ``find_push_runs`` (by sha prefix), ``list_push_runs``.
- Push intents (ref updates whose runs have not started yet): ``add_push_intents``,
  ``drop_push_intents``, ``push_intents_before``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from styx.contracts.pushes import PUSH_TERMINAL, PushRunStatus
from styx.db.base import Store
from styx.db.engine import json_text, utcnow
from styx.db.models import (
    AlreadyExists,
    PushIntent,
    PushRun,
    Repo,
    RepoCollaborator,
    RepoLevel,
    User,
    UserNotFound,
)


class RepoDb(Store):
    # --- repositories

    def create(self, owner: str, name: str, *, private: bool = False,
               default_branch: str = "main", description: str | None = None) -> Repo:
        """Insert the repository row; ``AlreadyExists`` if taken, ``UserNotFound`` without owner."""
        if self._fetch(User, owner) is None:
            raise UserNotFound(owner)
        try:
            with self._write() as conn:
                conn.execute(sa.insert(Repo.__table__).values(  # type: ignore[attr-defined]
                    owner=owner, name=name, private=private, default_branch=default_branch,
                    description=description, created_at=utcnow()))
            return self.get(owner, name)  # type: ignore[return-value]
        except IntegrityError:
            if self._fetch(User, owner) is None:
                raise UserNotFound(owner) from None
            raise AlreadyExists(f"repository {owner}/{name} already exists") from None

    def get(self, owner: str, name: str) -> Repo | None:
        with self._session() as session:
            return session.exec(select(Repo).where(Repo.owner == owner, Repo.name == name)).first()

    def get_by_id(self, repo_id: int) -> Repo | None:
        return self._fetch(Repo, repo_id)

    def update(self, repo_id: int, **fields: Any) -> Repo | None:
        allowed = {"private", "default_branch", "description"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"Repo has no writable field(s) {', '.join(sorted(unknown))}")
        if fields:
            table: sa.Table = Repo.__table__  # type: ignore[attr-defined]
            with self._write() as conn:
                conn.execute(sa.update(table).where(table.c.id == repo_id).values(**fields))
        return self.get_by_id(repo_id)

    def delete(self, repo_id: int) -> bool:
        """Remove the row with its collaborators and push runs; False if it was not there."""
        table: sa.Table = Repo.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            for child in (RepoCollaborator.__table__, PushRun.__table__,  # type: ignore[attr-defined]
                          PushIntent.__table__):  # type: ignore[attr-defined]
                conn.execute(sa.delete(child).where(child.c.repo_id == repo_id))
            return conn.execute(sa.delete(table).where(table.c.id == repo_id)).rowcount > 0

    # --- collaborators

    def set_collaborator(self, repo_id: int, user: str, level: RepoLevel | str) -> RepoCollaborator:
        if self._fetch(User, user) is None:
            raise UserNotFound(user)
        with self._write() as conn:
            self._upsert(conn, RepoCollaborator, {"repo_id": repo_id, "user_name": user},
                         {"level": RepoLevel(level)}, {"created_at": utcnow()})
            return self._fetch(RepoCollaborator, repo_id, user, conn=conn)

    def get_collaborator(self, repo_id: int, user: str) -> RepoCollaborator | None:
        return self._fetch(RepoCollaborator, repo_id, user)

    def list_collaborators(self, repo_id: int) -> list[RepoCollaborator]:
        query = select(RepoCollaborator).where(RepoCollaborator.repo_id == repo_id).order_by(
            RepoCollaborator.user_name)
        with self._session() as session:
            return list(session.exec(query).all())

    def collaborator_levels(self, user: str) -> dict[int, RepoLevel]:
        """``{repo_id: level}`` for every repository ``user`` collaborates on."""
        query = select(RepoCollaborator).where(RepoCollaborator.user_name == user)
        with self._session() as session:
            return {c.repo_id: c.level for c in session.exec(query).all()}

    def remove_collaborator(self, repo_id: int, user: str) -> bool:
        table: sa.Table = RepoCollaborator.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.repo_id == repo_id,
                                                       table.c.user_name == user)).rowcount > 0

    # --- push runs

    def upsert_push_run(self, repo_id: int, sha: str, **fields: Any) -> PushRun:
        """Create or update the run of commit ``sha``; a finished run is never changed again."""
        now = utcnow()
        values = dict(fields)
        table: sa.Table = PushRun.__table__  # type: ignore[attr-defined]
        unknown = set(values) - (set(table.columns.keys()) - {"id", "repo_id", "sha"})
        if unknown:
            raise TypeError(f"PushRun has no writable field(s) {', '.join(sorted(unknown))}")
        if values.get("status") is not None:
            values["status"] = PushRunStatus(values["status"])
        if "jobs" in values:
            values["jobs"] = json_text(values["jobs"])
        values.setdefault("updated_at", now)
        where = table.c.status.notin_(sorted(PUSH_TERMINAL)) if "status" in values else None
        with self._write() as conn:
            self._upsert(conn, PushRun, {"repo_id": repo_id, "sha": sha}, values,
                         {"created_at": now, "status": PushRunStatus.PENDING, "jobs": "[]",
                          "ref": "", "pusher": "", "workflow_id": ""}, where)
        return self.get_push_run(repo_id, sha)  # type: ignore[return-value]

    def get_push_run(self, repo_id: int, sha: str) -> PushRun | None:
        with self._session() as session:
            return session.exec(select(PushRun).where(PushRun.repo_id == repo_id, PushRun.sha == sha)).first()

    def find_push_runs(self, repo_id: int, sha_prefix: str) -> list[PushRun]:
        query = select(PushRun).where(PushRun.repo_id == repo_id, PushRun.sha.startswith(sha_prefix))  # type: ignore[attr-defined]
        with self._session() as session:
            return list(session.exec(query.limit(2)).all())

    def list_push_runs(self, repo_id: int, limit: int | None = 50) -> list[PushRun]:
        query = select(PushRun).where(PushRun.repo_id == repo_id).order_by(
            PushRun.created_at.desc(), PushRun.id.desc())  # type: ignore[attr-defined,union-attr]
        if limit is not None:
            query = query.limit(limit)
        with self._session() as session:
            return list(session.exec(query).all())

    # --- push intents

    def add_push_intents(self, repo_id: int, pusher: str, updates: Iterable[tuple[str, str, str]]) -> list[int]:
        """Record ``(old, new, ref)`` updates before git applies them; their ids, in order."""
        rows = [PushIntent(repo_id=repo_id, ref=ref, old=old, new=new, pusher=pusher) for old, new, ref in updates]
        if not rows:
            return []
        with self._session() as session:
            session.add_all(rows)
            session.commit()
            return [row.id for row in rows]  # type: ignore[misc]

    def drop_push_intents(self, ids: Iterable[int]) -> None:
        table: sa.Table = PushIntent.__table__  # type: ignore[attr-defined]
        ids = list(ids)
        if ids:
            with self._write() as conn:
                conn.execute(sa.delete(table).where(table.c.id.in_(ids)))

    def push_intents_before(self, cutoff: datetime, limit: int = 100) -> list[PushIntent]:
        """The oldest intents recorded before ``cutoff``, at most ``limit``."""
        query = select(PushIntent).where(PushIntent.created_at < cutoff).order_by(
            PushIntent.id).limit(limit)  # type: ignore[arg-type]
        with self._session() as session:
            return list(session.exec(query).all())

    # --- (last: a method named ``list`` would shadow the builtin in annotations below it)

    def list(self, owner: str | None = None) -> list[Repo]:
        query = select(Repo).order_by(Repo.owner, Repo.name)
        if owner is not None:
            query = query.where(Repo.owner == owner)
        with self._session() as session:
            return list(session.exec(query).all())
