"""CheckWorkflow: asks a worker which providers it can use (its credentials are the ones
that matter, not the API's), for `styx check`."""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from styx.activities.providers import ProviderActivities
    from styx.contracts.providers import CHECK_WORKFLOW, CheckInput, CheckOutput


@workflow.defn(name=CHECK_WORKFLOW)
class CheckWorkflow:
    @workflow.run
    async def run(self, inp: CheckInput) -> CheckOutput:
        return await workflow.execute_activity_method(
            ProviderActivities.check_providers, inp, start_to_close_timeout=timedelta(seconds=60))
