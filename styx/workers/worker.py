"""`styx worker`: hosts every Styx workflow and activity. Stateless; run as many as you like."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import timedelta
from pathlib import Path

import asyncssh
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from styx import db as styx_db
from styx.activities.metrics import WorkerMetrics
from styx.activities.ping import ping
from styx.activities.reconcile import ReconcileActivities
from styx.activities.providers import ProviderActivities
from styx.activities.git import GitActivities
from styx.activities.health import NodeHealthActivities
from styx.activities.serve import ServeActivities
from styx.activities.failsafe import FailsafeActivities
from styx.activities.managed import ManagedActivities
from styx.activities.ssh import SshActivities
from styx.activities.uploads import UploadCache
from styx.activities.state import StateActivities
from styx.config import Settings, keep_off_instance_metadata
from styx.contracts.providers import ReconcileInput
from styx.db import Database
from styx.providers.aws.provider import AwsProvider
from styx.providers.local.provider import LocalProvider
from styx.providers.registry import ProviderRegistry
from styx.providers.ssh.provider import SshPoolProvider
from styx.ssh import SshPool, ensure_client_key, public_key_line, read_client_key
from styx.temporal import connect, ensure_search_attributes
from styx.workers.metrics import ActivityMetrics, SdkMetrics, serving
from styx.workflows.check import CheckWorkflow
from styx.workflows.cluster import ClusterWorkflow
from styx.workflows.job import JobWorkflow
from styx.workflows.managed import ManagedJobWorkflow
from styx.workflows.ping import PingWorkflow
from styx.workflows.push import PushWorkflow
from styx.workflows.reconcile import ReconcileWorkflow
from styx.workflows.service import ServiceWorkflow
from styx.workflows.teardown import TeardownWorkflow

log = logging.getLogger("styx.worker")


def client_key_path(settings: Settings) -> Path:
    """Styx's own SSH key: what every node (local, AWS, SSH pool) lets in."""
    return settings.client_key_path


def client_key(settings: Settings) -> asyncssh.SSHKey:
    """The key at ``STYX_SSH_KEY`` (which must exist: every worker host has a copy of the one
    key), or the one in ``STYX_HOME/ssh``, made on first use (a single host)."""
    if settings.ssh_key_file is not None:
        return read_client_key(settings.ssh_key_file)
    return ensure_client_key(settings.client_key_path)


def build_providers(settings: Settings, key: asyncssh.SSHKey, aws: AwsProvider | None = None) -> ProviderRegistry:
    """Every provider this worker serves, by the name tasks use (``infra: <name>/…``).
    A new provider is one package under ``styx/providers/`` and one line here."""
    local = LocalProvider(settings.local_nodes_dir(), public_key_line(key), isolate=settings.local_isolation,
                          max_nodes=settings.local_max_nodes, deny_ports=settings.control_plane_ports())
    aws = aws or AwsProvider(
        deployment_id=settings.deployment_id(), public_key=public_key_line(key),
        # Emulated instances are reached through local nodes on 127.x (see providers/aws/loopback.py).
        loopback=local if os.environ.get("STYX_AWS_LOOPBACK_NODES") == "1" else None,
        use_private_ip=os.environ.get("STYX_AWS_USE_PRIVATE_IP") == "1",
        ssh_cidr=os.environ.get("STYX_AWS_SSH_CIDR", "0.0.0.0/0"),
        failsafe_grace_seconds=settings.failsafe_grace_seconds,
    )
    return ProviderRegistry({
        "local": local,
        "aws": aws,
        "ssh": SshPoolProvider(settings.home, key),
    })


