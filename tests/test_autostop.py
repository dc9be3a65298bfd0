"""Autostop, the failsafe deadline and the bill, on Temporal's time-skipping test server:
what a user sees after minutes, hours or days of workflow time, in about a second a test.

The activities are the fakes of ``test_cluster_workflow`` (what they were asked is kept), except
in the cost tests, where the cluster's records go through the real ``record_cluster`` activity
into a real database (SQLite and PostgreSQL), and the cost report is computed from it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from datetime import datetime, timedelta, timezone

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from styx.activities.state import StateActivities
from styx.contracts.clusters import (
    AutostopInput,
    ClusterDescription,
    ClusterInput,
    ClusterSpec,
    ClusterStatus,
    StoppedBy,
)
from styx.contracts.failsafe import BUSY_LEASE, FailsafeOutput
from styx.contracts.jobs import JobFinished, JobInput, JobStatus
from styx.db import Database
from styx.services.costs import cost_report, hourly_rate
from styx.services.launch import cluster_spec
from styx.task import Task
from styx.workflows.cluster import ClusterWorkflow
from styx.workflows.job import JobRun, JobWorkflow
from tests.fixtures.stack import wait_for_async
from tests.test_cluster_workflow import Cloud, FakeActivities, cloud  # noqa: F401 (the fixture)


def _at(iso: str | None) -> datetime:
    assert iso is not None
    return datetime.fromisoformat(iso)


def _described_with_deadline(cluster):
    async def described():
        out = await cluster.query(ClusterWorkflow.describe)
        return out if out.failsafe_deadline is not None else None
    return described


# -- idle semantics --------------------------------------------------------------------


async def test_an_idle_cluster_carries_its_autostop_time_as_the_nodes_deadline(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10)
    await fake.until(lambda: fake.deadlines, "the first failsafe push")
    pushed_at, deadline = fake.deadlines[0]
    assert _at(deadline) - pushed_at == pytest.approx(timedelta(minutes=10), abs=timedelta(seconds=5))
    # The workflow records the deadline once the push activity has answered.
    described = await wait_for_async(_described_with_deadline(cluster), 10, "the pushed deadline in the workflow")
    assert described.autostop_at == deadline == described.failsafe_deadline  # what `styx status` shows
    assert deadline in fake.autostop_ats

    await cloud.env.sleep(timedelta(minutes=9, seconds=50))
    assert (await cluster.query(ClusterWorkflow.describe)).status == ClusterStatus.UP
    assert len(fake.deadlines) == 1  # an idle cluster's deadline does not move: no more pushes
    await cloud.env.sleep(timedelta(seconds=20))
    await fake.until(lambda: fake.cluster_status == ClusterStatus.STOPPED, "autostop")
    assert fake.stopped_by[-1] == StoppedBy.AUTOSTOP


@workflow.defn(name="ClusterWorkflow")
class TimedJobsCluster(ClusterWorkflow):
    """The cluster workflow whose jobs each take ``task["minutes"]`` of workflow time (the test
    server skips it; a running activity would hold its clock), then end SUCCEEDED."""

    @workflow.init
    def __init__(self, inp: ClusterInput) -> None:
        super().__init__(inp)

    @workflow.run
    async def run(self, inp: ClusterInput) -> ClusterDescription:
        return await super().run(inp)

    async def _run_job(self, job: JobRun, inp: JobInput) -> JobFinished:
        # A few seconds past the minute: not at the instant a lease renewal (every 5 minutes)
        # fires too. The time-skipping test server refused that workflow task about one run
        # in two ("invalid history builder state for action"; seen on that server only).
        await workflow.sleep(timedelta(minutes=float(inp.task.get("minutes", 0)), seconds=3))
        return JobFinished(inp.job_id, JobStatus.SUCCEEDED, [0])


@pytest_asyncio.fixture
async def timed(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[Cloud]:
    """The cluster workflow with jobs that take workflow time (``TimedJobsCluster``)."""
    fake = FakeActivities()
    task_queue = f"timed-{uuid.uuid4().hex[:8]}"
    async with Worker(time_skipping_env.client, task_queue=task_queue, workflows=[TimedJobsCluster],
                      activities=fake.all(), workflow_runner=SandboxedWorkflowRunner(
                          restrictions=SandboxRestrictions.default.with_passthrough_all_modules())):
        yield Cloud(time_skipping_env, fake, task_queue)


async def test_a_thirty_minute_job_is_never_stopped_and_autostop_counts_from_its_end(timed: Cloud) -> None:
    fake = timed.fake
    cluster = await timed.launch(autostop_minutes=10)
    await fake.until(lambda: fake.deadlines, "the first failsafe push")
    job = await timed.submit(cluster, task={"run": "train", "minutes": 30})
    await timed.described(cluster, lambda d: d.running == [job], "the job to run")
    described = await cluster.query(ClusterWorkflow.describe)
    assert described.autostop_at is None  # busy: autostop waits for the job
    await timed.env.sleep(timedelta(minutes=25))
    described = await cluster.query(ClusterWorkflow.describe)
    assert described.status == ClusterStatus.UP and described.running == [job]
    assert "stop" not in fake.calls
    # While the job ran, the nodes' deadline stayed ahead of the workflow's clock (a lease,
    # renewed before half of it was gone).
    busy = [(at, _at(d)) for at, d in fake.deadlines[1:]]
    assert len(busy) >= 3
    assert all(deadline - at >= BUSY_LEASE - timedelta(seconds=5) for at, deadline in busy)
    assert all(b[0] - a[0] <= BUSY_LEASE / 2 + timedelta(seconds=5) for a, b in zip(busy, busy[1:]))

    await timed.env.sleep(timedelta(minutes=5, seconds=10))  # the job ends at 30:03
    ended = await timed.described(cluster, lambda d: not d.running, "the job to end")
    assert ended.autostop_at is not None
    await timed.env.sleep(timedelta(minutes=9, seconds=45))
    assert (await cluster.query(ClusterWorkflow.describe)).status == ClusterStatus.UP
    await timed.env.sleep(timedelta(seconds=20))
    await fake.until(lambda: fake.cluster_status == ClusterStatus.STOPPED, "autostop")
    # 30 minutes of job, then 10 idle: autostop came 40 minutes after launch (the job came at once).
    assert fake.scheduled["stop"] - fake.deadlines[0][0] >= timedelta(minutes=40)
    assert fake.deadlines[-1][1] == ended.autostop_at  # the nodes carried the autostop time


async def test_autostop_down_tears_down_and_says_autostop_did(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10, autostop_down=True)
    assert (await cluster.result()).status == ClusterStatus.TERMINATED
    assert "terminate" in fake.calls and "stop" not in fake.calls
    assert fake.stopped_by[-1] == StoppedBy.AUTOSTOP


async def test_autostop_cancelled_keeps_the_cluster_up_for_days_and_clears_the_deadline(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10)
    await fake.until(lambda: fake.deadlines, "the first failsafe push")
    await cluster.execute_update(ClusterWorkflow.set_autostop, AutostopInput(None))
    await fake.until(lambda: fake.deadlines[-1][1] is None, "the deadline to be cleared")
    await cloud.env.sleep(timedelta(days=3))
    described = await cluster.query(ClusterWorkflow.describe)
    assert described.status == ClusterStatus.UP and described.autostop_at is None
    assert "stop" not in fake.calls and "terminate" not in fake.calls


async def test_a_user_stop_says_user_and_start_clears_it(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch()
    await cluster.execute_update(ClusterWorkflow.stop)
    assert fake.stopped_by[-1] == StoppedBy.USER
    assert (await cluster.execute_update(ClusterWorkflow.start)).stopped_by is None
    assert "push_failsafe" not in fake.calls  # no autostop: the nodes carry no deadline


# -- what the nodes did while Styx was gone ------------------------------------------------


async def test_nodes_that_stopped_themselves_leave_the_cluster_stopped_by_the_failsafe(timed: Cloud) -> None:
    fake = timed.fake
    cluster = await timed.launch(autostop_minutes=10)
    await fake.until(lambda: fake.deadlines, "the first failsafe push")
    job = await timed.submit(cluster, task={"run": "train", "minutes": 120})
    await timed.described(cluster, lambda d: d.running == [job], "the job to run")
    # Styx was gone past the deadline: the next push finds the nodes stopped themselves.
    fake.failsafe_answer = FailsafeOutput(fired=[0], action="stopped")
    # Workflow time passes in steps: the lease's timer may be set only after a first skip ends.
    for _ in range(4):
        await timed.env.sleep(BUSY_LEASE)
        if fake.cluster_status == ClusterStatus.STOPPED:
            break
    await fake.until(lambda: fake.cluster_status == ClusterStatus.STOPPED, "the cluster to be STOPPED")
    described = await cluster.query(ClusterWorkflow.describe)
    assert described.stopped_by == StoppedBy.FAILSAFE and fake.stopped_by[-1] == StoppedBy.FAILSAFE
    assert "stop" in fake.calls  # the provider makes sure every node is stopped

    fake.failsafe_answer = FailsafeOutput()
    pushes = len(fake.deadlines)
    started = await cluster.execute_update(ClusterWorkflow.start)
    assert started.status == ClusterStatus.UP and started.stopped_by is None
    await fake.until(lambda: len(fake.deadlines) > pushes, "a fresh deadline after start")
    assert fake.deadlines[-1][1] is not None


async def test_nodes_that_terminated_themselves_leave_the_cluster_terminated(cloud: Cloud) -> None:
    fake = cloud.fake
    cluster = await cloud.launch(autostop_minutes=10, autostop_down=True)
    await fake.until(lambda: fake.deadlines, "the first failsafe push")
    await cluster.execute_update(ClusterWorkflow.set_autostop, AutostopInput(20, down=True))
    fake.failsafe_answer = FailsafeOutput(fired=[0], action="terminated")
    await cluster.execute_update(ClusterWorkflow.set_autostop, AutostopInput(30, down=True))
    final = await cluster.result()
    assert final.status == ClusterStatus.TERMINATED and final.stopped_by == StoppedBy.FAILSAFE


# -- the bill ---------------------------------------------------------------------------


@pytest_asyncio.fixture
async def billed(time_skipping_env: WorkflowEnvironment, database: Database) -> AsyncIterator[Cloud]:
    """Fake provider and job activities; the real ``record_cluster`` into ``database``."""
    fake = FakeActivities()
    state = StateActivities(database)
    activities = [a for a in fake.all() if a.__name__ != "record_cluster"] + [state.record_cluster]
    task_queue = f"bill-{uuid.uuid4().hex[:8]}"
    async with Worker(time_skipping_env.client, task_queue=task_queue, workflows=[ClusterWorkflow, JobWorkflow],
                      activities=activities):
        yield Cloud(time_skipping_env, fake, task_queue)


async def _status_in_db(db: Database, name: str, status: ClusterStatus) -> None:
    await wait_for_async(lambda: (c := db.clusters.get(name)) is not None and c.status == status, 10,
                   f"{name} to be {status} in the database")


async def test_up_two_hours_stopped_five_up_one_more_is_billed_three_hours(
        billed: Cloud, database: Database) -> None:
    price = 3.06  # what the plan's attempt says a node-hour costs (p3.2xlarge on-demand)
    billed.fake.plan_attempts = [{"zone": "fake-1a", "instance_type": "p3.2xlarge", "use_spot": False,
                                  "hourly_price": price}]
    spec = ClusterSpec("gpu", "fake", num_nodes=2, resources={"cpus": 8}, node_cpus=8.0, autostop_minutes=600)
    cluster = await billed.env.client.start_workflow(ClusterWorkflow.run, ClusterInput(spec), id="cluster/gpu",
                                                     task_queue=billed.task_queue)
    await _status_in_db(database, "gpu", ClusterStatus.UP)
    assert hourly_rate(database.clusters.get("gpu")) == pytest.approx(2 * price)
    row = database.clusters.get("gpu")
    assert row is not None and row.autostop_at is not None  # when autostop fires, for `styx status`
    assert row.autostop_at - row.launched_at > timedelta(hours=9)
    await billed.env.sleep(timedelta(hours=2))
    await cluster.execute_update(ClusterWorkflow.stop)
    await billed.env.sleep(timedelta(hours=5))
    assert hourly_rate(database.clusters.get("gpu")) == 0.0
    assert database.clusters.get("gpu").stopped_by == StoppedBy.USER
    await cluster.execute_update(ClusterWorkflow.start)
    await billed.env.sleep(timedelta(hours=1))
    await cluster.execute_update(ClusterWorkflow.down)
    await _status_in_db(database, "gpu", ClusterStatus.TERMINATED)

    # Measured on workflow time, which the test server skipped: read the report at the
    # intervals' own end so that the wall clock does not count.
    rows = database.uptime.intervals(None)
    until = max(r.ended_at for r in rows if r.ended_at is not None)
    report = cost_report(database, owner=None, days=None, now=until)
    [gpu] = report.clusters
    assert (gpu.cluster, gpu.provider, gpu.instance_type, gpu.nodes) == ("gpu", "fake", "p3.2xlarge", 2)
    assert gpu.uptime_hours == pytest.approx(3, abs=0.01)
    assert gpu.node_hours == pytest.approx(6, abs=0.02)
    assert gpu.cost == pytest.approx(3 * 2 * price, abs=0.05)
    assert gpu.status == ClusterStatus.TERMINATED and gpu.ended_at is not None
    assert report.total == pytest.approx(gpu.cost)


def test_uptime_records_are_idempotent_and_a_report_reads_a_bounded_number_of_clusters(database: Database) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i, name in enumerate(("a", "b", "c")):
        start = t0 + timedelta(hours=i)
        assert database.uptime.open(name, f"run-{name}", [0, 1], start, provider="aws", hourly_price=1.0) == 2
        assert database.uptime.open(name, f"run-{name}", [0, 1], start + timedelta(minutes=1)) == 0  # a retry
        database.uptime.close(name, start + timedelta(hours=1))
        database.uptime.close(name, start + timedelta(hours=5))  # a late retry moves nothing
    rows = database.uptime.intervals(None, limit=2)
    assert sorted({r.cluster_name for r in rows}) == ["b", "c"]  # the newest two
    report = cost_report(database, owner=None, days=None, now=t0 + timedelta(days=1))
    assert [(c.cluster, c.node_hours, c.cost) for c in report.clusters] == [
        ("c", 2.0, 2.0), ("b", 2.0, 2.0), ("a", 2.0, 2.0)]
    # A window cuts intervals at its start.
    window = cost_report(database, owner=None, days=1, now=t0 + timedelta(days=1, minutes=90))
    assert [(c.cluster, c.uptime_hours) for c in window.clusters] == [("c", 1.0), ("b", 0.5)]


@pytest.mark.parametrize(("autostop", "expected"), [
    (10, (10, False)), (True, (5, False)), ("2h", (120, False)), ("45m", (45, False)),
    ({"idle_minutes": 10, "down": True}, (10, True)), ({"down": True}, (5, True)), (False, (None, False)),
], ids=str)
def test_resources_autostop_in_skypilots_forms_sets_the_clusters_autostop(autostop: Any,
                                                                          expected: tuple[int | None, bool]) -> None:
    task = Task.from_dict({"run": "x", "resources": {"autostop": autostop}})
    spec = cluster_spec(task, "c")
    assert (spec.autostop_minutes, spec.autostop_down) == expected
    # -i on the command line wins over the task file.
    assert cluster_spec(task, "c", autostop_minutes=3).autostop_minutes == 3
