"""Writes to the read model. Every activity is an upsert keyed by id: safe to retry.

Also the database side of a cluster's queue: ``load_job_spec`` (a job workflow reads its
body), ``pending_jobs`` (the cluster workflow refills its window), ``end_pending_jobs`` (one
write ends a whole queue: stop, down, a failed launch) and ``cancel_pending_job``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from styx import joblogs
from styx.contracts.clusters import ClusterRecord, ClusterStatus, NodeStatus
from styx.contracts.providers import TeardownInput
from styx.contracts.jobs import (
    CancelPendingJobInput,
    CancelPendingJobOutput,
    EndPendingJobsInput,
    JobRecord,
    JobSpec,
    JobSpecShape,
    JobStatus,
    LoadJobSpecInput,
    PendingJobsInput,
    PendingJobsOutput,
    RecordJobsInput,
)
from styx.db import Database, utcnow


def _node_row(node: dict[str, Any]) -> dict[str, Any]:
    info = {k: v for k, v in node.items() if k != "status"}
    return {
        "rank": node["rank"], "host": node["host"], "port": node["port"], "user": node.get("user") or "",
        "internal_ip": node.get("ip") or node["host"], "instance_id": node.get("instance_id"),
        "status": node.get("status") or NodeStatus.UP, "info": info,
    }


def _job_fields(rec: JobRecord) -> dict[str, Any]:
    """The fields of a job record that are set (None: left as stored)."""
    return {
        k: v for k, v in dict(
            name=rec.name, status=rec.status, cpus=rec.cpus, accelerators=rec.accelerators,
            num_nodes=rec.num_nodes, run_summary=rec.run_summary, workflow_id=rec.workflow_id,
            user=rec.user, exit_codes=rec.exit_codes, message=rec.message, spec_id=rec.spec_id,
        ).items() if v is not None
    }


class StateActivities:
    def __init__(self, db: Database) -> None:
        self.db = db

    @activity.defn(name="record_cluster")
    async def record_cluster(self, rec: ClusterRecord) -> None:
        await asyncio.to_thread(self._record_cluster, rec)

    def _record_cluster(self, rec: ClusterRecord) -> None:
        if rec.fresh:
            # A new cluster under a name used before: its job ids start again at 1, so the
            # old run's jobs and their logs must not be mistaken for the new ones.
            self.db.jobspecs.delete_cluster(rec.name)
            self.db.clusters.delete(rec.name)
            self.db.joblogs.delete_cluster(rec.name)
        fields: dict[str, Any] = dict(
            provider=rec.provider, status=rec.status, num_nodes=rec.num_nodes, resources=rec.resources,
            workflow_id=rec.workflow_id, autostop_minutes=rec.autostop_minutes,
            autostop_down=rec.autostop_down, status_message=rec.status_message,
        )
        if rec.owner:
            fields["owner"] = rec.owner
        if rec.region:
            fields["region"] = rec.region
        if rec.zone:
            fields["zone"] = rec.zone
        if rec.mark_launched:
            fields["launched_at"] = utcnow()
        if rec.at is not None:  # a record from a workflow that knows cost and autostop
            fields.update(autostop_at=datetime.fromisoformat(rec.autostop_at) if rec.autostop_at else None,
                          stopped_by=rec.stopped_by, use_spot=rec.use_spot)
            for name in ("instance_type", "hourly_price", "launch_id"):
                if getattr(rec, name) is not None:
                    fields[name] = getattr(rec, name)
        self.db.clusters.upsert(rec.name, **fields)
        if rec.nodes is not None:
            self.db.clusters.replace_nodes(rec.name, [_node_row(n) for n in rec.nodes])
        if rec.at is not None:
            self._record_uptime(rec)

    def _record_uptime(self, rec: ClusterRecord) -> None:
        """Open the nodes' up-intervals when the cluster is UP, close them when it is not
        (both idempotent: a retried record changes nothing)."""
        at = datetime.fromisoformat(rec.at or "")
        if rec.fresh:  # an earlier cluster of this name that was never closed (its workflow died)
            self.db.uptime.close(rec.name, at)
        if rec.status == ClusterStatus.UP:
            ranks = ([int(n["rank"]) for n in rec.nodes] if rec.nodes
                     else [n.rank for n in self.db.clusters.list_nodes(rec.name)] or range(rec.num_nodes))
            stored = self.db.clusters.get(rec.name)
            self.db.uptime.open(
                rec.name, rec.launch_id or "", ranks, at, owner=stored.owner if stored else rec.owner,
                provider=rec.provider, instance_type=rec.instance_type,
                region=rec.region or (stored.region if stored else None), zone=rec.zone or (stored.zone if stored else None),
                use_spot=rec.use_spot, hourly_price=rec.hourly_price or 0.0)
        elif rec.status in (ClusterStatus.STOPPED, ClusterStatus.TERMINATED, ClusterStatus.FAILED):
            self.db.uptime.close(rec.name, at)

    @activity.defn(name="record_teardown")
    async def record_teardown(self, inp: TeardownInput) -> None:
        """The cluster is TERMINATED with no node (``TeardownWorkflow``, after the provider's
        ``terminate``); a cluster with no row is left without one."""
        await asyncio.to_thread(self._record_teardown, inp)

    def _record_teardown(self, inp: TeardownInput) -> None:
        self.db.uptime.close(inp.cluster, utcnow())
        if self.db.clusters.get(inp.cluster) is None:
            return
        self.db.clusters.upsert(inp.cluster, status=ClusterStatus.TERMINATED, status_message=inp.message)
        self.db.clusters.delete_nodes(inp.cluster)

    @activity.defn(name="record_job")
    async def record_job(self, rec: JobRecord) -> str:
        """Upsert the job's row; returns the status it holds after (the first terminal one
        wins: a job workflow learns that its job had already ended otherwise)."""
        row = await asyncio.to_thread(self.db.clusters.upsert_job, rec.cluster, rec.job_id, **_job_fields(rec))
        return JobStatus(row.status).value

    @activity.defn(name="record_jobs")
    async def record_jobs(self, inp: RecordJobsInput) -> None:
        await asyncio.to_thread(self.db.clusters.upsert_jobs,
                                [(rec.cluster, rec.job_id, _job_fields(rec)) for rec in inp.jobs])

    @activity.defn(name="load_job_spec")
    async def load_job_spec(self, inp: LoadJobSpecInput) -> JobSpec:
        spec = await asyncio.to_thread(self.db.jobspecs.get, inp.spec_id)
        if spec is None:
            raise ApplicationError(f"the job's task (spec {inp.spec_id}) is no longer stored",
                                   type="SpecMissing", non_retryable=True)
        return spec

    @activity.defn(name="job_spec_shape")
    async def job_spec_shape(self, inp: LoadJobSpecInput) -> JobSpecShape:
        return (await self.load_job_spec(inp)).shape()

    @activity.defn(name="pending_jobs")
    async def pending_jobs(self, inp: PendingJobsInput) -> PendingJobsOutput:
        return PendingJobsOutput(await asyncio.to_thread(
            self.db.jobspecs.pending, inp.cluster, inp.from_job_id, inp.upto_job_id, inp.limit))

    @activity.defn(name="end_pending_jobs")
    async def end_pending_jobs(self, inp: EndPendingJobsInput) -> int | None:
        """Returns the highest job id the cluster's rows hold after (None: none), so that the
        workflow never hands out an id a row already has."""
        await asyncio.to_thread(self.db.jobspecs.end_pending, inp.cluster, inp.status, inp.message,
                                inp.job_ids, inp.from_job_id)
        return await asyncio.to_thread(self.db.jobspecs.highest_job_id, inp.cluster)

    @activity.defn(name="cancel_pending_job")
    async def cancel_pending_job(self, inp: CancelPendingJobInput) -> CancelPendingJobOutput:
        return CancelPendingJobOutput(await asyncio.to_thread(
            self.db.jobspecs.cancel_pending, inp.cluster, inp.job_id, inp.from_job_id))
