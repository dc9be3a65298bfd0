"""The service workflow on Temporal's time-skipping test server, every activity replaced by a
fake fleet the test drives: which replicas are ready, which lost their node, how many
requests the load balancers saw. Replacement of a failed replica, autoscaling from 1 to 3
and back on workflow time, scale to zero, rolling and blue-green updates (never fewer ready
replicas than asked while rolling), giving up on a task that never gets ready, down, and the
state a continued run carries. No node, no database; each test takes a second or two.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from styx.contracts.services import (
    DownReplicaInput,
    ForgetServiceInput,
    LaunchReplicaInput,
    LaunchReplicaResult,
    Observation,
    ObserveInput,
    ReadinessProbe,
    ReplicaProbe,
    ServiceInput,
    ServiceRecord,
    ServiceSpec,
    ServiceTiming,
    UpdateServiceInput,
    service_workflow_id,
)
from styx.workflows.service import ServiceWorkflow

TIMING = ServiceTiming(tick_seconds=5, qps_window_seconds=60, drain_seconds=5, ticks_per_run=500)


@dataclass
class FakeReplica:
    replica_id: int
    version: int
    cluster: str
    ready: bool = False
    gone: bool = False
    down: bool = False


@dataclass
class Fleet:
    """What the activities see and do; the test sets ``ready``/``gone``/``qps``."""

    replicas: dict[int, FakeReplica] = field(default_factory=dict)
    qps: float = 0.0
    records: list[ServiceRecord] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    #: Replicas launched ready at once (else the test marks them).
    auto_ready: bool = True
    #: Versions whose replicas never get ready.
    broken_versions: set[int] = field(default_factory=set)

    @activity.defn(name="serve_launch_replica")
    async def launch(self, inp: LaunchReplicaInput) -> LaunchReplicaResult:
        self.replicas.setdefault(inp.replica_id, FakeReplica(inp.replica_id, inp.version, inp.cluster))
        return LaunchReplicaResult(job_id=1)

    @activity.defn(name="serve_observe")
    async def observe(self, inp: ObserveInput) -> Observation:
        probes = []
        for t in inp.targets:
            r = self.replicas[t.replica_id]
            if r.gone:
                probes.append(ReplicaProbe(t.replica_id, "gone", message="its node is DOWN"))
                continue
            if self.auto_ready and r.version not in self.broken_versions:
                r.ready = True
            probes.append(ReplicaProbe(t.replica_id, "running", r.ready, f"http://127.0.0.{t.replica_id}:8080",
                                       "" if r.ready else "probe: HTTP 503"))
        return Observation(probes, self.qps)

    @activity.defn(name="serve_down_replica")
    async def down(self, inp: DownReplicaInput) -> None:
        for r in self.replicas.values():
            if r.cluster == inp.cluster:
                r.down = True

    @activity.defn(name="serve_record")
    async def record(self, rec: ServiceRecord) -> bool:
        self.records.append(rec)
        return True

    @activity.defn(name="serve_forget")
    async def forget(self, inp: ForgetServiceInput) -> None:
        self.forgotten.append(inp.name)

    # ---- what the test reads

    @property
    def last(self) -> ServiceRecord:
        return self.records[-1]

    def serving(self, rec: ServiceRecord | None = None) -> list[int]:
        rec = rec or self.last
        return [r.replica_id for r in rec.replicas if r.status == "READY"]

    def alive(self) -> list[FakeReplica]:
        return [r for r in self.replicas.values() if not r.down]


@dataclass
class Harness:
    env: WorkflowEnvironment
    fleet: Fleet
    task_queue: str

    async def start(self, spec: ServiceSpec, name: str = "api", timing: ServiceTiming = TIMING):
        return await self.env.client.start_workflow(
            ServiceWorkflow.run, ServiceInput(name, "alice", 1, spec, 30001, timing),
            id=service_workflow_id(name), task_queue=self.task_queue)

    async def until(self, what: str, check, limit: float = 600, step: float = 5) -> None:
        """Advance workflow time a tick at a time until ``check()`` holds (at most ``limit``
        seconds of workflow time)."""
        waited = 0.0
        while not (self.fleet.records and check()):
            if waited > limit:
                raise AssertionError(f"after {limit:.0f} s of workflow time: not {what}; last record "
                                     f"{self.fleet.records[-1] if self.fleet.records else None}")
            await self.env.sleep(step)
            waited += step


@pytest_asyncio.fixture
async def harness(time_skipping_env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    fleet = Fleet()
    queue = f"serve-{uuid.uuid4().hex[:8]}"
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=[ServiceWorkflow],
                      activities=[fleet.launch, fleet.observe, fleet.down, fleet.record, fleet.forget]):
        yield Harness(time_skipping_env, fleet, queue)


def fixed(n: int, **kw) -> ServiceSpec:
    return ServiceSpec(probe=ReadinessProbe("/health", initial_delay_seconds=60), min_replicas=n, max_replicas=n,
                       port=8080, **kw)


async def test_two_replicas_come_up_and_a_lost_one_is_replaced(harness: Harness) -> None:
    handle = await harness.start(fixed(2))
    await harness.until("two READY", lambda: len(harness.fleet.serving()) == 2 and harness.fleet.last.status == "READY")
    assert sorted(harness.fleet.replicas) == [1, 2]
    harness.fleet.replicas[1].gone = True  # its node was lost
    await harness.until("replica 1 replaced", lambda: sorted(harness.fleet.serving()) == [2, 3])
    assert harness.fleet.replicas[1].down, "the lost replica's cluster was not taken down"
    assert "replica 1 failed: its node is DOWN" in " ".join(r.message for r in harness.fleet.records)
    assert len(harness.fleet.alive()) == 2
    await handle.execute_update(ServiceWorkflow.down)
    await handle.result()
    assert not harness.fleet.alive() and harness.fleet.forgotten == ["api"]


async def test_autoscales_from_one_to_three_under_load_and_back_after_the_delay(harness: Harness) -> None:
    spec = ServiceSpec(probe=ReadinessProbe("/", initial_delay_seconds=60), min_replicas=1, max_replicas=3,
                       target_qps_per_replica=10, upscale_delay_seconds=30, downscale_delay_seconds=120, port=8080)
    await harness.start(spec)
    await harness.until("one READY", lambda: len(harness.fleet.serving()) == 1)
    harness.fleet.qps = 25.0  # ceil(25 / 10) = 3
    start = await harness.env.get_current_time()
    await harness.until("three READY", lambda: len(harness.fleet.serving()) == 3)
    took = (await harness.env.get_current_time() - start).total_seconds()
    assert 30 <= took <= 30 + 3 * TIMING.tick_seconds, f"upscaled after {took} s (upscale_delay 30 s)"
    harness.fleet.qps = 0.0
    start = await harness.env.get_current_time()
    await harness.until("back to one", lambda: len(harness.fleet.serving()) == 1 and len(harness.fleet.alive()) == 1)
    took = (await harness.env.get_current_time() - start).total_seconds()
    assert 120 <= took <= 120 + 4 * TIMING.tick_seconds + TIMING.drain_seconds, f"downscaled after {took} s"
    assert harness.fleet.last.target_replicas == 1


async def test_a_short_burst_does_not_scale(harness: Harness) -> None:
    spec = ServiceSpec(probe=ReadinessProbe("/", initial_delay_seconds=60), min_replicas=1, max_replicas=3,
                       target_qps_per_replica=10, upscale_delay_seconds=60, downscale_delay_seconds=60, port=8080)
    await harness.start(spec)
    await harness.until("one READY", lambda: len(harness.fleet.serving()) == 1)
    harness.fleet.qps = 50.0
    await harness.env.sleep(30)
    harness.fleet.qps = 0.0
    await harness.env.sleep(120)
    assert sorted(harness.fleet.replicas) == [1], "a 30 s burst launched replicas (upscale_delay 60 s)"


async def test_scales_to_zero_and_back_up_on_the_first_request(harness: Harness) -> None:
    spec = ServiceSpec(probe=ReadinessProbe("/", initial_delay_seconds=60), min_replicas=0, max_replicas=2,
                       target_qps_per_replica=5, upscale_delay_seconds=300, downscale_delay_seconds=60, port=8080)
    harness.fleet.qps = 1.0
    await harness.start(spec)
    await harness.until("one READY", lambda: len(harness.fleet.serving()) == 1, limit=30)
    harness.fleet.qps = 0.0
    await harness.until("no replica", lambda: harness.fleet.last.status == "NO_REPLICA" and not harness.fleet.alive())
    harness.fleet.qps = 0.1  # a request waits at a load balancer
    await harness.until("a replica again", lambda: len(harness.fleet.serving()) == 1, limit=15)


async def test_rolling_update_never_serves_fewer_than_asked(harness: Harness) -> None:
    handle = await harness.start(fixed(2))
    await harness.until("two READY", lambda: len(harness.fleet.serving()) == 2)
    harness.fleet.auto_ready = False  # the test decides when each new replica is ready
    await handle.execute_update(ServiceWorkflow.update_version, UpdateServiceInput(2, fixed(2)))
    mark = len(harness.fleet.records)
    for expected_new in (3, 4):
        await harness.until(f"replica {expected_new} launched", lambda: expected_new in harness.fleet.replicas)
        await harness.env.sleep(20)
        assert len([r for r in harness.fleet.replicas.values() if r.version == 2]) == expected_new - 2, \
            "rolling launched more than one new replica at a time"
        harness.fleet.replicas[expected_new].ready = True
    await harness.until("v2 rolled out", lambda: harness.fleet.last.version == 2 and harness.fleet.last.status == "READY"
                        and len(harness.fleet.alive()) == 2)
    assert all(len(harness.fleet.serving(rec)) >= 2 for rec in harness.fleet.records[mark:]), \
        "fewer than 2 replicas served during the rolling update"
    assert {r.version for r in harness.fleet.alive()} == {2}


async def test_blue_green_launches_all_then_switches(harness: Harness) -> None:
    handle = await harness.start(fixed(2))
    await harness.until("two READY", lambda: len(harness.fleet.serving()) == 2)
    harness.fleet.auto_ready = False
    await handle.execute_update(ServiceWorkflow.update_version, UpdateServiceInput(2, fixed(2), "blue_green"))
    await harness.until("both new launched", lambda: {3, 4} <= set(harness.fleet.replicas))
    harness.fleet.replicas[3].ready = True
    await harness.env.sleep(30)
    assert sorted(harness.fleet.serving()) == [1, 2, 3], "old replicas left before every new one was ready"
    harness.fleet.replicas[4].ready = True
    await harness.until("switched", lambda: sorted(harness.fleet.serving()) == [3, 4] and len(harness.fleet.alive()) == 2)


async def test_a_version_that_never_gets_ready_fails_the_service_until_updated(harness: Harness) -> None:
    harness.fleet.broken_versions = {1}
    handle = await harness.start(fixed(1))
    await harness.until("FAILED", lambda: harness.fleet.last.status == "FAILED", limit=1200)
    launched = len(harness.fleet.replicas)
    assert launched == 3, f"{launched} replicas launched for a task that never gets ready"
    await harness.env.sleep(300)
    assert len(harness.fleet.replicas) == launched, "kept launching after giving up"
    assert "no more are launched" in harness.fleet.last.message
    await handle.execute_update(ServiceWorkflow.update_version, UpdateServiceInput(2, fixed(1)))
    await harness.until("v2 READY", lambda: harness.fleet.last.status == "READY" and harness.fleet.last.version == 2)


async def test_continue_as_new_keeps_the_replicas(harness: Harness) -> None:
    handle = await harness.start(fixed(2), timing=replace(TIMING, ticks_per_run=3))
    await harness.until("two READY", lambda: len(harness.fleet.serving()) == 2)
    first_run = (await handle.describe()).run_id
    await harness.env.sleep(60)
    assert (await harness.env.client.get_workflow_handle(handle.id).describe()).run_id != first_run
    assert sorted(harness.fleet.serving()) == [1, 2] and sorted(harness.fleet.replicas) == [1, 2]
    desc = await harness.env.client.get_workflow_handle(handle.id).query(ServiceWorkflow.describe)
    assert desc.target_replicas == 2 and len(desc.replicas) == 2


async def test_an_older_version_is_refused(harness: Harness) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    handle = await harness.start(fixed(1))
    # Until its first record the service answers NotReady ("try again"), not what is tested here.
    await harness.until("the service to start", lambda: True)
    await handle.execute_update(ServiceWorkflow.update_version, UpdateServiceInput(3, fixed(1)))
    again = await handle.execute_update(ServiceWorkflow.update_version, UpdateServiceInput(3, fixed(1)))
    assert again.target_version == 3
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(ServiceWorkflow.update_version, UpdateServiceInput(2, fixed(1)))
    assert "older" in str(err.value.cause)
