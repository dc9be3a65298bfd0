"""The cluster and job workflows on Temporal's time-skipping test server, with every
activity replaced by a fake that records what it was asked: where jobs are placed, the
first-come-first-served queue, cancelling, stop and down, autostop on workflow time, the
updates a cluster refuses, and the state a continued run carries. No node, no SSH, no
database; a test takes about a second.

A job's run phase blocks until the test ends it (``cloud.fake.finish(job_id)``, on every
rank or one) or ``kill_job`` kills it, so the test decides when a job ends; a node the test
cuts off (``cloud.fake.cut("node-1")``) answers every phase with ``NodeUnreachable`` until
it is restored. Waiting is always on a condition (a recorded status, a query answer), or on
the test server's clock (``env.sleep``), never on a real sleep.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from styx.contracts.clusters import (
    AutostopInput,
    CancelJobInput,
    ClusterDescription,
    ClusterInput,
    ClusterRecord,
    ClusterSpec,
    ClusterState,
    ClusterStatus,
    NodeRequest,
    QueuedJob,
    RunningJob,
    SubmitJobInput,
    SubmitJobResult,
    cluster_workflow_id,
)
from styx.contracts.jobs import (
    EndPendingJobsInput,
    JobErrors,
    JobFinished,
    JobRecord,
    JobStatus,
    KillJobInput,
    RecordJobsInput,
    RunPhaseInput,
    RunPhaseOutput,
    SyncFilesInput,
    job_workflow_id,
)
from styx.contracts.providers import (
    NodeProbe,
    PlanOutput,
    ProbeNodesInput,
    ProbeNodesOutput,
    ProviderInput,
    ProviderOutput,
)
from styx.contracts.failsafe import FailsafeInput, FailsafeOutput
from styx.services import clusters as service
from styx.workflows.cluster import ClusterWorkflow
from styx.workflows.job import JobWorkflow

#: How long a test waits for something the workflows do in a few milliseconds.
PATIENCE = 10.0
#: The exit code a killed job's run phase reports.
KILLED = 137
_FORWARD = [JobStatus.PENDING, JobStatus.SETTING_UP, JobStatus.RUNNING]


def _advance(current: str | None, new: str) -> str:
    """The read model's rule: a status only moves forward, and the first terminal one wins."""
    if current is None or (JobStatus(new).is_terminal and not JobStatus(current).is_terminal):
        return new
    if JobStatus(current).is_terminal or JobStatus(new).is_terminal:
        return current
    return max(current, new, key=_FORWARD.index)


