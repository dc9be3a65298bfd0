"""PushWorkflow ``push/<owner>/<repo>/<sha>``: the runs one pushed commit triggers.

Started by the git server after the refs moved (its id makes a commit run at most once),
it records the run, reads ``.styx.yaml`` at the commit, matches its triggers and stores
the commit's tree as an upload, the jobs' workdir (activity ``push_plan``), queues each job
as the pusher on its cluster, or for ``managed: true`` submits a managed job of the pusher's
(``push_submit``; its ``ManagedJobWorkflow`` ``managed/<id>`` launches, recovers and takes
down its clusters), answers the ``submitted`` update with what it queued (the git server
prints that on the pusher's terminal), waits for the jobs to end (``push_wait_job``, or
``push_wait_managed``: the managed job's end, and its reason, are the job's) and records the
commit's status (``push_record``) at every step. Everything with a side effect is an
activity. Runs started before managed pushes were managed jobs replay through their old
steps (a ``push-…`` cluster waited on, then ``push_down_cluster``): the ref returned by
``push_submit`` says which, so no patch marker is needed.

``push_plan`` and ``push_submit`` read the repository, so they run on the git server's task
queue (``PushInput.git_task_queue``), on the host whose disk holds it; the others run on
any worker.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from styx.activities.git import GitActivities
    from styx.contracts.jobs import JobStatus
    from styx.contracts.pushes import (
        DownClusterInput,
        PushInput,
        PUSH_SUBMITTED_UPDATE,
        PUSH_WORKFLOW,
        PushJobRef,
        PushRecord,
        PushRunStatus,
        PushSummary,
        SubmitPushJobInput,
        WaitJobInput,
        WaitJobResult,
        WaitManagedInput,
    )

QUICK = timedelta(seconds=60)
QUICK_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5),
                          maximum_attempts=10, non_retryable_error_types=["InvalidPush", "InvalidTask"])
SUBMIT_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=10),
                           maximum_attempts=5,
                           non_retryable_error_types=["InvalidTask", "ClusterNotFound", "Rejected"])
WAIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
#: The git server's activities heartbeat (every 2 s): one killed mid-activity is retried on
#: another (or the restarted one) after this, not after the activity's whole timeout.
GIT_HEARTBEAT = timedelta(seconds=10)
#: How long a push's job may run before the run gives up waiting for it.
JOB_DEADLINE = timedelta(days=7)


@workflow.defn(name=PUSH_WORKFLOW)
class PushWorkflow:
    def __init__(self) -> None:
        self._summary: PushSummary | None = None

    @workflow.run
    async def run(self, inp: PushInput) -> PushSummary:
        wid = workflow.info().workflow_id
        record = lambda status, message=None, jobs=None: self._record(  # noqa: E731
            PushRecord(inp.repo_id, inp.sha, inp.ref, inp.pusher, wid, status, message, jobs))
        # One activity records the run as PENDING, reads .styx.yaml and exports the tree: the
        # fewer round trips before the first job is queued, the sooner it starts.
        try:
            plan = await workflow.execute_activity_method(
                GitActivities.push_plan, inp, start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=GIT_HEARTBEAT, retry_policy=QUICK_RETRY, task_queue=inp.git_task_queue or None)
        except ActivityError as err:
            # A commit that cannot be read or exported (an absolute symlink, a missing commit)
            # fails the run with the reason; it is never left PENDING.
            return await self._finish(inp, PushRunStatus.FAILED, _reason(err), [], record)
        if plan.error:
            return await self._finish(inp, PushRunStatus.FAILED, f".styx.yaml: {plan.error}", [], record)
        if not plan.jobs:
            skipped = plan.skipped or "no job matches this push"
            return await self._finish(inp, PushRunStatus.SKIPPED, skipped, [], record)

        workdir = plan.workdir or ""
        jobs: list[PushJobRef] = []
        for index, job in enumerate(plan.jobs):
            try:
                ref = await workflow.execute_activity_method(
                    GitActivities.push_submit, SubmitPushJobInput(inp, index, job, workdir, f"{wid}/{index}"),
                    start_to_close_timeout=timedelta(minutes=2), heartbeat_timeout=GIT_HEARTBEAT,
                    retry_policy=SUBMIT_RETRY, task_queue=inp.git_task_queue or None)
            except ActivityError as err:
                ref = PushJobRef(job.name, job.cluster or "", managed=job.managed, status=JobStatus.FAILED,
                                 message=_reason(err))
            jobs.append(ref)
        running = [j for j in jobs if j.queued]
        if not running:
            return await self._finish(inp, PushRunStatus.FAILED, "no job could be queued", jobs, record)
        await record(PushRunStatus.RUNNING, None, jobs)
        self._summary = PushSummary(wid, inp.sha, PushRunStatus.RUNNING, None, jobs)

        results = await asyncio.gather(*[self._follow(job) for job in running])
        for job, result in zip(running, results):
            job.status, job.message = result.status, result.message
        ok = all(j.status == JobStatus.SUCCEEDED for j in jobs)
        failed = [f"{j.name}: {j.status}" + (f" ({j.message})" if j.message else "") for j in jobs
                  if j.status != JobStatus.SUCCEEDED]
        status = PushRunStatus.SUCCEEDED if ok else PushRunStatus.FAILED
        return await self._finish(inp, status, "; ".join(failed) or None, jobs, record)

    async def _follow(self, job: PushJobRef) -> WaitJobResult:
        if job.managed_id:
            return await workflow.execute_activity_method(
                GitActivities.push_wait_managed, WaitManagedInput(job.managed_id), start_to_close_timeout=JOB_DEADLINE,
                heartbeat_timeout=timedelta(seconds=30), retry_policy=WAIT_RETRY)
        result = await workflow.execute_activity_method(
            GitActivities.push_wait_job, WaitJobInput(job.cluster, job.job_id), start_to_close_timeout=JOB_DEADLINE,
            heartbeat_timeout=timedelta(seconds=30), retry_policy=WAIT_RETRY)
        if job.managed:  # a run from before managed pushes were managed jobs: its own cluster
            await workflow.execute_activity_method(
                GitActivities.push_down_cluster, DownClusterInput(job.cluster),
                start_to_close_timeout=timedelta(minutes=20), heartbeat_timeout=timedelta(seconds=60),
                retry_policy=WAIT_RETRY)
        return result

    async def _finish(self, inp: PushInput, status: str, message: str | None, jobs: list[PushJobRef],
                      record: Any) -> PushSummary:
        await record(status, message, jobs)
        self._summary = PushSummary(workflow.info().workflow_id, inp.sha, status, message, jobs)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._summary

    async def _record(self, rec: PushRecord) -> None:
        await workflow.execute_activity_method(
            GitActivities.push_record, rec, start_to_close_timeout=QUICK,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)))

    @workflow.update(name=PUSH_SUBMITTED_UPDATE)
    async def submitted(self) -> PushSummary:
        """What this push queued (or why nothing runs), once known."""
        await workflow.wait_condition(lambda: self._summary is not None)
        assert self._summary is not None
        return self._summary

    @workflow.query
    def summary(self) -> PushSummary | None:
        return self._summary


def _reason(err: ActivityError) -> str:
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)
