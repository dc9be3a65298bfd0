"""The SQL read model: SQLModel tables, the engine, migrations and idempotent writes.

Temporal holds the truth about anything in flight; this database is what ``styx status``,
``styx queue`` and the API list from. Workflows write here only through activities, and
every write helper is an upsert keyed by id, so a retried activity never duplicates a row
and a late retry never moves a finished job back to RUNNING.

A SQLite file is the default (``sqlite:///$STYX_HOME/styx.db``); PostgreSQL works by URL
(``postgresql://user@host/db``, driven by psycopg 3)::

    from styx.db import Database, migrate

    migrate(url)                      # safe at every start, from several processes at once
    db = Database(url)
    db.upsert_cluster("dev", provider="local", status="INIT", num_nodes=2)
    db.upsert_job("dev", 1, name="train", status="PENDING")
    db.set_job_status("dev", 1, "RUNNING")
"""

from __future__ import annotations

import contextlib
import enum
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlmodel import Field, Session, SQLModel, select

from styx.contracts.clusters import ClusterStatus
from styx.contracts.jobs import JOB_TERMINAL, JobStatus
from styx.contracts.pushes import PUSH_TERMINAL, PushRunStatus

__all__ = [
    "ApiToken",
    "User",
    "Cluster",
    "ClusterBase",
    "ClusterNotFound",
    "ClusterPublic",
    "ClusterStatus",
    "Database",
    "Job",
    "JobBase",
    "JobNotFound",
    "JobPublic",
    "JobStatus",
    "Node",
    "NodeBase",
    "NodePublic",
    "dispose_engine",
    "get_engine",
    "migrate",
    "normalize_url",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: Key of the PostgreSQL advisory lock that serialises migrations ("styx" in ASCII).
_PG_MIGRATION_LOCK_KEY = 0x73747978
_SQLITE_BUSY_TIMEOUT_MS = 5000


# Named constraints, so that a later migration can drop or alter them by name (on SQLite
# batch mode needs the name), and the names are the same on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- errors


class ClusterNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"cluster {name!r} is not in the database")
        self.name = name


class JobNotFound(LookupError):
    def __init__(self, cluster: str, job_id: int) -> None:
        super().__init__(f"job {job_id} of cluster {cluster!r} is not in the database")
        self.cluster = cluster
        self.job_id = job_id


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
        value = _aware_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _aware_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} refused: pass a timezone-aware value "
            "(datetime.now(timezone.utc), workflow.now())"
        )
    return value.astimezone(timezone.utc)


def _status_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    # A VARCHAR, not a native PostgreSQL ENUM nor a CHECK constraint: adding a status
    # later must not need a migration.
    return sa.Enum(enum_cls, native_enum=False, create_constraint=False, length=16,
                   validate_strings=True)


