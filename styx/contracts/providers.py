"""What the provider activities take and return (plan, provision, start, stop, terminate,
check, reconcile), and the small workflows built on them (check, reconcile, teardown)."""

from dataclasses import dataclass, field
from typing import Any


#: Workflow type names, for the front doors that start them without importing workflow code.
CHECK_WORKFLOW = "CheckWorkflow"
RECONCILE_WORKFLOW = "ReconcileWorkflow"
TEARDOWN_WORKFLOW = "TeardownWorkflow"


def teardown_workflow_id(cluster: str) -> str:
    return f"teardown/{cluster}"


@dataclass
class ProviderInput:
    """Which cluster, on which provider; ``resources`` is the task's public resources dict."""

    cluster: str
    provider: str
    num_nodes: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    #: One entry of ``PlanOutput.attempts`` (for ``provision``).
    attempt: dict[str, Any] = field(default_factory=dict)
    #: Where the cluster is (AWS region, SSH pool name), once known.
    region: str | None = None


@dataclass
class PlanOutput:
    #: Launch attempts in the order to try them (AWS: zone, type, spot or not).
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ProviderOutput:
    #: One ``NodeEndpoint.to_dict()`` per node, in rank order.
    nodes: list[dict[str, Any]] = field(default_factory=list)
    region: str | None = None
    zone: str | None = None


@dataclass
class CheckInput:
    region: str | None = None


@dataclass
class CheckOutput:
    #: ``{"provider", "ok", "reason"}`` per provider.
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReconcileInput:
    terminate: bool = False
    region: str | None = None
    #: None: run once. Otherwise repeat every so many minutes.
    interval_minutes: float | None = None


@dataclass
class ReconcileOutput:
    #: Instances of this deployment whose cluster is not live (id, state, region, cluster …).
    orphans: list[dict[str, Any]] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)


@dataclass
class TeardownInput:
    """A cluster to take down without its workflow (one that died, or whose launch failed
    half way): what the provider needs to find its nodes, and the message to record."""

    cluster: str
    provider: str
    region: str | None = None
    message: str = "taken down"


@dataclass
class TeardownOutput:
    cluster: str
    status: str


@dataclass
class ProbeNodesInput:
    """The nodes of a cluster to look at now (``refresh``)."""

    cluster: str
    provider: str
    region: str | None = None
    #: ``NodeEndpoint.to_dict()`` each, with its cluster ``rank``.
    nodes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NodeProbe:
    rank: int
    alive: bool
    #: Why it is not alive ("" when it is).
    reason: str = ""


@dataclass
class ProbeNodesOutput:
    nodes: list[NodeProbe] = field(default_factory=list)


class ProviderErrors:
    """``ApplicationError`` types the provider activities raise and the cluster workflow reads."""

    #: No capacity for this attempt: try the next one.
    CAPACITY = "InsufficientCapacity"
    #: The request cannot be met as asked (bad pool, bad task): give up, leave nothing.
    INVALID = "InvalidTask"
    #: Launch failed for another reason: give up, leave nothing.
    FAILED = "ProvisionFailed"
    NO_CREDENTIALS = "NoCredentials"
