"""CheckWorkflow: asks a worker which providers it can use (its credentials are the ones
that matter, not the API's), for `styx check`."""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from styx.contracts.providers import CheckInput, CheckOutput

# Its activity is named, not imported: the API imports this module, and must not load activities.


@workflow.defn(name="CheckWorkflow")
class CheckWorkflow:
    @workflow.run
    async def run(self, inp: CheckInput) -> CheckOutput:
        return await workflow.execute_activity(
            "check_providers", inp, result_type=CheckOutput, start_to_close_timeout=timedelta(seconds=60))
