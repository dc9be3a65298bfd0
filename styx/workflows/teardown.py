"""TeardownWorkflow ``teardown/<cluster>``: takes down a cluster whose own workflow is gone.

A cluster's workflow tears it down on ``down``. When that workflow no longer runs — it was
terminated, it died half way through a launch, or its launch failed and left nodes behind —
``styx down`` starts this instead (the API, by type name: ``TEARDOWN_WORKFLOW``). It asks the
provider to ``terminate`` the cluster (idempotent: it finds the nodes by cluster name, on
disk, by tag or by reservation, never from the database), then records the cluster
TERMINATED with no node.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from styx.activities.providers import ProviderActivities
    from styx.activities.state import StateActivities
    from styx.contracts.clusters import ClusterStatus
    from styx.contracts.providers import (
        TEARDOWN_WORKFLOW,
        ProviderErrors,
        ProviderInput,
        TeardownInput,
        TeardownOutput,
    )

TERMINATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5,
    non_retryable_error_types=[ProviderErrors.INVALID, ProviderErrors.FAILED, ProviderErrors.NO_CREDENTIALS],
)


@workflow.defn(name=TEARDOWN_WORKFLOW)
class TeardownWorkflow:
    @workflow.run
    async def run(self, inp: TeardownInput) -> TeardownOutput:
        await workflow.execute_activity_method(
            ProviderActivities.terminate, ProviderInput(inp.cluster, inp.provider, region=inp.region),
            start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=10),
            retry_policy=TERMINATE_RETRY)
        await workflow.execute_activity_method(
            StateActivities.record_teardown, inp, start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5),
                                     maximum_attempts=10))
        return TeardownOutput(inp.cluster, ClusterStatus.TERMINATED)