def _timestamp(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _json_value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


# --------------------------------------------------------------------------- tables


class ClusterBase(SQLModel):
    name: str = Field(primary_key=True, max_length=255)
    provider: str = Field(default="local", max_length=32)  # local | aws | ssh
    status: ClusterStatus = Field(default=ClusterStatus.INIT, sa_type=_status_type(ClusterStatus))
    num_nodes: int = 1
    #: JSON text of the requested resources (the task's ``resources:`` section).
    resources: str = Field(default="{}", sa_type=sa.Text)
    region: str | None = Field(default=None, max_length=64)
    zone: str | None = Field(default=None, max_length=64)
    autostop_minutes: int | None = None
    autostop_down: bool = False
    workflow_id: str = Field(default="", max_length=255)
    status_message: str | None = Field(default=None, sa_type=sa.Text)


class Cluster(ClusterBase, table=True):
    __tablename__ = "clusters"

    created_at: datetime = _timestamp(default_factory=utcnow)
    updated_at: datetime = _timestamp(default_factory=utcnow)
    launched_at: datetime | None = _timestamp(default=None, nullable=True)


class ClusterPublic(ClusterBase):
    """What the API returns: the JSON columns decoded."""

    resources: dict[str, Any] = {}  # type: ignore[assignment]
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None = None

    @field_validator("resources", mode="before")
    @classmethod
    def _decode_json(cls, value: Any) -> Any:
        return _json_value(value)


class NodeBase(SQLModel):
    rank: int = Field(ge=0)
    host: str = Field(max_length=255)
    port: int = 22
    user: str = Field(default="", max_length=64)
    instance_id: str | None = Field(default=None, max_length=64)
    internal_ip: str = Field(default="", max_length=64)
    status: str = Field(default="UP", max_length=32)
    #: JSON text of provider details (instance type, home directory of a local node, ...).
    info: str = Field(default="{}", sa_type=sa.Text)


class Node(NodeBase, table=True):
    __tablename__ = "nodes"
    # Declared here so the key reads (cluster_name, rank): an index usable by cluster.
    __table_args__ = (sa.PrimaryKeyConstraint("cluster_name", "rank"),)

    cluster_name: str = Field(foreign_key="clusters.name", ondelete="CASCADE", max_length=255)
    updated_at: datetime = _timestamp(default_factory=utcnow)


class NodePublic(NodeBase):
    cluster_name: str
    info: dict[str, Any] = {}  # type: ignore[assignment]
    updated_at: datetime

    @field_validator("info", mode="before")
    @classmethod
    def _decode_json(cls, value: Any) -> Any:
        return _json_value(value)


class JobBase(SQLModel):
    cluster_name: str = Field(primary_key=True, foreign_key="clusters.name",
                              ondelete="CASCADE", max_length=255)
    job_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str | None = Field(default=None, max_length=255)
    status: JobStatus = Field(default=JobStatus.PENDING, sa_type=_status_type(JobStatus), index=True)
    #: JSON text: a list with one exit code per node, once known.
    exit_codes: str | None = Field(default=None, sa_type=sa.Text)
    cpus: float = 0.0
    #: JSON text: ``{"A100": 8}``.
    accelerators: str = Field(default="{}", sa_type=sa.Text)
    num_nodes: int = 1
    run_summary: str | None = Field(default=None, sa_type=sa.Text)
    workflow_id: str = Field(default="", max_length=255)
    user: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, sa_type=sa.Text)


class Job(JobBase, table=True):
    __tablename__ = "jobs"

    submitted_at: datetime = _timestamp(default_factory=utcnow)
    started_at: datetime | None = _timestamp(default=None, nullable=True)
    ended_at: datetime | None = _timestamp(default=None, nullable=True)


class JobPublic(JobBase):
    exit_codes: list[int] | None = None  # type: ignore[assignment]
    accelerators: dict[str, Any] = {}  # type: ignore[assignment]
    submitted_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @field_validator("exit_codes", "accelerators", mode="before")
    @classmethod
    def _decode_json(cls, value: Any) -> Any:
        return _json_value(value)


_JSON_FIELDS = {"resources", "info", "exit_codes", "accelerators"}
_TIME_FIELDS = {"created_at", "updated_at", "launched_at", "submitted_at", "started_at", "ended_at"}


class User(SQLModel, table=True):
    __tablename__ = "users"

    name: str = Field(primary_key=True, max_length=64)
    is_admin: bool = False
    created_at: datetime = _timestamp(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """An API token: only its salted hash is kept (see ``styx.auth``)."""

    __tablename__ = "api_tokens"

    token_id: str = Field(primary_key=True, max_length=32)
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64)
    salt: str = Field(max_length=64)
    digest: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=255)
    created_at: datetime = _timestamp(default_factory=utcnow)


# --------------------------------------------------------------------------- engine

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_path(url: str) -> Path | None:
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
        if _sqlite_path(url) is None:
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


