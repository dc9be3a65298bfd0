"""JobWorkflow ``cluster/<name>/job/<n>``: one job on the nodes its cluster gave it.

Uploads the workdir and file mounts, runs ``setup`` (for a launch's job, not an exec's, as
SkyPilot) then ``run`` on every node (detached on the node, so a worker crash does not kill
it), records exit codes, and tells its cluster when it ends. Cancelling the workflow kills the job's process groups on every node.
"""

import asyncio
from datetime import timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from styx.contracts.jobs import (
        JobFinished,
        JobInput,
        JobRecord,
        JobStatus,
        KillJobInput,
        RunPhaseInput,
        RunPhaseOutput,
        SyncFilesInput,
    )
    from styx.contracts.search import JOB_STATUS_KEY
    from styx.activities.ssh import SshActivities
    from styx.activities.state import StateActivities

STATE_TIMEOUT = timedelta(seconds=30)
STATE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))
#: Killing is best effort: a node that is gone has no process left to kill.
KILL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
#: A node may be unreachable for a while (worker restart, network blip) before a job fails.
PHASE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
    maximum_attempts=30, non_retryable_error_types=["JobLost", "InvalidTask"],
)


async def record(activity: Callable[[Any, Any], Awaitable[None]], row: Any) -> None:
    """Write ``row`` to the read model with ``activity`` (a ``StateActivities`` method). A local
    activity: no round trip through the server, and safe to repeat on replay since every
    write is an idempotent upsert."""
    await workflow.execute_local_activity_method(activity, row, start_to_close_timeout=STATE_TIMEOUT,
                                                 retry_policy=STATE_RETRY)


def job_env(inp: JobInput, rank: int) -> dict[str, str]:
    """What a job sees on node ``rank``: Styx's variables, SkyPilot's native ones, then the task's.

    SkyPilot's are those its documentation lists, in setup and run alike (SkyPilot gives
    setup only the ``SKYPILOT_SETUP_*`` pair; a superset harms no script):
    ``SKYPILOT_NODE_RANK``/``SKYPILOT_SETUP_NODE_RANK``, ``SKYPILOT_NODE_IPS``/
    ``SKYPILOT_SETUP_NODE_IPS`` (the job's nodes, one IP a line, in rank order: setup runs per
    job, on the job's nodes), ``SKYPILOT_NUM_NODES``, ``SKYPILOT_NUM_GPUS_PER_NODE`` (a
    fraction rounded up), ``SKYPILOT_TASK_ID`` (``sky-<start time>_<cluster>_<job id>``, the
    same in both phases) and ``SKYPILOT_CLUSTER_INFO`` (JSON: cluster_name, cloud, region, zone).
    """
    import json  # here, not at the top: this function is the part of the module that needs them
    import math

    cloud_names = {"aws": "AWS", "ssh": "SSH", "local": "Local"}  # as SkyPilot spells them
    ips = "\n".join(str(n.get("ip") or n["host"]) for n in inp.nodes)
    gpus = math.ceil(sum(inp.accelerators.values()) - 1e-9)  # SkyPilot rounds a fraction up
    base = {
        "STYX_NODE_RANK": str(rank),
        "STYX_NODE_IPS": ips,
        "STYX_NUM_NODES": str(len(inp.nodes)),
        "STYX_JOB_ID": str(inp.job_id),
        "STYX_CLUSTER_NAME": inp.cluster,
        "STYX_NUM_GPUS_PER_NODE": str(gpus),
    }
    aliases = {k.replace("STYX_", "SKYPILOT_", 1): v for k, v in base.items()}
    try:  # the job's start, as SkyPilot's ids carry the submission time: stable across phases
        started = workflow.info().start_time.strftime("%Y-%m-%d-%H-%M-%S-%f")
    except Exception:  # called outside a workflow (a test)
        started = "0000-00-00-00-00-00-000000"
    aliases.update({
        "SKYPILOT_SETUP_NODE_RANK": str(rank),
        "SKYPILOT_SETUP_NODE_IPS": ips,
        "SKYPILOT_TASK_ID": f"sky-{started}_{inp.cluster}_{inp.job_id}",
        "SKYPILOT_CLUSTER_INFO": json.dumps({
            "cluster_name": inp.cluster, "cloud": cloud_names.get(inp.provider, inp.provider),
            "region": inp.region, "zone": inp.zone,
        }),
    })
    return {**base, **aliases, **inp.env}


def _is_cancellation(err: BaseException) -> bool:
    if isinstance(err, asyncio.CancelledError):
        return True
    return isinstance(err, ActivityError) and isinstance(err.cause, CancelledError)


