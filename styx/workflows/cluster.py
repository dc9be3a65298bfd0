"""ClusterWorkflow ``cluster/<name>``: a cluster's whole life, and its job queue.

Provisions the nodes through the provider's activities, then serves Updates
(``submit_job``, ``cancel_job``, ``stop``, ``start``, ``down``, ``set_autostop``) and the
``describe`` query. A submission carrying an idempotency key already seen returns the job
the first one queued: the last ``REMEMBERED_SUBMISSIONS`` keys live in ``ClusterState`` and
so survive continue-as-new, which Temporal's own update-id deduplication does not. Jobs wait
in submission order until the nodes have the CPUs and accelerators they ask for, then run.

Jobs run inline (patch ``styx-inline-jobs``): each is a task of this workflow (``JobRun``,
shared with ``JobWorkflow``) whose activities this workflow schedules; its end frees its
place directly. Its ``RunningJob`` carries what the next run needs to take it up again
after continue-as-new (the queued job, its start time, how far it got, a cancel asked):
phases are re-attached on the node, never started twice. Runs begun before the patch start
child ``JobWorkflow``s (ABANDON parent-close policy, tracked by id), which report their end
with the ``job_finished`` signal, sent by workflow id; a later run still hears and cancels
those.
When nothing runs or waits for ``autostop_minutes``, the cluster stops (or downs) itself.

Failsafe (``styx.contracts.failsafe``): an autostopped cluster's nodes carry a deadline of
their own, pushed forward by ``_push_failsafe`` in the main loop (the autostop time while
idle, a lease while busy), so they stop themselves if Styx is gone; a push that finds they
did records the cluster STOPPED (or TERMINATED), ``stopped_by`` failsafe. Gated by the
``failsafe-deadline`` patch, so histories from before it replay unchanged.

Node health: a node a job found unreachable for good (``JobFinished.lost_nodes``) is marked
DOWN (``state.down_nodes``; the nodes table's status and the cluster's status message say
so) and no job is placed on it; the ``refresh`` update probes every node now (the provider's
``describe_nodes``, then SSH: ``probe_nodes``), marks the dead ones DOWN and places jobs
again on those that came back (after killing what the jobs that lost them left there);
``start`` brings every node back UP.

Bounded state (patch ``styx-bounded-queue``): a submission carries its job's shape and the id
of its body in the database (``spec_id``; the job workflow loads it), never the task itself.
The workflow holds at most ``spec.queue_window`` (``QUEUE_WINDOW``) waiting jobs (``state.queue``); a job submitted
while the window is full, or while older jobs wait in the database, is only written there
(PENDING, ``state.backlog_from`` on), and the window is refilled from the database in
submission order once it is half empty (``_refill``, the ``pending_jobs`` activity). Stop, down and
a failed launch end the whole queue in one write (``end_pending_jobs``), so they take as long
with 10,000 jobs waiting as with one; cancelling a job in the database is one conditional write
(``cancel_pending_job``). Runs begun before the patch keep every queued job in their state, as
they did.
"""

import asyncio
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from styx.contracts.clusters import (
        BATCHED_ROWS_PATCH,
        BOUNDED_QUEUE_PATCH,
        INLINE_JOBS_PATCH,
        MAX_AUTOSTOP_MINUTES,
        MAX_QUEUE_WINDOW,
        MAX_RUNNING_JOBS,
        REMEMBERED_SUBMISSIONS,
        AutostopInput,
        CancelJobInput,
        CancelJobResult,
        ClusterDescription,
        ClusterInput,
        ClusterRecord,
        ClusterState,
        ClusterStatus,
        MAX_DOWN_JOBS,
        NodeDown,
        NodeRequest,
        NodeStatus,
        QueuedJob,
        RunningJob,
        SubmitJobInput,
        SubmitJobResult,
    )
    from styx.contracts.jobs import (
        CancelPendingJobInput,
        CancelPendingJobOutput,
        EndPendingJobsInput,
        JobFinished,
        JobInput,
        JobRecord,
        JobStatus,
        KillJobInput,
        PendingJobsInput,
        PendingJobsOutput,
        RecordJobsInput,
        job_workflow_id,
        run_summary,
    )
    from styx.contracts.providers import (
        NodeProbe,
        PlanOutput,
        ProbeNodesInput,
        ProbeNodesOutput,
        ProviderErrors,
        ProviderInput,
        ProviderOutput,
    )
    from styx.contracts.search import CLUSTER_KEY
    from styx.contracts.clusters import StoppedBy
    from styx.contracts.failsafe import BUSY_LEASE, FailsafeInput, FailsafeOutput
    from styx.activities.failsafe import FailsafeActivities
    from styx.activities.health import NodeHealthActivities
    from styx.activities.providers import ProviderActivities
    from styx.activities.ssh import SshActivities
    from styx.activities.state import StateActivities
    from styx.workflows.job import STATE_RETRY, STATE_TIMEOUT, JobRun, JobWorkflow, record

PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=3,
    non_retryable_error_types=[ProviderErrors.INVALID, ProviderErrors.FAILED, ProviderErrors.NO_CREDENTIALS],
)
#: How long ``stop``/``down`` wait for cancelled jobs to be killed before stopping the nodes.
DRAIN_TIMEOUT = timedelta(seconds=60)
#: ``refresh``: one look at the nodes, tried twice at most (the caller waits for it).
PROBE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2,
                          non_retryable_error_types=[ProviderErrors.INVALID, ProviderErrors.NO_CREDENTIALS])
#: Killing what a failed job left on a node that came back: best effort, quickly.
LEFTOVER_KILL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2)
#: Pushing the nodes' failsafe deadline: best effort; a failed push is tried again later.
FAILSAFE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=2,
                             non_retryable_error_types=[ProviderErrors.INVALID, ProviderErrors.NO_CREDENTIALS])
#: How long after a failed push the next one is tried.
FAILSAFE_RETRY_AFTER = timedelta(minutes=1)
#: The patch id that turns the failsafe push on (histories from before it replay without).
FAILSAFE_PATCH = "failsafe-deadline"
#: The patch id after which the main loop ends as soon as its own pass ended the cluster (a
#: failsafe push that found the nodes terminated), instead of waiting for a wake-up first.
END_IN_PASS_PATCH = "end-in-pass"
#: The patch id after which ending the queue also ends PENDING rows past the ids handed out
#: (``_fail_queued``).
PHANTOM_ROWS_PATCH = "phantom-rows"


