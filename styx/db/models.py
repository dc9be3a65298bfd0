"""The tables of the state database, and the errors its stores raise.

- Clusters: ``Cluster`` (one row per cluster name), ``Node`` (one per cluster and rank),
  ``Job`` (one per cluster and job id). ``ClusterBase``/``NodeBase``/``JobBase`` hold the
  columns a caller may write; the public shapes are ``styx.contracts.rest.ClusterInfo``,
  ``NodeInfo`` and ``JobInfo``, built from rows with ``model_validate``.
- Users: ``User`` (``disabled`` ones are refused everywhere), ``ApiToken`` (a salted hash,
  see ``styx.auth``, with an optional ``expires_at``), ``SshKey``.
- Owners (migration 0005_owners): ``Cluster.owner`` (NULL: the admins'), ``ClusterShare``.
- The git server (migration 0004_git): ``Repo``, ``RepoCollaborator`` (with a ``RepoLevel``),
  ``PushRun``.
- Per-user limits (migration 0010_user_limits): ``User.max_clusters``, ``User.max_nodes``.
- Cost and autostop (migration 0014_node_uptime): ``Cluster.instance_type``/``use_spot``/
  ``hourly_price``/``autostop_at``/``stopped_by``/``launch_id``, and ``NodeUptime`` (one row
  per node and interval up; ``styx.db.uptime``).
- Read indexes (migration 0012_read_indexes): clusters by status, jobs by cluster and status
  and by cluster and submission time.
- Uploads (migration 0006_uploads): ``Upload``, ``UploadChunk`` (its bytes, 4 MB a row),
  ``UploadOwner`` (who may name it in a task).
- Job logs (migration 0008_job_logs): ``JobLog`` (one node's log of one phase, its size),
  ``JobLogChunk`` (its bytes, 256 KB a row at most).
- Services (migration 0015_services): ``Service``, ``ServiceVersion`` (each version's task),
  ``ServiceReplica``, ``ServiceRequestCount`` (what the load balancers count),
  ``ServiceLbLog``.
- Job specs (migration 0011_job_specs): ``JobSpecRow`` (a job's body: task, env, sealed
  secrets), and ``Job.spec_id`` pointing at it; workflows carry the id only.
- Managed jobs (migration 0013_managed_jobs): ``ManagedJob``, ``ManagedJobTask`` (a task's sealed
  body), ``ManagedJobAttempt`` (one cluster launched for a task).
- Errors: ``AlreadyExists``, ``UserNotFound``, ``ClusterNotFound``, ``JobNotFound``,
  ``LimitReached``.

Statuses are the contracts' enums (``ClusterStatus``, ``JobStatus``, ``PushRunStatus``),
stored as VARCHAR. Dict and list columns hold JSON text.
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from styx.contracts.clusters import ClusterStatus
from styx.contracts.jobs import JobStatus
from styx.contracts.pushes import PushRunStatus
from styx.db.engine import status_type, timestamp, utcnow

# Named constraints, so that a later migration can drop or alter them by name (on SQLite
# batch mode needs the name), and the names are the same on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Every table below; what Alembic compares migrations against.
metadata = SQLModel.metadata


# --------------------------------------------------------------------------- errors


class AlreadyExists(ValueError):
    """A user, repository or key with that name or fingerprint exists already."""


class LimitReached(ValueError):
    """A bounded collection (a user's tokens, a cluster's shares) is full; the message says which."""


class UserNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"user {name!r} does not exist")
        self.name = name


class ClusterNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"cluster {name!r} is not in the database")
        self.name = name


class JobNotFound(LookupError):
    def __init__(self, cluster: str, job_id: int) -> None:
        super().__init__(f"job {job_id} of cluster {cluster!r} is not in the database")
        self.cluster = cluster
        self.job_id = job_id


# --------------------------------------------------------------------------- clusters, nodes, jobs


class ClusterBase(SQLModel):
    name: str = Field(primary_key=True, max_length=255)
    provider: str = Field(default="local", max_length=32)  # local | aws | ssh
    status: ClusterStatus = Field(default=ClusterStatus.INIT, sa_type=status_type(ClusterStatus))
    num_nodes: int = 1
    #: JSON text of the requested resources (the task's ``resources:`` section).
    resources: str = Field(default="{}", sa_type=sa.Text)
    region: str | None = Field(default=None, max_length=64)
    zone: str | None = Field(default=None, max_length=64)
    autostop_minutes: int | None = None
    autostop_down: bool = False
    workflow_id: str = Field(default="", max_length=255)
    status_message: str | None = Field(default=None, sa_type=sa.Text)
    #: Who launched it; NULL (rows from before owners existed) means the admins'.
    owner: str | None = Field(default=None, max_length=64, index=True)
    #: What its nodes are and cost (migration 0014_node_uptime): the instance type (AWS), spot
    #: or not, and USD per node-hour (0 for local nodes; an SSH pool's ``hourly_price``).
    instance_type: str | None = Field(default=None, max_length=64)
    use_spot: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    hourly_price: float | None = None
    #: When autostop fires if nothing runs meanwhile (NULL: no autostop, or jobs run or wait).
    autostop_at: datetime | None = timestamp(default=None, nullable=True)
    #: Who stopped (or took down) the cluster: ``user``, ``autostop`` or ``failsafe``.
    stopped_by: str | None = Field(default=None, max_length=16)
    #: This incarnation of the name (its workflow's first run id): what ``node_uptime`` rows
    #: are grouped by, so that a name launched again is billed apart.
    launch_id: str | None = Field(default=None, max_length=64)


class Cluster(ClusterBase, table=True):
    __tablename__ = "clusters"
    # The listing keeps to live clusters while TERMINATED rows pile up (0012_read_indexes).
    __table_args__ = (sa.Index("ix_clusters_status", "status"),)

    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)
    launched_at: datetime | None = timestamp(default=None, nullable=True)


class NodeUptime(SQLModel, table=True):
    """One node's time up, from launch or start to stop or down (``ended_at`` NULL: up now).
    Not tied to the ``clusters`` row: a cluster that is gone stays in the cost report."""

    __tablename__ = "node_uptime"

    id: int | None = Field(default=None, primary_key=True)
    cluster_name: str = Field(max_length=255, index=True)
    launch_id: str = Field(default="", max_length=64)
    owner: str | None = Field(default=None, max_length=64, index=True)
    rank: int = 0
    provider: str = Field(default="local", max_length=32)
    instance_type: str | None = Field(default=None, max_length=64)
    region: str | None = Field(default=None, max_length=64)
    zone: str | None = Field(default=None, max_length=64)
    use_spot: bool = False
    #: USD per hour of this node, fixed when the interval opened.
    hourly_price: float = 0.0
    started_at: datetime = timestamp()
    ended_at: datetime | None = timestamp(default=None, nullable=True, index=True)


class ClusterShare(SQLModel, table=True):
    """Another user who may use a cluster (see ``styx.services.access``)."""

    __tablename__ = "cluster_shares"
    __table_args__ = (sa.PrimaryKeyConstraint("cluster_name", "user_name"),)

    cluster_name: str = Field(foreign_key="clusters.name", ondelete="CASCADE", max_length=255)
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64, index=True)
    created_at: datetime = timestamp(default_factory=utcnow)


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
    updated_at: datetime = timestamp(default_factory=utcnow)


class JobBase(SQLModel):
    cluster_name: str = Field(primary_key=True, foreign_key="clusters.name",
                              ondelete="CASCADE", max_length=255)
    job_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    name: str | None = Field(default=None, max_length=255)
    status: JobStatus = Field(default=JobStatus.PENDING, sa_type=status_type(JobStatus), index=True)
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
    #: The job's body (``JobSpecRow``); None for a job queued with its task inline.
    spec_id: str | None = Field(default=None, max_length=64)


class Job(JobBase, table=True):
    __tablename__ = "jobs"
    # A page of clusters' unfinished jobs counted in one grouped query, and a cluster's queue
    # newest first in index order (0012_read_indexes).
    __table_args__ = (
        sa.Index("ix_jobs_cluster_name_status", "cluster_name", "status"),
        sa.Index("ix_jobs_cluster_name_submitted_at", "cluster_name", "submitted_at"),
        # Whether a job spec's upload pins still hold (0018_upload_pins).
        sa.Index("ix_jobs_spec_id", "spec_id"),
    )

    submitted_at: datetime = timestamp(default_factory=utcnow)
    started_at: datetime | None = timestamp(default=None, nullable=True)
    ended_at: datetime | None = timestamp(default=None, nullable=True)


class JobSpecRow(SQLModel, table=True):
    """A job's body (``styx.contracts.jobs.JobSpec`` as JSON text), stored when the job is
    submitted and read by its job workflow. Kept apart from ``jobs``: it is written before the
    cluster workflow gives the job its id."""

    __tablename__ = "job_specs"

    spec_id: str = Field(primary_key=True, max_length=64)
    cluster_name: str = Field(max_length=255, index=True)
    body: str = Field(sa_type=sa.Text)
    created_at: datetime = timestamp(default_factory=utcnow)


# --------------------------------------------------------------------------- users


class User(SQLModel, table=True):
    __tablename__ = "users"

    name: str = Field(primary_key=True, max_length=64)
    is_admin: bool = False
    created_at: datetime = timestamp(default_factory=utcnow)
    #: A disabled user's tokens and SSH keys are refused (by ``styx.db.users.UserStore``).
    disabled: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    #: Live clusters / nodes over them this user may hold (migration 0010_user_limits); None:
    #: the deployment's default (``Settings.default_max_clusters`` / ``default_max_nodes``).
    max_clusters: int | None = None
    max_nodes: int | None = None


class ApiToken(SQLModel, table=True):
    """An API token: only its salted hash is kept (see ``styx.auth``)."""

    __tablename__ = "api_tokens"

    token_id: str = Field(primary_key=True, max_length=32)
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64, index=True)
    salt: str = Field(max_length=64)
    digest: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=255)
    created_at: datetime = timestamp(default_factory=utcnow)
    #: None: never expires.
    expires_at: datetime | None = timestamp(default=None, nullable=True)
    #: Refreshed at most once a minute (``styx.db.users.LAST_USED_RESOLUTION``).
    last_used_at: datetime | None = timestamp(default=None, nullable=True)


class SshKey(SQLModel, table=True):
    """A user's SSH public key; ``fingerprint`` is OpenSSH's ``SHA256:...``."""

    __tablename__ = "ssh_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64, index=True)
    fingerprint: str = Field(max_length=128, unique=True)
    public_key: str = Field(sa_type=sa.Text)
    title: str | None = Field(default=None, max_length=255)
    created_at: datetime = timestamp(default_factory=utcnow)


# --------------------------------------------------------------------------- git server


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
    created_at: datetime = timestamp(default_factory=utcnow)


class RepoCollaborator(SQLModel, table=True):
    __tablename__ = "repo_collaborators"
    __table_args__ = (sa.PrimaryKeyConstraint("repo_id", "user_name"),)

    repo_id: int = Field(foreign_key="repos.id", ondelete="CASCADE")
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64)
    level: RepoLevel = Field(default=RepoLevel.READ, sa_type=status_type(RepoLevel))
    created_at: datetime = timestamp(default_factory=utcnow)


class PushRun(SQLModel, table=True):
    """The run a pushed commit triggered (one per repository and commit)."""

    __tablename__ = "push_runs"
    __table_args__ = (sa.UniqueConstraint("repo_id", "sha"),)

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repos.id", ondelete="CASCADE")
    sha: str = Field(max_length=64)
    ref: str = Field(default="", max_length=255)
    pusher: str = Field(default="", max_length=64)
    status: PushRunStatus = Field(default=PushRunStatus.PENDING, sa_type=status_type(PushRunStatus))
    message: str | None = Field(default=None, sa_type=sa.Text)
    workflow_id: str = Field(default="", max_length=255)
    #: JSON text: one entry per job, ``{"name", "cluster", "job_id", "managed", "status"}``.
    jobs: str = Field(default="[]", sa_type=sa.Text)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)


class PushIntent(SQLModel, table=True):
    """A ref update that pre-receive accepted, kept until the run of its commit has started.

    post-receive deletes it once the run is started (or there is nothing to run). One left
    behind — the git server died between the ref update and post-receive, or Temporal was
    down — is found by the git server's sweeper, which starts the run if the ref did move.
    """

    __tablename__ = "push_intents"

    id: int | None = Field(default=None, primary_key=True)
    repo_id: int = Field(foreign_key="repos.id", ondelete="CASCADE", index=True)
    ref: str = Field(max_length=255)
    old: str = Field(max_length=64)
    new: str = Field(max_length=64)
    pusher: str = Field(default="", max_length=64)
    created_at: datetime = timestamp(default_factory=utcnow)


# --------------------------------------------------------------------------- uploads


class Upload(SQLModel, table=True):
    """An archive a client sent (``styx.contracts.uploads``), named by its sha256. Its bytes
    are the rows of ``UploadChunk``; who may use it, the rows of ``UploadOwner``."""

    __tablename__ = "uploads"

    sha256: str = Field(primary_key=True, max_length=64)
    size: int = Field(sa_type=sa.BigInteger)
    chunks: int = 0
    created_at: datetime = timestamp(default_factory=utcnow)


class UploadChunk(SQLModel, table=True):
    """Bytes ``seq * UPLOAD_CHUNK_BYTES`` onwards of an upload (at most 4 MB a row)."""

    __tablename__ = "upload_chunks"
    __table_args__ = (sa.PrimaryKeyConstraint("sha256", "seq"),)

    sha256: str = Field(foreign_key="uploads.sha256", ondelete="CASCADE", max_length=64)
    seq: int = Field(sa_column_kwargs={"autoincrement": False})
    data: bytes = Field(sa_type=sa.LargeBinary)


class UploadOwner(SQLModel, table=True):
    """A user who sent these bytes and may name them in a task; ``last_used_at`` orders the
    user's uploads for eviction when over the quota."""

    __tablename__ = "upload_owners"
    __table_args__ = (sa.PrimaryKeyConstraint("sha256", "user_name"),)

    sha256: str = Field(foreign_key="uploads.sha256", ondelete="CASCADE", max_length=64)
    user_name: str = Field(foreign_key="users.name", ondelete="CASCADE", max_length=64, index=True)
    created_at: datetime = timestamp(default_factory=utcnow)
    last_used_at: datetime = timestamp(default_factory=utcnow)


