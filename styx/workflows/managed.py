"""ManagedJobWorkflow ``managed/<id>``: a task (or a pipeline of tasks) run to completion
through preemption, lost nodes and worker crashes — with no controller VM.

For each task in order, attempt after attempt:

1. ``managed_submit``: a cluster of its own, ``mj-<id>-<task>-<attempt>``, launched through
   the submission service (update-with-start of its ``ClusterWorkflow``, which runs the
   optimizer's launch attempts) with the task queued on it, ``setup`` first;
2. ``managed_watch``: until the job ends, probing the nodes every ``probe_seconds``, and
   classifying the end (``AttemptEnd``);
3. ``managed_down``: the cluster is taken down — always, before anything else happens;
4. then: SUCCEEDED → the next task; the user's program failed → again while
   ``max_restarts_on_errors`` allows, else FAILED (the pipeline stops); preempted (a node
   lost, an instance gone or stopped underneath) → RECOVERING, and again elsewhere, as the
   task's ``job_recovery`` strategy says: FAILOVER pins the next launch to the zone it ran
   in, then lets it go anywhere; EAGER_NEXT_REGION goes to another region first; a launch
   that finds nothing → again with backoff, FAILED_NO_RESOURCE after
   ``MAX_LAUNCH_FAILURES_IN_A_ROW``.

A job that finds no slot (``STYX_MANAGED_MAX_ACTIVE`` managed jobs hold a cluster, or its
owner's limits are full) launches nothing and waits, PENDING, until a job that frees a slot
wakes it (``MANAGED_SLOT_FREED_SIGNAL``, sent by ``managed_record``) or its timer fires (a
safety net, ``SLOT_WAIT_SIGNALLED`` seconds, jittered and growing), then asks again. Thousands of
waiting jobs thus cost nothing while no slot frees up (they polled on short timers before:
2,000 of them swamped one worker).

Cancelling the workflow (``styx jobs cancel``) takes the cluster down and ends CANCELLED.
The submit and down activities are never cut short by a cancel (a cancel is noted, and acted
on once they return), so a cluster is never launched after its down. The cluster's name is in
the state before it is submitted, and every path out downs it: no cluster is left behind.

Bounded: the state is a few counters and the current cluster's name; each attempt adds a
fixed number of events (the watch is one heartbeating activity however long the job runs);
the workflow continues-as-new every ``ATTEMPTS_PER_RUN`` attempts (or when Temporal suggests),
between attempts, when nothing is in flight; and one task gives up after ``max_recoveries``
recoveries (``STYX_MANAGED_MAX_RECOVERIES``), FAILED saying so.
"""

import asyncio
from datetime import timedelta
from typing import Any, Awaitable, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from styx.activities.managed import NO_SLOT, REFUSED, ManagedActivities
    from styx.contracts.managed import (
        MANAGED_JOB_WORKFLOW,
        MANAGED_SLOT_FREED_SIGNAL,
        MAX_LAUNCH_FAILURES_IN_A_ROW,
        AttemptEnd,
        ManagedDownInput,
        ManagedJobInput,
        ManagedJobResult,
        ManagedJobStatus,
        ManagedRecord,
        ManagedState,
        ManagedSubmitInput,
        ManagedSubmitResult,
        Placement,
        RecoveryPolicy,
        RecoveryStrategy,
        TaskProgress,
        WatchInput,
        WatchResult,
        managed_cluster_name,
    )
    from styx.workflows.job import record

T = TypeVar("T")

#: Continue-as-new after this many attempts in one run (history stays small however many
#: recoveries a long job sees).
ATTEMPTS_PER_RUN = 20
#: A job without a slot (``NoSlot``) waits on the workflow's timer (a cancel cuts it short).
SUBMIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20),
                           non_retryable_error_types=[REFUSED, NO_SLOT])
SLOT_WAIT_MIN, SLOT_WAIT_MAX = 2.0, 30.0
#: With the wake-up signal: the timer between two asks without one (seconds, doubling; each
#: wait is between once and twice it, at random).
SLOT_WAIT_SIGNALLED = (60.0, 600.0)
#: ``workflow.patched`` id of the wait on the signal (runs before it replay their sleeps).
SLOT_SIGNAL_PATCH = "managed-slot-signal"
#: Watching and taking down are retried until they succeed (a dead worker, a busy server).
PATIENT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
#: Waits after a launch that found nothing, by failures in a row (seconds).
LAUNCH_BACKOFF = (5.0, 20.0, 60.0)


