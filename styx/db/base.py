"""What every store shares: one engine, write transactions, upserts, fetches, field checks.

- ``Store._write()``: one write transaction (``BEGIN IMMEDIATE`` on SQLite, so writers
  queue instead of failing on a lock upgrade).
- ``Store._upsert()``: ``INSERT ... ON CONFLICT DO UPDATE`` of exactly the given fields,
  with first-write-wins and forward-only columns.
- ``Store._fetch()`` / ``Store._session()``: reads whose rows outlive the session.
- ``Store._clean()``: field names checked against the table, values coerced to what the
  columns hold (statuses, JSON text, aware UTC).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel

from styx.contracts.clusters import ClusterStatus
from styx.contracts.jobs import JobStatus
from styx.db.engine import aware_utc, json_text
from styx.db.models import Cluster, Job

_JSON_FIELDS = {"resources", "info", "exit_codes", "accelerators"}
_TIME_FIELDS = {"created_at", "updated_at", "launched_at", "submitted_at", "started_at", "ended_at",
                "autostop_at"}


class Store:
    """The rows of one domain behind one engine; every write is its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def _fetch(self, model: type[SQLModel], *key: Any, conn: Connection | None = None) -> Any:
        bind = conn if conn is not None else self.engine
        with Session(bind, expire_on_commit=False) as session:
            return session.get(model, key)

    @staticmethod
    def _upsert(conn: Connection, model: type[SQLModel], keys: dict[str, Any],
                fields: dict[str, Any], insert_defaults: dict[str, Any],
                where: sa.ColumnElement[bool] | None = None,
                keep_first: Iterable[str] = (), forward_only: str | None = None,
                rank: Callable[[Any], sa.ColumnElement[int]] | None = None) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET <only the given fields>.

        Fields in ``keep_first`` are only written where the stored value is NULL; the column
        named by ``forward_only`` only ever moves forward, as ordered by ``rank``.
        """
        table: sa.Table = model.__table__  # type: ignore[attr-defined]
        dialect = conn.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - only the two backends we test are supported
            raise NotImplementedError(f"upserts are not implemented for {dialect}")
        stmt = insert(table).values({**insert_defaults, **fields, **keys})
        update: dict[str, Any] = {name: stmt.excluded[name] for name in fields}
        for name in keep_first:
            update[name] = sa.func.coalesce(table.c[name], stmt.excluded[name])
        if forward_only in update:
            assert rank is not None, "forward_only needs a rank"
            stored, new = rank(table.c[forward_only]), rank(stmt.excluded[forward_only])
            update[forward_only] = sa.case((new >= stored, stmt.excluded[forward_only]),
                                           else_=table.c[forward_only])
        if not update:  # nothing to change: keep the row, but the statement must not fail
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        else:
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update, where=where)
        conn.execute(stmt)

    @staticmethod
    def _clean(model: type[SQLModel], fields: Mapping[str, Any], primary_key: set[str]) -> dict[str, Any]:
        """Check field names against the table and coerce values to what the columns hold."""
        columns = set(model.__table__.columns.keys())  # type: ignore[attr-defined]
        unknown = set(fields) - (columns - primary_key)
        if unknown:
            raise TypeError(f"{model.__name__} has no writable field(s) {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if value is not None:
                if name == "status" and model is Cluster:
                    value = ClusterStatus(value)
                elif name == "status" and model is Job:
                    value = JobStatus(value)
                elif name in _JSON_FIELDS:
                    value = json_text(value)
                elif name in _TIME_FIELDS:
                    value = aware_utc(value)
            values[name] = value
        return values
