"""ReconcileWorkflow: finds (and, when asked, terminates) instances of this deployment that
belong to no live cluster. Run once for `styx status --orphans`, or every
``interval_minutes`` as ``reconcile/<deployment>`` when ``STYX_RECONCILE_MINUTES`` is set."""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from styx.activities.reconcile import ReconcileActivities
    from styx.contracts.providers import RECONCILE_WORKFLOW, ReconcileInput, ReconcileOutput


@workflow.defn(name=RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._last = ReconcileOutput()

    @workflow.query
    def last(self) -> ReconcileOutput:
        return self._last

    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileOutput:
        self._last = await workflow.execute_activity_method(
            ReconcileActivities.find_orphans, inp,
            start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3))
        if inp.interval_minutes is None:
            return self._last
        if self._last.orphans:
            workflow.logger.warning("orphaned instances: %s (terminated: %s)",
                                    [o["instance_id"] for o in self._last.orphans], self._last.terminated)
        await workflow.sleep(timedelta(minutes=inp.interval_minutes))
        workflow.continue_as_new(inp)
