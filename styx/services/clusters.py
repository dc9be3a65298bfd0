"""Acting on a cluster's workflow: submit a job (launching the cluster first if asked) and
send the lifecycle updates. Shared by every front door — the REST API, the git push
trigger and managed jobs (``styx.activities.managed``) — so update-with-start, Temporal's in-flight update limit
and the refusals a workflow answers are handled in one place. ``teardown`` takes down a
cluster whose workflow is gone (``TeardownWorkflow``, started by type name).

A submission's body (task, env, sealed secrets) is stored in the database first
(``db.jobspecs``) and the cluster workflow gets its id and the job's shape only; both are
size-checked before anything reaches Temporal (``PayloadTooLarge`` names the field).

Errors are this module's own (``ClusterRefused``, ``ClusterNotRunning``, ``ClusterBusy``,
and ``styx.contracts.payloads.PayloadTooLarge``); each caller turns them into its own kind (an
HTTP status, a non-retryable activity error).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from typing import Any, Awaitable, Callable, TypeVar

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from styx.contracts.clusters import (
    CLUSTER_WORKFLOW,
    ClusterInput,
    ClusterSpec,
    SubmitJobInput,
    SubmitJobResult,
    cluster_workflow_id,
)
from styx.contracts.jobs import JobSpec, run_summary
from styx.contracts.payloads import MAX_PAYLOAD_BYTES, MAX_SUBMISSION_BYTES, check_payload
from styx.contracts.providers import TEARDOWN_WORKFLOW, TeardownInput, TeardownOutput, teardown_workflow_id
from styx.contracts.search import CLUSTER_KEY, SEARCH_ATTRIBUTES
from styx.db.jobspecs import JobSpecStore
from styx.temporal import create_command

T = TypeVar("T")

#: How long a call waits while the cluster workflow has too many updates in flight
#: (Temporal admits 10 at a time per workflow; a burst of submissions queues here).
BUSY_WAIT_SECONDS = 120.0


class ClusterRefused(Exception):
    """The cluster workflow refused the update; ``type`` is its ``ApplicationError`` type
    (``JobTooLarge``, ``ClusterStopped``, ``ResourceMismatch`` …)."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(message)
        self.type = type
        self.message = message


class ClusterNotRunning(LookupError):
    """No workflow runs for this cluster (it was taken down, or its launch failed)."""


class SearchAttributesNotRegistered(Exception):
    """Temporal does not know Styx's search attributes (a Temporal Styx did not set up);
    the message says which command registers them."""


class ClusterBusy(Exception):
    """The cluster workflow kept refusing new updates for ``BUSY_WAIT_SECONDS``."""


def cluster_search_attributes(name: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(CLUSTER_KEY, name)])


def submission_id(user: str, key: str | None) -> str | None:
    """The update id of a submission a client named with ``key``: scoped by user, so two
    users' keys never meet."""
    return f"submit/{user}/{key}" if key else None


#: Said with a refusal of a body too large.
_TOO_LARGE_HINT = "keep large scripts and data in the workdir (or a file mount) and run them from there"


async def submit_job(client: Client, task_queue: str, cluster: str, submit: SubmitJobInput,
                     *, launch: ClusterSpec | None = None, update_id: str | None = None,
                     specs: JobSpecStore | None = None) -> SubmitJobResult:
    """Queue ``submit`` on ``cluster``; with ``launch``, start the cluster's workflow first
    if none runs (update-with-start: one round trip, and the job id comes back at once).
    ``update_id`` makes a retried submission return the first one's job instead of queueing
    a second: Temporal deduplicates it within a workflow run, and the cluster workflow
    remembers it (as the submission's ``idempotency_key``) across continue-as-new.

    With ``specs`` (every front door), the job's body goes to the database and the workflow
    gets its id; without, it travels inline (workflow tests). ``PayloadTooLarge`` (naming the
    field and the limit) before anything is stored or sent when the body or the submission
    is larger than Styx hands Temporal."""
    if update_id and not submit.idempotency_key:
        submit = dataclasses.replace(submit, idempotency_key=update_id)
    spec_id: str | None = None
    if specs is not None and submit.spec_id is None:
        spec = JobSpec(submit.task, dict(submit.env), submit.sealed_secrets, submit.run_setup)
        check_payload(spec, "", MAX_PAYLOAD_BYTES, _TOO_LARGE_HINT)
        spec_id = uuid.uuid4().hex
        submit = dataclasses.replace(submit, task={}, env={}, sealed_secrets=None, spec_id=spec_id,
                                     run_summary=run_summary(submit.task.get("run")), shape=spec.shape())
        check_payload(submit, "submission", MAX_SUBMISSION_BYTES)
        if launch is not None:
            check_payload(launch, "task", MAX_SUBMISSION_BYTES)
        await asyncio.to_thread(specs.put, spec_id, cluster, spec)
    else:
        check_payload(submit, "", MAX_PAYLOAD_BYTES, _TOO_LARGE_HINT)
    try:
        result = await _submit(client, task_queue, cluster, submit, launch, update_id)
    except (ClusterRefused, ClusterNotRunning, SearchAttributesNotRegistered):
        if specs is not None and spec_id is not None:  # never accepted: no job runs it
            await asyncio.to_thread(specs.forget, spec_id)
        raise
    if specs is not None and spec_id is not None:
        if result.spec_id != spec_id:
            await asyncio.to_thread(specs.forget, spec_id)  # a retry: the first submission's job runs
        # The job's row, now (the cluster writes it too, batched, in case we die here).
        await asyncio.to_thread(
            specs.record_submitted, cluster, result.job_id, name=submit.name or f"job-{result.job_id}",
            cpus=submit.cpus, accelerators=submit.accelerators, num_nodes=submit.num_nodes,
            run_summary=submit.run_summary, workflow_id=result.workflow_id, user=submit.user,
            spec_id=result.spec_id)
    return result


