"""The service workflow's side effects (``ServeActivities``, built once in the worker).

- ``serve_launch_replica``: a replica is a cluster ``<service>-<n>`` running the version's
  task as a launched job — through the submission service (``styx.services.clusters``) with
  the same checks as ``styx launch`` (provider, the owner's limits, local-node policy), as
  the service's owner. The update id ``serve/<service>/<n>`` makes a retried launch return
  the first one's job. A refusal (a limit, a name taken) comes back as ``error``: the
  replica failed, the workflow decides what next.
- ``serve_observe``: one look at every replica: its cluster and job in the read model, then
  the readiness probe over HTTP (at the replica's first node, the service's port), all at
  once; and the request rate the load balancers reported over the window.
- ``serve_down_replica``: the cluster's ``down`` update (heartbeating while it runs); a
  cluster whose workflow is gone is taken down by ``TeardownWorkflow``.
- ``serve_record`` / ``serve_forget``: the service's rows (local activities).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from styx.activities.heartbeat import heartbeating
from styx.config import Settings
from styx.contracts.clusters import CLUSTER_GONE, ClusterDescription, ClusterStatus, NodeStatus, cluster_workflow_id
from styx.contracts.jobs import JobStatus
from styx.contracts.services import (
    KEPT_VERSIONS,
    DownReplicaInput,
    ForgetServiceInput,
    LaunchReplicaInput,
    LaunchReplicaResult,
    Observation,
    ObserveInput,
    ProbeTarget,
    ReplicaProbe,
    ServiceRecord,
)
from styx.db import Database
from styx.secrets import unseal
from styx.services import clusters as service
from styx.services import policy, quotas
from styx.services.launch import InvalidRequest, cluster_spec, submit_input
from styx.task import Task, TaskValidationError


def replica_job_name(service_name: str, replica_id: int) -> str:
    """The name a replica's job carries: how a launch tells its own cluster from another of
    the same name."""
    return f"serve-{service_name}-{replica_id}"


class ServeActivities:
    def __init__(self, settings: Settings, db: Database | None = None, client: Client | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.db_url)
        self._client = client
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None

    def all(self) -> list[Any]:
        return [self.launch_replica, self.observe, self.down_replica, self.record, self.forget]

    async def _temporal(self) -> Client:
        from styx.temporal import connect

        async with self._lock:
            if self._client is None:
                self._client = await connect(self.settings, wait_seconds=10)
            return self._client

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            # trust_env=False: a probe goes to the replica, never through a proxy from the environment.
            self._http = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                           limits=httpx.Limits(max_connections=64, max_keepalive_connections=0))
        return self._http

    # ------------------------------------------------------------------ launch

    @activity.defn(name="serve_launch_replica")
    async def launch_replica(self, inp: LaunchReplicaInput) -> LaunchReplicaResult:
        prepared = await asyncio.to_thread(self._prepare, inp)
        if isinstance(prepared, LaunchReplicaResult):
            return prepared
        spec, submit = prepared
        client = await self._temporal()
        try:
            result = await service.submit_job(client, self.settings.task_queue, inp.cluster, submit, launch=spec,
                                              update_id=f"serve/{inp.service}/{inp.replica_id}")
        except service.ClusterRefused as err:
            return LaunchReplicaResult(None, f"cluster {inp.cluster!r} refused the replica: {err.message}")
        except service.ClusterNotRunning:  # taken down between the look and the launch: try again
            raise ApplicationError(f"cluster {inp.cluster!r} went away while launching", type="Retry") from None
        return LaunchReplicaResult(result.job_id)

    def _prepare(self, inp: LaunchReplicaInput) -> Any:
        """The cluster spec and submission of the replica, or why it cannot be launched."""
        row = self.db.services.get_version(inp.service, inp.version)
        if row is None:
            return LaunchReplicaResult(None, f"version {inp.version} of service {inp.service!r} is gone")
        owner = self.db.users.get(inp.owner)
        if owner is None or owner.disabled:
            return LaunchReplicaResult(None, f"the service's owner {inp.owner!r} is disabled or gone")
        existing = self.db.clusters.get(inp.cluster)
        live = existing is not None and existing.status not in CLUSTER_GONE
        if live and not any(j.name == replica_job_name(inp.service, inp.replica_id)
                            for j in self.db.clusters.list_jobs(inp.cluster)):
            return LaunchReplicaResult(None, f"a cluster named {inp.cluster!r} exists already; replica "
                                             f"{inp.replica_id} was not launched on it")
        try:
            task = Task.from_dict(json.loads(row.task)).with_overrides(
                secrets=unseal(self.settings.home, row.sealed_secrets),
                envs={"STYX_SERVE_REPLICA_ID": str(inp.replica_id), "SKYPILOT_SERVE_REPLICA_ID": str(inp.replica_id),
                      "STYX_SERVICE_NAME": inp.service},
                name=replica_job_name(inp.service, inp.replica_id))
            spec = cluster_spec(task, inp.cluster, owner=inp.owner)
            quotas.check_provider_nodes(self.settings, spec)
            policy.check_local_jobs(self.settings, spec.provider, owner.is_admin)
            if not live:
                quotas.check_user_limits(self.db, self.settings, owner, spec)
        except (InvalidRequest, TaskValidationError, quotas.LimitExceeded, policy.NotAllowed) as err:
            return LaunchReplicaResult(None, f"replica {inp.replica_id} not launched: {err}")
        return spec, submit_input(task, inp.owner, self.settings.home, launch_spec=spec, run_setup=True)

    # ------------------------------------------------------------------ observe

    @activity.defn(name="serve_observe")
    async def observe(self, inp: ObserveInput) -> Observation:
        probes = await asyncio.gather(*(self._probe(t) for t in inp.targets))
        qps = await asyncio.to_thread(self.db.services.request_rate, inp.service, inp.qps_window_seconds,
                                      now=time.time())
        return Observation(list(probes), qps)

    async def _probe(self, target: ProbeTarget) -> ReplicaProbe:
        seen = await asyncio.to_thread(self._read_model, target)
        if isinstance(seen, ReplicaProbe):
            return seen
        endpoint = seen
        probe = target.probe
        url = endpoint + probe.path
        try:
            if probe.post_data is not None:
                resp = await self._http_client().post(url, json=probe.post_data, headers=probe.headers,
                                                      timeout=probe.timeout_seconds)
            else:
                resp = await self._http_client().get(url, headers=probe.headers, timeout=probe.timeout_seconds)
        except httpx.HTTPError as err:
            return ReplicaProbe(target.replica_id, "running", False, endpoint,
                                f"probe {url}: {type(err).__name__} {err}".strip()[:300])
        if resp.status_code == 200:
            return ReplicaProbe(target.replica_id, "running", True, endpoint)
        return ReplicaProbe(target.replica_id, "running", False, endpoint, f"probe {url}: HTTP {resp.status_code}")

    def _read_model(self, target: ProbeTarget) -> ReplicaProbe | str:
        """Where the replica stands in the read model: a ``ReplicaProbe`` when there is
        nothing to probe yet (or ever again), else the endpoint to probe."""
        rid = target.replica_id
        cluster = self.db.clusters.get(target.cluster)
        if cluster is None or target.job_id is None:
            return ReplicaProbe(rid, "provisioning", message="launching its cluster")
        if cluster.status in CLUSTER_GONE or cluster.status == ClusterStatus.STOPPED:
            why = f": {cluster.status_message[:200]}" if cluster.status_message else ""
            return ReplicaProbe(rid, "gone", message=f"its cluster is {cluster.status.value}{why}")
        job = self.db.clusters.get_job(target.cluster, target.job_id)
        if job is None or job.status == JobStatus.PENDING:
            return ReplicaProbe(rid, "provisioning", message="launching its cluster" if cluster.status ==
                                ClusterStatus.INIT else "its job waits to start")
        if job.status.is_terminal:
            why = f": {job.message[:200]}" if job.message else ""
            return ReplicaProbe(rid, "gone", message=f"its job ended {job.status.value}{why}")
        if job.status == JobStatus.SETTING_UP:
            return ReplicaProbe(rid, "provisioning", message="running setup")
        nodes = self.db.clusters.list_nodes(target.cluster)
        head = next((n for n in nodes if n.rank == 0), None)
        if head is None:
            return ReplicaProbe(rid, "provisioning", message="no node recorded yet")
        if head.status == NodeStatus.DOWN:
            return ReplicaProbe(rid, "gone", message=f"its node {head.host} is DOWN")
        return f"http://{head.host}:{target.port}"

    # ------------------------------------------------------------------ down

    @activity.defn(name="serve_down_replica")
    async def down_replica(self, inp: DownReplicaInput) -> None:
        client = await self._temporal()
        async with heartbeating(every=2.0):
            try:
                await service.update_cluster(client, cluster_workflow_id(inp.cluster), "down",
                                             result_type=ClusterDescription)
                return
            except service.ClusterRefused:
                return  # already going down, or down
            except service.ClusterNotRunning:
                pass
            row = await asyncio.to_thread(self.db.clusters.get, inp.cluster)
            if row is None or row.status == ClusterStatus.TERMINATED:
                return
            try:
                await service.teardown(client, self.settings.task_queue, inp.cluster, row.provider, row.region,
                                       "taken down by its service after its workflow had ended")
            except service.ClusterRefused as err:
                raise ApplicationError(err.message, type="TeardownFailed") from None

    # ------------------------------------------------------------------ record

    @activity.defn(name="serve_record")
    async def record(self, rec: ServiceRecord) -> bool:
        replicas = [asdict(r) for r in rec.replicas]
        for r in replicas:
            r["launched_at"] = _parse_time(r.get("launched_at"))
        return await asyncio.to_thread(
            self.db.services.record, rec.name, status=rec.status, version=rec.version,
            target_version=rec.target_version, target_replicas=rec.target_replicas, message=rec.message or None,
            qps=rec.qps, replicas=replicas, keep_versions=rec.live_versions, kept=KEPT_VERSIONS)

    @activity.defn(name="serve_forget")
    async def forget(self, inp: ForgetServiceInput) -> None:
        await asyncio.to_thread(self.db.services.forget, inp.name)


def _parse_time(value: Any) -> Any:
    from datetime import datetime

    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
