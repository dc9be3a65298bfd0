"""The migrator: Alembic (``styx/migrations``) driven in-process, under a lock.

- ``migrate(url)``: bring a database to head; safe at every start, from several processes.
- ``head_revision()`` / ``current_revision(url)``: where migrations lead, where a database is.
- ``_migration_lock``: a PostgreSQL advisory lock, a file lock beside a SQLite file, or a
  thread lock for in-memory SQLite.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from styx.db.engine import get_engine, normalize_url, sqlite_path
from styx.files import file_lock

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"

#: Key of the PostgreSQL advisory lock that serialises migrations ("styx" in ASCII).
_PG_MIGRATION_LOCK_KEY = 0x73747978


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision ``migrate()`` brings a database to."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The revision a database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    path = sqlite_path(normalize_url(url))
    if path is not None and not path.exists():
        return None  # and do not create the file by looking

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (Alembic ``upgrade``); a no-op when already there.

    Safe at every process start and from several processes at once: PostgreSQL serialises
    migrators on an advisory lock, SQLite on a file lock beside the database file, so the
    second one waits, then finds nothing to do. The whole upgrade is one transaction on
    both backends, so a crash mid-way leaves the previous revision intact.
    """
    from alembic import command

    url = normalize_url(url)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = get_engine(url)
    with _migration_lock(engine, path):
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                command.upgrade(_alembic_config(conn), revision)


_memory_migration_lock = threading.Lock()


@contextlib.contextmanager
def _migration_lock(engine: Engine, sqlite_file: Path | None) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"),
                             {"key": _PG_MIGRATION_LOCK_KEY})
    elif sqlite_file is not None:
        # flock: it also excludes other threads of this process (one open file
        # description each), and the kernel drops it if the process dies.
        with file_lock(sqlite_file.with_name(sqlite_file.name + ".migrate-lock")):
            yield
    else:
        with _memory_migration_lock:
            yield