class FakeActivities:
    """Stand-ins for the provider, state and SSH activities, under the names the workflows
    call. What they were asked is kept for the test to read."""

    def __init__(self) -> None:
        #: Every activity called, by name, in order.
        self.calls: list[str] = []
        #: Each cluster status recorded, in order.
        self.cluster_statuses: list[str] = []
        #: When each regular activity was first scheduled, on the server's (skipped) clock.
        self.scheduled: dict[str, datetime] = {}
        self.fresh_records = 0
        #: A job's status as the read model would hold it, and the last message recorded.
        self.jobs: dict[int, str] = {}
        self.messages: dict[int, str | None] = {}
        #: Every status recorded for a job, in order (the read model keeps the furthest).
        self.recorded: dict[int, list[str]] = {}
        #: Host of each node a job's run phase ran on, and the environment it was given.
        self.hosts: dict[int, list[str]] = {}
        #: (job, rank) whose run phase started: a second run_phase for one re-attaches.
        self.started: set[tuple[int, int]] = set()
        self.envs: dict[int, list[dict[str, str]]] = {}
        #: While set and not yet released, ``kill_job`` waits for it (a slow kill).
        self.kill_gate: asyncio.Event | None = None
        #: Exit code of a job's setup phase (default 0: setup does not block): one for every
        #: rank, or by rank (the ranks not named block until the job is killed).
        self.setup_exit: dict[int, int | dict[int, int]] = {}
        #: The last exit codes recorded for each job.
        self.exit_codes: dict[int, list[int | None]] = {}
        #: Each job's kill_job calls: the hosts they were asked to kill on.
        self.killed_on: dict[int, list[list[str]]] = {}
        self.killed: list[int] = []
        #: Hosts that do not answer (``cut``), and hosts probe_nodes finds dead.
        self.unreachable: set[str] = set()
        self.dead: set[str] = set()
        #: Each cluster record's node statuses, in rank order (when it carried nodes).
        self.node_statuses: list[list[str]] = []
        #: Each failsafe deadline pushed to the nodes (None: cleared), with the workflow time of
        #: the push; and what the next push answers (the nodes acted on their own).
        self.deadlines: list[tuple[datetime, str | None]] = []
        self.failsafe_answer: FailsafeOutput = FailsafeOutput()
        #: What ``plan`` answers.
        self.plan_attempts: list[dict[str, Any]] = [{"zone": "fake-1a"}]
        #: Each cluster record's autostop_at and stopped_by.
        self.autostop_ats: list[str | None] = []
        self.stopped_by: list[str | None] = []
        self.cluster_messages: list[str | None] = []
        self._ends: dict[tuple[int, int | None], asyncio.Future[int]] = {}
        self._cuts: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan, self.provision, self.start, self.stop, self.terminate, self.record_cluster,
                self.record_job, self.record_jobs, self.end_pending_jobs, self.run_phase, self.sync_files,
                self.kill_job, self.probe_nodes, self.push_failsafe]

    # -- what the test reads and does ---------------------------------------------------
    def status(self, job_id: int) -> str | None:
        return self.jobs.get(job_id)

    @property
    def cluster_status(self) -> str | None:
        return self.cluster_statuses[-1] if self.cluster_statuses else None

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), PATIENCE)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; calls: {self.calls}, jobs: {self.jobs}") from None

    def finish(self, job_id: int, exit_code: int = 0, rank: int | None = None) -> None:
        """End the job's run phase on every rank, or on ``rank`` (now, or as soon as it starts)."""
        end = self._end(job_id, rank)
        if not end.done():
            end.set_result(exit_code)

    def cut(self, host: str) -> None:
        """``host`` stops answering: its phases fail with NodeUnreachable until ``restore``."""
        self.unreachable.add(host)
        self._cuts.setdefault(host, asyncio.Event()).set()

    def restore(self, host: str) -> None:
        self.unreachable.discard(host)
        self._cuts.pop(host, None)

    def _end(self, job_id: int, rank: int | None = None) -> asyncio.Future[int]:
        return self._ends.setdefault((job_id, rank), asyncio.get_running_loop().create_future())

    async def _until_end(self, inp: RunPhaseInput) -> int:
        """The job's exit code on this rank, once the test (or a kill) ends it; NodeUnreachable
        if the node is cut off first."""
        cut = self._cuts.setdefault(inp.node["host"], asyncio.Event())
        if inp.node["host"] in self.unreachable:
            raise _unreachable(inp.node["host"])
        waits = [asyncio.ensure_future(asyncio.shield(self._end(inp.job_id))),
                 asyncio.ensure_future(asyncio.shield(self._end(inp.job_id, inp.rank))),
                 asyncio.ensure_future(cut.wait())]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        ends = [w for w in waits[:2] if w in done]
        if not ends:
            raise _unreachable(inp.node["host"])
        return ends[0].result()

    async def _note(self, name: str, change: Callable[[], None] = lambda: None) -> None:
        async with self._changed:
            self.calls.append(name)
            if not activity.info().is_local:  # a local activity's times are the worker's clock
                self.scheduled.setdefault(name, activity.info().scheduled_time)
            change()
            self._changed.notify_all()

    # -- providers ----------------------------------------------------------------------
    @activity.defn(name="plan")
    async def plan(self, inp: ProviderInput) -> PlanOutput:
        await self._note("plan")
        return PlanOutput(attempts=list(self.plan_attempts))

    @activity.defn(name="provision")
    async def provision(self, inp: ProviderInput) -> ProviderOutput:
        await self._note("provision")
        nodes = [{"rank": rank, "host": f"node-{rank}", "port": 22} for rank in range(inp.num_nodes)]
        return ProviderOutput(nodes=nodes, region="fake", zone=inp.attempt.get("zone"))

    @activity.defn(name="start")
    async def start(self, inp: ProviderInput) -> ProviderOutput:
        await self._note("start")
        return ProviderOutput(nodes=[{"rank": rank, "host": f"node-{rank}", "port": 22}
                                     for rank in range(inp.num_nodes)])

    @activity.defn(name="stop")
    async def stop(self, inp: ProviderInput) -> ProviderOutput:
        await self._note("stop")
        return ProviderOutput()

    @activity.defn(name="terminate")
    async def terminate(self, inp: ProviderInput) -> ProviderOutput:
        await self._note("terminate")
        return ProviderOutput()

    # -- the read model (local activities) ------------------------------------------------
    @activity.defn(name="record_cluster")
    async def record_cluster(self, rec: ClusterRecord) -> None:
        def change() -> None:
            self.fresh_records += rec.fresh
            self.cluster_statuses.append(rec.status)

            if rec.nodes is not None:
                self.node_statuses.append([n.get("status", "UP") for n in rec.nodes])
            self.cluster_messages.append(rec.status_message)
            self.autostop_ats.append(rec.autostop_at)
            self.stopped_by.append(rec.stopped_by)

        await self._note("record_cluster", change)

    @activity.defn(name="record_job")
    async def record_job(self, rec: JobRecord) -> str:
        def change() -> None:
            self.recorded.setdefault(rec.job_id, []).append(rec.status)
            before = self.jobs.get(rec.job_id)
            self.jobs[rec.job_id] = _advance(before, rec.status)
            if self.jobs[rec.job_id] != before or not JobStatus(before).is_terminal:
                if rec.message is not None:
                    self.messages[rec.job_id] = rec.message
                if rec.exit_codes is not None:
                    self.exit_codes[rec.job_id] = rec.exit_codes

        await self._note("record_job", change)
        return self.jobs[rec.job_id]  # as the real one: the status stored after the write

    @activity.defn(name="record_jobs")
    async def record_jobs(self, inp: RecordJobsInput) -> None:
        for rec in inp.jobs:
            await self.record_job(rec)

    @activity.defn(name="end_pending_jobs")
    async def end_pending_jobs(self, inp: EndPendingJobsInput) -> int | None:
        """Tasks here travel inline, so no job waits in a database: only the window's are ended."""
        def change() -> None:
            for job_id in inp.job_ids:
                self.recorded.setdefault(job_id, []).append(inp.status)
                if self.jobs.get(job_id) in (None, JobStatus.PENDING):
                    self.jobs[job_id] = _advance(self.jobs.get(job_id), inp.status)
                    self.messages[job_id] = inp.message

        await self._note("end_pending_jobs", change)
        return max(self.jobs, default=None)

    # -- nodes ----------------------------------------------------------------------------
    @activity.defn(name="sync_files")
    async def sync_files(self, inp: SyncFilesInput) -> None:
        await self._note("sync_files")
        if inp.node["host"] in self.unreachable:
            raise _unreachable(inp.node["host"])

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: RunPhaseInput) -> RunPhaseOutput:
        if inp.phase == "setup":
            await self._note("run_phase:setup")
            codes = self.setup_exit.get(inp.job_id, 0)
            if isinstance(codes, int):
                return RunPhaseOutput(exit_code=codes)
            if inp.rank in codes:
                return RunPhaseOutput(exit_code=codes[inp.rank])
            return RunPhaseOutput(exit_code=await self._until_end(inp))

        def change() -> None:
            if (inp.job_id, inp.rank) in self.started:
                return  # a phase already started is re-attached, as on a node (its lock)
            self.started.add((inp.job_id, inp.rank))
            self.hosts.setdefault(inp.job_id, []).append(inp.node["host"])
            self.envs.setdefault(inp.job_id, []).append(dict(inp.env))
            if inp.rank == 0:  # as the real activity records it
                self.jobs[inp.job_id] = _advance(self.jobs.get(inp.job_id), JobStatus.RUNNING)

        await self._note("run_phase", change)
        return RunPhaseOutput(exit_code=await self._until_end(inp))

    @activity.defn(name="kill_job")
    async def kill_job(self, inp: KillJobInput) -> None:
        def change() -> None:
            self.killed.append(inp.job_id)
            self.killed_on.setdefault(inp.job_id, []).append([n["host"] for n in inp.nodes])

        await self._note("kill_job", change)
        if self.kill_gate is not None:
            await self.kill_gate.wait()
        self.finish(inp.job_id, KILLED)

    @activity.defn(name="push_failsafe")
    async def push_failsafe(self, inp: FailsafeInput) -> FailsafeOutput:
        await self._note("push_failsafe", lambda: self.deadlines.append((activity.info().scheduled_time, inp.deadline)))
        return self.failsafe_answer

    @activity.defn(name="probe_nodes")
    async def probe_nodes(self, inp: ProbeNodesInput) -> ProbeNodesOutput:
        await self._note("probe_nodes")
        return ProbeNodesOutput([NodeProbe(n["rank"], n["host"] not in self.dead,
                                           "" if n["host"] not in self.dead else "its node process is gone")
                                 for n in inp.nodes])


