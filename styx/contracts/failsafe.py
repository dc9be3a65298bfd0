"""The autostop failsafe: a deadline every node of an autostopped cluster carries itself.

The cluster workflow pushes the deadline forward while it runs (``push_failsafe``): while
the cluster is idle it is when autostop fires; while jobs run or wait it is ``BUSY_LEASE``
ahead, renewed halfway. If nothing pushes it any more — every Styx process and Temporal
gone — each node acts on its own ``grace`` seconds after the deadline
(``STYX_FAILSAFE_GRACE_MINUTES``, default 10; ``STYX_FAILSAFE_GRACE_SECONDS`` for tests):

- a local node server kills the jobs under its home, writes ``failsafe_fired.json`` beside it
  and exits, leaving its cluster STOPPED on disk;
- an AWS instance runs the timer its user-data installed at launch and shuts itself down
  (stop, or terminate for ``--down`` and spot);
- an SSH-pool host's watcher (installed over SSH at launch) kills Styx's jobs there, removes
  their directories and exits.

When the workflow runs again, the push finds what the nodes did (``FailsafeOutput.fired``)
and the cluster is recorded STOPPED (or TERMINATED), stopped by ``failsafe``.

On the node the deadline is a small file, ``<epoch deadline> <grace seconds> <action>``
(``FAILSAFE_FILE`` under the login user's home on AWS and SSH hosts). A deadline earlier
than the node's own start counts from that start: a stopped and started node is not killed
at once by the deadline it carried when it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

#: How long after the deadline a node acts on its own, unless the worker is told otherwise.
DEFAULT_GRACE_MINUTES = 10
#: While jobs run or wait, the deadline is this far ahead (at least the autostop window) and
#: pushed again when half of it is left.
BUSY_LEASE = timedelta(minutes=10)
#: Where the deadline lives on AWS instances and SSH-pool hosts (relative to the login
#: user's home), and the marker a fired watcher leaves.
FAILSAFE_FILE = ".styx/failsafe"
FIRED_FILE = ".styx/failsafe.fired"


@dataclass
class FailsafeInput:
    cluster: str
    provider: str
    region: str | None = None
    #: ``NodeEndpoint.to_dict()`` each, with its cluster ``rank``.
    nodes: list[dict[str, Any]] = field(default_factory=list)
    #: ISO time after which (plus the grace) the nodes act on their own; None clears it.
    deadline: str | None = None
    #: Act by tearing down (terminate) rather than stopping.
    down: bool = False


@dataclass
class FailsafeOutput:
    #: Ranks whose node already acted on its own (stopped or terminated itself).
    fired: list[int] = field(default_factory=list)
    #: Ranks the push could not reach (it is retried at the next push).
    unreachable: list[int] = field(default_factory=list)
    #: What the fired nodes did: "stopped" or "terminated".
    action: str | None = None