# --------------------------------------------------------------------------- migrations


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

    path = _sqlite_path(normalize_url(url))
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
    path = _sqlite_path(url)
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
        import fcntl

        # flock, not lockf: it also excludes other threads of this process (one open
        # file description each), and the kernel drops it if the process dies.
        lock_path = sqlite_file.with_name(sqlite_file.name + ".migrate-lock")
        with open(lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
    else:
        with _memory_migration_lock:
            yield


# --------------------------------------------------------------------------- the database


class Database:
    """The read model behind one URL; every write is its own transaction and idempotent.

    Rows come back as detached table objects (``Cluster``, ``Node``, ``Job``), readable
    after the session closed; ``ClusterPublic.model_validate(row)`` turns one into what
    the API returns.
    """

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = get_engine(url_or_engine)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    # --- plumbing

    def session(self) -> Session:
        """A session for ad-hoc reads (the API's ``SessionDep``); rows outlive its commit."""
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        """Raise if the database does not answer ``SELECT 1``."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar_one()

    def migrate(self, revision: str = "head") -> None:
        migrate(self.engine.url.render_as_string(hide_password=False), revision)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def _upsert(self, conn: Connection, model: type[SQLModel], keys: dict[str, Any],
                fields: dict[str, Any], insert_defaults: dict[str, Any],
                where: sa.ColumnElement[bool] | None = None,
                keep_first: Iterable[str] = (), forward_only: str | None = None) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET <only the given fields>.

        Fields in ``keep_first`` are only written where the stored value is NULL; the status
        column named by ``forward_only`` only ever moves forward (see ``_JOB_STATUS_RANK``).
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
            stored, new = _status_rank(table.c[forward_only]), _status_rank(stmt.excluded[forward_only])
            update[forward_only] = sa.case((new >= stored, stmt.excluded[forward_only]),
                                           else_=table.c[forward_only])
        if not update:  # nothing to change: keep the row, but the statement must not fail
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        else:
            stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update, where=where)
        conn.execute(stmt)

    def _fetch(self, model: type[SQLModel], *key: Any, conn: Connection | None = None) -> Any:
        bind = conn if conn is not None else self.engine
        with Session(bind, expire_on_commit=False) as session:
            return session.get(model, key)

    def _foreign_key_failure(self, exc: IntegrityError, cluster: str) -> Exception:
        if self.get_cluster(cluster) is None:
            return ClusterNotFound(cluster)
        return exc

    # --- clusters

    def upsert_cluster(self, name: str, **fields: Any) -> Cluster:
        """Create the cluster or update exactly the fields given; returns the row.

        Fields not given keep their stored value (or the column default on insert);
        ``updated_at`` is refreshed on every call, ``created_at`` only set on insert.
        """
        now = utcnow()
        values = _clean(Cluster, fields, primary_key={"name"})
        values.setdefault("updated_at", now)
        defaults = {"created_at": now, "workflow_id": f"cluster/{name}"}
        with self._write() as conn:
            self._upsert(conn, Cluster, {"name": name}, values, defaults)
            return self._fetch(Cluster, name, conn=conn)

    def get_cluster(self, name: str) -> Cluster | None:
        return self._fetch(Cluster, name)

    def list_clusters(self, *, status: ClusterStatus | str | Iterable[ClusterStatus | str] | None = None,
                      ) -> list[Cluster]:
        """All clusters by name, optionally only those in the given status(es)."""
        query = select(Cluster).order_by(Cluster.name)
        if status is not None:
            query = query.where(Cluster.status.in_(_statuses(ClusterStatus, status)))  # type: ignore[attr-defined]
        with self.session() as session:
            return list(session.exec(query).all())

    def delete_cluster(self, name: str) -> bool:
        """Remove the cluster with its nodes and jobs; False if it was not there."""
        with self._write() as conn:
            result = conn.execute(sa.delete(Cluster.__table__).where(Cluster.__table__.c.name == name))  # type: ignore[attr-defined]
            return result.rowcount > 0

    # --- nodes

    def upsert_nodes(self, cluster: str, nodes: Iterable[NodeBase | Mapping[str, Any]]) -> list[Node]:
        """Create or update each node, keyed by (cluster, rank); returns all the cluster's nodes.

        Nodes already stored but absent from ``nodes`` are left alone; ``replace_nodes``
        replaces the whole set.
        """
        return self._write_nodes(cluster, nodes, replace=False)

    def replace_nodes(self, cluster: str, nodes: Iterable[NodeBase | Mapping[str, Any]]) -> list[Node]:
        """Make ``nodes`` the cluster's whole node set, in one transaction."""
        return self._write_nodes(cluster, nodes, replace=True)

    def _write_nodes(self, cluster: str, nodes: Iterable[NodeBase | Mapping[str, Any]],
                     replace: bool) -> list[Node]:
        table: sa.Table = Node.__table__  # type: ignore[attr-defined]
        now = utcnow()
        try:
            with self._write() as conn:
                if replace:
                    conn.execute(sa.delete(table).where(table.c.cluster_name == cluster))
                for node in nodes:
                    data = node.model_dump(exclude_unset=False) if isinstance(node, NodeBase) else dict(node)
                    data.pop("cluster_name", None)
                    if "rank" not in data:
                        raise TypeError("every node needs a rank")
                    rank = int(data.pop("rank"))
                    values = _clean(Node, data, primary_key={"cluster_name", "rank"})
                    values.setdefault("updated_at", now)
                    self._upsert(conn, Node, {"cluster_name": cluster, "rank": rank}, values, {})
                return self._list_nodes(conn, cluster)
        except IntegrityError as exc:
            raise self._foreign_key_failure(exc, cluster) from exc

    def delete_nodes(self, cluster: str) -> int:
        """Forget the cluster's nodes (after a stop or teardown); returns how many went."""
        table: sa.Table = Node.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.cluster_name == cluster)).rowcount

    def list_nodes(self, cluster: str) -> list[Node]:
        with self.engine.connect() as conn:
            return self._list_nodes(conn, cluster)

    def _list_nodes(self, conn: Connection, cluster: str) -> list[Node]:
        with Session(conn, expire_on_commit=False) as session:
            query = select(Node).where(Node.cluster_name == cluster).order_by(Node.rank)  # type: ignore[arg-type]
            return list(session.exec(query).all())

    # --- jobs

    def upsert_job(self, cluster: str, job_id: int, **fields: Any) -> Job:
        """Create the job or update exactly the fields given; returns the row as stored.

        The status only moves forward (PENDING, SETTING_UP, RUNNING, then a terminal one),
        so writes that race (a job can start before its PENDING row is written) or a retried
        "RUNNING" that lands after "SUCCEEDED" never move it back; their other fields still
        land. The first terminal status wins: a second terminal write is ignored whole. A
        status of RUNNING stamps ``started_at``, a terminal one ``ended_at``, unless given;
        the first stamp stays.
        """
        values = _clean(Job, fields, primary_key={"cluster_name", "job_id"})
        defaults = {"submitted_at": utcnow(), "workflow_id": f"cluster/{cluster}/job/{job_id}"}
        where = None
        status = values.get("status")
        if status is not None:
            if JobStatus(status).is_terminal:
                where = Job.__table__.c.status.notin_(sorted(JOB_TERMINAL))  # type: ignore[attr-defined]
            _stamp_transition(values)
        stamped = [name for name in ("started_at", "ended_at") if name in values]  # set once
        try:
            with self._write() as conn:
                self._upsert(conn, Job, {"cluster_name": cluster, "job_id": job_id}, values,
                             defaults, where, keep_first=stamped, forward_only="status")
                return self._fetch(Job, cluster, job_id, conn=conn)
        except IntegrityError as exc:
            raise self._foreign_key_failure(exc, cluster) from exc

    def set_job_status(self, cluster: str, job_id: int, status: JobStatus | str,
                       **extra: Any) -> Job:
        """Move a job to ``status`` (with ``extra`` fields), unless it already finished.

        A terminal job (SUCCEEDED, FAILED, FAILED_SETUP, CANCELLED) is never changed: the
        first terminal status wins, and the returned row says what is stored. Moving to
        RUNNING stamps ``started_at``, and to a terminal status ``ended_at``, unless given
        or already set. Raises ``JobNotFound`` if the job was never upserted.
        """
        values = _clean(Job, {**extra, "status": JobStatus(status)},
                        primary_key={"cluster_name", "job_id"})
        table: sa.Table = Job.__table__  # type: ignore[attr-defined]
        for name in _stamp_transition(values):
            values[name] = sa.func.coalesce(table.c[name],
                                            sa.bindparam(f"{name}_now", values[name], type_=UTCDateTime))
        with self._write() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.cluster_name == cluster, table.c.job_id == job_id,
                       table.c.status.notin_(sorted(JOB_TERMINAL)))
                .values(values)
            )
            job = self._fetch(Job, cluster, job_id, conn=conn)
        if job is None:
            raise JobNotFound(cluster, job_id)
        return job

    def get_job(self, cluster: str, job_id: int) -> Job | None:
        return self._fetch(Job, cluster, job_id)

    def list_jobs(self, cluster: str | None = None, *,
                  status: JobStatus | str | Iterable[JobStatus | str] | None = None,
                  limit: int | None = None) -> list[Job]:
        """Jobs of one cluster (or of all), newest first, optionally filtered by status."""
        query = select(Job)
        if cluster is not None:
            query = query.where(Job.cluster_name == cluster)
        if status is not None:
            query = query.where(Job.status.in_(_statuses(JobStatus, status)))  # type: ignore[attr-defined]
        query = query.order_by(Job.submitted_at.desc(), Job.cluster_name, Job.job_id.desc())  # type: ignore[attr-defined]
        if limit is not None:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.exec(query).all())


    # --- users and API tokens

    def ensure_user(self, name: str, *, is_admin: bool = False) -> User:
        with self._write() as conn:
            self._upsert(conn, User, {"name": name}, {}, {"is_admin": is_admin, "created_at": utcnow()})
            return self._fetch(User, name, conn=conn)

    def get_user(self, name: str) -> User | None:
        return self._fetch(User, name)

    def add_token(self, user: str, token_id: str, salt: str, digest: str, description: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(sa.insert(ApiToken.__table__).values(  # type: ignore[attr-defined]
                token_id=token_id, user_name=user, salt=salt, digest=digest, description=description,
                created_at=utcnow()))

    def authenticate_token(self, token: str) -> User | None:
        """The user a token belongs to, or None for an unknown, malformed or wrong token."""
        from styx import auth

        parts = auth.split_token(token)
        if parts is None:
            return None
        row = self._fetch(ApiToken, parts[0])
        if row is None or not auth.matches(parts[1], row.salt, row.digest):
            return None
        return self.get_user(row.user_name)

    # ======================================================================= git server
    # Repos, collaborators, SSH keys and push runs (tables at the end of the module).
    # Owned by the git server; appended as one section.

    def create_user(self, name: str, *, is_admin: bool = False) -> "User":
        """Insert a new user; raises ``AlreadyExists`` if the name is taken."""
        try:
            with self._write() as conn:
                conn.execute(sa.insert(User.__table__).values(  # type: ignore[attr-defined]
                    name=name, is_admin=is_admin, created_at=utcnow()))
                return self._fetch(User, name, conn=conn)
        except IntegrityError:
            raise AlreadyExists(f"user {name!r} already exists") from None

    def list_users(self) -> list["User"]:
        with self.session() as session:
            return list(session.exec(select(User).order_by(User.name)).all())

    def create_repo(self, owner: str, name: str, *, private: bool = False,
                    default_branch: str = "main", description: str | None = None) -> "Repo":
        """Insert the repository row; ``AlreadyExists`` if taken, ``UserNotFound`` without owner."""
        if self.get_user(owner) is None:
            raise UserNotFound(owner)
        try:
            with self._write() as conn:
                conn.execute(sa.insert(Repo.__table__).values(  # type: ignore[attr-defined]
                    owner=owner, name=name, private=private, default_branch=default_branch,
                    description=description, created_at=utcnow()))
            return self.get_repo(owner, name)  # type: ignore[return-value]
        except IntegrityError:
            if self.get_user(owner) is None:
                raise UserNotFound(owner) from None
            raise AlreadyExists(f"repository {owner}/{name} already exists") from None

    def get_repo(self, owner: str, name: str) -> "Repo | None":
        with self.session() as session:
            return session.exec(select(Repo).where(Repo.owner == owner, Repo.name == name)).first()

    def get_repo_by_id(self, repo_id: int) -> "Repo | None":
        return self._fetch(Repo, repo_id)

    def list_repos(self, owner: str | None = None) -> list["Repo"]:
        query = select(Repo).order_by(Repo.owner, Repo.name)
        if owner is not None:
            query = query.where(Repo.owner == owner)
        with self.session() as session:
            return list(session.exec(query).all())

    def update_repo(self, repo_id: int, **fields: Any) -> "Repo | None":
        allowed = {"private", "default_branch", "description"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"Repo has no writable field(s) {', '.join(sorted(unknown))}")
        if fields:
            with self._write() as conn:
                conn.execute(sa.update(Repo.__table__).where(  # type: ignore[attr-defined]
                    Repo.__table__.c.id == repo_id).values(**fields))  # type: ignore[attr-defined]
        return self.get_repo_by_id(repo_id)

    def delete_repo(self, repo_id: int) -> bool:
        """Remove the row with its collaborators and push runs; False if it was not there."""
        table: sa.Table = Repo.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            for child in (RepoCollaborator.__table__, PushRun.__table__):  # type: ignore[attr-defined]
                conn.execute(sa.delete(child).where(child.c.repo_id == repo_id))
            return conn.execute(sa.delete(table).where(table.c.id == repo_id)).rowcount > 0

    def set_collaborator(self, repo_id: int, user: str, level: "RepoLevel | str") -> "RepoCollaborator":
        if self.get_user(user) is None:
            raise UserNotFound(user)
        with self._write() as conn:
            self._upsert(conn, RepoCollaborator, {"repo_id": repo_id, "user_name": user},
                         {"level": RepoLevel(level)}, {"created_at": utcnow()})
            return self._fetch(RepoCollaborator, repo_id, user, conn=conn)

    def get_collaborator(self, repo_id: int, user: str) -> "RepoCollaborator | None":
        return self._fetch(RepoCollaborator, repo_id, user)

    def list_collaborators(self, repo_id: int) -> list["RepoCollaborator"]:
        query = select(RepoCollaborator).where(RepoCollaborator.repo_id == repo_id).order_by(
            RepoCollaborator.user_name)
        with self.session() as session:
            return list(session.exec(query).all())

    def collaborator_levels(self, user: str) -> dict[int, "RepoLevel"]:
        """``{repo_id: level}`` for every repository ``user`` collaborates on."""
        query = select(RepoCollaborator).where(RepoCollaborator.user_name == user)
        with self.session() as session:
            return {c.repo_id: c.level for c in session.exec(query).all()}

    def remove_collaborator(self, repo_id: int, user: str) -> bool:
        table: sa.Table = RepoCollaborator.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.repo_id == repo_id,
                                                       table.c.user_name == user)).rowcount > 0

    def add_ssh_key(self, user: str, fingerprint: str, public_key: str,
                    title: str | None = None) -> "SshKey":
        """Register a public key; ``AlreadyExists`` if any user has it already."""
        if self.get_user(user) is None:
            raise UserNotFound(user)
        try:
            with self._write() as conn:
                conn.execute(sa.insert(SshKey.__table__).values(  # type: ignore[attr-defined]
                    user_name=user, fingerprint=fingerprint, public_key=public_key, title=title,
                    created_at=utcnow()))
        except IntegrityError:
            raise AlreadyExists(f"the key {fingerprint} is already registered") from None
        return self.get_ssh_key(fingerprint)  # type: ignore[return-value]

    def get_ssh_key(self, fingerprint: str) -> "SshKey | None":
        with self.session() as session:
            return session.exec(select(SshKey).where(SshKey.fingerprint == fingerprint)).first()

    def list_ssh_keys(self, user: str) -> list["SshKey"]:
        with self.session() as session:
            return list(session.exec(select(SshKey).where(SshKey.user_name == user).order_by(SshKey.id)).all())

    def delete_ssh_key(self, user: str, key_id: int) -> bool:
        table: sa.Table = SshKey.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.id == key_id,
                                                       table.c.user_name == user)).rowcount > 0

    def user_for_key(self, fingerprint: str) -> "User | None":
        """The user a (signature-verified) public key belongs to, or None."""
        key = self.get_ssh_key(fingerprint)
        return None if key is None else self.get_user(key.user_name)

    def upsert_push_run(self, repo_id: int, sha: str, **fields: Any) -> "PushRun":
        """Create or update the run of commit ``sha``; a finished run is never changed again."""
        now = utcnow()
        values = dict(fields)
        unknown = set(values) - (set(PushRun.__table__.columns.keys()) - {"id", "repo_id", "sha"})  # type: ignore[attr-defined]
        if unknown:
            raise TypeError(f"PushRun has no writable field(s) {', '.join(sorted(unknown))}")
        if values.get("status") is not None:
            values["status"] = PushRunStatus(values["status"])
        if "jobs" in values:
            values["jobs"] = _json_text(values["jobs"])
        values.setdefault("updated_at", now)
        table: sa.Table = PushRun.__table__  # type: ignore[attr-defined]
        where = table.c.status.notin_(sorted(PUSH_TERMINAL)) if "status" in values else None
        with self._write() as conn:
            self._upsert(conn, PushRun, {"repo_id": repo_id, "sha": sha}, values,
                         {"created_at": now, "status": PushRunStatus.PENDING, "jobs": "[]",
                          "ref": "", "pusher": "", "workflow_id": ""}, where)
        return self.get_push_run(repo_id, sha)  # type: ignore[return-value]

    def get_push_run(self, repo_id: int, sha: str) -> "PushRun | None":
        with self.session() as session:
            return session.exec(select(PushRun).where(PushRun.repo_id == repo_id, PushRun.sha == sha)).first()

    def find_push_runs(self, repo_id: int, sha_prefix: str) -> list["PushRun"]:
        query = select(PushRun).where(PushRun.repo_id == repo_id, PushRun.sha.startswith(sha_prefix))  # type: ignore[attr-defined]
        with self.session() as session:
            return list(session.exec(query.limit(2)).all())

    def list_push_runs(self, repo_id: int, limit: int | None = 50) -> list["PushRun"]:
        query = select(PushRun).where(PushRun.repo_id == repo_id).order_by(
            PushRun.created_at.desc(), PushRun.id.desc())  # type: ignore[attr-defined,union-attr]
        if limit is not None:
            query = query.limit(limit)
        with self.session() as session:
            return list(session.exec(query).all())