def _failure_message(err: ActivityError) -> str:
    cause = err.cause
    if cause is None:
        return str(err)
    return f"{getattr(cause, 'type', None) or type(cause).__name__}: {cause}"


@workflow.defn(name="JobWorkflow")
class JobWorkflow:
    def __init__(self) -> None:
        self._status = JobStatus.PENDING

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.run
    async def run(self, inp: JobInput) -> JobFinished:
        exit_codes: list[int | None] = []
        message: str | None = None
        try:
            # An exec skips setup, as SkyPilot's does; its files are synced all the same.
            setup = inp.task.get("setup") if inp.run_setup else None
            if setup or self._has_files(inp):
                await self._set_status(inp, JobStatus.SETTING_UP)
                await self._sync_files(inp)
            if setup:
                exit_codes = await self._run_phase(inp, "setup", setup)
                if any(code != 0 for code in exit_codes):
                    status = JobStatus.FAILED_SETUP
                    message = f"setup exited with {exit_codes}"
                    return await self._finish(inp, status, exit_codes, message)
            # The run activity records RUNNING in the DB once the job has started on rank 0.
            self._status = JobStatus.RUNNING
            workflow.upsert_search_attributes([JOB_STATUS_KEY.value_set(JobStatus.RUNNING)])
            exit_codes = await self._run_phase(inp, "run", inp.task.get("run") or "true")
            status = JobStatus.SUCCEEDED if all(code == 0 for code in exit_codes) else JobStatus.FAILED
        except (asyncio.CancelledError, ActivityError) as err:
            if _is_cancellation(err):
                status, message = JobStatus.CANCELLED, "cancelled"
            else:
                status, message = JobStatus.FAILED, _failure_message(err)
            # Cancelled, or one node failed: leave no process of the job on any node.
            try:
                await workflow.execute_activity_method(
                    SshActivities.kill_job, KillJobInput(inp.cluster, inp.job_id, inp.nodes),
                    start_to_close_timeout=timedelta(seconds=60), retry_policy=KILL_RETRY,
                )
            except ActivityError as kill_err:  # a node that stays unreachable runs nothing
                message = f"{message}; could not reach every node to kill the job: {kill_err.cause}"
        return await self._finish(inp, status, exit_codes, message)

    async def _set_status(self, inp: JobInput, status: str, **extra: Any) -> None:
        self._status = status
        workflow.upsert_search_attributes([JOB_STATUS_KEY.value_set(status)])
        await record(StateActivities.record_job,
                     JobRecord(cluster=inp.cluster, job_id=inp.job_id, status=status, **extra))

    @staticmethod
    def _mounts(inp: JobInput) -> dict[str, str]:
        return {k: v for k, v in (inp.task.get("file_mounts") or {}).items() if isinstance(v, str)}

    def _has_files(self, inp: JobInput) -> bool:
        return bool(inp.task.get("workdir") or self._mounts(inp))

    async def _sync_files(self, inp: JobInput) -> None:
        workdir = inp.task.get("workdir")
        mounts = self._mounts(inp)
        await asyncio.gather(*(
            workflow.execute_activity_method(
                SshActivities.sync_files, SyncFilesInput(inp.cluster, inp.job_id, node, workdir, mounts),
                start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=10),
                retry_policy=PHASE_RETRY,
            )
            for node in inp.nodes
        ))

    async def _run_phase(self, inp: JobInput, phase: str, script: str) -> list[int | None]:
        results: list[RunPhaseOutput] = await asyncio.gather(*(
            workflow.execute_activity_method(
                SshActivities.run_phase,
                RunPhaseInput(inp.cluster, inp.job_id, phase, rank, node, script, job_env(inp, rank),
                                sealed_secrets=inp.sealed_secrets,
                                record_end=phase == "run" and len(inp.nodes) == 1),
                # Jobs may run for weeks; the heartbeat is what detects a dead worker.
                start_to_close_timeout=timedelta(days=365),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=PHASE_RETRY,
            )
            for rank, node in enumerate(inp.nodes)
        ))
        return [r.exit_code for r in results]

    async def _finish(self, inp: JobInput, status: str, exit_codes: list[int | None],
                      message: str | None) -> JobFinished:
        await self._set_status(inp, status, exit_codes=exit_codes, message=message)
        finished = JobFinished(inp.job_id, status, exit_codes)
        # By workflow id, not run id: the cluster may have continued-as-new since it started us.
        try:
            await workflow.get_external_workflow_handle(inp.cluster_workflow_id).signal(
                "job_finished", finished)
        except Exception:  # the cluster workflow is gone (downed); the DB row is what matters
            workflow.logger.warning("cluster %s is gone; nothing to tell it", inp.cluster)
        return finished
