"""A push's run when the git server dies while it plans the run: the plan is tried again on
the git server that comes back within seconds — not after the activity's whole ten-minute
timeout, during which the run sat PENDING with no job (found by the faults suite,
tests/chaos). PushWorkflow on the time-skipping test server, with fake git activities."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from styx.contracts.pushes import PUSH_WORKFLOW, PushInput, PushPlan, PushRecord, PushRunStatus, PushSummary
from styx.workflows.push import PushWorkflow


class DyingGitServer:
    """``push_plan`` whose first attempt never ends and never heartbeats again (its process
    was killed -9); the next attempt answers."""

    def __init__(self) -> None:
        self.attempts: list[tuple[int, datetime]] = []
        self.records: list[str] = []

    @activity.defn(name="push_plan")
    async def push_plan(self, inp: PushInput) -> PushPlan:
        info = activity.info()
        self.attempts.append((info.attempt, info.current_attempt_scheduled_time))
        if info.attempt == 1:
            activity.heartbeat()
            await asyncio.Event().wait()  # killed: no answer, no heartbeat, ever
        return PushPlan(skipped="no job matches this push")

    @activity.defn(name="push_record")
    async def push_record(self, rec: PushRecord) -> None:
        self.records.append(rec.status)


async def test_a_git_server_killed_while_planning_a_push_is_retried_within_seconds(
        time_skipping_env: WorkflowEnvironment) -> None:
    env = time_skipping_env
    git = DyingGitServer()
    queue = f"push-{uuid.uuid4().hex[:6]}"
    async with Worker(env.client, task_queue=queue, workflows=[PushWorkflow],
                      activities=[git.push_plan, git.push_record]):
        summary = await env.client.execute_workflow(
            PUSH_WORKFLOW, PushInput(owner="ann", repo="r", repo_id=1, sha="a" * 40, ref="refs/heads/main",
                                     before="0" * 40, pusher="ann", git_task_queue=queue),
            id=f"push/ann/r/{uuid.uuid4().hex}", task_queue=queue, result_type=PushSummary,
            execution_timeout=timedelta(hours=1))
    assert summary.status == "SKIPPED" and git.records == [PushRunStatus.SKIPPED]
    (first, first_at), (second, second_at) = git.attempts
    assert (first, second) == (1, 2)
    assert second_at - first_at <= timedelta(seconds=30), f"planned again only after {second_at - first_at}"


async def test_a_run_whose_summary_is_not_ready_in_time_is_reported_started_not_failed() -> None:
    """The pusher's summary waits ``push_report_seconds`` for the run's update; the update cut
    off by that wait raises Temporal's own error, not TimeoutError — the push (and the
    sweeper's retry of its intent) must still count the run as started."""
    from types import SimpleNamespace

    from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

    from styx.gitserver.names import RepoName
    from styx.gitserver.pushes import PushStarter

    class Handle:
        async def execute_update(self, *args, **kwargs):
            try:
                await asyncio.Event().wait()  # no worker has picked the run up yet
            except asyncio.CancelledError as err:
                raise WorkflowUpdateRPCTimeoutOrCancelledError() from err

    class Temporal:
        started: list[str] = []

        async def start_workflow(self, *args, id: str, **kwargs) -> None:
            self.started.append(id)

        def get_workflow_handle(self, wid: str, **kwargs) -> Handle:
            return Handle()

    temporal = Temporal()
    starter = PushStarter(SimpleNamespace(task_queue="styx"), SimpleNamespace(push_report_seconds=0.1),  # type: ignore[arg-type]
                          store=None, db=None, client=temporal)  # type: ignore[arg-type]
    said: list[str] = []

    async def emit(line: str) -> None:
        said.append(line)

    inp = PushInput(owner="ann", repo="r", repo_id=1, sha="b" * 40, ref="refs/heads/main", before="0" * 40,
                    pusher="ann")
    assert await starter._start(RepoName("ann", "r"), inp, emit) is True
    assert temporal.started == [f"push/ann/r/{'b' * 40}"]
    assert len(said) == 1 and "started; no worker has picked it up yet" in said[0]
