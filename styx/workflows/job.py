"""One job on the nodes its cluster gave it: ``JobRun``, run inside the cluster's workflow
(patch ``styx-inline-jobs``), or, for clusters begun before, as its own ``JobWorkflow``
``cluster/<name>/job/<n>`` (what follows says "the workflow" for either).

Loads its body (task, env, sealed secrets) from the database when the cluster gave it only
the id (``JobInput.spec_id``, the ``load_job_spec`` local activity), uploads the workdir and
file mounts, runs ``setup`` (for a launch's job, not an exec's, as
SkyPilot) then ``run`` on every node (detached on the node, so a worker crash does not kill
it), records exit codes, and tells its cluster when it ends (inline: by returning; a
``JobWorkflow``: the ``job_finished`` signal, by workflow id).

A job fails as SkyPilot's do: as soon as one rank fails — its phase exits non-zero, its
process vanishes (``JobLost``), or its node stops answering for good — the job is FAILED
(FAILED_SETUP in setup), the other ranks' activities are cancelled, and the job's processes
are killed on every node that still answers (``kill_job``). The job's ``message`` names the
rank, its node and what happened (``rank 1 (127.0.3.4) exited 1``); ``exit_codes`` has one
entry per rank: the exit code of a rank whose phase ended by itself, None for a rank that
was stopped (killed because another failed, or on a lost node).

A node that does not answer (``NodeUnreachable`` from the SSH activities) is retried on this
workflow's clock — a blip costs nothing — until it has been unreachable for the worker's
``STYX_NODE_LOST_SECONDS`` (the error carries it); then the job fails naming the node, and
the cluster hears of it (``JobFinished.lost_nodes``) and places no more jobs there.

Cancelling the job (its task inline, or its ``JobWorkflow``) kills the job's process groups
on every node. A ``JobWorkflow`` closes as Temporal's UI should show it, always after
recording the status and telling the cluster:
COMPLETED when the job SUCCEEDED, FAILED (a non-retryable ``JobFailed`` / ``JobSetupFailed``
``ApplicationError`` with the exit codes as details) when it FAILED / FAILED_SETUP, and
CANCELED when it was CANCELLED.
"""

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from styx.contracts.clusters import NodeDown
    from styx.contracts.jobs import (
        JobErrors,
        JobFinished,
        JobInput,
        JobRecord,
        JobSpec,
        JobSpecShape,
        JobStatus,
        KillJobInput,
        LoadJobSpecInput,
        RunPhaseInput,
        RunPhaseOutput,
        SyncFilesInput,
    )
    from styx.contracts.search import JOB_STATUS_KEY
    from styx.activities.ssh import SshActivities
    from styx.activities.state import StateActivities

T = TypeVar("T")

STATE_TIMEOUT = timedelta(seconds=30)
STATE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))
#: Killing is best effort: a node that is gone has no process left to kill.
KILL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
#: Retries of a phase the server makes: a worker that died (heartbeat timeout) or an error
#: no one classified. A node that does not answer is retried by ``_on_node`` instead.
PHASE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
    maximum_attempts=30,
    non_retryable_error_types=[JobErrors.JOB_LOST, "InvalidTask", JobErrors.NODE_UNREACHABLE],
)
#: Waits between tries of a node that does not answer.
UNREACHABLE_RETRY_MIN, UNREACHABLE_RETRY_MAX = 1.0, 5.0
#: How long a node may stay unreachable when the error does not say (the worker's setting does).
DEFAULT_NODE_LOST_SECONDS = 30.0