def _unreachable(host: str) -> ApplicationError:
    """What the SSH activities raise for a node that does not answer (30 s: the worker's bound)."""
    return ApplicationError(f"{host}:22 does not answer: connection refused", 30,
                            type=JobErrors.NODE_UNREACHABLE, non_retryable=True)


@dataclass
class Cloud:
    """A worker running the cluster and job workflows on fake activities."""

    env: WorkflowEnvironment
    fake: FakeActivities
    task_queue: str

    async def launch(self, name: str = "c", num_nodes: int = 1, node_cpus: float = 1.0,
                     autostop_minutes: int | None = None, autostop_down: bool = False,
                     state: ClusterState | None = None,
                     node_accelerators: dict[str, float] | None = None,
                     node_memory_gb: float | None = None) -> WorkflowHandle:
        """Start ``cluster/<name>``; a fresh one is returned once UP (in region "fake", zone "fake-1a")."""
        spec = ClusterSpec(name, "fake", num_nodes=num_nodes, resources={"cpus": node_cpus},
                           node_cpus=node_cpus, autostop_minutes=autostop_minutes, autostop_down=autostop_down,
                           node_accelerators=node_accelerators or {}, node_memory_gb=node_memory_gb)
        handle = await self.env.client.start_workflow(
            ClusterWorkflow.run, ClusterInput(spec, state), id=cluster_workflow_id(name), task_queue=self.task_queue)
        if state is None:
            await self.fake.until(lambda: self.fake.cluster_status == ClusterStatus.UP, f"{name} to be UP")
        return handle

    async def submit(self, cluster: WorkflowHandle, cpus: float = 1.0, task: dict[str, Any] | None = None,
                     **kwargs: Any) -> int:
        # Through the service the API and the push trigger use: it re-sends an update the
        # workflow never accepted (e.g. one that met a continue-as-new).
        name = cluster.id.removeprefix("cluster/")
        result = await service.submit_job(self.env.client, self.task_queue, name,
                                          SubmitJobInput(task=task or {"run": "train"}, cpus=cpus, **kwargs))
        return result.job_id

    async def described(self, cluster: WorkflowHandle, predicate: Callable[[ClusterDescription], bool],
                        what: str) -> ClusterDescription:
        """The cluster's ``describe`` answer once ``predicate`` holds of it."""
        deadline = asyncio.get_running_loop().time() + PATIENCE
        while True:
            described = await cluster.query(ClusterWorkflow.describe)
            if predicate(described):
                return described
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last: {described}")
            await asyncio.sleep(0.01)  # polling a query: nothing tells the test it changed


async def _refusal(update: Any) -> ApplicationError:
    """What the workflow answered an update it refused (sent raw, or through the service)."""
    with pytest.raises((WorkflowUpdateFailedError, service.ClusterRefused)) as failed:
        await update
    if isinstance(failed.value, service.ClusterRefused):
        return ApplicationError(failed.value.message, type=failed.value.type)
    assert isinstance(failed.value.cause, ApplicationError)
    return failed.value.cause