#: How far along each job status is; a terminal status is the end.
_JOB_STATUS_RANK = {JobStatus.PENDING: 0, JobStatus.SETTING_UP: 1, JobStatus.RUNNING: 2}


def _status_rank(column: Any) -> sa.ColumnElement[int]:
    return sa.case({s.value: rank for s, rank in _JOB_STATUS_RANK.items()}, value=column, else_=3)


def _stamp_transition(values: dict[str, Any]) -> list[str]:
    """Add the timestamp a status change implies (when not given); returns the fields added."""
    status: JobStatus = values["status"]
    field = ("started_at" if status is JobStatus.RUNNING
             else "ended_at" if status.is_terminal else None)
    if field is None or field in values:
        return []
    values[field] = utcnow()
    return [field]


def _statuses(enum_cls: type[enum.Enum], status: Any) -> list[Any]:
    if isinstance(status, (str, enum.Enum)):
        status = [status]
    return [enum_cls(s) for s in status]


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
                value = _json_text(value)
            elif name in _TIME_FIELDS:
                value = _aware_utc(value)
        values[name] = value
    return values


# =========================================================================== git server
# Tables of the git server (migration 0004_git): repositories, collaborators, SSH keys and
# push-triggered runs. Appended as one section; the methods are at the end of Database.


