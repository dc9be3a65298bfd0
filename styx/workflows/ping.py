"""A trivial workflow that proves a worker is polling: one activity, round trip."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from styx.activities.ping import ping
    from styx.contracts.system import PING_WORKFLOW, PingInput, PingOutput, PingWorkflowInput


@workflow.defn(name=PING_WORKFLOW)
class PingWorkflow:
    @workflow.run
    async def run(self, inp: PingWorkflowInput) -> PingOutput:
        if inp.delay_seconds > 0:
            await workflow.sleep(inp.delay_seconds)
        return await workflow.execute_activity(
            ping, PingInput(inp.message), start_to_close_timeout=timedelta(seconds=10)
        )
