"""ManagedJobWorkflow on Temporal's time-skipping test server, with its four activities
replaced by fakes that play a script: how each attempt ends (succeeded, the program failed,
preempted, the launch found nothing). The fakes keep the books a user would check: which
clusters were launched, which were taken down, and the rows the workflow wrote. No node,
no database; each test takes about a second.

The invariant every test asserts: every cluster launched was taken down, once the job ended.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from styx.contracts.managed import (
    MANAGED_SLOT_FREED_SIGNAL,
    AttemptEnd,
    ManagedDownInput,
    ManagedJobInput,
    ManagedJobResult,
    ManagedRecord,
    ManagedSubmitInput,
    ManagedSubmitResult,
    RecoveryPolicy,
    RecoveryStrategy,
    WatchInput,
    WatchResult,
    managed_workflow_id,
)
from styx.workflows.managed import ATTEMPTS_PER_RUN, ManagedJobWorkflow

PATIENCE = 10.0


@dataclass
class Fake:
    """The activities' fake world: ``script[task]`` is how that task's attempts end, in order
    (the last one repeats)."""

    script: dict[int, list[WatchResult]]
    launched: list[str] = field(default_factory=list)
    placements: list[tuple[str, object]] = field(default_factory=list)
    downed: list[str] = field(default_factory=list)
    records: list[ManagedRecord] = field(default_factory=list)
    #: Attempt numbers whose submit waits for ``release`` (to cancel in the middle).
    hold_submit: set[tuple[int, int]] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    watching: asyncio.Event = field(default_factory=asyncio.Event)
    refuse: str | None = None
    #: Submissions answered NoSlot before one goes through.
    no_slot: int = 0
    #: ... answered as today's activity does: a result saying why it waits (else the NoSlot
    #: error of runs before it, which the workflow still honours).
    no_slot_answered: bool = False
    submits: int = 0

    @activity.defn(name="managed_submit")
    async def submit(self, inp: ManagedSubmitInput) -> ManagedSubmitResult:
        if self.refuse:
            raise ApplicationError(self.refuse, type="Refused", non_retryable=True)
        self.submits += 1
        if self.no_slot:
            self.no_slot -= 1
            self.held.set()
            if self.no_slot_answered:
                return ManagedSubmitResult(0, "", "local", waiting="waiting: 1 managed jobs hold a cluster (at most 1)")
            raise ApplicationError("waiting: 1 managed jobs hold a cluster (at most 1)", type="NoSlot")
        if (inp.task_index, inp.attempt) in self.hold_submit:
            self.held.set()
            await self.release.wait()
        self.launched.append(inp.cluster)
        self.placements.append((inp.cluster, inp.placement))
        return ManagedSubmitResult(1, f"cluster/{inp.cluster}/job/1", "aws", "us-east-1")

    @activity.defn(name="managed_watch")
    async def watch(self, inp: WatchInput) -> WatchResult:
        ends = self.script[inp.task_index]
        if not ends:  # runs until cancelled
            self.watching.set()
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.05)
        return ends[min(inp.attempt, len(ends)) - 1]

    @activity.defn(name="managed_down")
    async def down(self, inp: ManagedDownInput) -> None:
        self.downed.append(inp.cluster)

    @activity.defn(name="managed_record")
    async def record(self, rec: ManagedRecord) -> None:
        self.records.append(rec)

    def statuses(self) -> list[str]:
        out: list[str] = []
        for rec in self.records:
            if rec.status and (not out or out[-1] != rec.status):
                out.append(rec.status)
        return out

    def leftovers(self) -> set[str]:
        return set(self.launched) - set(self.downed)


OK = WatchResult(AttemptEnd.SUCCEEDED)
EXIT1 = WatchResult(AttemptEnd.USER_FAILED, "rank 0 (127.0.3.4) exited 1", "us-east-1", "us-east-1a")
LOST = WatchResult(AttemptEnd.PREEMPTED, "node 0 (127.0.3.4) lost: its instance is terminated", "us-east-1",
                   "us-east-1c")
NOTHING = WatchResult(AttemptEnd.LAUNCH_FAILED, "launch failed: InsufficientCapacity")


@dataclass
class Run:
    env: WorkflowEnvironment
    fake: Fake
    task_queue: str

    async def start(self, num_tasks: int = 1, policies: list[RecoveryPolicy] | None = None,
                    max_recoveries: int = 50, managed_id: int | None = None):
        managed_id = managed_id or abs(hash(uuid.uuid4())) % 100000
        return await self.env.client.start_workflow(
            ManagedJobWorkflow.run,
            ManagedJobInput(managed_id, num_tasks, "alice", max_recoveries=max_recoveries,
                            policies=policies or [], probe_seconds=1.0),
            id=managed_workflow_id(managed_id), task_queue=self.task_queue)


@pytest_asyncio.fixture
async def run_with(time_skipping_env: WorkflowEnvironment) -> AsyncIterator:
    workers = []

    async def make(script: dict[int, list[WatchResult]]) -> Run:
        fake = Fake(script)
        queue = f"managed-{uuid.uuid4().hex[:8]}"
        worker = Worker(time_skipping_env.client, task_queue=queue, workflows=[ManagedJobWorkflow],
                        activities=[fake.submit, fake.watch, fake.down, fake.record])
        await worker.__aenter__()
        workers.append(worker)
        return Run(time_skipping_env, fake, queue)

    yield make
    for worker in workers:
        await worker.__aexit__(None, None, None)


async def test_a_task_that_succeeds_runs_once_and_its_cluster_goes_down(run_with):
    run = await run_with({0: [OK]})
    handle = await run.start()
    result: ManagedJobResult = await handle.result()
    assert result.status == "SUCCEEDED"
    assert run.fake.launched == run.fake.downed == [f"mj-{result.managed_id}-0-1"]
    assert run.fake.statuses() == ["STARTING", "SUCCEEDED"]


async def test_a_failing_program_runs_max_restarts_plus_one_times_then_fails(run_with):
    run = await run_with({0: [EXIT1]})
    handle = await run.start(policies=[RecoveryPolicy(max_restarts_on_errors=2)])
    result = await handle.result()
    assert result.status == "FAILED" and result.message == EXIT1.message
    assert len(run.fake.launched) == 3, run.fake.launched  # the first run and two restarts
    assert not run.fake.leftovers()
    # By default (0 restarts) one failure ends the job.
    run = await run_with({0: [EXIT1]})
    assert (await (await run.start()).result()).status == "FAILED"
    assert len(run.fake.launched) == 1


async def test_preemption_recovers_in_the_same_zone_first_with_failover(run_with):
    run = await run_with({0: [LOST, OK]})
    handle = await run.start()
    result = await handle.result()
    assert result.status == "SUCCEEDED"
    assert len(run.fake.launched) == 2 and not run.fake.leftovers()
    first, second = run.fake.placements
    assert (second[1].region, second[1].zone) == ("us-east-1", "us-east-1c")  # FAILOVER: same zone first
    assert run.fake.statuses() == ["STARTING", "RECOVERING", "SUCCEEDED"]
    assert [r.recoveries for r in run.fake.records if r.recoveries] == [1]


async def test_eager_next_region_avoids_the_region_it_was_preempted_in(run_with):
    run = await run_with({0: [LOST, OK]})
    await (await run.start(policies=[RecoveryPolicy(RecoveryStrategy.EAGER_NEXT_REGION)])).result()
    assert run.fake.placements[1][1].avoid_region == "us-east-1"


async def test_a_failover_launch_that_finds_nothing_goes_anywhere_next(run_with):
    run = await run_with({0: [LOST, NOTHING, OK]})
    assert (await (await run.start()).result()).status == "SUCCEEDED"
    pinned, anywhere = run.fake.placements[1][1], run.fake.placements[2][1]
    assert pinned.zone == "us-east-1c" and (anywhere.region, anywhere.zone, anywhere.avoid_region) == (None,) * 3
    assert not run.fake.leftovers()


async def test_launches_that_find_nothing_end_failed_no_resource(run_with):
    run = await run_with({0: [NOTHING]})
    result = await (await run.start()).result()
    assert result.status == "FAILED_NO_RESOURCE" and "3 times in a row" in (result.message or "")
    assert len(run.fake.launched) == 3 and not run.fake.leftovers()


async def test_recoveries_are_capped_and_the_history_stays_bounded(run_with):
    run = await run_with({0: [LOST]})
    handle = await run.start(max_recoveries=ATTEMPTS_PER_RUN + 5)
    result = await handle.result()
    assert result.status == "FAILED"
    assert f"gave up after {ATTEMPTS_PER_RUN + 5} recoveries (STYX_MANAGED_MAX_RECOVERIES)" in result.message
    assert len(run.fake.launched) == ATTEMPTS_PER_RUN + 6 and not run.fake.leftovers()
    # The workflow continued as new between attempts: each run's history stays short.
    first_run = run.env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    first = [e async for e in first_run.fetch_history_events()]
    assert first[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    last = run.env.client.get_workflow_handle(handle.id)
    assert (await last.describe()).run_id != handle.first_execution_run_id
    for events in (first, [e async for e in last.fetch_history_events()]):
        assert len(events) < 30 * ATTEMPTS_PER_RUN, len(events)  # about 20 events an attempt


async def test_a_pipeline_runs_its_tasks_in_order_and_a_preempted_one_alone_is_recovered(run_with):
    run = await run_with({0: [OK], 1: [LOST, OK], 2: [OK]})
    result = await (await run.start(num_tasks=3)).result()
    assert result.status == "SUCCEEDED"
    mid = result.managed_id
    assert run.fake.launched == [f"mj-{mid}-0-1", f"mj-{mid}-1-1", f"mj-{mid}-1-2", f"mj-{mid}-2-1"]
    assert not run.fake.leftovers()


async def test_a_failed_task_stops_the_pipeline(run_with):
    run = await run_with({0: [OK], 1: [EXIT1], 2: [OK]})
    result = await (await run.start(num_tasks=3)).result()
    assert result.status == "FAILED" and result.message == f"task 1: {EXIT1.message}"
    assert len(run.fake.launched) == 2
    assert run.fake.records[-1].skip_rest == "CANCELLED"


async def test_cancel_while_running_takes_the_cluster_down(run_with):
    run = await run_with({0: []})
    handle = await run.start()
    await asyncio.wait_for(run.fake.watching.wait(), PATIENCE)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert run.fake.launched and not run.fake.leftovers()
    assert run.fake.statuses()[-2:] == ["CANCELLING", "CANCELLED"]


async def test_cancel_during_recovering_launch_leaves_no_cluster(run_with):
    run = await run_with({0: [LOST, OK]})
    run.fake.hold_submit.add((0, 2))
    handle = await run.start()
    await asyncio.wait_for(run.fake.held.wait(), PATIENCE)  # recovering: the second launch is under way
    await handle.cancel()
    run.fake.release.set()  # the launch goes through; the cancel then takes its cluster down
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert len(run.fake.launched) == 2 and not run.fake.leftovers()
    assert run.fake.statuses()[-1] == "CANCELLED"


async def test_a_refused_task_fails_at_once_naming_why(run_with):
    run = await run_with({0: [OK]})
    run.fake.refuse = "alice: would exceed the cluster limit"
    result = await (await run.start()).result()
    assert result.status == "FAILED" and "cluster limit" in result.message
    assert run.fake.launched == []


async def test_a_job_without_a_slot_waits_and_a_cancel_ends_the_wait_at_once(run_with):
    run = await run_with({0: [OK]})
    run.fake.no_slot = 3
    result = await (await run.start()).result()  # waits (the test server skips the timers), then runs
    assert result.status == "SUCCEEDED" and len(run.fake.launched) == 1

    run = await run_with({0: [OK]})
    run.fake.no_slot = 10**6  # never a slot
    handle = await run.start()
    await asyncio.wait_for(run.fake.held.wait(), PATIENCE)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert run.fake.launched == [] and run.fake.statuses()[-1] == "CANCELLED"


async def test_a_job_waiting_for_a_slot_asks_again_when_woken_not_before(run_with):
    """Waiting costs nothing: no ask until a freed slot's signal wakes the job (its timer is
    a minute at least), then it launches at once."""
    run = await run_with({0: [OK]})
    run.fake.no_slot, run.fake.no_slot_answered = 1, True
    with run.env.auto_time_skipping_disabled():
        handle = await run.start()
        await asyncio.wait_for(run.fake.held.wait(), PATIENCE)
        await handle.signal(MANAGED_SLOT_FREED_SIGNAL)  # without it: no ask for a minute
        result = await asyncio.wait_for(handle.result(), PATIENCE)
    assert result.status == "SUCCEEDED" and run.fake.submits == 2 and len(run.fake.launched) == 1
    assert not run.fake.leftovers()
