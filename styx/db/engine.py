"""Engines and column types: one engine per URL, SQLite set up for concurrent writers.

- ``normalize_url``: ``postgresql://`` means psycopg 3.
- ``get_engine`` / ``dispose_engine``: the per-process engine cache (engines own pools).
- SQLite configuration: WAL, a busy timeout, foreign keys, and transactions that begin
  when asked (``sqlite_begin="IMMEDIATE"`` for writers).
- Column types: ``UTCDateTime`` (always aware UTC, on SQLite too), ``status_type``
  (enum as VARCHAR), ``timestamp`` (a ``UTCDateTime`` field), ``json_text`` (dicts and
  lists stored as JSON text), ``aware_utc`` and ``utcnow``.
"""

from __future__ import annotations

import enum
import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Field

_SQLITE_BUSY_TIMEOUT_MS = 5000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- engine

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for in-memory and ``file:`` URI databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def get_engine(url: str) -> Engine:
    """One engine per URL for the whole process (engines own connection pools)."""
    url = normalize_url(url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def dispose_engine(url: str) -> None:
    """Close the pooled connections of a cached engine and forget it."""
    with _engines_lock:
        engine = _engines.pop(normalize_url(url), None)
    if engine is not None:
        engine.dispose()


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if sqlite_path(url) is None:
            kwargs["poolclass"] = StaticPool  # one shared in-memory database
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    return sa.create_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling starts transactions late and never for DDL;
    # take it over (the SQLAlchemy-documented recipe) so that a transaction means one,
    # and so that writers can BEGIN IMMEDIATE instead of failing on a lock upgrade.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


# --------------------------------------------------------------------------- column types


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on SQLite too.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as
    naive UTC text and UTC is attached again on the way out. Naive datetimes are refused:
    they are ambiguous, and a silent local-time guess is a bug that shows up months later.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = aware_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def aware_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime (or anything else) is refused."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} refused: pass a timezone-aware value "
            "(datetime.now(timezone.utc), workflow.now())"
        )
    return value.astimezone(timezone.utc)


def status_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    # A VARCHAR, not a native PostgreSQL ENUM nor a CHECK constraint: adding a status
    # later must not need a migration.
    return sa.Enum(enum_cls, native_enum=False, create_constraint=False, length=16,
                   validate_strings=True)


def timestamp(**kwargs: Any) -> Any:
    """A ``UTCDateTime`` field."""
    return Field(sa_type=UTCDateTime, **kwargs)


def json_text(value: Any) -> str:
    """What a JSON text column stores: strings as given, anything else encoded."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
