"""ServiceWorkflow ``service/<name>``: a service's replica set, kept as its spec says.

Every ``timing.tick_seconds`` (or at once after an update) one tick:

1. **Observe** (``serve_observe``): each replica's cluster and job in the read model, its
   readiness probe, and the request rate the load balancers reported.
2. **Judge** each replica (``_apply``): READY on a 200; a replica that was ready is replaced
   after ``PROBE_FAILURES_TO_REPLACE`` failed probes in a row; one that never was, once
   ``initial_delay_seconds`` have passed; one whose cluster or job ended (a node lost, a
   preemption, `styx down` of its cluster), at once. ``FAILED_LAUNCHES_TO_GIVE_UP`` replicas
   failing in a row before ever being ready make the service FAILED: no more launches until
   ``update``.
3. **Autoscale** (``_autoscale``): ``ceil(qps / target_qps_per_replica)`` clamped to
   [min_replicas, max_replicas], adopted once it has held for ``upscale_delay_seconds`` /
   ``downscale_delay_seconds`` (from zero replicas: at once).
4. **Reconcile** (``_reconcile``): launch (``serve_launch_replica``) or drain replicas toward
   the target. A new version rolls out one replica at a time (an old one is drained only when
   a new one is ready) or, in ``blue_green`` mode, all at once, the old ones drained when all
   new ones are ready. A replica leaving is DRAINING (out of the load balancers' set) for
   ``timing.drain_seconds``, then SHUTTING_DOWN (``serve_down_replica``, run beside the
   ticks) and forgotten when its cluster is down.
5. **Record** (``serve_record``, a local activity) when anything shown changed: the load
   balancers read the READY replicas from there.

Updates: ``update_version`` (a new version and its spec; the API stored the task), ``down``;
query ``describe``. State is ``ServiceState`` (bounded: at most ``2 * MAX_REPLICAS`` replicas
and two versions' specs) and the run continues as new every ``timing.ticks_per_run`` ticks or
when Temporal suggests it; downs in flight are started again by the next run (they are
idempotent).
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from styx.activities.serve import ServeActivities
    from styx.contracts.services import (
        FAILED_LAUNCHES_TO_GIVE_UP,
        MAX_REPLICAS,
        PROBE_FAILURES_TO_REPLACE,
        PROVISION_TIMEOUT_SECONDS,
        SERVICE_WORKFLOW,
        DownReplicaInput,
        ForgetServiceInput,
        LaunchReplicaInput,
        LaunchReplicaResult,
        Observation,
        ObserveInput,
        ProbeTarget,
        ReplicaState,
        ReplicaStatus,
        ServiceDescription,
        ServiceInput,
        ServiceRecord,
        ServiceSpec,
        ServiceState,
        ServiceStatus,
        UpdateMode,
        UpdateServiceInput,
        VersionSpec,
        replica_cluster_name,
    )

QUICK_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))
LAUNCH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                           maximum_attempts=10)
DOWN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                         maximum_attempts=5)
#: Statuses of replicas on their way out.
LEAVING = (ReplicaStatus.DRAINING.value, ReplicaStatus.SHUTTING_DOWN.value, ReplicaStatus.FAILED.value)


@workflow.defn(name=SERVICE_WORKFLOW)
class ServiceWorkflow:
    def __init__(self) -> None:
        self.inp: ServiceInput | None = None
        self.state: ServiceState | None = None
        self._poke = False
        self._downs: dict[int, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, inp: ServiceInput) -> None:
        self.inp = inp
        s = self.state = inp.state or ServiceState(
            version=inp.version, target_version=inp.version, specs=[VersionSpec(inp.version, inp.spec)],
            target_replicas=inp.spec.min_replicas)
        timing = inp.timing
        recorded: ServiceRecord | None = None
        ticks = 0
        while True:
            await self._tick()
            record = self._record()
            if record != recorded:
                await workflow.execute_local_activity_method(
                    ServeActivities.record, record, start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=QUICK_RETRY)
                recorded = record
            if s.shutting_down and not s.replicas:
                break
            ticks += 1
            if ticks >= timing.ticks_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(ServiceInput(inp.name, inp.owner, s.version, self._spec(s.version),
                                                      inp.lb_port, timing, s))
            self._poke = False
            try:
                await workflow.wait_condition(lambda: self._poke, timeout=timedelta(seconds=timing.tick_seconds))
            except asyncio.TimeoutError:
                pass
        await workflow.execute_local_activity_method(
            ServeActivities.forget, ForgetServiceInput(inp.name), start_to_close_timeout=timedelta(seconds=30),
            retry_policy=QUICK_RETRY)
        await workflow.wait_condition(workflow.all_handlers_finished)

    # ------------------------------------------------------------------ updates, query

    @workflow.update
    async def update_version(self, up: UpdateServiceInput) -> ServiceDescription:
        s = self._s()
        if up.version > s.target_version:
            s.specs = [v for v in s.specs if self._in_use(v.version)] + [VersionSpec(up.version, up.spec)]
            s.target_version = up.version
            s.mode = up.mode
            s.failed_launches = 0
            s.target_replicas = min(max(s.target_replicas, up.spec.min_replicas), up.spec.max_replicas)
            s.pending_target = None
            s.message = f"updating to version {up.version} ({up.mode})"
            self._poke = True
        return self.describe()  # the same version again (a retried update): already under way

    @update_version.validator
    def _check_update(self, up: UpdateServiceInput) -> None:
        s = self._s()
        if s.shutting_down:
            raise ApplicationError("the service is shutting down", type="ServiceShuttingDown")
        if up.version < s.target_version:
            raise ApplicationError(f"version {up.version} is older than version {s.target_version}",
                                   type="StaleVersion")
        if up.mode not in (UpdateMode.ROLLING.value, UpdateMode.BLUE_GREEN.value):
            raise ApplicationError(f"mode: {up.mode!r} is not rolling or blue_green", type="InvalidRequest")

    @workflow.update
    async def down(self) -> ServiceDescription:
        s = self._s()
        s.shutting_down = True
        s.message = "shutting down"
        self._poke = True
        return self.describe()

    @workflow.query
    def describe(self) -> ServiceDescription:
        s = self._s()
        assert self.inp is not None
        return ServiceDescription(self.inp.name, s.status, s.version, s.target_version, s.target_replicas,
                                  list(s.replicas), s.message)

    def _s(self) -> ServiceState:
        if self.state is None:
            raise ApplicationError("the service is starting; try again", type="NotReady")
        return self.state

    # ------------------------------------------------------------------ one tick

    async def _tick(self) -> None:
        s = self._s()
        assert self.inp is not None
        watched = [r for r in s.replicas if r.status not in LEAVING]
        targets = [ProbeTarget(r.replica_id, r.cluster, r.job_id, self._spec(r.version).probe,
                               self._spec(r.version).port) for r in watched]
        obs: Observation = await workflow.execute_activity_method(
            ServeActivities.observe, ObserveInput(self.inp.name, targets, self.inp.timing.qps_window_seconds),
            start_to_close_timeout=timedelta(seconds=max((t.probe.timeout_seconds for t in targets), default=5) + 30),
            retry_policy=QUICK_RETRY)
        s.qps = round(obs.qps, 2)
        self._apply(obs)
        if s.shutting_down:
            for r in s.replicas:
                if r.status != ReplicaStatus.SHUTTING_DOWN.value:
                    r.status = ReplicaStatus.SHUTTING_DOWN.value
        else:
            self._autoscale()
            await self._reconcile()
        self._finish_draining()
        self._start_downs()
        s.status = self._status()

    def _apply(self, obs: Observation) -> None:
        s = self._s()
        now = workflow.now()
        by_id = {r.replica_id: r for r in s.replicas}
        for p in obs.probes:
            r = by_id.get(p.replica_id)
            if r is None or r.status in LEAVING:
                continue  # drained or downed while the probe ran
            if p.endpoint:
                r.endpoint = p.endpoint
            probe = self._spec(r.version).probe
            age = (now - _time(r.launched_at)).total_seconds()
            if p.phase == "gone":
                self._fail(r, p.message)
            elif p.phase == "provisioning":
                r.status, r.message = ReplicaStatus.PROVISIONING.value, p.message
                if age > PROVISION_TIMEOUT_SECONDS:
                    self._fail(r, f"not started within {PROVISION_TIMEOUT_SECONDS} s ({p.message})")
            elif p.ready:
                if not r.was_ready:
                    r.ready_at = now.isoformat()
                r.status, r.message, r.failures, r.was_ready = ReplicaStatus.READY.value, "", 0, True
                if r.version == s.target_version:
                    s.failed_launches = 0
            elif r.was_ready:
                r.failures += 1
                r.status, r.message = ReplicaStatus.NOT_READY.value, p.message
                if r.failures >= PROBE_FAILURES_TO_REPLACE:
                    self._fail(r, f"{p.message} ({r.failures} probes in a row)")
            else:
                r.status, r.message = ReplicaStatus.STARTING.value, p.message
                if age > probe.initial_delay_seconds:
                    self._fail(r, f"not ready within initial_delay_seconds={probe.initial_delay_seconds}: {p.message}")

    def _fail(self, r: ReplicaState, why: str) -> None:
        s = self._s()
        r.status, r.message = ReplicaStatus.FAILED.value, why
        if not r.was_ready and r.version == s.target_version:
            s.failed_launches += 1
        s.message = f"replica {r.replica_id} failed: {why}"[:500]
        if s.failed_launches >= FAILED_LAUNCHES_TO_GIVE_UP:
            s.message = (f"{s.failed_launches} replicas in a row failed before they were ready (last: replica "
                         f"{r.replica_id}: {why}); no more are launched until `styx serve update`")[:500]

    def _autoscale(self) -> None:
        s = self._s()
        spec = self._spec(s.target_version)
        if not spec.autoscales:
            desired = spec.min_replicas
            s.target_replicas, s.pending_target = desired, None
            return
        assert spec.target_qps_per_replica is not None
        desired = math.ceil(s.qps / spec.target_qps_per_replica - 1e-9)
        desired = min(max(desired, spec.min_replicas), spec.max_replicas)
        now = workflow.now()
        if desired == s.target_replicas:
            s.pending_target = None
            return
        up = desired > s.target_replicas
        if s.pending_target is None or (s.pending_target > s.target_replicas) != up:
            s.pending_target, s.pending_since = desired, now.isoformat()
        s.pending_target = desired
        delay = spec.upscale_delay_seconds if up else spec.downscale_delay_seconds
        if up and s.target_replicas == 0:
            delay = 0  # requests are waiting at the load balancers
        if (now - _time(s.pending_since)).total_seconds() >= delay:
            s.target_replicas, s.pending_target = desired, None

    async def _reconcile(self) -> None:
        s = self._s()
        n = s.target_replicas
        alive = [r for r in s.replicas if r.status not in LEAVING]
        new = [r for r in alive if r.version == s.target_version]
        old = [r for r in alive if r.version != s.target_version]
        ready_new = sum(r.status == ReplicaStatus.READY.value for r in new)
        launch = 0
        gave_up = s.failed_launches >= FAILED_LAUNCHES_TO_GIVE_UP
        if old:
            if s.mode == UpdateMode.BLUE_GREEN.value:
                launch = max(0, n - len(new))
                if ready_new >= n:
                    for r in old:
                        self._leave(r)
            else:
                if len(new) < n and all(r.status == ReplicaStatus.READY.value for r in new):
                    launch = 1  # one at a time: the next once this one is ready
                excess = ready_new + len(old) - n
                for r in sorted(old, key=_leave_order)[:max(0, excess)]:
                    self._leave(r)
        else:
            if s.version != s.target_version:
                s.version = s.target_version
                s.message = f"version {s.version} is rolled out"
                s.specs = [v for v in s.specs if v.version == s.version]
            launch = max(0, n - len(new))
            for r in sorted(new, key=_leave_order)[:max(0, len(new) - n)]:
                self._leave(r)
        live = sum(r.status != ReplicaStatus.SHUTTING_DOWN.value for r in s.replicas)
        launch = 0 if gave_up else min(launch, max(0, 2 * MAX_REPLICAS - live))
        if launch:
            await self._launch(launch)

    def _leave(self, r: ReplicaState) -> None:
        """Out of the load balancers' set: a ready replica drains first, others go at once."""
        if r.status == ReplicaStatus.READY.value and (self.inp and self.inp.timing.drain_seconds > 0):
            r.status, r.draining_since = ReplicaStatus.DRAINING.value, workflow.now().isoformat()
        else:
            r.status = ReplicaStatus.SHUTTING_DOWN.value

    async def _launch(self, count: int) -> None:
        s = self._s()
        assert self.inp is not None
        now = workflow.now().isoformat()
        fresh = []
        for _ in range(count):
            rid = s.next_replica_id
            s.next_replica_id += 1
            r = ReplicaState(rid, replica_cluster_name(self.inp.name, rid), s.target_version, launched_at=now,
                             message="launching its cluster")
            s.replicas.append(r)
            fresh.append(r)

        async def one(r: ReplicaState) -> None:
            assert self.inp is not None
            try:
                result: LaunchReplicaResult = await workflow.execute_activity_method(
                    ServeActivities.launch_replica,
                    LaunchReplicaInput(self.inp.name, self.inp.owner, r.version, r.replica_id, r.cluster),
                    start_to_close_timeout=timedelta(minutes=3), retry_policy=LAUNCH_RETRY,
                    summary=f"launch replica {r.replica_id} ({r.cluster})")
            except ActivityError as err:
                result = LaunchReplicaResult(None, f"launch failed: {err.cause or err}")
            if result.error:
                self._fail(r, result.error)
            else:
                r.job_id = result.job_id

        await asyncio.gather(*(one(r) for r in fresh))

    def _finish_draining(self) -> None:
        assert self.inp is not None
        now = workflow.now()
        for r in self._s().replicas:
            if r.status == ReplicaStatus.DRAINING.value and \
                    (now - _time(r.draining_since)).total_seconds() >= self.inp.timing.drain_seconds:
                r.status = ReplicaStatus.SHUTTING_DOWN.value
            elif r.status == ReplicaStatus.FAILED.value:
                r.status = ReplicaStatus.SHUTTING_DOWN.value

    def _start_downs(self) -> None:
        s = self._s()
        for r in s.replicas:
            if r.status == ReplicaStatus.SHUTTING_DOWN.value and r.replica_id not in self._downs:
                self._downs[r.replica_id] = asyncio.create_task(self._down(r))

    async def _down(self, r: ReplicaState) -> None:
        s = self._s()
        try:
            await workflow.execute_activity_method(
                ServeActivities.down_replica, DownReplicaInput(r.cluster),
                start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=10),
                retry_policy=DOWN_RETRY, summary=f"down replica {r.replica_id} ({r.cluster})")
        except ActivityError:
            self._downs.pop(r.replica_id, None)  # tried again on a later tick
            return
        s.replicas = [x for x in s.replicas if x.replica_id != r.replica_id]
        self._downs.pop(r.replica_id, None)
        self._poke = True

    # ------------------------------------------------------------------ views

    def _status(self) -> str:
        s = self._s()
        if s.shutting_down:
            return ServiceStatus.SHUTTING_DOWN.value
        if s.failed_launches >= FAILED_LAUNCHES_TO_GIVE_UP:
            return ServiceStatus.FAILED.value
        alive = [r for r in s.replicas if r.status not in LEAVING]
        if s.version != s.target_version or any(r.version != s.target_version for r in alive):
            return ServiceStatus.UPDATING.value
        if any(r.status == ReplicaStatus.READY.value for r in alive):
            return ServiceStatus.READY.value
        if s.target_replicas == 0 and not alive:
            return ServiceStatus.NO_REPLICA.value
        return ServiceStatus.STARTING.value

    def _record(self) -> ServiceRecord:
        s = self._s()
        assert self.inp is not None
        return ServiceRecord(self.inp.name, s.status, s.version, s.target_version, s.target_replicas,
                             [ReplicaState(**vars(r)) for r in s.replicas], s.message, s.qps,
                             sorted({r.version for r in s.replicas} | {s.version, s.target_version}))

    def _spec(self, version: int) -> ServiceSpec:
        s = self._s()
        for v in s.specs:
            if v.version == version:
                return v.spec
        return s.specs[-1].spec  # a version whose spec was pruned: its replicas are leaving

    def _in_use(self, version: int) -> bool:
        s = self._s()
        return version == s.version or any(r.version == version for r in s.replicas)


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso) if iso else workflow.now()


def _leave_order(r: ReplicaState) -> tuple[int, int]:
    """Which replica leaves first: those not serving, then the newest."""
    return (0 if r.status != ReplicaStatus.READY.value else 1, -r.replica_id)
