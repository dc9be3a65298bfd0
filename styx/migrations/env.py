"""Alembic environment for the Styx state database.

``styx.db.migrate()`` hands over an open connection (inside its transaction and lock) in
``config.attributes["connection"]``; the ``alembic`` command line gets its URL from
``-x url=...``, ``sqlalchemy.url`` in alembic.ini, or Styx's settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from styx.db.engine import get_engine, normalize_url
from styx.db.models import metadata as target_metadata

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from styx.config import Settings

        url = Settings.from_env().db_url
    return normalize_url(url)


def _configure(dialect_name: str, **kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=dialect_name == "sqlite",
        **kwargs,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    from sqlalchemy.engine import make_url

    url = _url()
    _configure(make_url(url).get_backend_name(), url=url, literal_binds=True,
               dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    # The command line, for developers; services call styx.db.migrate(), which also locks.
    engine = get_engine(_url())
    with engine.connect() as conn:
        _run_on(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
