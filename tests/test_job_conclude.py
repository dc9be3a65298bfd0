"""A job workflow that has recorded its end and told its cluster keeps that end, even when a
cancel lands in the same workflow task as its last step (found by the faults suite: `styx
stop` as a job finished left the job SUCCEEDED in the database and CANCELED in Temporal).
``_uncancellable`` is what the job workflow concludes under; here it is driven by a small
workflow whose last step and the cancel reach the worker together."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from styx.workflows.job import _uncancellable
from tests.fixtures.stack import wait_for_async


@workflow.defn(sandboxed=False)
class Concluding:
    """Concludes under ``_uncancellable`` — a last step that ends with a resolution from the
    server (here a timer firing; in the job, the cluster's signal delivered) — and returns
    what the conclusion said."""

    def __init__(self) -> None:
        self.waiting = False

    @workflow.run
    async def run(self) -> str:
        async def conclude() -> str:
            self.waiting = True
            await workflow.sleep(1)
            return "SUCCEEDED"

        return await _uncancellable(conclude())

    @workflow.query
    def concluding(self) -> bool:
        return self.waiting


async def test_a_cancel_landing_with_the_last_step_of_the_conclusion_does_not_undo_it(
        temporal_env: WorkflowEnvironment) -> None:
    client = temporal_env.client
    queue = f"conclude-{uuid.uuid4().hex[:6]}"
    wid = f"conclude/{uuid.uuid4().hex}"
    # No cache: the next workflow task goes to the task queue, not to this worker's sticky one.
    async with Worker(client, task_queue=queue, workflows=[Concluding], max_cached_workflows=0):
        handle = await client.start_workflow(Concluding.run, id=wid, task_queue=queue,
                                             execution_timeout=timedelta(minutes=5))
        await wait_for_async(lambda: handle.query(Concluding.concluding), 30, "the conclusion to start")
    # No worker now: the last step's end (the timer fires) and then the cancel wait for the
    # next one, and reach it in one workflow task (the job: its cluster's signal delivered,
    # then `styx stop`).

    async def fired() -> bool:
        return any([e.HasField("timer_fired_event_attributes") async for e in handle.fetch_history_events()])

    await wait_for_async(fired, 30, "the timer to fire")
    await handle.cancel()
    async with Worker(client, task_queue=queue, workflows=[Concluding]):
        result = await handle.result()
    assert result == "SUCCEEDED"
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