async def _submit(client: Client, task_queue: str, cluster: str, submit: SubmitJobInput,
                  launch: ClusterSpec | None, update_id: str | None) -> SubmitJobResult:
    if launch is None:
        handle = client.get_workflow_handle(cluster_workflow_id(cluster))
        return await _update(client, lambda: handle.execute_update(
            "submit_job", submit, id=update_id, result_type=SubmitJobResult))
    start = WithStartWorkflowOperation(
        CLUSTER_WORKFLOW, ClusterInput(launch), id=cluster_workflow_id(cluster), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=cluster_search_attributes(cluster),
    )
    return await _update(client, lambda: client.execute_update_with_start_workflow(
        "submit_job", submit, start_workflow_operation=start, id=update_id, result_type=SubmitJobResult))


async def update_cluster(client: Client, workflow_id: str, update: str, arg: Any = None,
                         *, result_type: type[T]) -> T:
    """Send one of the cluster workflow's updates (``stop``, ``start``, ``down``,
    ``cancel_job``, ``set_autostop``) and return its answer."""
    handle = client.get_workflow_handle(workflow_id)
    args = [] if arg is None else [arg]
    return await _update(client, lambda: handle.execute_update(update, args=args, result_type=result_type))


#: How long ``teardown`` waits for the provider to remove a cluster's nodes.
TEARDOWN_TIMEOUT = timedelta(minutes=30)


async def teardown(client: Client, task_queue: str, cluster: str, provider: str, region: str | None,
                   message: str) -> TeardownOutput:
    """Take down a cluster whose own workflow no longer runs (``TeardownWorkflow``): the
    provider removes whatever it holds of it, and the cluster is recorded TERMINATED with
    ``message``. Two calls at once share one run. ``ClusterRefused("TeardownFailed", …)``
    if the provider could not."""
    try:
        return await client.execute_workflow(
            TEARDOWN_WORKFLOW, TeardownInput(cluster, provider, region, message), id=teardown_workflow_id(cluster),
            task_queue=task_queue, result_type=TeardownOutput, execution_timeout=TEARDOWN_TIMEOUT,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=cluster_search_attributes(cluster))
    except WorkflowFailureError as err:
        cause = err.cause
        while getattr(cause, "cause", None) is not None:  # activity error -> the provider's error
            cause = cause.cause
        raise ClusterRefused("TeardownFailed", f"cluster {cluster!r} could not be taken down: {cause}; "
                                               "run `styx down` again") from None


async def _update(client: Client, call: Callable[[], Awaitable[T]]) -> T:
    delay, waited = 0.05, 0.0
    while True:
        try:
            return await _update_once(client, call)
        except RPCError as err:
            # Too many updates in flight, aborted because the workflow continued as new, or the
            # workflow task carrying it did not complete (WorkflowNotReady): in every case the
            # update was never accepted, so nothing happened and it is safe to send again.
            if not _never_accepted(err):
                raise
            if waited > BUSY_WAIT_SECONDS:
                raise ClusterBusy(f"the cluster is busy, try again: {err.message}") from None
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)


def _never_accepted(err: RPCError) -> bool:
    if err.status in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
        return True
    return err.status == RPCStatusCode.FAILED_PRECONDITION and "workflow task failure" in err.message


async def _update_once(client: Client, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError):
            raise ClusterRefused(cause.type or "", cause.message) from None
        raise ClusterRefused("", f"update failed: {cause}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ClusterNotRunning(
                "the cluster is not running (it was taken down or its launch failed)") from None
        if "search attribute" in err.message:
            missing = [name for name in SEARCH_ATTRIBUTES if name in err.message] or list(SEARCH_ATTRIBUTES)
            raise SearchAttributesNotRegistered(
                f"Temporal refused the cluster's workflow: {err.message}. A worker registers Styx's "
                f"search attributes when it starts; where it may not, run: "
                f"{create_command(missing, client.namespace)}") from None
        raise
