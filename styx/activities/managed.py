"""Activities of ManagedJobWorkflow: launch a task's cluster and queue it there, watch it to
its end, take the cluster down, and record progress.

Built once in a worker as ``ManagedActivities(settings, db, client)``.

- ``managed_submit``: takes one of ``STYX_MANAGED_MAX_ACTIVE`` slots (while they are all
  held, or the owner's limits are full, it returns ``waiting`` and the job waits PENDING),
  reads the task's sealed body from the database, applies the attempt's
  placement (``styx.services.managed.placed_task``) and submits it through the submission
  service (``styx.services.clusters.submit_job``: update-with-start of the cluster's
  workflow), with an update id of the attempt (``managed/<id>/<task>/<attempt>``), so a
  retried activity gets the first submission's job, never a second cluster or job. The
  cluster autodowns when idle (``MANAGED_AUTODOWN_MINUTES``): a safety net, should the
  managed workflow itself be terminated by hand.
- ``managed_watch``: waits for the job's end — the database while the cluster launches,
  then the job workflow's result — heartbeating, and every ``probe_seconds`` asks the
  cluster's workflow to probe its nodes (``refresh``: the provider's view, then SSH), so a
  lost node or an instance terminated underneath is noticed while the job runs, not when it
  ends. Returns how the attempt ended (``AttemptEnd``): the user's program failing is told
  apart from the infrastructure failing (a node DOWN, ``lost`` or ``JobLost`` in the job's
  message, a cluster no longer UP).
- ``managed_down``: the cluster's ``down`` update, or a ``TeardownWorkflow`` when its
  workflow no longer runs (or never ran): idempotent, whatever state the cluster is in.
- ``managed_record``: one write of progress (a local activity; an idempotent upsert). A
  write that frees a slot (the cluster down, the job ended) wakes the jobs waiting for one
  (``MANAGED_SLOT_FREED_SIGNAL`` to the oldest PENDING, as many as slots are free, and the
  owner's oldest): waiting costs nothing while nothing frees up.

Crash tests kill the worker at ``managed_after_submit``, ``managed_job_running``,
``managed_before_down`` and ``managed_after_down`` (``styx.crash_seam``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from styx.activities.heartbeat import heartbeating
from styx.config import Settings
from styx.contracts.clusters import ClusterDescription, ClusterStatus, cluster_workflow_id
from styx.contracts.jobs import JobStatus
from styx.contracts.managed import (
    MANAGED_SLOT_FREED_SIGNAL,
    AttemptEnd,
    ManagedDownInput,
    ManagedJobStatus,
    ManagedRecord,
    ManagedSubmitInput,
    ManagedSubmitResult,
    WatchInput,
    WatchResult,
    managed_workflow_id,
)
from styx.db import Database
from styx.crash_seam import crash_here_if_asked
from styx.services import clusters as service
from styx.services import managed as managed_service
from styx.services import policy, quotas
from styx.services.launch import InvalidRequest, check_for_provider, cluster_spec, submit_input
from styx.task import TaskValidationError

#: A managed cluster is taken down by its workflow; this idle autodown is the safety net.
MANAGED_AUTODOWN_MINUTES = 10
#: How often the watch heartbeats (its heartbeat timeout is a few times this).
WATCH_BEAT_SECONDS = 5.0
#: Longest wait between two looks at the database while the cluster launches.
LAUNCH_POLL_SECONDS = 2.0
#: How often the row of a job run inside its cluster's workflow is read while it runs.
JOB_ROW_POLL_SECONDS = 1.0
#: A probe (``refresh`` update) that takes longer than this is given up for this round.
PROBE_TIMEOUT_SECONDS = 120.0
#: Error type of a submission that cannot succeed (a bad task, a limit): not retried.
REFUSED = "Refused"
#: Error type of a submission that waited for a slot in runs before ``ManagedSubmitResult.
#: waiting`` (their histories replay with it); a submission without a slot now returns.
NO_SLOT = "NoSlot"
#: How long one wake-up signal may take before the rest are given up (their timers remain).
WAKE_TIMEOUT_SECONDS = 5.0


class ManagedActivities:
    def __init__(self, settings: Settings, db: Database, client: Client | None = None) -> None:
        self.settings = settings
        self.db = db
        self._client = client
        self._lock = asyncio.Lock()

    def all(self) -> list[Any]:
        return [self.managed_submit, self.managed_watch, self.managed_down, self.managed_record]

    async def _temporal(self) -> Client:
        from styx.temporal import connect

        async with self._lock:
            if self._client is None:
                self._client = await connect(self.settings, wait_seconds=10)
            return self._client

    # ------------------------------------------------------------------ record

    @activity.defn(name="managed_record")
    async def managed_record(self, rec: ManagedRecord) -> None:
        await asyncio.to_thread(self._record, rec)
        if rec.clear_cluster or rec.ended:  # its slot (if it held one) is free: wake who waits
            await self._wake_waiting(rec.managed_id)

    async def _wake_waiting(self, managed_id: int) -> None:
        """Signal the managed jobs waiting for a slot that one may be free (``waiting``): they
        ask at once rather than on their timers. Best effort: a wake lost is made up for by
        the waiter's timer."""
        from temporalio.service import RPCError

        try:
            job = await asyncio.to_thread(self.db.managed.get, managed_id)
            ids = await asyncio.to_thread(self.db.managed.waiting, self.settings.managed_max_active,
                                          job.owner if job else None, managed_id)
            client = await self._temporal()
            for waiting_id in ids:
                with contextlib.suppress(RPCError):
                    await asyncio.wait_for(client.get_workflow_handle(managed_workflow_id(waiting_id)).signal(
                        MANAGED_SLOT_FREED_SIGNAL), WAKE_TIMEOUT_SECONDS)
        except (asyncio.TimeoutError, RPCError, OSError) as err:
            activity.logger.info("could not wake managed jobs waiting for a slot: %s", err)

    def _record(self, rec: ManagedRecord) -> None:
        job: dict[str, Any] = {key: getattr(rec, key) for key in
                               ("status", "message", "recoveries", "current_task", "cluster")
                               if getattr(rec, key) is not None}
        if rec.clear_cluster:
            job["cluster"] = None
        job.update({k: True for k in ("started", "ended") if getattr(rec, k)})
        task: dict[str, Any] = {}
        if rec.task_status is not None:
            task["status"] = rec.task_status
            if rec.started:
                task["started"] = True
            if ManagedJobStatus(rec.task_status).is_terminal:
                task["ended"] = True
        for key, column in (("task_recoveries", "recoveries"), ("task_restarts", "restarts"),
                            ("task_message", "message")):
            if getattr(rec, key) is not None:
                task[column] = getattr(rec, key)
        if rec.clear_cluster and rec.task_index is not None:
            task["cluster"] = None
        attempt: dict[str, Any] = {}
        if rec.attempt is not None:
            if rec.attempt_cluster is not None:
                attempt["cluster"] = rec.attempt_cluster
            for key, column in (("attempt_status", "status"), ("attempt_job_id", "job_id"),
                                ("attempt_reason", "reason"), ("attempt_region", "region"),
                                ("attempt_zone", "zone")):
                if getattr(rec, key) is not None:
                    attempt[column] = getattr(rec, key)
            attempt["ended"] = rec.attempt_ended
        self.db.managed.record(rec.managed_id, job or None, task_index=rec.task_index, task=task or None,
                               skip_rest=rec.skip_rest, attempt=rec.attempt, attempt_fields=attempt)

    # ------------------------------------------------------------------ submit

    @activity.defn(name="managed_submit")
    async def managed_submit(self, inp: ManagedSubmitInput) -> ManagedSubmitResult:
        job = await asyncio.to_thread(self.db.managed.get, inp.managed_id)
        body = await asyncio.to_thread(self.db.managed.task_body, inp.managed_id, inp.task_index)
        if job is None or body is None:
            raise ApplicationError(f"managed job {inp.managed_id} task {inp.task_index} is not in the database",
                                   type=REFUSED, non_retryable=True)
        try:
            task = managed_service.placed_task(managed_service.unseal_task(self.settings, body), inp.placement)
            # Stable across recoveries: a job names its checkpoints with them.
            task = task.with_overrides(envs={"STYX_MANAGED_JOB_ID": str(inp.managed_id),
                                             "STYX_MANAGED_TASK": str(inp.task_index),
                                             "STYX_MANAGED_ATTEMPT": str(inp.attempt)})
            spec = cluster_spec(task, inp.cluster, MANAGED_AUTODOWN_MINUTES, True, owner=job.owner)
            check_for_provider(task, spec.provider)
        except (InvalidRequest, TaskValidationError) as err:
            raise ApplicationError(str(err), type=REFUSED, non_retryable=True) from None
        waiting = await asyncio.to_thread(self._check_user, inp.managed_id, job.owner, spec)
        if waiting is None:
            waiting = await asyncio.to_thread(self._claim, inp)
        if waiting is not None:  # nothing launched: the workflow waits for a slot
            return ManagedSubmitResult(0, "", spec.provider, spec.region, waiting=waiting)
        submit = submit_input(task, job.owner, self.settings.home, launch_spec=spec, run_setup=True)
        client = await self._temporal()
        try:
            # Heartbeating: a worker killed here is noticed in seconds, and the retry's update
            # id returns the job this one queued.
            async with heartbeating():
                result = await service.submit_job(
                    client, self.settings.task_queue, inp.cluster, submit, launch=spec,
                    update_id=f"managed/{inp.managed_id}/{inp.task_index}/{inp.attempt}")
        except service.ClusterRefused as err:
            raise ApplicationError(f"the cluster refused the task: {err.message}", type=REFUSED,
                                   non_retryable=True) from None
        crash_here_if_asked("managed_after_submit")  # a test seam: kill -9 of the worker here
        price = managed_service.hourly_price(task)
        await asyncio.to_thread(self.db.managed.record, inp.managed_id, task_index=inp.task_index,
                                attempt=inp.attempt, attempt_fields={"cluster": inp.cluster, "job_id": result.job_id,
                                                                     "hourly_price": price})
        return ManagedSubmitResult(result.job_id, result.workflow_id, spec.provider, spec.region)

    def _claim(self, inp: ManagedSubmitInput) -> str | None:
        """A slot of ``STYX_MANAGED_MAX_ACTIVE`` (None), or why there is none: the job waits,
        PENDING, until a slot comes free (``MANAGED_SLOT_FREED_SIGNAL``) and asks again."""
        limit = self.settings.managed_max_active
        status = ManagedJobStatus.RECOVERING if inp.attempt > 1 else ManagedJobStatus.STARTING
        in_use = self.db.managed.claim(inp.managed_id, inp.task_index, inp.cluster, limit, status)
        if in_use is None:
            return None
        message = f"waiting: {in_use} managed jobs hold a cluster (at most {limit}: STYX_MANAGED_MAX_ACTIVE)"
        self.db.managed.record(inp.managed_id, {"status": ManagedJobStatus.PENDING, "message": message})
        return message

    def _check_user(self, managed_id: int, owner: str, spec: Any) -> str | None:
        """The owner may still run this (not disabled, the local-jobs rule: else ``Refused``),
        and their limits have room for its cluster (else why not: the job waits PENDING; a
        retried submission finds its cluster there already, counted once)."""
        user = self.db.users.get(owner)
        if user is None or user.disabled:
            raise ApplicationError(f"user {owner!r} no longer exists or is disabled", type=REFUSED,
                                   non_retryable=True)
        try:
            policy.check_local_jobs(self.settings, spec.provider, user.is_admin)
        except policy.NotAllowed as err:
            raise ApplicationError(f"{owner}: {err}", type=REFUSED, non_retryable=True) from None
        row = self.db.clusters.get(spec.name)
        if row is None or row.status in (ClusterStatus.TERMINATED, ClusterStatus.FAILED):
            try:
                quotas.check_user_limits(self.db, self.settings, user, spec)
            except quotas.LimitExceeded as err:
                # The owner's other clusters hold their limit: wait (PENDING) for one to go.
                message = f"waiting: {err}"
                self.db.managed.record(managed_id, {"status": ManagedJobStatus.PENDING,
                                                                "message": message})
                return message
        return None

    # ------------------------------------------------------------------ watch

    @activity.defn(name="managed_watch")
    async def managed_watch(self, inp: WatchInput) -> WatchResult:
        client = await self._temporal()
        # 1. While the cluster launches (no job workflow yet): the database.
        delay = 0.1
        while True:
            job, cluster = await asyncio.to_thread(self._rows, inp)
            if job is not None and job.status.is_terminal:
                return await self._classify(client, inp, job, cluster)
            if cluster is not None and cluster.status == ClusterStatus.FAILED:
                return WatchResult(AttemptEnd.LAUNCH_FAILED, cluster.status_message or "the launch failed")
            if cluster is not None and cluster.status in (ClusterStatus.TERMINATED, ClusterStatus.STOPPED):
                return WatchResult(AttemptEnd.PREEMPTED, f"cluster {inp.cluster} was {cluster.status.lower()} "
                                   "underneath the job", cluster.region, cluster.zone)
            if job is not None and job.status != JobStatus.PENDING:
                break
            activity.heartbeat("launching")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, LAUNCH_POLL_SECONDS)
        await asyncio.to_thread(self._mark_running, inp)
        crash_here_if_asked("managed_job_running")
        # 2. The job runs: its workflow's result (one long poll), a heartbeat and, every
        # probe_seconds, a look at the nodes.
        if inp.job_workflow_id == cluster_workflow_id(inp.cluster):  # run inline: no workflow of its own
            ended = asyncio.ensure_future(self._job_ended(inp))
        else:
            ended = asyncio.ensure_future(self._job_closed(client, inp.job_workflow_id))
        last_probe = time.monotonic()
        try:
            while not ended.done():
                await asyncio.wait({ended}, timeout=min(WATCH_BEAT_SECONDS, inp.probe_seconds))
                activity.heartbeat("running")
                if ended.done() or time.monotonic() - last_probe < inp.probe_seconds:
                    continue
                last_probe = time.monotonic()
                lost = await self._lost_nodes(client, inp.cluster)
                if lost:
                    _, cluster = await asyncio.to_thread(self._rows, inp)
                    return WatchResult(AttemptEnd.PREEMPTED, lost, cluster.region if cluster else None,
                                       cluster.zone if cluster else None)
        finally:
            ended.cancel()
        # The job's row is written before its workflow closes.
        for _ in range(100):
            job, cluster = await asyncio.to_thread(self._rows, inp)
            if job is not None and job.status.is_terminal:
                return await self._classify(client, inp, job, cluster)
            activity.heartbeat("ending")
            await asyncio.sleep(0.2)
        return WatchResult(AttemptEnd.PREEMPTED, "the job's workflow ended without recording the job's end",
                           cluster.region if cluster else None, cluster.zone if cluster else None)

    def _rows(self, inp: WatchInput) -> tuple[Any, Any]:
        return self.db.clusters.get_job(inp.cluster, inp.job_id), self.db.clusters.get(inp.cluster)

    def _mark_running(self, inp: WatchInput) -> None:
        running = ManagedJobStatus.RUNNING
        self.db.managed.record(inp.managed_id, {"status": running, "started": True, "message": None},
                               task_index=inp.task_index, task={"status": running, "started": True},
                               attempt=inp.attempt, attempt_fields={"status": running})

    async def _job_ended(self, inp: WatchInput) -> None:
        """Return when the job's row is terminal (a job run inside its cluster's workflow)."""
        while True:
            job, _ = await asyncio.to_thread(self._rows, inp)
            if job is not None and job.status.is_terminal:
                return
            await asyncio.sleep(JOB_ROW_POLL_SECONDS)

    @staticmethod
    async def _job_closed(client: Client, workflow_id: str) -> None:
        """Return when the job's workflow has closed, however it closed."""
        while True:
            try:
                await client.get_workflow_handle(workflow_id).result(follow_runs=False)
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:  # failed, cancelled, terminated: closed all the same
                from temporalio.service import RPCError

                if isinstance(err, RPCError):  # the server was unreachable a moment: ask again
                    await asyncio.sleep(1.0)
                    continue
                return

    async def _lost_nodes(self, client: Client, cluster: str) -> str | None:
        """Probe the cluster's nodes now; a line naming the dead ones, or None."""
        try:
            desc = await asyncio.wait_for(service.update_cluster(
                client, cluster_workflow_id(cluster), "refresh", result_type=ClusterDescription),
                PROBE_TIMEOUT_SECONDS)
        except (asyncio.TimeoutError, service.ClusterRefused, service.ClusterBusy):
            return None
        except service.ClusterNotRunning:
            return f"cluster {cluster} is gone"
        if desc.down_nodes:
            return "; ".join(f"{_node_name(desc, d.rank)} lost: {d.reason}" for d in desc.down_nodes)
        if desc.status not in (ClusterStatus.UP, ClusterStatus.INIT):
            return f"cluster {cluster} is {desc.status}"
        return None

    async def _classify(self, client: Client, inp: WatchInput, job: Any, cluster: Any) -> WatchResult:
        region, zone = (cluster.region, cluster.zone) if cluster is not None else (None, None)
        message = job.message or job.status.value
        if job.status == JobStatus.SUCCEEDED:
            return WatchResult(AttemptEnd.SUCCEEDED, None, region, zone)
        if cluster is not None and cluster.status == ClusterStatus.FAILED:
            return WatchResult(AttemptEnd.LAUNCH_FAILED, cluster.status_message or message, region, zone)
        if job.status == JobStatus.CANCELLED:
            return WatchResult(AttemptEnd.PREEMPTED, f"the job was cancelled underneath ({message})", region, zone)
        if " lost: " in message or "JobLost" in message:
            return WatchResult(AttemptEnd.PREEMPTED, message, region, zone)
        if cluster is None or cluster.status != ClusterStatus.UP:
            return WatchResult(AttemptEnd.PREEMPTED, f"{message} (cluster {inp.cluster} is "
                               f"{cluster.status if cluster else 'gone'})", region, zone)
        lost = await self._lost_nodes(client, inp.cluster)
        if lost:
            return WatchResult(AttemptEnd.PREEMPTED, f"{message}; {lost}", region, zone)
        end = AttemptEnd.SETUP_FAILED if job.status == JobStatus.FAILED_SETUP else AttemptEnd.USER_FAILED
        return WatchResult(end, message, region, zone)

    # ------------------------------------------------------------------ down

    @activity.defn(name="managed_down")
    async def managed_down(self, inp: ManagedDownInput) -> None:
        client = await self._temporal()
        down = asyncio.ensure_future(self._down(client, inp))
        try:
            while not down.done():
                activity.heartbeat()
                await asyncio.wait({down}, timeout=5)
            await down
        finally:
            down.cancel()

    async def _down(self, client: Client, inp: ManagedDownInput) -> None:
        crash_here_if_asked("managed_before_down")
        try:
            await service.update_cluster(client, cluster_workflow_id(inp.cluster), "down",
                                         result_type=ClusterDescription)
            crash_here_if_asked("managed_after_down")
            return
        except (service.ClusterNotRunning, service.ClusterRefused):
            pass  # its workflow has ended (or never started): a teardown finds what is left
        row = await asyncio.to_thread(self.db.clusters.get, inp.cluster)
        if row is not None and row.status == ClusterStatus.TERMINATED:
            return
        provider = inp.provider or (row.provider if row is not None else None)
        if provider is None:
            return  # never submitted: nothing was launched
        try:
            await service.teardown(client, self.settings.task_queue, inp.cluster, provider,
                                   inp.region or (row.region if row is not None else None),
                                   "taken down by its managed job")
        except service.ClusterRefused as err:
            raise ApplicationError(err.message, type="TeardownFailed") from None


def _node_name(desc: ClusterDescription, rank: int) -> str:
    node = desc.nodes[rank] if 0 <= rank < len(desc.nodes) else {}
    address = node.get("ip") or node.get("host")
    return f"node {rank}" + (f" ({address})" if address else "")
