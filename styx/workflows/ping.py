"""A trivial workflow that proves a worker is polling: one activity, round trip."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from styx.activities.ping import PingInput, PingOutput, ping


@dataclass
class PingWorkflowInput:
    message: str
    #: A durable timer before the activity; lets tests kill the worker mid-workflow.
    delay_seconds: float = 0.0


@workflow.defn(name="PingWorkflow")
class PingWorkflow:
    @workflow.run
    async def run(self, inp: PingWorkflowInput) -> PingOutput:
        if inp.delay_seconds > 0:
            await workflow.sleep(inp.delay_seconds)
        return await workflow.execute_activity(
            ping, PingInput(inp.message), start_to_close_timeout=timedelta(seconds=10)
        )
