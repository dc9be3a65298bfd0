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
    db.clusters.upsert("dev", provider="local", status="INIT", num_nodes=2)
    db.clusters.upsert_job("dev", 1, name="train", status="PENDING")
    db.clusters.set_job_status("dev", 1, "RUNNING")

The package:

- ``engine``: URLs, the engine cache, SQLite setup, column types, ``utcnow``.
- ``migrator``: Alembic (``styx/migrations``) under a migration lock.
- ``models``: every table and the errors the stores raise.
- ``base``: what the stores share (write transactions, upserts, field checks).
- ``clusters``: ``ClusterStore`` (``db.clusters``): clusters, nodes, jobs, shares.
- ``users``: ``UserStore`` (``db.users``): users (and disabling them), API tokens (expiry,
  revocation), SSH keys.
- ``repos``: ``RepoDb`` (``db.repos``): repositories, collaborators, push runs.
- ``uploads``: ``UploadStore`` (``db.uploads``): archives clients sent for workdirs and file mounts.
- ``joblogs``: ``JobLogStore`` (``db.joblogs``): jobs' logs, written by any worker, read by any API.
- ``services``: ``ServiceStore`` (``db.services``): services, versions, replicas, and what the
  load balancers read and report.
- ``uptime``: ``UptimeStore`` (``db.uptime``): every node's intervals up, for the cost report.
- ``jobspecs``: ``JobSpecStore`` (``db.jobspecs``): jobs' bodies, and the PENDING jobs behind
  a cluster workflow's window.
- ``managed``: ``ManagedJobStore`` (``db.managed``): managed jobs, their tasks and attempts.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from styx.db.clusters import ClusterStore
from styx.db.joblogs import JobLogStore, LogMoved, LogStream
from styx.db.jobspecs import JobSpecStore
from styx.db.managed import ManagedJobStore
from styx.db.engine import dispose_engine, get_engine, normalize_url, utcnow
from styx.db.migrator import current_revision, head_revision, migrate
from styx.db.models import (
    AlreadyExists,
    ApiToken,
    Cluster,
    ClusterBase,
    ClusterNotFound,
    ClusterShare,
    Job,
    JobBase,
    JobNotFound,
    LimitReached,
    ManagedJob,
    ManagedJobAttempt,
    ManagedJobTask,
    Node,
    NodeBase,
    PushRun,
    Repo,
    RepoCollaborator,
    RepoLevel,
    Service,
    ServiceReplica,
    ServiceVersion,
    SshKey,
    Upload,
    User,
    UserNotFound,
)
from styx.db.repos import RepoDb
from styx.db.services import PortsExhausted, Route, ServiceStore
from styx.db.uploads import UploadGone, UploadQuotaFull, UploadStore
from styx.db.users import TokenCheck, UserStore
from styx.db.uptime import UptimeStore

__all__ = [
    "AlreadyExists",
    "ApiToken",
    "Cluster",
    "ClusterBase",
    "ClusterNotFound",
    "ClusterShare",
    "ClusterStore",
    "Database",
    "Job",
    "JobBase",
    "JobLogStore",
    "JobSpecStore",
    "JobNotFound",
    "LimitReached",
    "LogMoved",
    "LogStream",
    "ManagedJob",
    "ManagedJobAttempt",
    "ManagedJobStore",
    "ManagedJobTask",
    "Node",
    "NodeBase",
    "PushRun",
    "Repo",
    "RepoCollaborator",
    "RepoDb",
    "RepoLevel",
    "PortsExhausted",
    "Route",
    "Service",
    "ServiceReplica",
    "ServiceStore",
    "ServiceVersion",
    "SshKey",
    "TokenCheck",
    "Upload",
    "UploadGone",
    "UploadQuotaFull",
    "UploadStore",
    "UptimeStore",
    "User",
    "UserNotFound",
    "UserStore",
    "current_revision",
    "dispose_engine",
    "get_engine",
    "head_revision",
    "migrate",
    "normalize_url",
    "utcnow",
]


class Database:
    """The read model behind one URL: one store per domain, sharing one engine.

    Rows come back as detached table objects (``Cluster``, ``Job``, ``Repo`` ...), readable
    after the session closed; ``styx.contracts.rest.ClusterInfo.model_validate(row)`` turns
    one into what the API returns.
    """

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        else:
            self.engine = get_engine(url_or_engine)
        self.clusters = ClusterStore(self.engine)
        self.users = UserStore(self.engine)
        self.repos = RepoDb(self.engine)
        self.uploads = UploadStore(self.engine)
        self.joblogs = JobLogStore(self.engine)
        self.services = ServiceStore(self.engine)
        self.uptime = UptimeStore(self.engine)
        self.jobspecs = JobSpecStore(self.engine)
        self.managed = ManagedJobStore(self.engine)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    def session(self) -> Session:
        """A session for ad-hoc reads (the API's ``SessionDep``); rows outlive its commit."""
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        """Raise if the database does not answer ``SELECT 1``."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar_one()

    def migrate(self, revision: str = "head") -> None:
        migrate(self.engine.url.render_as_string(hide_password=False), revision)
