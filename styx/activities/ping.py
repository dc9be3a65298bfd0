"""The activity behind PingWorkflow: says which worker answered."""

from __future__ import annotations

import os
import socket
from temporalio import activity

from styx.contracts.system import PingInput, PingOutput


@activity.defn(name="ping")
async def ping(inp: PingInput) -> PingOutput:
    return PingOutput(message=inp.message, worker=f"{socket.gethostname()}:{os.getpid()}")