@pytest_asyncio.fixture
async def cloud(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[Cloud]:
    fake = FakeActivities()
    task_queue = f"wf-{uuid.uuid4().hex[:8]}"
    async with Worker(time_skipping_env.client, task_queue=task_queue, workflows=[ClusterWorkflow, JobWorkflow],
                      activities=fake.all()):
        yield Cloud(time_skipping_env, fake, task_queue)


# -- placement and the queue ------------------------------------------------------------


async def test_jobs_share_a_node_by_cpus_and_a_job_that_fits_nowhere_waits(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2, node_cpus=1)
    assert fake.calls[:3] == ["record_cluster", "plan", "provision"] and fake.fresh_records == 1
    halves = [await cloud.submit(cluster, cpus=0.5), await cloud.submit(cluster, cpus=0.5)]
    whole, waiting = await cloud.submit(cluster, cpus=1), await cloud.submit(cluster, cpus=1)
    assert [*halves, whole, waiting] == [1, 2, 3, 4]

    await fake.until(lambda: all(fake.status(j) == JobStatus.RUNNING for j in (1, 2, 3)), "jobs 1-3 to run")
    assert fake.hosts == {1: ["node-0"], 2: ["node-0"], 3: ["node-1"]}
    described = await cloud.described(cluster, lambda d: d.running == [1, 2, 3], "jobs 1-3 running")
    assert described.queued == [4] and fake.status(4) == JobStatus.PENDING

    fake.finish(1)  # half a CPU frees on node-0: not enough for job 4
    await cloud.described(cluster, lambda d: d.running == [2, 3], "job 1 to end")
    assert fake.status(1) == JobStatus.SUCCEEDED and fake.status(4) == JobStatus.PENDING

    fake.finish(2)  # node-0 is free again
    await fake.until(lambda: fake.status(4) == JobStatus.RUNNING, "job 4 to run")
    assert fake.hosts[4] == ["node-0"]


async def test_two_half_gpu_jobs_share_one_device_and_a_third_waits(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(node_cpus=4, node_accelerators={"T4": 1})
    ids = [await cloud.submit(cluster, cpus=1, accelerators={"T4": 0.5}) for _ in range(3)]
    await fake.until(lambda: [fake.status(j) for j in ids[:2]] == [JobStatus.RUNNING] * 2, "two halves to run")
    described = await cloud.described(cluster, lambda d: d.running == ids[:2], "the two halves running")
    assert described.queued == [ids[2]] and fake.status(ids[2]) == JobStatus.PENDING  # 0.5 stayed 0.5

    env = fake.envs[ids[0]][0]
    assert env["SKYPILOT_NUM_GPUS_PER_NODE"] == "1"  # as SkyPilot: a fraction rounded up
    assert json.loads(env["SKYPILOT_CLUSTER_INFO"]) == {
        "cluster_name": "c", "cloud": "fake", "region": "fake", "zone": "fake-1a"}
    assert env["SKYPILOT_TASK_ID"].startswith("sky-") and env["SKYPILOT_TASK_ID"].endswith(f"_c_{ids[0]}")
    assert env["SKYPILOT_SETUP_NODE_RANK"] == env["SKYPILOT_NODE_RANK"] == "0"

    fake.finish(ids[0])
    await fake.until(lambda: fake.status(ids[2]) == JobStatus.RUNNING, "the third to take the freed half")


async def test_a_big_job_at_the_head_of_the_queue_holds_back_a_small_one(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(node_cpus=1)
    first = await cloud.submit(cluster, cpus=0.5)
    await fake.until(lambda: fake.status(first) == JobStatus.RUNNING, "the first job to run")
    big = await cloud.submit(cluster, cpus=1)
    small = await cloud.submit(cluster, cpus=0.5)  # would fit beside the first job, but comes later

    described = await cloud.described(cluster, lambda d: d.queued == [big, small], "both to wait")
    assert described.running == [first]
    assert fake.status(big) == fake.status(small) == JobStatus.PENDING and small not in fake.hosts

    fake.finish(first)
    await fake.until(lambda: fake.status(big) == JobStatus.RUNNING, "the big job to run")
    assert (await cluster.query(ClusterWorkflow.describe)).queued == [small]
    fake.finish(big)
    await fake.until(lambda: fake.status(small) == JobStatus.RUNNING, "the small job to run")
    assert list(fake.hosts) == [first, big, small]


async def test_a_job_gets_its_files_and_setup_on_every_node_before_it_runs(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2)
    task = {"setup": "pip install -e .", "run": "train", "workdir": "/src/project"}
    job = await cloud.submit(cluster, task=task, num_nodes=2)
    await fake.until(lambda: len(fake.hosts.get(job, [])) == 2, "the job to run on both nodes")
    assert fake.calls.count("sync_files") == fake.calls.count("run_phase:setup") == 2
    last_setup = max(i for i, name in enumerate(fake.calls) if name in ("sync_files", "run_phase:setup"))
    assert last_setup < fake.calls.index("run_phase")
    assert fake.recorded[job][:2] == [JobStatus.PENDING, JobStatus.SETTING_UP]
    fake.finish(job, exit_code=3, rank=1)
    await fake.until(lambda: fake.status(job) == JobStatus.FAILED, "the job to fail")
    assert fake.messages[job] == "rank 1 (node-1) exited 3" and fake.killed == [job]


async def test_a_failed_setup_ends_the_job_before_its_run(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    fake.setup_exit[1] = 2
    job = await cloud.submit(cluster, task={"setup": "false", "run": "train"})
    await fake.until(lambda: fake.status(job) == JobStatus.FAILED_SETUP, "the job to fail its setup")
    assert fake.messages[job] == "setup on rank 0 (node-0) exited 2" and job not in fake.hosts
    assert fake.exit_codes[job] == [2]
    await cloud.described(cluster, lambda d: not d.running, "the cluster to hear the job ended")


# -- one rank fails: the job fails ------------------------------------------------------


async def _cancels_requested(cloud: Cloud, job_id: int) -> list[str]:
    """The summaries of the job's activities the workflow asked to cancel (a job runs in its
    cluster's workflow: its activities' summaries start ``job <id>: ``)."""
    handle = cloud.env.client.get_workflow_handle(cluster_workflow_id("c"))
    summaries: dict[int, str] = {}
    cancelled = []
    prefix = f"job {job_id}: "
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            summary = event.user_metadata.summary  # a JSON payload, as the UI shows it
            summaries[event.event_id] = json.loads(summary.data) if summary.data else ""
        if event.HasField("activity_task_cancel_requested_event_attributes"):
            cancelled.append(summaries[event.activity_task_cancel_requested_event_attributes.scheduled_event_id])
    return sorted(c.removeprefix(prefix) for c in cancelled if c.startswith(prefix))


async def test_a_rank_that_fails_fails_the_job_at_once_and_stops_the_other_ranks(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=3)
    job = await cloud.submit(cluster, num_nodes=3)
    await fake.until(lambda: len(fake.hosts.get(job, [])) == 3, "the job to run on the three nodes")

    fake.finish(job, exit_code=1, rank=1)  # ranks 0 and 2 go on running
    await fake.until(lambda: fake.status(job) == JobStatus.FAILED, "the job to fail")
    assert fake.messages[job] == "rank 1 (node-1) exited 1"
    assert fake.exit_codes[job] == [None, 1, None]  # the others were stopped, not ended by themselves
    assert await _cancels_requested(cloud, job) == ["run on rank 0 (node-0)", "run on rank 2 (node-2)"]
    assert fake.killed_on[job] == [["node-0", "node-1", "node-2"]]
    await cloud.described(cluster, lambda d: not d.running and not d.down_nodes, "the cluster to hear of it")
    after = await cloud.submit(cluster, num_nodes=3)  # every node is free again
    await fake.until(lambda: len(fake.hosts.get(after, [])) == 3, "the next job to run")


async def test_a_setup_failing_on_one_rank_fails_the_job_in_setup_and_stops_the_others(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2)
    fake.setup_exit[1] = {1: 127}  # rank 0's setup goes on until it is killed
    job = await cloud.submit(cluster, num_nodes=2, task={"setup": "pip install nothing", "run": "train"})
    await fake.until(lambda: fake.status(job) == JobStatus.FAILED_SETUP, "the job to fail its setup")
    assert fake.messages[job] == "setup on rank 1 (node-1) exited 127"
    assert fake.exit_codes[job] == [None, 127] and job not in fake.hosts  # run never started
    assert await _cancels_requested(cloud, job) == ["setup on rank 0 (node-0)"]
    assert fake.killed == [job]


# -- a node that stops answering --------------------------------------------------------


async def test_a_brief_blip_of_a_node_is_retried_and_the_job_goes_on(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    job = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(job) == JobStatus.RUNNING, "the job to run")
    fake.cut("node-0")
    await cloud.env.sleep(timedelta(seconds=10))  # under the 30 s bound
    fake.restore("node-0")
    await fake.until(lambda: fake.calls.count("run_phase") >= 3, "the run phase to be tried again")
    fake.finish(job)
    await fake.until(lambda: fake.status(job) == JobStatus.SUCCEEDED, "the job to succeed")
    assert (await cluster.query(ClusterWorkflow.describe)).down_nodes == []


async def test_a_node_unreachable_past_the_bound_fails_its_job_and_gets_no_more_jobs(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2)
    lost_job = await cloud.submit(cluster)  # node-0
    other = await cloud.submit(cluster)  # node-1
    await fake.until(lambda: fake.hosts.get(other) == ["node-1"] and fake.hosts.get(lost_job) == ["node-0"],
                     "a job on each node")
    fake.cut("node-0")
    await cloud.env.sleep(timedelta(seconds=20))
    assert fake.status(lost_job) == JobStatus.RUNNING, "failed before the bound"
    await cloud.env.sleep(timedelta(seconds=20))
    await fake.until(lambda: fake.status(lost_job) == JobStatus.FAILED, "the job to fail")
    assert re.fullmatch(r"rank 0 \(node-0\) lost: node unreachable for 3\d s \(.*node-0:22 does not answer.*\)",
                        fake.messages[lost_job]), fake.messages[lost_job]
    assert lost_job not in fake.killed  # nothing to reach on the one node it ran on

    described = await cloud.described(cluster, lambda d: bool(d.down_nodes), "the cluster to mark node 0 down")
    assert [(d.rank, d.jobs) for d in described.down_nodes] == [(0, [lost_job])]
    assert "node 0 (node-0) is DOWN" in (described.message or "")
    await fake.until(lambda: fake.node_statuses and fake.node_statuses[-1] == ["DOWN", "UP"], "node 0 recorded DOWN")
    assert "node 0 (node-0) is DOWN" in (fake.cluster_messages[-1] or "")

    # node-0 is free but DOWN: the next job waits for node-1, and runs there.
    waiting = await cloud.submit(cluster)
    await cloud.described(cluster, lambda d: d.queued == [waiting], "the next job to wait")
    fake.finish(other)
    await fake.until(lambda: fake.status(waiting) == JobStatus.RUNNING, "the next job to run")
    assert fake.hosts[waiting] == ["node-1"]
    too_big = await cloud.submit(cluster, num_nodes=2)  # needs both nodes: waits
    await cloud.described(cluster, lambda d: d.queued == [too_big], "the two-node job to wait")


async def test_refresh_marks_dead_nodes_down_and_brings_back_the_living(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2)
    fake.dead.add("node-1")
    described = await cluster.execute_update(ClusterWorkflow.refresh)
    assert [(d.rank, d.reason) for d in described.down_nodes] == [(1, "its node process is gone")]
    assert fake.node_statuses[-1] == ["UP", "DOWN"]
    job = await cloud.submit(cluster, num_nodes=2)
    await cloud.described(cluster, lambda d: d.queued == [job], "the two-node job to wait")

    fake.dead.clear()
    described = await cluster.execute_update(ClusterWorkflow.refresh)
    assert described.down_nodes == [] and fake.node_statuses[-1] == ["UP", "UP"]
    await fake.until(lambda: len(fake.hosts.get(job, [])) == 2, "the job to run on both nodes")


async def test_a_node_that_comes_back_is_cleared_of_what_the_failed_job_left(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2)
    job = await cloud.submit(cluster, num_nodes=2)
    await fake.until(lambda: len(fake.hosts.get(job, [])) == 2, "the job to run")
    fake.cut("node-1")
    await cloud.env.sleep(timedelta(seconds=40))
    await fake.until(lambda: fake.status(job) == JobStatus.FAILED, "the job to fail")
    assert fake.messages[job].startswith("rank 1 (node-1) lost: ")
    assert fake.killed_on[job] == [["node-0"]]  # the lost node is not waited for
    await cloud.described(cluster, lambda d: [n.rank for n in d.down_nodes] == [1], "node 1 down")

    fake.restore("node-1")  # it answers again: whatever the job left there is killed
    described = await cluster.execute_update(ClusterWorkflow.refresh)
    assert described.down_nodes == [] and fake.killed_on[job] == [["node-0"], ["node-1"]]


async def test_an_exec_skips_setup_but_still_gets_its_files(cloud: Cloud) -> None:
    """As SkyPilot's `exec`: only a launch runs `setup`."""
    fake = cloud.fake
    cluster = await cloud.launch()
    job = await cloud.submit(cluster, task={"setup": "pip install -e .", "run": "train", "workdir": "/src"},
                             run_setup=False)
    await fake.until(lambda: job in fake.hosts, "the job to run")
    assert "run_phase:setup" not in fake.calls and fake.calls.count("sync_files") == 1
    fake.finish(job)
    await fake.until(lambda: fake.status(job) == JobStatus.SUCCEEDED, "the job to succeed")


# -- cancel ---------------------------------------------------------------------------


async def test_cancelling_a_waiting_job_records_it_cancelled_and_it_never_runs(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    running = await cloud.submit(cluster)
    waiting = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(running) == JobStatus.RUNNING, "the first job to run")

    cancelled = await cluster.execute_update(ClusterWorkflow.cancel_job, CancelJobInput(waiting))
    assert (cancelled.job_id, cancelled.previous_status) == (waiting, JobStatus.PENDING)
    assert fake.status(waiting) == JobStatus.CANCELLED
    assert fake.messages[waiting] == "cancelled before it started"
    assert (await cluster.query(ClusterWorkflow.describe)).queued == []

    fake.finish(running)
    await cloud.described(cluster, lambda d: not d.running, "the first job to end")
    assert waiting not in fake.hosts and fake.killed == []
    refused = await _refusal(cluster.execute_update(ClusterWorkflow.cancel_job, CancelJobInput(waiting)))
    assert refused.type == "JobFinished"


async def test_cancelling_a_running_job_kills_it_and_records_it_cancelled(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    job = await cloud.submit(cluster)
    after = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(job) == JobStatus.RUNNING, "the job to run")

    cancelled = await cluster.execute_update(ClusterWorkflow.cancel_job, CancelJobInput())  # the latest: `after`
    assert (cancelled.job_id, cancelled.previous_status) == (after, JobStatus.PENDING)
    cancelled = await cluster.execute_update(ClusterWorkflow.cancel_job, CancelJobInput(job))
    assert (cancelled.job_id, cancelled.previous_status) == (job, JobStatus.RUNNING)

    await fake.until(lambda: fake.status(job) == JobStatus.CANCELLED, "the job to be recorded CANCELLED")
    assert fake.killed == [job] and fake.messages[job] == "cancelled"
    await cloud.described(cluster, lambda d: not d.running, "the cluster to hear the job ended")
    next_job = await cloud.submit(cluster)  # its CPU is free again
    await fake.until(lambda: fake.status(next_job) == JobStatus.RUNNING, "the next job to run")


async def test_a_job_that_ended_just_before_its_cancel_stays_succeeded_everywhere(cloud: Cloud) -> None:
    """A one-node job's run activity records SUCCEEDED itself once the whole log is stored
    (``record_end``); a cancel that lands before the workflow hears the activity's answer
    must not make the workflow (and the cluster) say CANCELLED while the database says
    SUCCEEDED. Found by the faults suite (`styx stop` while a job ended)."""
    fake = cloud.fake
    cluster = await cloud.launch()
    job = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(job) == JobStatus.RUNNING, "the job to run")
    fake.jobs[job] = JobStatus.SUCCEEDED  # the run activity's own record; its answer is not in yet

    cancelled = await cluster.execute_update(ClusterWorkflow.cancel_job, CancelJobInput(job))
    assert cancelled.job_id == job

    await cloud.described(cluster, lambda d: not d.running, "the cluster to hear the job ended")
    assert fake.status(job) == JobStatus.SUCCEEDED and fake.messages.get(job) is None
    assert fake.exit_codes.get(job) is None  # the cancel's answer wrote nothing over the end


# -- stop and down ----------------------------------------------------------------------


async def test_stop_cancels_the_jobs_then_stops_the_nodes(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    running = await cloud.submit(cluster)
    waiting = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(running) == JobStatus.RUNNING, "the job to run")

    stopped = await cluster.execute_update(ClusterWorkflow.stop)
    assert stopped.status == ClusterStatus.STOPPED and stopped.running == stopped.queued == []
    assert fake.status(running) == fake.status(waiting) == JobStatus.CANCELLED
    assert fake.killed == [running] and waiting not in fake.hosts
    assert fake.calls.index("kill_job") < fake.calls.index("stop"), "nodes stopped under a running job"
    assert fake.cluster_status == ClusterStatus.STOPPED and "terminate" not in fake.calls

    refused = await _refusal(cloud.submit(cluster))
    assert refused.type == "ClusterStopped" and "styx start c" in refused.message


async def test_a_job_submitted_while_the_cluster_stops_is_refused_and_nothing_new_starts(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(node_cpus=1)
    running = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(running) == JobStatus.RUNNING, "the job to run")
    fake.kill_gate = asyncio.Event()  # the stop drains: the running job takes a while to die
    stopping = asyncio.ensure_future(cluster.execute_update(ClusterWorkflow.stop))
    await fake.until(lambda: running in fake.killed, "the stop to kill the running job")

    refused = await _refusal(cloud.submit(cluster))
    assert refused.type == "ClusterNotUp" and "shutting down (cluster stopped)" in refused.message
    fake.kill_gate.set()
    stopped = await stopping
    assert stopped.status == ClusterStatus.STOPPED and stopped.queued == stopped.running == []
    assert list(fake.hosts) == [running], "a job started on a stopping cluster"
    assert (await cluster.query(ClusterWorkflow.describe)).next_job_id == running + 1


async def test_down_cancels_the_jobs_then_terminates_the_nodes(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2)
    jobs = [await cloud.submit(cluster, num_nodes=2), await cloud.submit(cluster)]
    await fake.until(lambda: len(fake.hosts.get(jobs[0], [])) == 2, "the job to run on both nodes")
    assert sorted(fake.hosts[jobs[0]]) == ["node-0", "node-1"] and fake.status(jobs[0]) == JobStatus.RUNNING

    downed = await cluster.execute_update(ClusterWorkflow.down)
    assert downed.status == ClusterStatus.TERMINATED and downed.nodes == []
    assert [fake.status(j) for j in jobs] == [JobStatus.CANCELLED] * 2
    assert fake.calls.index("kill_job") < fake.calls.index("terminate")
    assert "stop" not in fake.calls and fake.cluster_status == ClusterStatus.TERMINATED
    assert (await cluster.result()).status == ClusterStatus.TERMINATED  # the workflow ends with its cluster


# -- autostop, on workflow time -----------------------------------------------------------


async def test_an_idle_cluster_stops_after_its_autostop_minutes_and_not_before(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10)
    await cloud.env.sleep(timedelta(minutes=9, seconds=50))
    assert (await cluster.query(ClusterWorkflow.describe)).status == ClusterStatus.UP
    assert "stop" not in fake.calls

    await cloud.env.sleep(timedelta(seconds=20))
    await fake.until(lambda: fake.cluster_status == ClusterStatus.STOPPED, "autostop")
    idle = fake.scheduled["stop"] - fake.scheduled["provision"]
    assert timedelta(minutes=10) <= idle < timedelta(minutes=10, seconds=20)
    assert fake.calls[-2:] == ["stop", "record_cluster"] and "terminate" not in fake.calls


async def test_a_job_ending_starts_the_idle_clock_again(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10)
    await cloud.env.sleep(timedelta(minutes=6))
    job = await cloud.submit(cluster)
    await fake.until(lambda: fake.status(job) == JobStatus.RUNNING, "the job to run")
    fake.finish(job)
    await cloud.described(cluster, lambda d: not d.running, "the job to end")

    await cloud.env.sleep(timedelta(minutes=9, seconds=50))  # 16 minutes after launch, 10 after the job
    assert (await cluster.query(ClusterWorkflow.describe)).status == ClusterStatus.UP
    assert "stop" not in fake.calls

    await cloud.env.sleep(timedelta(seconds=20))
    await fake.until(lambda: fake.cluster_status == ClusterStatus.STOPPED, "autostop")
    assert fake.scheduled["stop"] - fake.scheduled["run_phase"] >= timedelta(minutes=10)


async def test_autostop_with_down_terminates_the_cluster(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10, autostop_down=True)
    final = await cluster.result()  # waiting for the result lets the test server skip time
    assert final.status == ClusterStatus.TERMINATED
    assert "terminate" in fake.calls and "stop" not in fake.calls
    assert fake.scheduled["terminate"] - fake.scheduled["provision"] >= timedelta(minutes=10)


async def test_autostop_set_on_an_idle_cluster_counts_from_when_it_was_set(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    await cloud.env.sleep(timedelta(hours=1))  # no autostop: nothing happens
    assert fake.cluster_status == ClusterStatus.UP
    described = await cluster.execute_update(ClusterWorkflow.set_autostop, AutostopInput(5, down=True))
    assert (described.autostop_minutes, described.autostop_down) == (5, True)
    assert (await cluster.result()).status == ClusterStatus.TERMINATED
    assert fake.scheduled["terminate"] - fake.scheduled["provision"] >= timedelta(hours=1, minutes=5)


# -- what a cluster refuses -------------------------------------------------------------


@pytest.mark.parametrize("ask", [
    {"cpus": 2},
    {"num_nodes": 2},
    {"accelerators": {"A100": 1}},
], ids=["cpus", "nodes", "accelerators"])
async def test_a_job_larger_than_the_cluster_is_refused_and_takes_no_id(cloud: Cloud, ask: dict) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(node_cpus=1)
    refused = await _refusal(cluster.execute_update(
        ClusterWorkflow.submit_job, SubmitJobInput(task={"run": "x"}, **{"cpus": 1, **ask})))
    assert refused.type == "JobTooLarge"
    assert fake.jobs == {} and (await cluster.query(ClusterWorkflow.describe)).next_job_id == 1
    assert await cloud.submit(cluster) == 1


async def test_a_launch_expecting_another_owner_is_refused_and_queues_nothing(cloud: Cloud) -> None:
    """Two users launching one new name at once: the second launch's spec names its own owner,
    the running cluster is the first user's, and the workflow refuses the job."""
    cluster = await cloud.launch()
    theirs = ClusterSpec("c", "fake", resources={"cpus": 1.0}, node_cpus=1.0, owner="bob")
    refused = await _refusal(cluster.execute_update(
        ClusterWorkflow.submit_job, SubmitJobInput(task={"run": "x"}, user="bob", launch_spec=theirs)))
    assert refused.type == "NameTaken"
    assert cloud.fake.jobs == {} and (await cluster.query(ClusterWorkflow.describe)).next_job_id == 1


#: What `styx launch -c c 'cmd'` sends: a spec of its own defaults (local nodes of this
#: machine's CPUs), which differs from the cluster's and must not matter.
BARE_LAUNCH = ClusterSpec("c", "local", node_cpus=64.0)


async def test_a_launch_onto_a_cluster_the_task_fits_is_queued_there_and_runs_setup(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(num_nodes=2, node_cpus=4, node_memory_gb=16)
    asks = [NodeRequest(), NodeRequest(provider="fake", region="fake", zone="fake-1a", memory_gb=16)]
    jobs = []
    for ask in asks:
        submitted: SubmitJobResult = await cluster.execute_update(ClusterWorkflow.submit_job, SubmitJobInput(
            task={"setup": "pip install -e .", "run": "train"}, cpus=2, num_nodes=2, launch_spec=BARE_LAUNCH,
            node_request=ask))
        jobs.append(submitted.job_id)
    assert jobs == [1, 2]
    await fake.until(lambda: all(len(fake.hosts.get(j, [])) == 2 for j in jobs), "both jobs to run on both nodes")
    assert fake.calls.count("run_phase:setup") == 4 and "provision" in fake.calls
    assert fake.calls.count("provision") == 1  # the cluster was reused, not launched again


@pytest.mark.parametrize(("ask", "says"), [
    ({"cpus": 8}, "the task asks for 8 CPUs per node; nodes of 'c' have 4"),
    ({"num_nodes": 3}, "the task asks for 3 nodes; cluster 'c' has 2"),
    ({"accelerators": {"A100": 1}}, "the task asks for A100:1 per node; nodes of 'c' have no accelerators"),
    ({"node_request": NodeRequest(provider="aws")}, "the task asks for aws; cluster 'c' is on fake"),
    ({"node_request": NodeRequest(region="elsewhere")}, "the task asks for region elsewhere; cluster 'c' is in fake"),
    ({"node_request": NodeRequest(zone="fake-1b")}, "the task asks for zone fake-1b; cluster 'c' is in fake-1a"),
    ({"node_request": NodeRequest(memory_gb=32)},
     "the task asks for 32 GB of memory per node; nodes of 'c' have 16"),
], ids=["cpus", "nodes", "accelerators", "provider", "region", "zone", "memory"])
async def test_a_launch_the_cluster_cannot_fit_is_refused_naming_what_does_not_fit(
        cloud: Cloud, ask: dict, says: str) -> None:
    cluster = await cloud.launch(num_nodes=2, node_cpus=4, node_memory_gb=16)
    refused = await _refusal(cluster.execute_update(ClusterWorkflow.submit_job, SubmitJobInput(
        **{"task": {"run": "x"}, "cpus": 1.0, "launch_spec": BARE_LAUNCH, **ask})))
    assert refused.type == "ResourceMismatch"
    assert refused.message == f"{says}; launch under another name, or `styx down c` first"
    assert cloud.fake.jobs == {} and (await cluster.query(ClusterWorkflow.describe)).next_job_id == 1


# -- continue-as-new ----------------------------------------------------------------------


async def test_a_continued_run_keeps_its_queue_running_jobs_and_job_ids(cloud: Cloud) -> None:
    """What ``continue_as_new(ClusterInput(spec, state))`` hands the next run, given at start."""
    fake = cloud.fake
    node = {"rank": 0, "host": "node-0", "port": 22}
    state = ClusterState(
        status=ClusterStatus.UP, nodes=[node], next_job_id=8,
        running=[RunningJob(6, job_workflow_id("c", 6), [0], 1.0, {})],
        queue=[QueuedJob(7, "job-7", 1.0, {}, 1, {"run": "train"}, {})],
    )
    cluster = await cloud.launch(state=state)
    described = await cluster.query(ClusterWorkflow.describe)
    assert (described.status, described.running, described.queued, described.next_job_id) == (
        ClusterStatus.UP, [6], [7], 8)
    assert await cloud.submit(cluster) == 8
    assert "provision" not in fake.calls and fake.fresh_records == 0  # no second launch

    # Job 6 was started by the earlier run: it reports to the workflow id, whatever the run.
    await cloud.env.client.get_workflow_handle(cluster_workflow_id("c")).signal(
        ClusterWorkflow.job_finished, JobFinished(6, JobStatus.SUCCEEDED, [0]))
    await fake.until(lambda: fake.status(7) == JobStatus.RUNNING, "job 7 to run")
    fake.finish(7)
    await fake.until(lambda: fake.status(8) == JobStatus.RUNNING, "job 8 to run")
    assert list(fake.hosts) == [7, 8]


async def test_the_cluster_continues_as_new_with_jobs_running_and_waiting_and_loses_none(
        eager_temporal: WorkflowEnvironment) -> None:
    """For real: a dev server that suggests continuing as new after 40 history events."""
    fake = FakeActivities()
    task_queue = f"wf-{uuid.uuid4().hex[:8]}"
    name = f"can-{uuid.uuid4().hex[:6]}"
    async with Worker(eager_temporal.client, task_queue=task_queue, workflows=[ClusterWorkflow, JobWorkflow],
                      activities=fake.all()):
        cloud = Cloud(eager_temporal, fake, task_queue)
        cluster = await cloud.launch(name)
        first_run = (await cluster.describe()).run_id
        jobs = [await cloud.submit(cluster, cpus=0.5) for _ in range(8)]  # two run at a time
        assert jobs == list(range(1, 9))
        await fake.until(lambda: fake.status(1) == JobStatus.RUNNING, "job 1 to run")
        for job in jobs:
            fake.finish(job)
        await fake.until(lambda: all(fake.status(j) == JobStatus.SUCCEEDED for j in jobs), "every job to succeed")
        latest = eager_temporal.client.get_workflow_handle(cluster_workflow_id(name))
        assert (await latest.describe()).run_id != first_run, "the cluster never continued as new"
        assert fake.hosts == {job: ["node-0"] for job in jobs}, "a job ran twice or not at all"
        assert await cloud.submit(latest) == 9  # ids go on across runs
        fake.finish(9)
        await fake.until(lambda: fake.status(9) == JobStatus.SUCCEEDED, "job 9 to succeed")
        downed = await latest.execute_update(ClusterWorkflow.down)
        assert downed.status == ClusterStatus.TERMINATED and fake.killed == []


async def test_a_job_taken_up_after_continue_as_new_goes_on_from_where_it_was(cloud: Cloud) -> None:
    """A job run inline that was past its setup when the cluster continued as new: the next run
    re-attaches to its run phase; it copies no file and runs no setup again."""
    fake = cloud.fake
    node = {"rank": 0, "host": "node-0", "port": 22}
    task = {"setup": "pip install x", "run": "train", "workdir": "/src"}
    job = QueuedJob(4, "job-4", 1.0, {}, 1, task, {})
    state = ClusterState(status=ClusterStatus.UP, nodes=[node], next_job_id=5, running=[
        RunningJob(4, cluster_workflow_id("c"), [0], 1.0, {}, inline=True, queued=job,
                   started_at="2026-11-26T10:00:00+00:00", stage="run")])
    cluster = await cloud.launch(state=state)
    await fake.until(lambda: fake.status(4) == JobStatus.RUNNING, "job 4 to be re-attached")
    fake.finish(4)
    await fake.until(lambda: fake.status(4) == JobStatus.SUCCEEDED, "job 4 to succeed")
    await cloud.described(cluster, lambda d: not d.running, "the cluster to hear job 4 ended")
    assert "sync_files" not in fake.calls and "run_phase:setup" not in fake.calls
    assert fake.envs[4][0]["SKYPILOT_TASK_ID"] == "sky-2026-11-26-10-00-00-000000_c_4"  # its own start


async def test_a_job_whose_cancel_was_asked_before_continue_as_new_ends_cancelled_after(cloud: Cloud) -> None:
    fake = cloud.fake
    node = {"rank": 0, "host": "node-0", "port": 22}
    job = QueuedJob(2, "job-2", 1.0, {}, 1, {"run": "train"}, {})
    state = ClusterState(status=ClusterStatus.UP, nodes=[node], next_job_id=3, running=[
        RunningJob(2, cluster_workflow_id("c"), [0], 1.0, {}, inline=True, queued=job, stage="run",
                   cancelled=True)])
    cluster = await cloud.launch(state=state)
    await fake.until(lambda: fake.status(2) == JobStatus.CANCELLED, "job 2 to be recorded CANCELLED")
    assert fake.killed == [2] and "run_phase" not in fake.calls
    await cloud.described(cluster, lambda d: not d.running, "the cluster to free its place")