def _fits(free: dict[str, float], need: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + 1e-9 >= v for k, v in need.items())


@workflow.defn(name="ClusterWorkflow", sandboxed=False)
class ClusterWorkflow:
    @workflow.init
    def __init__(self, inp: ClusterInput) -> None:
        # Set here, not in run(): an update delivered with the start runs before run() does.
        self.spec = inp.spec
        self.state = inp.state or ClusterState()
        self._fresh = inp.state is None
        #: Job rows reference the cluster row: none is written before it exists.
        self._cluster_recorded = not self._fresh
        self._wake = False
        self._lifecycle = asyncio.Lock()
        #: Idempotency keys whose submission is still writing its job row.
        self._recording: set[str] = set()
        #: Why the cluster is stopping or going down, while it drains: no job starts or is taken.
        self._halting: str | None = None
        #: Child job workflows whose start is in flight: Temporal refuses a cancel of a child
        #: sent in the same workflow task as its start, so cancels wait for these first.
        self._starting = 0
        #: Node health changed (a job lost a node): the main loop records it.
        self._health_changed = False
        #: Failsafe pushes on (see the module docstring); when to try a failed push again, and
        #: the autostop time last recorded (a change is recorded for ``styx status``).
        self._failsafe_on = False
        self._failsafe_retry_at: datetime | None = None
        self._recorded_autostop_at: str | None = None
        #: Jobs whose PENDING row a submission is still writing (runs before BATCHED_ROWS_PATCH).
        self._writing: set[int] = set()
        #: PENDING rows of jobs taken since the main loop last wrote them (the caller writes
        #: them too, at once: these are for a caller that died first), and those being written.
        self._unrecorded: list[JobRecord] = []
        self._flushing: set[int] = set()
        #: Held while the window is refilled from the database, and while a job waiting there
        #: is cancelled: a job is never both fetched and cancelled.
        self._backlog_lock = asyncio.Lock()
        #: The jobs running inline (``INLINE_JOBS_PATCH``), by id, and those of them ending
        #: (killing, recording): continue-as-new waits for these.
        self._jobs: dict[int, asyncio.Task[None]] = {}
        self._ending: set[int] = set()

    # -- main loop ----------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: ClusterInput) -> ClusterDescription:
        workflow.upsert_search_attributes([CLUSTER_KEY.value_set(self.spec.name)])
        self._failsafe_on = workflow.patched(FAILSAFE_PATCH)
        if self._fresh:
            async with self._lifecycle:
                await self._provision()
        for job in self.state.running:  # inline jobs of the run before continue-as-new
            if job.inline:
                self._spawn(job)
        while self.state.status not in (ClusterStatus.TERMINATED, ClusterStatus.FAILED):
            await self._flush_rows()
            if self._health_changed:
                self._health_changed = False
                await self._record_health()
            await self._refill()
            await self._schedule()
            await self._push_failsafe()
            if self.state.status in (ClusterStatus.TERMINATED, ClusterStatus.FAILED) \
                    and workflow.patched(END_IN_PASS_PATCH):
                break  # nothing would wake the loop again
            timeout = self._wake_after()
            try:
                await workflow.wait_condition(lambda: self._wake, timeout=timeout)
            except asyncio.TimeoutError:
                await self._push_failsafe(before_autostop=True)
                await self._autostop()
            self._wake = False
            if workflow.info().is_continue_as_new_suggested() and not self._lifecycle.locked():
                await self._quiesce()
                workflow.continue_as_new(ClusterInput(self.spec, self.state))
        await self._quiesce()
        return self.describe()

    async def _quiesce(self) -> None:
        """Wait until no handler runs, no inline job is ending, and every job row taken is
        written."""
        while True:
            await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._ending)
            if not self._unrecorded:
                return
            await self._flush_rows()

    def _poke(self) -> None:
        self._wake = True

    def _window(self) -> int:
        return max(1, min(self.spec.queue_window, MAX_QUEUE_WINDOW))

    @staticmethod
    def _batched() -> bool:
        """Whether submissions are answered at once, their rows written in batches."""
        return workflow.patched(BATCHED_ROWS_PATCH)

    @staticmethod
    def _inline() -> bool:
        """Whether jobs run inside this workflow (False only for runs begun before, which
        keep starting child workflows)."""
        return workflow.patched(INLINE_JOBS_PATCH)

    @staticmethod
    def _bounded() -> bool:
        """Whether this run keeps its queue bounded (False only replaying a run begun before)."""
        return workflow.patched(BOUNDED_QUEUE_PATCH)

    # -- provider -----------------------------------------------------------------------
    def _provider_input(self, attempt: dict[str, Any] | None = None) -> ProviderInput:
        return ProviderInput(self.spec.name, self.spec.provider, self.spec.num_nodes, self.spec.resources,
                               attempt=attempt or {}, region=self.state.region or self.spec.region)

    async def _provider(self, activity: Callable[[Any, ProviderInput], Awaitable[Any]],
                        attempt: dict[str, Any] | None = None) -> Any:
        return await workflow.execute_activity_method(
            activity, self._provider_input(attempt),
            start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=10),
            retry_policy=PROVIDER_RETRY,
        )

    async def _record_cluster(self, **extra: Any) -> None:
        spec = self.spec
        await record(StateActivities.record_cluster, ClusterRecord(
            name=spec.name, provider=spec.provider, status=self.state.status,
            num_nodes=spec.num_nodes, resources=spec.resources,
            workflow_id=workflow.info().workflow_id, autostop_minutes=spec.autostop_minutes,
            autostop_down=spec.autostop_down, status_message=self._status_message(), owner=spec.owner,
            **self._cost_fields(), **extra,
        ))

    def _cost_fields(self) -> dict[str, Any]:
        """What a record carries for ``styx status`` and the cost report."""
        offer = self.state.offer
        self._recorded_autostop_at = self._autostop_at()
        return dict(at=workflow.now().isoformat(), launch_id=workflow.info().first_execution_run_id,
                    instance_type=offer.get("instance_type"), use_spot=bool(offer.get("use_spot")),
                    hourly_price=offer.get("hourly_price"), autostop_at=self._recorded_autostop_at,
                    stopped_by=self.state.stopped_by)

    async def _provision(self) -> None:
        """Try the provider's launch attempts in order; a capacity error moves to the next
        one (each attempt is its own activity, visible in the history and in `styx status`)."""
        await self._record_cluster(fresh=True)
        self._cluster_recorded = True
        out: ProviderOutput | None = None
        failures: list[str] = []
        try:
            plan: PlanOutput = await self._provider(ProviderActivities.plan)
            for attempt in plan.attempts:
                try:
                    out = await self._provider(ProviderActivities.provision, self._with_autostop(attempt))
                    self.state.offer = {k: attempt.get(k) for k in ("instance_type", "use_spot", "hourly_price")}
                    break
                except ActivityError as err:
                    if getattr(err.cause, "type", None) != ProviderErrors.CAPACITY:
                        raise
                    failures.append(f"attempt {len(failures) + 1} ({_where(attempt)}): {err.cause}")
                    self.state.message = "; ".join(failures[-3:]) + "; trying the next"
                    await self._record_cluster()
        except ActivityError as err:
            failures.append(str(err.cause or err))
        if out is None:
            self.state.message = "launch failed: " + ("; ".join(failures) or "no launch attempt to try")
            workflow.logger.warning("cluster %s: %s", self.spec.name, self.state.message)
            await self._provider(ProviderActivities.terminate)  # leave no node behind
            self.state.status = ClusterStatus.FAILED
            await self._record_cluster(nodes=[])
            await self._fail_queued(self.state.message)
            return
        self.state.nodes = out.nodes
        self.state.region, self.state.zone = out.region, out.zone
        self.state.status = ClusterStatus.UP
        self.state.message = f"launched after {len(failures)} failed attempt(s): {failures[-1]}" if failures else None
        self._mark_busy()
        await self._record_cluster(nodes=out.nodes, region=out.region, zone=out.zone, mark_launched=True)

    def _with_autostop(self, attempt: dict[str, Any]) -> dict[str, Any]:
        """The attempt, telling the provider the autostop window its nodes' own failsafe
        starts with (AWS user-data); unchanged without autostop or before the patch."""
        if not self._failsafe_on or self.spec.autostop_minutes is None:
            return attempt
        return {**attempt, "autostop_minutes": self.spec.autostop_minutes, "autostop_down": self.spec.autostop_down}

    # -- node health ----------------------------------------------------------------------
    def _down_ranks(self) -> set[int]:
        return {d.rank for d in self.state.down_nodes}

    def _node_name(self, rank: int) -> str:
        node = self.state.nodes[rank] if 0 <= rank < len(self.state.nodes) else {}
        address = node.get("ip") or node.get("host")
        return f"node {rank}" + (f" ({address})" if address else "")

    def _status_message(self) -> str | None:
        """The launch's message, then one line per DOWN node."""
        parts = [self.state.message] if self.state.message else []
        if self.state.status == ClusterStatus.UP and self.state.down_nodes:
            down = [f"{self._node_name(d.rank)} is DOWN: {d.reason}" for d in self.state.down_nodes]
            up = len(self.state.nodes) - len(self.state.down_nodes)
            where = f"jobs run on the {up} other node(s)" if up else "no node is UP: jobs wait"
            parts.append("; ".join(down) + f" — {where}; `styx status --refresh` looks again")
        return "; ".join(parts) or None

    def _nodes_with_health(self) -> list[dict[str, Any]]:
        down = self._down_ranks()
        return [{**node, "status": NodeStatus.DOWN if rank in down else NodeStatus.UP}
                for rank, node in enumerate(self.state.nodes)]

    async def _record_health(self) -> None:
        await self._record_cluster(nodes=self._nodes_with_health())

    def _mark_down(self, lost: NodeDown) -> bool:
        """Note ``lost`` (a node a job gave up on); True if it was not DOWN yet."""
        if not 0 <= lost.rank < len(self.state.nodes) or self.state.status != ClusterStatus.UP:
            return False  # a node of an earlier start, or the cluster stopped meanwhile
        for known in self.state.down_nodes:
            if known.rank == lost.rank:
                known.jobs = (known.jobs + [j for j in lost.jobs if j not in known.jobs])[-MAX_DOWN_JOBS:]
                return False
        self.state.down_nodes = sorted([*self.state.down_nodes, lost], key=lambda d: d.rank)
        workflow.logger.warning("cluster %s: %s is DOWN: %s", self.spec.name, self._node_name(lost.rank), lost.reason)
        return True

    async def _apply_probes(self, probes: list[NodeProbe]) -> None:
        """Mark the nodes a probe found dead DOWN, and the DOWN ones it found alive UP again
        (first killing there what the jobs that lost them may have left running)."""
        now = workflow.now().isoformat()
        down = {d.rank: d for d in self.state.down_nodes}
        revived: list[NodeDown] = []
        for probe in probes:
            if probe.alive and probe.rank in down:
                revived.append(down.pop(probe.rank))
            elif not probe.alive and probe.rank not in down and 0 <= probe.rank < len(self.state.nodes):
                down[probe.rank] = NodeDown(probe.rank, probe.reason, since=now)
                workflow.logger.warning("cluster %s: %s is DOWN: %s", self.spec.name,
                                        self._node_name(probe.rank), probe.reason)
        leftovers = [(node.rank, job_id) for node in revived for job_id in node.jobs]
        if leftovers:  # before a new job may be placed there
            await asyncio.gather(*(self._kill_leftover(rank, job_id) for rank, job_id in leftovers))
        self.state.down_nodes = sorted(down.values(), key=lambda d: d.rank)
        await self._record_health()
        self._poke()

    async def _kill_leftover(self, rank: int, job_id: int) -> None:
        try:
            await workflow.execute_activity_method(
                SshActivities.kill_job, KillJobInput(self.spec.name, job_id, [self.state.nodes[rank]]),
                start_to_close_timeout=timedelta(seconds=60), retry_policy=LEFTOVER_KILL_RETRY,
                summary=f"kill what job {job_id} left on {self._node_name(rank)}",
            )
        except ActivityError as err:
            workflow.logger.warning("cluster %s: could not kill job %s on %s: %s", self.spec.name, job_id,
                                    self._node_name(rank), err.cause)

    # -- the queue ----------------------------------------------------------------------
    def _free(self) -> list[dict[str, float]]:
        free = [
            {"cpus": self.spec.node_cpus, **{k: float(v) for k, v in self.spec.node_accelerators.items()}}
            for _ in self.state.nodes
        ]
        for job in self.state.running:
            for rank in job.ranks:
                free[rank]["cpus"] -= job.cpus
                for acc, n in job.accelerators.items():
                    free[rank][acc] = free[rank].get(acc, 0.0) - n
        return free

    def _place(self, job: QueuedJob) -> list[int] | None:
        if len(self.state.running) >= MAX_RUNNING_JOBS:
            return None
        need = {"cpus": job.cpus, **{k: float(v) for k, v in job.accelerators.items()}}
        down = self._down_ranks()
        ranks = [rank for rank, free in enumerate(self._free()) if rank not in down and _fits(free, need)]
        return ranks[: job.num_nodes] if len(ranks) >= job.num_nodes else None

    async def _schedule(self) -> None:
        """Start waiting jobs, in submission order, while the head of the queue fits."""
        while self.state.status == ClusterStatus.UP and self._halting is None and self.state.queue:
            job = self.state.queue[0]
            ranks = self._place(job)
            if ranks is None:
                return
            self.state.queue.pop(0)
            if self._inline():
                running = RunningJob(job.job_id, workflow.info().workflow_id, ranks, job.cpus, job.accelerators,
                                     inline=True, queued=job, started_at=workflow.now().isoformat())
                self.state.running.append(running)
                self._spawn(running)
                continue
            wid = job_workflow_id(self.spec.name, job.job_id)
            self.state.running.append(RunningJob(job.job_id, wid, ranks, job.cpus, job.accelerators))
            self._starting += 1
            try:
                child = await self._start_job(job, wid, ranks)
            finally:
                self._starting -= 1
            # Its end comes by signal; a failed or cancelled child's result is not an error here.
            child.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _job_input(self, job: QueuedJob, ranks: list[int], started_at: str | None = None) -> JobInput:
        return JobInput(
            cluster=self.spec.name, job_id=job.job_id, task=job.task,
            nodes=[self.state.nodes[r] for r in ranks],
            cluster_workflow_id=workflow.info().workflow_id, env=job.env,
            accelerators=job.accelerators, sealed_secrets=job.sealed_secrets,
            provider=self.spec.provider, region=self.state.region or self.spec.region,
            zone=self.state.zone,
            run_setup=job.run_setup, spec_id=job.spec_id, started_at=started_at, shape=job.shape,
        )

    async def _start_job(self, job: QueuedJob, wid: str, ranks: list[int]) -> Any:
        return await workflow.start_child_workflow(
            JobWorkflow.run,
            self._job_input(job, ranks),
            id=wid,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=workflow.info().typed_search_attributes,
        )

    # -- jobs run inline ------------------------------------------------------------------
    def _spawn(self, running: RunningJob) -> None:
        """Run (or, after continue-as-new, take up again) an inline job as a task of this
        workflow; its end frees its place as a child's ``job_finished`` signal does."""
        assert running.queued is not None
        inp = self._job_input(running.queued, running.ranks, running.started_at)

        def reached(stage: str) -> None:
            if stage == "ending":
                self._ending.add(running.job_id)
            else:
                running.stage = stage

        job = JobRun(inline=True, resume=running.stage, cancelled=running.cancelled, on_stage=reached)
        task = asyncio.create_task(self._run_inline(job, inp))
        self._jobs[running.job_id] = task

        def done(task: "asyncio.Task[None]") -> None:
            # Cancelled before its first step, the task never ran the job's code (which ends a
            # cancelled job itself): end it again, from the start, as cancelled.
            if task.cancelled() and any(j is running for j in self.state.running):
                self._spawn(running)

        task.add_done_callback(done)

    async def _run_job(self, job: JobRun, inp: JobInput) -> JobFinished:
        """Run one job to its end (a test's cluster workflow may run its jobs on workflow time)."""
        _, finished = await job.run(inp)
        return finished

    async def _run_inline(self, job: JobRun, inp: JobInput) -> None:
        try:
            finished = await self._run_job(job, inp)
        finally:
            self._jobs.pop(inp.job_id, None)
            self._ending.discard(inp.job_id)
        self._job_ended(finished)

    def _cancel_inline(self, running: RunningJob) -> None:
        """Cancel an inline job: its task ends it (kills it on its nodes, records CANCELLED);
        ``running.cancelled`` makes the next run end it so if this one continues as new first."""
        running.cancelled = True
        task = self._jobs.get(running.job_id)
        if task is not None and not task.done():
            task.cancel()

    async def _cancel_child(self, workflow_id: str) -> None:
        await workflow.wait_condition(lambda: self._starting == 0)
        await workflow.get_external_workflow_handle(workflow_id).cancel()

    async def _refill(self) -> None:
        """Take the oldest jobs waiting in the database into the window, once it runs low."""
        if self.state.backlog_from is None or len(self.state.queue) >= max(1, self._window() // 2):
            return
        if self.state.status != ClusterStatus.UP or self._halting is not None:
            return
        async with self._backlog_lock:
            start = self.state.backlog_from
            if start is None:
                return
            # Not past a row still being written: it is fetched next time, in its turn.
            upto = min((j for j in self._unwritten() if j >= start), default=self.state.next_job_id)
            want = self._window() - len(self.state.queue)
            if upto <= start or want <= 0:
                return
            out: PendingJobsOutput = await workflow.execute_local_activity_method(
                StateActivities.pending_jobs, PendingJobsInput(self.spec.name, start, upto, want),
                start_to_close_timeout=STATE_TIMEOUT, retry_policy=STATE_RETRY,
            )
            if self.state.backlog_from != start:
                return  # the queue was ended meanwhile (stop, down)
            self.state.queue.extend(QueuedJob(j.job_id, j.name, j.cpus, dict(j.accelerators), j.num_nodes,
                                              spec_id=j.spec_id) for j in out.jobs)
            self.state.queue.sort(key=lambda j: j.job_id)
            after = out.jobs[-1].job_id + 1 if len(out.jobs) == want else upto
            self.state.backlog_from = after if after < self.state.next_job_id else None

    async def _fail_queued(self, message: str, status: str = JobStatus.FAILED) -> None:
        if not self._bounded():
            queued, self.state.queue = self.state.queue, []
            for job in queued:
                await self._record_job(job.job_id, status, message=message)
            return
        # Every row a submission is writing first, or it would land PENDING after this.
        await self._flush_rows()
        await workflow.wait_condition(lambda: not self._unwritten())
        async with self._backlog_lock:
            queued, self.state.queue = self.state.queue, []
            backlog, self.state.backlog_from = self.state.backlog_from, None
            # A PENDING row past the ids this run handed out is a submission whose workflow
            # task was lost (Temporal killed after the batched row write): end it too, and
            # hand out no id a row holds.
            phantoms = workflow.patched(PHANTOM_ROWS_PATCH)
            if not queued and backlog is None and not phantoms:
                return
            if backlog is None and phantoms:
                backlog = self.state.next_job_id
            highest = await workflow.execute_local_activity_method(
                StateActivities.end_pending_jobs,
                EndPendingJobsInput(self.spec.name, status, message, [j.job_id for j in queued], backlog),
                start_to_close_timeout=STATE_TIMEOUT, retry_policy=STATE_RETRY,
            )
            if phantoms and highest is not None and highest >= self.state.next_job_id:
                self.state.next_job_id = highest + 1

    def _unwritten(self) -> set[int]:
        """Jobs taken whose PENDING row may not be in the database yet."""
        return self._writing | self._flushing | {r.job_id for r in self._unrecorded}

    async def _flush_rows(self) -> None:
        """Write the PENDING rows of the jobs taken since the last time, 500 at a time."""
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded[:500], self._unrecorded[500:]
            ids = {r.job_id for r in batch}
            self._flushing |= ids
            try:
                await workflow.wait_condition(lambda: self._cluster_recorded)
                await workflow.execute_local_activity_method(
                    StateActivities.record_jobs, RecordJobsInput(batch),
                    start_to_close_timeout=STATE_TIMEOUT, retry_policy=STATE_RETRY,
                )
            finally:
                self._flushing -= ids

    async def _record_job(self, job_id: int, status: str, **extra: Any) -> None:
        await record(StateActivities.record_job,
                     JobRecord(cluster=self.spec.name, job_id=job_id, status=status, **extra))

    @workflow.signal
    def job_finished(self, finished: JobFinished) -> None:
        """A child ``JobWorkflow`` ended (jobs run inline end through ``_job_ended`` directly)."""
        self._job_ended(finished)

    def _job_ended(self, finished: JobFinished) -> None:
        before = len(self.state.running)
        self.state.running = [j for j in self.state.running if j.job_id != finished.job_id]
        for lost in finished.lost_nodes:
            self._health_changed |= self._mark_down(lost)
        if len(self.state.running) != before or self._health_changed:
            self._mark_busy()
            self._poke()

    # -- updates ------------------------------------------------------------------------
    @workflow.update
    async def submit_job(self, req: SubmitJobInput) -> SubmitJobResult:
        key = req.idempotency_key
        if key and key in self.state.submissions:
            # A retry: answer once the first submission's job row is written, as it would have.
            await workflow.wait_condition(lambda: key not in self._recording)
            return self.state.submissions[key]
        job_id = self.state.next_job_id
        self.state.next_job_id += 1
        name = req.name or f"job-{job_id}"
        # An inline job's workflow is the cluster's (its activities are in this history).
        wid = workflow.info().workflow_id if self._inline() else job_workflow_id(self.spec.name, job_id)
        result = SubmitJobResult(job_id, wid, req.spec_id)
        if key:
            self._remember(key, result)
        # A job whose body is in the database waits there too when the window is full (or
        # older jobs already wait there): the state holds at most QUEUE_WINDOW jobs.
        spill = req.spec_id is not None and self._bounded() and (
            self.state.backlog_from is not None or len(self.state.queue) >= self._window())
        if spill:
            if self.state.backlog_from is None:
                self.state.backlog_from = job_id
        else:
            self.state.queue.append(QueuedJob(job_id, name, req.cpus, dict(req.accelerators), req.num_nodes,
                                              req.task, dict(req.env), req.sealed_secrets, req.run_setup,
                                              spec_id=req.spec_id, shape=req.shape))
        row = JobRecord(
            cluster=self.spec.name, job_id=job_id, status=JobStatus.PENDING, name=name, cpus=req.cpus,
            accelerators=req.accelerators, num_nodes=req.num_nodes,
            run_summary=req.run_summary or run_summary(req.task.get("run")), workflow_id=wid, user=req.user,
            spec_id=req.spec_id)
        self._mark_busy()
        self._poke()  # the job may start while its row is written: the DB keeps the later status
        if self._batched():
            # Answered now: the caller writes the row, and so does the main loop, in a batch.
            self._unrecorded.append(row)
            await workflow.wait_condition(lambda: self._cluster_recorded)  # a new cluster's row first
            return result
        self._writing.add(job_id)
        if key:
            self._recording.add(key)
        try:
            await workflow.wait_condition(lambda: self._cluster_recorded)
            await record(StateActivities.record_job, row)
        finally:
            self._recording.discard(key or "")
            self._writing.discard(job_id)
            if spill:
                self._poke()  # its row is there: the window may take it now
        return result

    def _remember(self, key: str, result: SubmitJobResult) -> None:
        remembered = self.state.submissions
        remembered[key] = result
        while len(remembered) > REMEMBERED_SUBMISSIONS:
            del remembered[next(iter(remembered))]  # dicts keep insertion order: the oldest

    @submit_job.validator
    def _validate_submit(self, req: SubmitJobInput) -> None:
        """Refuse a job the cluster cannot take. A launch onto an existing cluster is taken when
        the task fits its nodes (a field the task leaves out fits anything), as SkyPilot reuses
        a cluster; it is refused naming the first requirement that does not fit."""
        if req.idempotency_key and req.idempotency_key in self.state.submissions:
            return  # a retry of an accepted submission is answered whatever the cluster is now
        spec = self.spec
        if req.launch_spec is not None and req.launch_spec.owner != spec.owner:
            raise ApplicationError(f"cluster: the name {spec.name!r} is not available; choose another name",
                                   type="NameTaken")
        if req.launch_spec is not None:
            # As SkyPilot: a launch reuses the cluster whenever the task fits its nodes.
            misfit = self._placement_misfit(req.node_request) or self._size_misfit(req)
            if misfit:
                raise ApplicationError(
                    f"{misfit}; launch under another name, or `styx down {spec.name}` first",
                    type="ResourceMismatch")
        if self.state.status == ClusterStatus.STOPPED:
            raise ApplicationError(
                f"cluster {spec.name!r} is STOPPED; run `styx start {spec.name}` first", type="ClusterStopped")
        if self.state.status not in (ClusterStatus.INIT, ClusterStatus.UP):
            raise ApplicationError(f"cluster {spec.name!r} is {self.state.status}", type="ClusterNotUp")
        if self._halting is not None:
            raise ApplicationError(
                f"cluster {spec.name!r} is shutting down ({self._halting}) and takes no new job",
                type="ClusterNotUp")
        misfit = self._size_misfit(req)
        if misfit:
            raise ApplicationError(misfit, type="JobTooLarge")

    def _size_misfit(self, req: SubmitJobInput) -> str | None:
        """What of the job's size the cluster's nodes cannot give, or None."""
        spec = self.spec
        if req.num_nodes > spec.num_nodes:
            return f"the task asks for {req.num_nodes} nodes; cluster {spec.name!r} has {spec.num_nodes}"
        if req.cpus > spec.node_cpus + 1e-9:
            return f"the task asks for {req.cpus:g} CPUs per node; nodes of {spec.name!r} have {spec.node_cpus:g}"
        for acc, n in req.accelerators.items():
            if n > spec.node_accelerators.get(acc, 0) + 1e-9:
                have = ", ".join(f"{k}:{v:g}" for k, v in spec.node_accelerators.items()) or "no accelerators"
                return f"the task asks for {acc}:{n:g} per node; nodes of {spec.name!r} have {have}"
        return None

    def _placement_misfit(self, ask: NodeRequest | None) -> str | None:
        """Where (provider, region, zone) and what memory a launch asks that the cluster's
        nodes are not, or None; what the task leaves out fits anything."""
        if ask is None:
            return None
        spec, name = self.spec, self.spec.name
        if ask.provider is not None and ask.provider != spec.provider:
            return f"the task asks for {ask.provider}; cluster {name!r} is on {spec.provider}"
        region = self.state.region or spec.region
        if ask.region is not None and ask.region != region:
            return f"the task asks for region {ask.region}; cluster {name!r} is in {region or 'no region'}"
        if ask.zone is not None and self.state.zone is not None and ask.zone != self.state.zone:
            return f"the task asks for zone {ask.zone}; cluster {name!r} is in {self.state.zone}"
        if ask.memory_gb is not None and spec.node_memory_gb is not None \
                and ask.memory_gb > spec.node_memory_gb + 1e-9:
            return (f"the task asks for {ask.memory_gb:g} GB of memory per node; nodes of {name!r} "
                    f"have {spec.node_memory_gb:g}")
        return None

    @workflow.update
    async def cancel_job(self, req: CancelJobInput) -> CancelJobResult:
        if req.job_id is None and self.state.backlog_from is not None:
            newest = await self._cancel_in_backlog(None)  # the newest waiting job is there
            if newest is not None:
                return newest
        job_id = req.job_id if req.job_id is not None else self._latest_active()
        if job_id is None:
            raise ApplicationError(f"no running or waiting job on cluster {self.spec.name!r}", type="NoActiveJob")
        cancelled = await self._cancel_in_window(job_id)
        if cancelled is not None:
            return cancelled
        running = next((j for j in self.state.running if j.job_id == job_id), None)
        if running is not None:
            if running.inline:
                self._cancel_inline(running)
            else:
                await self._cancel_child(running.workflow_id)
            return CancelJobResult(job_id, JobStatus.RUNNING)
        cancelled = await self._cancel_in_backlog(job_id)
        if cancelled is None:
            raise ApplicationError(f"job {job_id} already finished", type="JobFinished")
        return cancelled

    async def _cancel_in_window(self, job_id: int) -> CancelJobResult | None:
        for i, job in enumerate(self.state.queue):
            if job.job_id == job_id:
                del self.state.queue[i]
                await self._record_job(job_id, JobStatus.CANCELLED, message="cancelled before it started")
                self._mark_busy()
                self._poke()
                return CancelJobResult(job_id, JobStatus.PENDING)
        return None

    async def _cancel_in_backlog(self, job_id: int | None) -> CancelJobResult | None:
        """Cancel a job waiting in the database (None: the newest there), if it still waits."""
        async with self._backlog_lock:
            if job_id is not None:
                moved = await self._cancel_in_window(job_id)  # a refill took it meanwhile
                if moved is not None:
                    return moved
            start = self.state.backlog_from
            if start is None or (job_id is not None and job_id < start):
                return None
            out: CancelPendingJobOutput = await workflow.execute_local_activity_method(
                StateActivities.cancel_pending_job, CancelPendingJobInput(self.spec.name, job_id, start),
                start_to_close_timeout=STATE_TIMEOUT, retry_policy=STATE_RETRY,
            )
        if out.job_id is None:
            return None
        self._mark_busy()
        self._poke()
        return CancelJobResult(out.job_id, JobStatus.PENDING)

    @cancel_job.validator
    def _validate_cancel(self, req: CancelJobInput) -> None:
        backlog = self.state.backlog_from
        if req.job_id is None:
            if self._latest_active() is None and backlog is None:
                raise ApplicationError(f"no running or waiting job on cluster {self.spec.name!r}", type="NoActiveJob")
            return
        if not 1 <= req.job_id < self.state.next_job_id:
            raise ApplicationError(f"cluster {self.spec.name!r} has no job {req.job_id}", type="JobNotFound")
        active = {j.job_id for j in self.state.queue} | {j.job_id for j in self.state.running}
        if req.job_id not in active and (backlog is None or req.job_id < backlog):
            raise ApplicationError(f"job {req.job_id} already finished", type="JobFinished")

    def _latest_active(self) -> int | None:
        active = [j.job_id for j in self.state.queue] + [j.job_id for j in self.state.running]
        return max(active) if active else None

    @workflow.update
    async def stop(self) -> ClusterDescription:
        async with self._lifecycle:
            if self.state.status == ClusterStatus.STOPPED:
                return self.describe()
            self._require(ClusterStatus.UP, "stop")
            await self._stop_nodes("cluster stopped", by=StoppedBy.USER)
            return self.describe()

    @workflow.update
    async def start(self) -> ClusterDescription:
        async with self._lifecycle:
            if self.state.status == ClusterStatus.UP:
                return self.describe()
            self._require(ClusterStatus.STOPPED, "start")
            self.state.status = ClusterStatus.INIT
            await self._record_cluster()
            out = await self._provider(ProviderActivities.start)
            self.state.nodes = out.nodes
            self.state.zone = out.zone or self.state.zone
            self.state.down_nodes = []  # every node was started afresh
            self.state.status = ClusterStatus.UP
            self.state.stopped_by = None
            self._mark_busy()
            await self._record_cluster(nodes=out.nodes)
            self._poke()
            return self.describe()

    @workflow.update
    async def refresh(self) -> ClusterDescription:
        """Look at every node now (``styx status --refresh``): DOWN the dead, UP the revived.
        A cluster that is not UP, or is stopping or starting, is described as it is."""
        if self.state.status != ClusterStatus.UP or self._lifecycle.locked():
            return self.describe()
        out: ProbeNodesOutput = await workflow.execute_activity_method(
            NodeHealthActivities.probe_nodes,
            ProbeNodesInput(self.spec.name, self.spec.provider, self.state.region or self.spec.region,
                            list(self.state.nodes)),
            start_to_close_timeout=timedelta(seconds=90), heartbeat_timeout=timedelta(seconds=10),
            retry_policy=PROBE_RETRY, summary=f"probe the {len(self.state.nodes)} node(s)",
        )
        if self.state.status == ClusterStatus.UP and not self._lifecycle.locked():
            await self._apply_probes(out.nodes)
        return self.describe()

    @workflow.update
    async def down(self) -> ClusterDescription:
        async with self._lifecycle:
            if self.state.status == ClusterStatus.TERMINATED:
                return self.describe()
            await self._terminate("cluster taken down", by=StoppedBy.USER)
            self._poke()
            return self.describe()

    @workflow.update
    async def set_autostop(self, req: AutostopInput) -> ClusterDescription:
        self.spec.autostop_minutes = req.minutes
        self.spec.autostop_down = req.down
        self._mark_busy()
        await self._record_cluster()
        self._poke()
        return self.describe()

    @set_autostop.validator
    def _validate_autostop(self, req: AutostopInput) -> None:
        if req.minutes is not None and not 0 <= req.minutes <= MAX_AUTOSTOP_MINUTES:
            raise ApplicationError(
                f"autostop minutes must be between 0 and {MAX_AUTOSTOP_MINUTES} (or none to disable), "
                f"not {req.minutes}", type="InvalidRequest")

    def _require(self, status: str, action: str) -> None:
        if self.state.status != status:
            raise ApplicationError(
                f"cannot {action} cluster {self.spec.name!r}: it is {self.state.status}", type="InvalidState")

    async def _drain(self, reason: str) -> None:
        """Cancel every waiting and running job, and wait (bounded) until the running ones end."""
        await self._fail_queued(reason, status=JobStatus.CANCELLED)
        for job in list(self.state.running):
            if job.inline:
                self._cancel_inline(job)
                continue
            try:
                await self._cancel_child(job.workflow_id)
            except Exception:  # already finished: its job_finished signal is on the way
                pass
        try:
            await workflow.wait_condition(lambda: not self.state.running, timeout=DRAIN_TIMEOUT)
        except asyncio.TimeoutError:
            workflow.logger.warning("jobs %s did not end in time", [j.job_id for j in self.state.running])

    async def _terminate(self, reason: str, by: str | None = None) -> None:
        self._halting = reason
        try:
            await self._drain(reason)
            await self._provider(ProviderActivities.terminate)
        finally:
            self._halting = None
        self.state.status = ClusterStatus.TERMINATED
        self.state.stopped_by = by
        self.state.nodes = []
        await self._record_cluster(nodes=[])

    async def _stop_nodes(self, reason: str, by: str | None = None) -> None:
        self._halting = reason
        try:
            await self._drain(reason)
            await self._provider(ProviderActivities.stop)
        finally:
            self._halting = None
        self.state.status = ClusterStatus.STOPPED
        self.state.stopped_by = by
        if self.state.failsafe_deadline is not None or by == StoppedBy.FAILSAFE:  # the nodes keep it on disk
            self.state.failsafe_stale, self.state.failsafe_deadline = True, None
        await self._record_cluster()

    # -- autostop -----------------------------------------------------------------------
    def _mark_busy(self) -> None:
        self.state.idle_since = workflow.now().isoformat()

    def _idle_remaining(self) -> float | None:
        """Seconds until autostop (<= 0: due), or None when autostop does not apply now."""
        minutes = self.spec.autostop_minutes
        if minutes is None or self.state.status != ClusterStatus.UP or self.state.queue or self.state.running \
                or self.state.backlog_from is not None:
            return None
        idle_since = datetime.fromisoformat(self.state.idle_since or workflow.now().isoformat())
        return (idle_since + timedelta(minutes=minutes) - workflow.now()).total_seconds()

    def _autostop_remaining(self) -> float | None:
        remaining = self._idle_remaining()
        return None if remaining is None else max(remaining, 0.001)

    async def _autostop(self) -> None:
        async with self._lifecycle:
            remaining = self._idle_remaining()
            if remaining is None or remaining > 0:
                return  # a job came, or autostop changed, while we waited for the lock
            workflow.logger.info("cluster %s idle for %s min: autostop", self.spec.name, self.spec.autostop_minutes)
            if self.spec.autostop_down:
                await self._terminate("autodown", by=StoppedBy.AUTOSTOP)
            else:
                await self._stop_nodes("autostop", by=StoppedBy.AUTOSTOP)

    def _autostop_at(self) -> str | None:
        """When autostop fires if nothing runs meanwhile (ISO), or None when it is not armed."""
        if self._idle_remaining() is None:
            return None
        idle_since = datetime.fromisoformat(self.state.idle_since or workflow.now().isoformat())
        return (idle_since + timedelta(minutes=self.spec.autostop_minutes or 0)).isoformat()

    def _wake_after(self) -> float | None:
        """Seconds the main loop may sleep: until autostop, or until the failsafe push is due."""
        times = [t for t in (self._autostop_remaining(), self._failsafe_due()) if t is not None]
        return max(min(times), 0.001) if times else None

    # -- failsafe: the nodes' own deadline ------------------------------------------------
    def _busy(self) -> bool:
        return bool(self.state.queue or self.state.running)

    def _failsafe_target(self) -> datetime | None:
        """The deadline the nodes should carry now: None without autostop (or when not UP)."""
        minutes = self.spec.autostop_minutes
        if minutes is None or self.state.status != ClusterStatus.UP:
            return None
        now = workflow.now()
        if self._busy():
            return now + max(timedelta(minutes=minutes), BUSY_LEASE)
        return datetime.fromisoformat(self.state.idle_since or now.isoformat()) + timedelta(minutes=minutes)

    def _failsafe_due(self) -> float | None:
        """Seconds until the nodes' deadline must be pushed (0: now), or None: not needed."""
        if not self._failsafe_on or self.state.status != ClusterStatus.UP:
            return None
        now = workflow.now()
        if self._failsafe_retry_at is not None and self._failsafe_retry_at > now:
            return (self._failsafe_retry_at - now).total_seconds()
        pushed, target = self.state.failsafe_deadline, self._failsafe_target()
        if self.state.failsafe_stale or (pushed is None) != (target is None):
            return 0.0
        if pushed is None or target is None:
            return None
        if self._busy():  # a lease: renew it when half of it is left
            lease = max(timedelta(minutes=self.spec.autostop_minutes or 0), BUSY_LEASE)
            return max((datetime.fromisoformat(pushed) - now - lease / 2).total_seconds(), 0.0)
        return 0.0 if pushed != target.isoformat() else None

    async def _push_failsafe(self, before_autostop: bool = False) -> None:
        """Push the nodes' deadline when due (and record a changed autostop time); if the
        push finds the nodes acted on their own, record what they did. ``before_autostop``:
        autostop is due, so look first whether the nodes stopped themselves already (Styx
        was gone past their deadline): then it was the failsafe that stopped the cluster."""
        if not self._failsafe_on or self._lifecycle.locked():
            return
        remaining = self._idle_remaining()
        checking = (before_autostop and self.state.failsafe_deadline is not None
                    and remaining is not None and remaining <= 0)
        if checking or self._failsafe_due() == 0.0:
            target = self._failsafe_target()
            out: FailsafeOutput | None = None
            try:
                out = await workflow.execute_activity_method(
                    FailsafeActivities.push_failsafe,
                    FailsafeInput(self.spec.name, self.spec.provider, self.state.region or self.spec.region,
                                  list(self.state.nodes), target.isoformat() if target else None,
                                  self.spec.autostop_down),
                    start_to_close_timeout=timedelta(seconds=90), heartbeat_timeout=timedelta(seconds=20),
                    retry_policy=FAILSAFE_RETRY,
                    summary=f"failsafe deadline {target.isoformat() if target else 'cleared'}",
                )
            except ActivityError as err:
                workflow.logger.warning("cluster %s: failsafe push failed: %s", self.spec.name, err.cause)
            if out is not None and out.fired:
                await self._failsafe_fired(out)
                return
            if out is None or out.unreachable:
                self._failsafe_retry_at = workflow.now() + FAILSAFE_RETRY_AFTER
            else:
                self._failsafe_retry_at = None
                self.state.failsafe_deadline = target.isoformat() if target else None
                self.state.failsafe_stale = False
        if self.state.status == ClusterStatus.UP and self._autostop_at() != self._recorded_autostop_at:
            await self._record_cluster()

    async def _failsafe_fired(self, out: FailsafeOutput) -> None:
        """The nodes stopped (or terminated) themselves while no one pushed their deadline:
        make the rest of the cluster agree, and record who stopped it."""
        async with self._lifecycle:
            if self.state.status != ClusterStatus.UP:
                return
            workflow.logger.warning("cluster %s: node(s) %s %s themselves (failsafe)", self.spec.name,
                                    out.fired, out.action or "stopped")
            if out.action == "terminated":
                await self._terminate("failsafe", by=StoppedBy.FAILSAFE)
            else:
                await self._stop_nodes("failsafe", by=StoppedBy.FAILSAFE)

    # -- query --------------------------------------------------------------------------
    @workflow.query
    def describe(self) -> ClusterDescription:
        spec = self.spec
        return ClusterDescription(
            name=spec.name, status=self.state.status, provider=spec.provider, num_nodes=spec.num_nodes,
            nodes=self.state.nodes, queued=[j.job_id for j in self.state.queue],
            running=[j.job_id for j in self.state.running], next_job_id=self.state.next_job_id,
            autostop_minutes=spec.autostop_minutes, autostop_down=spec.autostop_down,
            message=self._status_message(), down_nodes=list(self.state.down_nodes),
            autostop_at=self._autostop_at(), stopped_by=self.state.stopped_by,
            failsafe_deadline=self.state.failsafe_deadline,
            backlog_from=self.state.backlog_from,
        )


def _where(attempt: dict[str, Any]) -> str:
    parts = [attempt.get("zone") or attempt.get("region"), attempt.get("instance_type"),
             "spot" if attempt.get("use_spot") else None]
    return ", ".join(str(p) for p in parts if p) or "default"