class AlreadyExists(ValueError):
    """A user, repository or key with that name or fingerprint exists already."""


class UserNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"user {name!r} does not exist")
        self.name = name


class RepoLevel(enum.StrEnum):
    """What a collaborator may do (``none`` is the absence of a row)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class Repo(SQLModel, table=True):
    """A repository; it lives on disk at ``STYX_HOME/git/<owner>/<name>.git``."""

    __tablename__ = "repos"
    __table_args__ = (sa.UniqueConstraint("owner", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64)
    name: str = Field(max_length=100)
    private: bool = False
    default_branch: str = Field(default="main", max_length=255)
    description: str | None = Field(default=None, max_length=500)
    created_at: datetime = _timestamp(default_factory=utcnow)


class RepoCollaborator(SQLModel, table=True):
    __tablename__ = "repo_collaborators"
    __table_args__ = (sa.PrimaryKeyConstraint("repo_id", "user_name"),)

    repo_id: int = Field(foreign_key="repos.id", ondelete="CASCADE")
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64)
    level: RepoLevel = Field(default=RepoLevel.READ, sa_type=_status_type(RepoLevel))
    created_at: datetime = _timestamp(default_factory=utcnow)


class SshKey(SQLModel, table=True):
    """A user's SSH public key; ``fingerprint`` is OpenSSH's ``SHA256:...``."""

    __tablename__ = "ssh_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64, index=True)
    fingerprint: str = Field(max_length=128, unique=True)
    public_key: str = Field(sa_type=sa.Text)
    title: str | None = Field(default=None, max_length=255)
    created_at: datetime = _timestamp(default_factory=utcnow)


class PushRun(SQLModel, table=True):
    """The run a pushed commit triggered (one per repository and commit)."""

    __tablename__ = "push_runs"
    __table_args__ = (sa.UniqueConstraint("repo_id", "sha"),)

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repos.id", ondelete="CASCADE")
    sha: str = Field(max_length=64)
    ref: str = Field(default="", max_length=255)
    pusher: str = Field(default="", max_length=64)
    status: PushRunStatus = Field(default=PushRunStatus.PENDING, sa_type=_status_type(PushRunStatus))
    message: str | None = Field(default=None, sa_type=sa.Text)
    workflow_id: str = Field(default="", max_length=255)
    #: JSON text: one entry per job, ``{"name", "cluster", "job_id", "managed", "status"}``.
    jobs: str = Field(default="[]", sa_type=sa.Text)
    created_at: datetime = _timestamp(default_factory=utcnow)
    updated_at: datetime = _timestamp(default_factory=utcnow)
