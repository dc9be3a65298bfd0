"""The activity behind PingWorkflow: says which worker answered."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from temporalio import activity


@dataclass
class PingInput:
    message: str


@dataclass
class PingOutput:
    message: str
    worker: str


@activity.defn(name="ping")
async def ping(inp: PingInput) -> PingOutput:
    return PingOutput(message=inp.message, worker=f"{socket.gethostname()}:{os.getpid()}")