class UploadPin(SQLModel, table=True):
    """Live work that names an upload (migration 0018_upload_pins): the quota's eviction skips
    an upload while one of its holders is live. ``holder_kind`` is ``job`` (``holder``: a job
    spec's id; live while its job is not finished, or, before the cluster has taken it, for
    ``PIN_SUBMIT_GRACE``), ``service`` (a service's name; live while it is not shutting
    down) or ``managed`` (a managed job's id; live until it ends)."""

    __tablename__ = "upload_pins"
    __table_args__ = (sa.PrimaryKeyConstraint("sha256", "holder_kind", "holder"),
                      sa.Index("ix_upload_pins_holder", "holder_kind", "holder"))

    sha256: str = Field(max_length=64)
    holder_kind: str = Field(max_length=16)
    holder: str = Field(max_length=255)
    created_at: datetime = timestamp(default_factory=utcnow)


# --------------------------------------------------------------------------- job logs


class JobLog(SQLModel, table=True):
    """One node's log of one phase of a job: ``size`` bytes are stored, in ``JobLogChunk``
    rows that follow each other without gap or overlap. ``size`` is what the run activity
    resumes from, on whichever worker; it only moves by compare-and-set (``db.joblogs``)."""

    __tablename__ = "job_logs"
    __table_args__ = (sa.PrimaryKeyConstraint("cluster_name", "job_id", "phase", "rank"),)

    cluster_name: str = Field(max_length=255)
    job_id: int = Field(sa_column_kwargs={"autoincrement": False})
    phase: str = Field(max_length=16)
    rank: int = Field(sa_column_kwargs={"autoincrement": False})
    size: int = Field(default=0, sa_type=sa.BigInteger)