@workflow.defn(name=MANAGED_JOB_WORKFLOW)
class ManagedJobWorkflow:
    @workflow.init
    def __init__(self, inp: ManagedJobInput) -> None:
        self.inp = inp
        self.state = inp.state or ManagedState()
        self._attempts_this_run = 0
        #: A cancel that arrived while a shielded step (submit, down) ran: acted on after it.
        self._cancel_noted = False
        #: A slot may have come free since the last ask (``MANAGED_SLOT_FREED_SIGNAL``).
        self._slot_freed = False
        self._status = ManagedJobStatus.PENDING

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.signal(name=MANAGED_SLOT_FREED_SIGNAL)
    def slot_freed(self) -> None:
        self._slot_freed = True

    @workflow.run
    async def run(self, inp: ManagedJobInput) -> ManagedJobResult:
        s = self.state
        try:
            while s.task_index < inp.num_tasks:
                ended = await self._run_task()
                if ended is not None:
                    return ended
                s.task_index += 1
                s.progress = TaskProgress()
            self._status = ManagedJobStatus.SUCCEEDED
            await self._record(status=ManagedJobStatus.SUCCEEDED, ended=True, clear_cluster=True)
            return ManagedJobResult(inp.managed_id, ManagedJobStatus.SUCCEEDED)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            await self._shielded(self._cancelled())
            raise

    # -- one task ---------------------------------------------------------------------

    def _policy(self) -> RecoveryPolicy:
        policies = self.inp.policies
        return policies[self.state.task_index] if self.state.task_index < len(policies) else RecoveryPolicy()

    async def _run_task(self) -> ManagedJobResult | None:
        """Attempts of the current task until it succeeds (None) or the job ends (its result)."""
        s, p, inp = self.state, self.state.progress, self.inp
        policy = self._policy()
        while True:
            self._continue_as_new_if_due()
            p.attempt += 1
            self._attempts_this_run += 1
            cluster = managed_cluster_name(inp.managed_id, s.task_index, p.attempt)
            s.cluster = cluster
            self._status = ManagedJobStatus.RECOVERING if p.attempt > 1 else ManagedJobStatus.STARTING
            await self._record(status=self._status, current_task=s.task_index, started=True,
                               task_index=s.task_index, task_status=self._status, attempt=p.attempt,
                               attempt_cluster=cluster, attempt_status=ManagedJobStatus.STARTING)
            end = await self._attempt(cluster, p.placement)
            await self._down()
            if end.region:
                p.region, p.zone = end.region, end.zone
            self._raise_if_cancel_noted()
            outcome = await self._after(end, policy)
            if outcome is not None or end.end == AttemptEnd.SUCCEEDED:
                return outcome

    async def _after(self, end: WatchResult, policy: RecoveryPolicy) -> ManagedJobResult | None:
        """Record how the attempt ended and decide: None to go on (the next task when it
        succeeded, another attempt otherwise), or the job's end."""
        s, p, inp = self.state, self.state.progress, self.inp
        attempt_end = dict(task_index=s.task_index, attempt=p.attempt, attempt_ended=True,
                           attempt_region=end.region, attempt_zone=end.zone)
        if end.end == AttemptEnd.SUCCEEDED:
            await self._record(task_status=ManagedJobStatus.SUCCEEDED, attempt_status=ManagedJobStatus.SUCCEEDED,
                               clear_cluster=True, **attempt_end)
            return None
        if end.end in (AttemptEnd.USER_FAILED, AttemptEnd.SETUP_FAILED):
            failed = ManagedJobStatus.FAILED_SETUP if end.end == AttemptEnd.SETUP_FAILED else ManagedJobStatus.FAILED
            if p.restarts < policy.max_restarts_on_errors:
                p.restarts += 1
                await self._record(status=ManagedJobStatus.RECOVERING, clear_cluster=True,
                                   message=f"restart {p.restarts} of {policy.max_restarts_on_errors} after: {end.message}",
                                   task_restarts=p.restarts, attempt_status=failed, attempt_reason=end.message,
                                   **attempt_end)
                return None
            return await self._finish(failed, self._what(end.message), attempt_status=failed,
                                      attempt_reason=end.message, **attempt_end)
        if end.end == AttemptEnd.REFUSED:
            return await self._finish(ManagedJobStatus.FAILED, self._what(end.message),
                                      attempt_status=ManagedJobStatus.FAILED, attempt_reason=end.message, **attempt_end)
        if end.end == AttemptEnd.LAUNCH_FAILED:
            pinned = bool(p.placement.region or p.placement.zone or p.placement.avoid_region)
            p.placement = Placement()  # the pinned place had nothing: anywhere the task allows
            if not pinned:
                p.launch_failures_in_a_row += 1
            if p.launch_failures_in_a_row >= MAX_LAUNCH_FAILURES_IN_A_ROW:
                return await self._finish(
                    ManagedJobStatus.FAILED_NO_RESOURCE,
                    self._what(f"no launch found resources {p.launch_failures_in_a_row} times in a row; "
                               f"last: {end.message}"),
                    attempt_status=ManagedJobStatus.FAILED_NO_RESOURCE, attempt_reason=end.message, **attempt_end)
            await self._record(status=ManagedJobStatus.RECOVERING, clear_cluster=True,
                               message=f"launch failed, trying again: {end.message}",
                               attempt_status=ManagedJobStatus.FAILED_NO_RESOURCE, attempt_reason=end.message,
                               **attempt_end)
            if not pinned:
                index = min(p.launch_failures_in_a_row, len(LAUNCH_BACKOFF)) - 1
                await workflow.sleep(LAUNCH_BACKOFF[index])
            return None
        # Preempted: recover, as the task's strategy says.
        p.launch_failures_in_a_row = 0
        p.recoveries += 1
        s.recoveries += 1
        if p.recoveries > inp.max_recoveries:
            return await self._finish(
                ManagedJobStatus.FAILED,
                self._what(f"gave up after {inp.max_recoveries} recoveries (STYX_MANAGED_MAX_RECOVERIES); "
                           f"last: {end.message}"),
                attempt_status=ManagedJobStatus.RECOVERING, attempt_reason=end.message, **attempt_end)
        if policy.strategy == RecoveryStrategy.EAGER_NEXT_REGION and end.region:
            p.placement = Placement(avoid_region=end.region)
        elif end.region:
            p.placement = Placement(region=end.region, zone=end.zone)
        else:
            p.placement = Placement()
        self._status = ManagedJobStatus.RECOVERING
        await self._record(status=ManagedJobStatus.RECOVERING, recoveries=s.recoveries, clear_cluster=True,
                           message=f"recovering: {end.message}", task_status=ManagedJobStatus.RECOVERING,
                           task_recoveries=p.recoveries, attempt_status="PREEMPTED", attempt_reason=end.message,
                           **attempt_end)
        return None

    def _what(self, message: str | None) -> str:
        if self.inp.num_tasks > 1:
            return f"task {self.state.task_index}: {message}"
        return message or ""

    async def _finish(self, status: str, message: str, **attempt: Any) -> ManagedJobResult:
        """The job ends (a task failed, or was given up): the later tasks do not run."""
        self._status = status
        await self._record(status=status, message=message, ended=True, clear_cluster=True, task_status=status,
                           task_message=message, skip_rest=ManagedJobStatus.CANCELLED, **attempt)
        return ManagedJobResult(self.inp.managed_id, status, message)

    async def _attempt(self, cluster: str, placement: Placement) -> WatchResult:
        """Launch the cluster with the task queued, then watch the job to its end."""
        s, p, inp = self.state, self.state.progress, self.inp
        wait, signalled_wait = SLOT_WAIT_MIN, SLOT_WAIT_SIGNALLED[0]
        while True:
            self._slot_freed = False  # a wake from here on means: ask again
            try:
                sub: ManagedSubmitResult = await self._shielded(workflow.execute_activity_method(
                    ManagedActivities.managed_submit,
                    ManagedSubmitInput(inp.managed_id, s.task_index, p.attempt, cluster, placement),
                    start_to_close_timeout=timedelta(minutes=5), heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=SUBMIT_RETRY,
                    summary=f"launch {cluster} and queue task {s.task_index}"))
                if sub.waiting is None:
                    break
            except ActivityError as err:
                if getattr(err.cause, "type", None) != NO_SLOT:
                    return WatchResult(AttemptEnd.REFUSED, _reason(err))
            # No slot (STYX_MANAGED_MAX_ACTIVE, or the owner's limits): nothing was launched.
            # Wait for a wake (or a timer); a cancel cuts it short; the history stays bounded.
            self._raise_if_cancel_noted()
            if workflow.info().is_continue_as_new_suggested():
                p.attempt -= 1  # the same attempt, in the next run
                self._continue_as_new_now()
            if workflow.patched(SLOT_SIGNAL_PATCH):
                # Jittered (deterministically): jobs submitted together must not all ask again
                # at the same instant (2,000 timers firing at once swamped the worker).
                timeout = signalled_wait * (1 + workflow.random().random())
                try:
                    await workflow.wait_condition(lambda: self._slot_freed, timeout=timeout)
                except asyncio.TimeoutError:
                    pass
                signalled_wait = min(signalled_wait * 2, SLOT_WAIT_SIGNALLED[1])
            else:
                await workflow.sleep(wait)
                wait = min(wait * 2, SLOT_WAIT_MAX)
        s.provider, s.region = sub.provider, sub.region
        self._raise_if_cancel_noted()
        return await workflow.execute_activity_method(
            ManagedActivities.managed_watch,
            WatchInput(inp.managed_id, s.task_index, p.attempt, cluster, sub.job_id, sub.job_workflow_id,
                       inp.probe_seconds),
            # Jobs may run for weeks; the heartbeat is what notices a dead worker.
            start_to_close_timeout=timedelta(days=365), heartbeat_timeout=timedelta(seconds=20),
            retry_policy=PATIENT_RETRY, summary=f"watch job {sub.job_id} on {cluster}")

    async def _down(self) -> None:
        """Take the current cluster down (whatever state it is in), shielded from a cancel."""
        s = self.state
        if s.cluster is None:
            return
        await self._shielded(workflow.execute_activity_method(
            ManagedActivities.managed_down, ManagedDownInput(s.cluster, s.provider, s.region),
            start_to_close_timeout=timedelta(hours=2), heartbeat_timeout=timedelta(seconds=20),
            retry_policy=PATIENT_RETRY, summary=f"take {s.cluster} down"))
        s.cluster = None

    async def _cancelled(self) -> None:
        s, p = self.state, self.state.progress
        self._status = ManagedJobStatus.CANCELLING
        await self._record(status=ManagedJobStatus.CANCELLING)
        await self._down()
        self._status = ManagedJobStatus.CANCELLED
        attempt = dict(attempt=p.attempt, attempt_status=ManagedJobStatus.CANCELLED, attempt_ended=True) \
            if p.attempt else {}
        await self._record(status=ManagedJobStatus.CANCELLED, message="cancelled", ended=True, clear_cluster=True,
                           task_index=s.task_index, task_status=ManagedJobStatus.CANCELLED,
                           skip_rest=ManagedJobStatus.CANCELLED, **attempt)

    # -- plumbing ---------------------------------------------------------------------

    async def _shielded(self, coro: Awaitable[T]) -> T:
        """Await ``coro`` to its end even if the workflow is cancelled meanwhile; the cancel
        is noted (``_raise_if_cancel_noted``) rather than lost."""
        task = asyncio.ensure_future(coro)
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    raise
                self._cancel_noted = True

    def _raise_if_cancel_noted(self) -> None:
        if self._cancel_noted:
            self._cancel_noted = False
            raise asyncio.CancelledError()

    def _continue_as_new_if_due(self) -> None:
        if self._attempts_this_run >= ATTEMPTS_PER_RUN or workflow.info().is_continue_as_new_suggested():
            self._continue_as_new_now()

    def _continue_as_new_now(self) -> None:
        inp = self.inp
        workflow.continue_as_new(ManagedJobInput(
            inp.managed_id, inp.num_tasks, inp.owner, inp.max_recoveries, inp.policies, inp.probe_seconds,
            state=self.state))

    async def _record(self, **fields: Any) -> None:
        await record(ManagedActivities.managed_record, ManagedRecord(self.inp.managed_id, **fields))


def _reason(err: ActivityError) -> str:
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or err)