async def record(activity: Callable[[Any, Any], Awaitable[Any]], row: Any) -> Any:
    """Write ``row`` to the read model with ``activity`` (a ``StateActivities`` method) and
    return what it answers (``record_job``: the status stored). A local activity: no round trip
    through the server, and safe to repeat on replay since every write is an idempotent upsert."""
    return await workflow.execute_local_activity_method(activity, row, start_to_close_timeout=STATE_TIMEOUT,
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
        start = datetime.fromisoformat(inp.started_at) if inp.started_at else workflow.info().start_time
        started = start.strftime("%Y-%m-%d-%H-%M-%S-%f")
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


def _where(rank: int, node: dict[str, Any]) -> str:
    """``rank 1 (127.0.3.4)``: a rank of the job and its node, as messages and the UI name it."""
    return f"rank {rank} ({node.get('ip') or node.get('host')})"


def _failure_message(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) and err.cause is not None else err
    text = cause.message if isinstance(cause, ApplicationError) else str(cause)
    return f"{getattr(cause, 'type', None) or type(cause).__name__}: {text}"


def _lost_after(err: ApplicationError) -> float:
    """The seconds a node may stay unreachable, as the worker that tried it says."""
    if err.details and isinstance(err.details[0], (int, float)) and err.details[0] > 0:
        return float(err.details[0])
    return DEFAULT_NODE_LOST_SECONDS


class _NodeLost(Exception):
    """A node stayed unreachable past its bound (raised inside the workflow only)."""

    def __init__(self, seconds: float, detail: str) -> None:
        super().__init__(f"node unreachable for {seconds:.0f} s ({detail})")
        self.seconds = seconds


@dataclass
class _RankFailure:
    """The first rank that failed, and how."""

    rank: int
    node: dict[str, Any]
    #: Its exit code, when its phase exited non-zero; else ``reason`` says what happened.
    exit_code: int | None = None
    reason: str = ""

    def message(self, prefix: str = "") -> str:
        """``rank 1 (127.0.3.4) exited 1``, after ``prefix`` ("setup on ")."""
        what = self.reason or f"exited {self.exit_code}"
        return f"{prefix}{_where(self.rank, self.node)} {what}"


@dataclass
class _Outcome:
    status: str
    exit_codes: list[int | None] = field(default_factory=list)
    message: str | None = None
    #: Nodes found unreachable for good, for the cluster.
    lost: list[NodeDown] = field(default_factory=list)
    #: The cancellation to re-raise once the job's end is recorded.
    cancelled: BaseException | None = None


@workflow.defn(name="JobWorkflow")
class JobWorkflow:
    """A job as its own workflow: the shape of runs begun before ``INLINE_JOBS_PATCH`` (and of
    their jobs still running); a cluster now runs its jobs inline (``JobRun``)."""

    def __init__(self) -> None:
        self._job = JobRun()

    @workflow.query
    def status(self) -> str:
        return self._job.status

    @workflow.run
    async def run(self, inp: JobInput) -> JobFinished:
        outcome, finished = await self._job.run(inp)
        if outcome.cancelled is not None:
            raise outcome.cancelled
        if outcome.status in (JobStatus.FAILED, JobStatus.FAILED_SETUP):
            kind = JobErrors.SETUP_FAILED if outcome.status == JobStatus.FAILED_SETUP else JobErrors.JOB_FAILED
            raise ApplicationError(outcome.message or outcome.status, {"exit_codes": outcome.exit_codes},
                                   type=kind, non_retryable=True)
        return finished


class JobRun:
    """One job's life on its nodes, in the workflow that runs it: a job's own ``JobWorkflow``,
    or (``inline``) its cluster's workflow, which then gets the job's end from ``run``'s
    answer rather than by signal, and whose search attributes stay the cluster's.

    An inline job taken up again after its cluster continued as new starts at ``resume``
    (``setup`` or ``run``: the files are copied, or setup ran too; a phase already started
    is re-attached, not run twice), or is ended CANCELLED at once when ``cancelled`` (a
    cancel was asked before). ``on_stage`` hears each stage as the job reaches it."""

    def __init__(self, inline: bool = False, resume: str = "", cancelled: bool = False,
                 on_stage: Callable[[str], None] | None = None) -> None:
        self.status = JobStatus.PENDING
        self._lost: list[NodeDown] = []
        self._inline = inline
        self._resume = resume
        self._cancelled = cancelled
        self._on_stage = on_stage
        #: The run activity recorded the job SUCCEEDED itself (one node, exit 0).
        self._end_recorded = False
        #: The job's activities load its body (inline, with a body in the database).
        self._by_id = False

    async def run(self, inp: JobInput) -> tuple[_Outcome, JobFinished]:
        """Run the job to its end; its outcome (``cancelled`` set when a cancel ended it) and
        what its cluster is told."""
        try:
            if self._cancelled:
                outcome = _Outcome(JobStatus.CANCELLED, message="cancelled")
            else:
                outcome = await self._execute(inp)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                outcome = _Outcome(JobStatus.FAILED, message=_failure_message(err))
            else:
                outcome = _Outcome(JobStatus.CANCELLED, message="cancelled", cancelled=err)
        outcome.lost = self._lost
        self._stage("ending")
        # A cancel arriving now does not cut this short: the job ends as it was ending.
        finished = await _uncancellable(self._conclude(inp, outcome))
        return outcome, finished

    def _stage(self, stage: str) -> None:
        if self._on_stage is not None:
            self._on_stage(stage)

    def _summary(self, inp: JobInput, what: str) -> str:
        """An activity's summary in the UI; in the cluster's history, naming the job."""
        return f"job {inp.job_id}: {what}" if self._inline else what

    async def _execute(self, inp: JobInput) -> _Outcome:
        """Files, setup, run: the first rank that fails ends the job."""
        # Inline, a job's body never enters the workflow (its history is the cluster's, and a
        # body may be 1.5 MB): the workflow reads what it decides by, the activities the rest.
        self._by_id = self._inline and inp.spec_id is not None
        if self._by_id:
            # From the submission; a job that waited in the database reads it (a local activity).
            shape: JobSpecShape = inp.shape or await workflow.execute_local_activity_method(
                StateActivities.job_spec_shape, LoadJobSpecInput(inp.spec_id),
                start_to_close_timeout=STATE_TIMEOUT, retry_policy=STATE_RETRY,
            )
            runs_setup, files, setup = shape.setup, shape.files, ""  # "": its activity loads it
        else:
            if inp.spec_id is not None:
                spec: JobSpec = await workflow.execute_local_activity_method(
                    StateActivities.load_job_spec, LoadJobSpecInput(inp.spec_id),
                    start_to_close_timeout=STATE_TIMEOUT, retry_policy=STATE_RETRY,
                )
                inp = dataclasses.replace(inp, task=spec.task, env=spec.env, sealed_secrets=spec.sealed_secrets,
                                          run_setup=spec.run_setup)
            # An exec skips setup, as SkyPilot's does; its files are synced all the same.
            setup = inp.task.get("setup") if inp.run_setup else None
            runs_setup, files = bool(setup), self._has_files(inp)
        if (runs_setup or files) and not self._resume:
            await self._set_status(inp, JobStatus.SETTING_UP)
            failure = await self._sync_files(inp) if files else None
            if failure is not None:
                return _Outcome(JobStatus.FAILED, [None] * len(inp.nodes), failure.message("copying files to "))
        if runs_setup and self._resume != "run":
            self._stage("setup")
            codes, failure = await self._run_phase(inp, "setup", setup or "")
            if failure is not None:
                return _Outcome(JobStatus.FAILED_SETUP, codes, failure.message("setup on "))
        self._stage("run")
        # The run activity records RUNNING in the DB once the job has started on rank 0.
        self.status = JobStatus.RUNNING
        if not self._inline:
            workflow.upsert_search_attributes([JOB_STATUS_KEY.value_set(JobStatus.RUNNING)])
        codes, failure = await self._run_phase(inp, "run", "" if self._by_id else (inp.task.get("run") or "true"))
        if failure is not None:
            return _Outcome(JobStatus.FAILED, codes, failure.message())
        return _Outcome(JobStatus.SUCCEEDED, codes)

    async def _conclude(self, inp: JobInput, outcome: _Outcome) -> JobFinished:
        if outcome.status != JobStatus.SUCCEEDED:
            # Cancelled, or one rank failed: leave no process of the job on any node that answers.
            lost = {n.rank for n in outcome.lost}
            reachable = [n for n in inp.nodes if n.get("rank") not in lost]
            if reachable:
                try:
                    await workflow.execute_activity_method(
                        SshActivities.kill_job, KillJobInput(inp.cluster, inp.job_id, reachable,
                                                             ranks=[inp.nodes.index(n) for n in reachable]),
                        start_to_close_timeout=timedelta(seconds=60), retry_policy=KILL_RETRY,
                        summary=self._summary(inp, f"kill job {inp.job_id} on {len(reachable)} node(s)"),
                    )
                except ActivityError as kill_err:  # a node that stays unreachable runs nothing
                    outcome.message = (f"{outcome.message}; could not reach every node to kill the job: "
                                       f"{kill_err.cause}")
        return await self._finish(inp, outcome)

    async def _set_status(self, inp: JobInput, status: str, **extra: Any) -> str | None:
        """Record ``status``; returns the status the read model holds after (None from a
        worker older than that answer, on replay)."""
        self.status = status
        if not self._inline:
            workflow.upsert_search_attributes([JOB_STATUS_KEY.value_set(status)])
        return await record(StateActivities.record_job,
                            JobRecord(cluster=inp.cluster, job_id=inp.job_id, status=status, **extra))

    @staticmethod
    def _mounts(inp: JobInput) -> dict[str, str]:
        return {k: v for k, v in (inp.task.get("file_mounts") or {}).items() if isinstance(v, str)}

    def _has_files(self, inp: JobInput) -> bool:
        return bool(inp.task.get("workdir") or self._mounts(inp))

    async def _sync_files(self, inp: JobInput) -> _RankFailure | None:
        workdir = inp.task.get("workdir")
        if not self._by_id and not self._has_files(inp):
            return None
        mounts = self._mounts(inp)
        spec_id = inp.spec_id if self._by_id else None  # the activity reads the body

        def sync(rank: int, node: dict[str, Any]) -> Callable[[], Awaitable[None]]:
            return lambda: workflow.execute_activity_method(
                SshActivities.sync_files, SyncFilesInput(inp.cluster, inp.job_id, node, workdir, mounts, spec_id),
                start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=10),
                retry_policy=PHASE_RETRY, summary=self._summary(inp, f"copy files to {_where(rank, node)}"),
            )

        _, failure = await self._on_every_node(inp, "copying files of", sync)
        return failure

    async def _run_phase(self, inp: JobInput, phase: str, script: str) -> tuple[list[int | None], _RankFailure | None]:
        def run(rank: int, node: dict[str, Any]) -> Callable[[], Awaitable[int | None]]:
            async def call() -> int | None:
                out: RunPhaseOutput = await workflow.execute_activity_method(
                    SshActivities.run_phase,
                    RunPhaseInput(inp.cluster, inp.job_id, phase, rank, node, script, job_env(inp, rank),
                                  sealed_secrets=inp.sealed_secrets,
                                  record_end=phase == "run" and len(inp.nodes) == 1,
                                  spec_id=inp.spec_id if self._by_id else None),
                    # Jobs may run for weeks; the heartbeat is what detects a dead worker.
                    start_to_close_timeout=timedelta(days=365),
                    heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=PHASE_RETRY,
                    summary=self._summary(inp, f"{phase} on {_where(rank, node)}"),
                )
                self._end_recorded = out.recorded_end
                return out.exit_code
            return call

        return await self._on_every_node(inp, f"{phase} of", run)

    async def _on_every_node(
        self, inp: JobInput, what: str, make: Callable[[int, dict[str, Any]], Callable[[], Awaitable[Any]]],
    ) -> tuple[list[int | None], _RankFailure | None]:
        """Run one activity per rank at once; return each rank's result (an exit code, or
        None) and the first rank that failed — an exit code other than 0, an activity that
        failed, a node lost — at which moment the others are cancelled."""
        tasks = [asyncio.create_task(self._on_node(inp, rank, node, make(rank, node)))
                 for rank, node in enumerate(inp.nodes)]
        results: list[int | None] = [None] * len(tasks)
        failure: _RankFailure | None = None
        try:
            pending = list(tasks)
            while pending and failure is None:
                done, pending = await workflow.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.index):  # the lowest rank first, whatever the order
                    rank = tasks.index(task)
                    node = inp.nodes[rank]
                    try:
                        result = task.result()
                    except _NodeLost as lost:
                        failure = failure or _RankFailure(rank, node, reason=f"lost: {lost}")
                        self._lost.append(NodeDown(
                            int(node.get("rank", rank)),
                            f"unreachable for {lost.seconds:.0f} s during {what} job {inp.job_id}",
                            since=workflow.now().isoformat(), jobs=[inp.job_id]))
                        continue
                    except ActivityError as err:
                        if is_cancelled_exception(err):
                            raise
                        failure = failure or _RankFailure(rank, node, reason=f"failed: {_failure_message(err)}")
                        continue
                    results[rank] = result
                    if isinstance(result, int) and result != 0 and failure is None:
                        failure = _RankFailure(rank, node, exit_code=result)
        finally:
            # Not awaited: a finally that awaits breaks when the worker evicts the workflow.
            # A cancelled task's activity gets its cancel request as the workflow goes on.
            for task in tasks:
                if not task.done():
                    task.add_done_callback(_consume)
                    task.cancel()
        return results, failure

    async def _on_node(self, inp: JobInput, rank: int, node: dict[str, Any], call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` (one activity on ``node``), tried again while the node does not answer;
        ``_NodeLost`` once it has not answered for the bound the worker gives. The streak
        starts again whenever an attempt lasted longer than the bound (it reached the node)."""
        down_since: datetime | None = None
        delay = UNREACHABLE_RETRY_MIN
        while True:
            started = workflow.now()
            try:
                return await call()
            except ActivityError as err:
                cause = err.cause
                if not (isinstance(cause, ApplicationError) and cause.type == JobErrors.NODE_UNREACHABLE):
                    raise
                now = workflow.now()
                bound = _lost_after(cause)
                if down_since is None or (now - started).total_seconds() > bound:
                    down_since, delay = now, UNREACHABLE_RETRY_MIN
                down_for = (now - down_since).total_seconds()
                if down_for >= bound:
                    raise _NodeLost(down_for, cause.message) from None
                workflow.logger.info("job %s: %s unreachable for %.0f s, trying again", inp.job_id,
                                     _where(rank, node), down_for)
                await workflow.sleep(min(delay, bound - down_for))
                delay = min(delay * 2, UNREACHABLE_RETRY_MAX)

    async def _finish(self, inp: JobInput, outcome: _Outcome) -> JobFinished:
        # Inline, a one-node job's SUCCEEDED row is already written by its run activity: one
        # local activity less in the cluster's workflow task. (A job's own workflow writes it
        # again, as it always did.)
        if not (self._inline and self._end_recorded and outcome.status == JobStatus.SUCCEEDED):
            stored = await self._set_status(inp, outcome.status, exit_codes=outcome.exit_codes,
                                            message=outcome.message)
            if outcome.cancelled is not None and stored == JobStatus.SUCCEEDED:
                # The job had ended by itself before the cancel reached us, and its run activity
                # recorded it (``RunPhaseInput.record_end``: whole log copied, exit 0); the cancel
                # only cut off the activity's answer. The first terminal status stands here too,
                # so Temporal, the cluster and the database tell the same story.
                outcome.status, outcome.message, outcome.cancelled = JobStatus.SUCCEEDED, None, None
                outcome.exit_codes = [0] * len(inp.nodes)
                self.status = outcome.status
                if not self._inline:
                    workflow.upsert_search_attributes([JOB_STATUS_KEY.value_set(outcome.status)])
        finished = JobFinished(inp.job_id, outcome.status, outcome.exit_codes, lost_nodes=outcome.lost)
        if self._inline:
            return finished  # the cluster's own run: it reads the answer
        # By workflow id, not run id: the cluster may have continued-as-new since it started us.
        try:
            await workflow.get_external_workflow_handle(inp.cluster_workflow_id).signal(
                "job_finished", finished)
        except Exception:  # the cluster workflow is gone (downed); the DB row is what matters
            workflow.logger.warning("cluster %s is gone; nothing to tell it", inp.cluster)
        return finished


def _consume(task: "asyncio.Future[Any]") -> None:
    """Retrieve a finished task's outcome so that an ignored failure is not logged."""
    if not task.cancelled():
        task.exception()


#: ``_uncancellable``: a cancel that lands in the workflow task where ``coro`` ends no longer
#: undoes it (histories from before keep ending CANCELED on replay).
CONCLUDED_STANDS_PATCH = "concluded-stands"


async def _uncancellable(coro: Awaitable[T]) -> T:
    """Await ``coro`` to its end even if the workflow is cancelled meanwhile; its result
    stands even when the cancel arrives together with its last step."""
    task = asyncio.ensure_future(coro)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                if not task.cancelled() and workflow.patched(CONCLUDED_STANDS_PATCH):
                    return task.result()  # ended as the cancel came: the job's end stands
                raise