def build_worker(client: Client, settings: Settings, pool: SshPool | None = None,
                 aws: AwsProvider | None = None, metrics: WorkerMetrics | None = None) -> Worker:
    """The worker with every workflow and activity registered (tests use this too, and may
    hand in an AWS provider whose boto3 client they instrument), counting into ``metrics``."""
    key = client_key(settings)
    pool = pool or SshPool(key)
    registry = build_providers(settings, key, aws)
    metrics = metrics or WorkerMetrics()
    providers = ProviderActivities(registry, metrics)
    db = Database(settings.db_url)
    state = StateActivities(db)
    git = GitActivities(settings, db)
    reconcile = ReconcileActivities(db, registry.lookup("aws"))
    ssh = SshActivities(settings.home, pool, db,
                        uploads=UploadCache(settings.home / "uploads", db, settings.max_unpacked_bytes),
                        node_lost_seconds=settings.node_lost_seconds)
    health = NodeHealthActivities(registry, pool)
    serve = ServeActivities(settings, db)
    failsafe = FailsafeActivities(registry, pool, settings.failsafe_grace_seconds)
    managed = ManagedActivities(settings, db, client)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[PingWorkflow, CheckWorkflow, ClusterWorkflow, JobWorkflow, PushWorkflow, ReconcileWorkflow,
                   TeardownWorkflow, ServiceWorkflow, ManagedJobWorkflow],
        activities=[
            ping,
            providers.plan, providers.provision, providers.start, providers.stop, providers.terminate,
            providers.check_providers,
            state.record_cluster, state.record_job, state.record_jobs, state.record_teardown,
            state.load_job_spec, state.job_spec_shape, state.pending_jobs, state.end_pending_jobs,
            state.cancel_pending_job,
            ssh.run_phase, ssh.kill_job, ssh.sync_files,
            health.probe_nodes,
            failsafe.push_failsafe,
            *git.all(),
            reconcile.find_orphans,
            *serve.all(),
            *managed.all(),
        ],
        # Let short activities finish on Ctrl-C; long ones heartbeat and are retried elsewhere.
        graceful_shutdown_timeout=timedelta(seconds=5),
        interceptors=[ActivityMetrics(metrics)],
        # The sandbox still forbids I/O, clocks and randomness in workflow code, but takes
        # already-imported modules as they are instead of re-importing them for every new
        # workflow run: that re-import was ~35 ms of every job's start (bench/exec_latency.py).
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()),
    )


async def run_worker(settings: Settings, wait_for_temporal: float = 60.0) -> None:
    settings.ensure_home()
    client_key(settings)  # a missing STYX_SSH_KEY stops the worker before anything else
    keep_off_instance_metadata()  # before the AWS provider builds any boto3 client
    styx_db.migrate(settings.db_url)
    # /metrics (STYX_WORKER_METRICS_PORT): the SDK's metrics, through this runtime, and Styx's.
    metrics = WorkerMetrics()
    sdk = SdkMetrics(metrics.registry) if settings.worker_metrics_port else None
    client = await connect(settings, wait_seconds=wait_for_temporal, runtime=sdk.runtime if sdk else None)
    # Before polling: a workflow that sets an unknown search attribute fails its task for ever.
    await ensure_search_attributes(client, settings.namespace)
    worker = build_worker(client, settings, metrics=metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker, serving(metrics.registry, settings.host, settings.worker_metrics_port, sdk):
        log.info("worker polling task queue %r on %s", settings.task_queue, settings.temporal_address)
        await _ensure_reconcile(client, settings)
        ready_file = os.environ.get("STYX_READY_FILE")
        if ready_file:
            Path(ready_file).write_text(str(os.getpid()))
        await stop.wait()
        log.info("worker shutting down")


async def _ensure_reconcile(client: Client, settings: Settings) -> None:
    """With ``STYX_RECONCILE_MINUTES``, keep one periodic orphan reconcile running for this
    deployment (every worker asks; the workflow id makes it one). ``STYX_TERMINATE_ORPHANS=1``
    lets it terminate what it finds."""
    minutes = os.environ.get("STYX_RECONCILE_MINUTES")
    if not minutes:
        return
    await client.start_workflow(
        ReconcileWorkflow.run,
        ReconcileInput(terminate=os.environ.get("STYX_TERMINATE_ORPHANS") == "1", interval_minutes=float(minutes)),
        id=f"reconcile/{settings.deployment_id()}", task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