class JobLogChunk(SQLModel, table=True):
    """Bytes ``offset`` to ``offset + len(data)`` of a ``JobLog`` (at most 256 KB a row)."""

    __tablename__ = "job_log_chunks"
    __table_args__ = (sa.PrimaryKeyConstraint("cluster_name", "job_id", "phase", "rank", "offset"),)

    cluster_name: str = Field(max_length=255)
    job_id: int = Field(sa_column_kwargs={"autoincrement": False})
    phase: str = Field(max_length=16)
    rank: int = Field(sa_column_kwargs={"autoincrement": False})
    offset: int = Field(sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    data: bytes = Field(sa_type=sa.LargeBinary)


# --------------------------------------------------------------------------- services (styx serve)


class Service(SQLModel, table=True):
    """A service (``styx serve up``): the read model of its ``ServiceWorkflow``. Statuses are
    ``styx.contracts.services.ServiceStatus`` values; ``lb_port`` is where every load
    balancer listens for it (unique: two services never share one)."""

    __tablename__ = "services"

    name: str = Field(primary_key=True, max_length=64)
    owner: str | None = Field(default=None, max_length=64, index=True)
    status: str = Field(default="STARTING", max_length=32)
    version: int = 1
    target_version: int = 1
    target_replicas: int = 0
    lb_port: int = Field(unique=True)
    lb_policy: str = Field(default="round_robin", max_length=32)
    #: JSON text: the target version's ``ServiceSpec``.
    spec: str = Field(default="{}", sa_type=sa.Text)
    message: str | None = Field(default=None, sa_type=sa.Text)
    qps: float = 0.0
    workflow_id: str = Field(default="", max_length=255)
    created_at: datetime = timestamp(default_factory=utcnow)
    updated_at: datetime = timestamp(default_factory=utcnow)


class ServiceVersion(SQLModel, table=True):
    """One version of a service's task (``serve up`` is 1, each ``serve update`` the next):
    the task without its secrets, which are sealed apart (``styx.secrets``)."""

    __tablename__ = "service_versions"
    __table_args__ = (sa.PrimaryKeyConstraint("service_name", "version"),)

    service_name: str = Field(max_length=64)
    version: int = Field(sa_column_kwargs={"autoincrement": False})
    task: str = Field(sa_type=sa.Text)
    sealed_secrets: str | None = Field(default=None, sa_type=sa.Text)
    spec: str = Field(default="{}", sa_type=sa.Text)
    mode: str = Field(default="rolling", max_length=16)
    created_at: datetime = timestamp(default_factory=utcnow)


class ServiceReplica(SQLModel, table=True):
    """A replica as the service workflow last recorded it; the load balancers send requests
    to the READY ones' ``endpoint``."""

    __tablename__ = "service_replicas"
    __table_args__ = (sa.PrimaryKeyConstraint("service_name", "replica_id"),)

    service_name: str = Field(max_length=64)
    replica_id: int = Field(sa_column_kwargs={"autoincrement": False})
    cluster: str = Field(max_length=255)
    version: int = 1
    status: str = Field(default="PROVISIONING", max_length=32)
    endpoint: str = Field(default="", max_length=255)
    job_id: int | None = None
    message: str | None = Field(default=None, sa_type=sa.Text)
    launched_at: datetime | None = timestamp(default=None, nullable=True)
    updated_at: datetime = timestamp(default_factory=utcnow)


class ServiceRequestCount(SQLModel, table=True):
    """Requests one load balancer received for a service in one second (epoch ``second``);
    the autoscaler sums them over its window. Rows older than the longest window are pruned."""

    __tablename__ = "service_requests"
    __table_args__ = (sa.PrimaryKeyConstraint("service_name", "lb_id", "second"),)

    service_name: str = Field(max_length=64)
    lb_id: str = Field(max_length=64)
    second: int = Field(sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    count: int = 0


class ServiceLbLog(SQLModel, table=True):
    """A line of a load balancer's log about a service (``styx serve logs NAME
    --load-balancer``): retries, failures, replica set changes, a summary a minute. The
    latest ``LB_LOG_LINES`` per service are kept."""

    __tablename__ = "service_lb_logs"

    id: int | None = Field(default=None, primary_key=True)
    service_name: str = Field(max_length=64, index=True)
    lb_id: str = Field(max_length=64)
    at: datetime = timestamp(default_factory=utcnow)
    line: str = Field(sa_type=sa.Text)
# --------------------------------------------------------------------------- managed jobs


class ManagedJob(SQLModel, table=True):
    """A managed job (migration 0013_managed_jobs): one task, or a pipeline of tasks, each run
    on a cluster of its own and recovered on preemption (``styx.workflows.managed``). Its
    tasks' bodies are ``ManagedJobTask`` rows; its attempts (one per cluster launched)
    ``ManagedJobAttempt`` rows. ``status`` is a ``ManagedJobStatus``."""

    __tablename__ = "managed_jobs"
    __table_args__ = (sa.UniqueConstraint("owner", "idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    owner: str = Field(max_length=64, index=True)
    status: str = Field(default="PENDING", max_length=32, index=True)
    num_tasks: int = 1
    current_task: int = 0
    recoveries: int = 0
    #: The cluster of the attempt in flight; NULL once it is down.
    cluster: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, sa_type=sa.Text)
    workflow_id: str = Field(default="", max_length=255)
    #: The client's ``Idempotency-Key``: a retried submission returns this job.
    idempotency_key: str | None = Field(default=None, max_length=64)
    submitted_at: datetime = timestamp(default_factory=utcnow)
    started_at: datetime | None = timestamp(default=None, nullable=True)
    ended_at: datetime | None = timestamp(default=None, nullable=True)


class ManagedJobTask(SQLModel, table=True):
    """One task of a managed job: its body (sealed: it may hold secrets) and its progress."""

    __tablename__ = "managed_job_tasks"
    __table_args__ = (sa.PrimaryKeyConstraint("managed_id", "task_index"),)

    managed_id: int = Field(foreign_key="managed_jobs.id", ondelete="CASCADE",
                            sa_column_kwargs={"autoincrement": False})
    task_index: int = Field(sa_column_kwargs={"autoincrement": False})
    name: str | None = Field(default=None, max_length=255)
    #: The task's JSON, with its secrets, encrypted with ``styx.secrets.seal``.
    body: str = Field(sa_type=sa.Text)
    status: str = Field(default="PENDING", max_length=32)
    recoveries: int = 0
    restarts: int = 0
    cluster: str | None = Field(default=None, max_length=255)
    message: str | None = Field(default=None, sa_type=sa.Text)
    started_at: datetime | None = timestamp(default=None, nullable=True)
    ended_at: datetime | None = timestamp(default=None, nullable=True)


class ManagedJobAttempt(SQLModel, table=True):
    """One attempt of one task: the cluster launched for it and the job it ran there (whose
    log ``styx jobs logs`` shows, attempt after attempt)."""

    __tablename__ = "managed_job_attempts"
    __table_args__ = (sa.PrimaryKeyConstraint("managed_id", "task_index", "attempt"),)

    managed_id: int = Field(foreign_key="managed_jobs.id", ondelete="CASCADE",
                            sa_column_kwargs={"autoincrement": False})
    task_index: int = Field(sa_column_kwargs={"autoincrement": False})
    attempt: int = Field(sa_column_kwargs={"autoincrement": False})
    cluster: str = Field(max_length=255)
    job_id: int | None = None
    status: str = Field(default="STARTING", max_length=32)
    reason: str | None = Field(default=None, sa_type=sa.Text)
    region: str | None = Field(default=None, max_length=64)
    zone: str | None = Field(default=None, max_length=64)
    #: Catalog price of the attempt's nodes per hour in USD (estimated at launch; NULL: none).
    hourly_price: float | None = None
    started_at: datetime = timestamp(default_factory=utcnow)
    ended_at: datetime | None = timestamp(default=None, nullable=True)
