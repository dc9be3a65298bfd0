"""The cluster workflow answers a retried submission with the job the first one queued, on
the time-skipping test server with its DB-writing activities replaced by recorders.

Temporal deduplicates update ids only within one workflow run; the cluster workflow
continues as new, so it remembers recent idempotency keys in its own state. A workflow
started with ``ClusterInput(spec, state)`` is exactly what a continued run is.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator

import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from styx.contracts.clusters import (
    REMEMBERED_SUBMISSIONS,
    AutostopInput,
    ClusterDescription,
    ClusterInput,
    ClusterRecord,
    ClusterSpec,
    ClusterState,
    SubmitJobInput,
    SubmitJobResult,
)
from styx.contracts.jobs import JobRecord, RecordJobsInput, job_workflow_id
from styx.workflows.cluster import ClusterWorkflow

TASK_QUEUE = "cluster-idempotency"
SPEC = ClusterSpec(name="idem", provider="local", node_cpus=2.0)


class Recorder:
    """Stands in for ``StateActivities``: keeps the job rows instead of writing them."""

    def __init__(self) -> None:
        self.jobs: list[JobRecord] = []

    @activity.defn(name="record_cluster")
    async def record_cluster(self, rec: ClusterRecord) -> None:
        pass

    @activity.defn(name="record_job")
    async def record_job(self, rec: JobRecord) -> None:
        self.jobs.append(rec)

    @activity.defn(name="record_jobs")
    async def record_jobs(self, inp: RecordJobsInput) -> None:
        """The rows of the jobs taken, written in a batch by the workflow's main loop."""
        self.jobs.extend(inp.jobs)

    async def rows(self, expected: list[int]) -> list[int]:
        """The job ids written, once they are ``expected`` (or as they are after a while)."""
        for _ in range(500):
            if [j.job_id for j in self.jobs] == expected:
                break
            await asyncio.sleep(0.01)  # the main loop writes them just after the answers
        return [j.job_id for j in self.jobs]


@pytest_asyncio.fixture
async def cluster_worker(time_skipping_env) -> AsyncIterator[tuple[Client, Recorder]]:
    recorder = Recorder()
    async with Worker(
        time_skipping_env.client, task_queue=TASK_QUEUE, workflows=[ClusterWorkflow],
        activities=[recorder.record_cluster, recorder.record_job, recorder.record_jobs],
        workflow_runner=SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules()),
    ):
        yield time_skipping_env.client, recorder


async def _start(client: Client, state: ClusterState) -> WorkflowHandle:
    # A given state means "continued": the workflow provisions nothing, and stays INIT, so
    # submitted jobs wait in its queue where `describe` shows them.
    return await client.start_workflow(ClusterWorkflow.run, ClusterInput(SPEC, state),
                                       id=f"cluster/idem-{uuid.uuid4().hex[:8]}", task_queue=TASK_QUEUE)


async def _submit(handle: WorkflowHandle, key: str | None, update_id: str | None = None) -> SubmitJobResult:
    return await handle.execute_update(ClusterWorkflow.submit_job, SubmitJobInput({"run": "true"}, idempotency_key=key),
                                       id=update_id)


async def test_a_retried_submission_gets_the_first_job_and_queues_nothing(cluster_worker):
    client, recorder = cluster_worker
    handle = await _start(client, ClusterState())
    # Different update ids, as if Temporal had forgotten the first: the workflow remembers.
    first = await _submit(handle, "submit/alice/k1", update_id="one")
    again = await _submit(handle, "submit/alice/k1", update_id="two")
    other = await _submit(handle, "submit/alice/k2")
    assert again == first
    assert other.job_id == first.job_id + 1
    described = await handle.query(ClusterWorkflow.describe)
    assert described.queued == [first.job_id, other.job_id]
    assert await recorder.rows([first.job_id, other.job_id]) == [first.job_id, other.job_id]
    await handle.terminate()


async def test_a_key_remembered_before_continue_as_new_still_returns_the_first_job(cluster_worker):
    client, recorder = cluster_worker
    seen = SubmitJobResult(7, job_workflow_id("idem", 7))
    # What the previous run carried over: job 7 was queued (and has ended) under this key.
    handle = await _start(client, ClusterState(next_job_id=8, submissions={"submit/alice/k": seen}))
    again = await _submit(handle, "submit/alice/k", update_id="submit/alice/k")
    fresh = await _submit(handle, "submit/alice/other")
    assert again == seen
    assert fresh.job_id == 8
    assert (await handle.query(ClusterWorkflow.describe)).queued == [8]
    assert await recorder.rows([8]) == [8]
    await handle.terminate()


async def test_only_the_last_thousand_keys_are_remembered_the_oldest_forgotten_first(cluster_worker):
    client, recorder = cluster_worker
    cap = REMEMBERED_SUBMISSIONS
    remembered = {f"k{i}": SubmitJobResult(i, job_workflow_id("idem", i)) for i in range(1, cap + 1)}
    handle = await _start(client, ClusterState(next_job_id=cap + 1, submissions=remembered))
    newest = await _submit(handle, "k-new")  # the 1,001st key: k1 is forgotten
    assert newest.job_id == cap + 1
    assert await _submit(handle, "k2") == remembered["k2"]
    assert await _submit(handle, "k-new") == newest
    forgotten = await _submit(handle, "k1")
    assert forgotten.job_id == cap + 2, "a forgotten key is a new submission"
    assert (await handle.query(ClusterWorkflow.describe)).queued == [cap + 1, cap + 2]
    await handle.terminate()


async def test_an_autostop_beyond_ten_years_is_refused_and_changes_nothing(cluster_worker):
    client, _ = cluster_worker
    handle = await _start(client, ClusterState())
    try:
        await handle.execute_update(ClusterWorkflow.set_autostop, AutostopInput(10 ** 12))
    except WorkflowUpdateFailedError as err:
        assert isinstance(err.cause, ApplicationError) and err.cause.type == "InvalidRequest"
        assert "between 0 and" in err.cause.message
    else:
        raise AssertionError("the update was accepted")
    described: ClusterDescription = await handle.query(ClusterWorkflow.describe)
    assert described.autostop_minutes is None
    assert (await handle.execute_update(ClusterWorkflow.set_autostop, AutostopInput(30))).autostop_minutes == 30
    await handle.terminate()
