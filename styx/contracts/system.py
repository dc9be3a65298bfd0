"""Health checks: the ping workflow (a worker round trip, for `styx doctor`)."""

from dataclasses import dataclass

PING_WORKFLOW = "PingWorkflow"


@dataclass
class PingWorkflowInput:
    message: str
    #: A durable timer before the activity; lets tests kill the worker mid-workflow.
    delay_seconds: float = 0.0


@dataclass
class PingInput:
    message: str


@dataclass
class PingOutput:
    message: str
    worker: str
