"""The faults: kill -9 of one part of the stack, or of one node, at a random point, and the
recovery that follows (the supervisor's restart; for a node, the VM booting again).

- ``worker``, ``api``, ``temporal``: kill -9 the process `styx up` runs; it restarts it (the
  Temporal dev server on its SQLite file, so its history survives).
- ``gitserver``: kill -9 the git server while a `git push` that runs a job is under way; once
  it is back, the user pushes again if git said the push failed.
- ``node``: a VM lost — kill -9 a local node's SSH server *and every process on it* (the
  jobs it runs die with it, without an exit code); then the VM boots again on its disk, as
  a cloud restarts a lost instance: the provider's own start path, same address and port.
  Jobs that were running there end FAILED (their process is gone); jobs placed there later
  run normally.

Every fault waits for a random delay (seeded) before it strikes, and for the part to answer
again afterwards: conditions, not sleeps.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from styx.providers.local import procs
from styx.workflows.cluster import DRAIN_TIMEOUT
from tests.chaos.upstack import UpStack
from tests.chaos.workload import Pusher, Submission
from tests.fixtures.stack import wait_for

FAULTS = ("worker", "api", "gitserver", "node", "temporal")


@dataclass
class Injection:
    fault: str
    at: float
    detail: str
    recovered_at: float = 0.0
    #: What went wrong that is not a job's (reported with the jobs' problems at the end).
    problems: list[str] = field(default_factory=list)


def running_phases(node_home: Path) -> list[str]:
    """Job ids whose run phase has started and not ended on this node."""
    out = []
    for pid_file in (node_home / ".styx" / "jobs").glob("*/run.pid"):
        if not (pid_file.parent / "run.exit").exists():
            out.append(pid_file.parent.name)
    return out


class Faults:
    def __init__(self, stack: UpStack, pusher: Pusher, rng: random.Random, say: Callable[[str], None],
                 node_clusters: list[str], max_delay: float = 3.0) -> None:
        self.stack, self.pusher, self.rng, self.say = stack, pusher, rng, say
        self.node_clusters = node_clusters
        self.max_delay = max_delay
        self.injections: list[Injection] = []
        self.pushes: list[Submission] = []

    def _delay(self, low: float = 0.0) -> None:
        time.sleep(self.rng.uniform(low, self.max_delay))  # the random point: the fault's timing

    def inject(self, fault: str) -> Injection:
        inj = getattr(self, f"_{fault}")()
        inj.recovered_at = time.monotonic()
        self.injections.append(inj)
        self.say(f"{fault}: {inj.detail} (back after {inj.recovered_at - inj.at:.1f}s)")
        return inj

    # -- parts under `styx up` --------------------------------------------------------------
    def _part(self, part: str) -> Injection:
        self._delay()
        pid = self.stack.kill(part)
        inj = Injection(part, time.monotonic(), f"kill -9 {part} pid {pid}")
        new = self.stack.wait_back(part, pid)
        inj.detail += f", restarted as pid {new}"
        return inj

    def _worker(self) -> Injection:
        return self._part("worker")

    def _api(self) -> Injection:
        return self._part("api")

    def _temporal(self) -> Injection:
        return self._part("temporal")

    def _gitserver(self) -> Injection:
        sub = self.pusher.commit()
        self.pushes.append(sub)
        pushed: list[bool] = []
        thread = threading.Thread(target=lambda: pushed.append(self.pusher.push(sub)), daemon=True)
        thread.start()
        time.sleep(self.rng.uniform(0.0, 1.5))  # somewhere in the push, or just after it
        pid = self.stack.kill("gitserver")
        inj = Injection("gitserver", time.monotonic(), f"kill -9 gitserver pid {pid} during push of {sub.key}")
        thread.join(timeout=150)
        new = self.stack.wait_back("gitserver", pid)
        inj.detail += f", restarted as pid {new}"
        if not pushed or not pushed[0]:
            inj.detail += "; the push failed, pushed again"
            assert self.pusher.push(sub), f"push of {sub.key} failed after the git server came back:\n{sub.detail}"
        sub.outcome, sub.pushed_at = "accepted", time.monotonic()
        return inj

    # -- a node ---------------------------------------------------------------------------
    def _node(self) -> Injection:
        root = self.stack.nodes_root

        def busy_nodes() -> list[tuple[str, Path]]:
            return [(c, ndir) for c in self.node_clusters for ndir in sorted((root / c).glob("node-*"))
                    if running_phases(ndir / "home")]

        self._delay()
        candidates = wait_for(busy_nodes, 120, "a node running a job", interval=0.02)
        cluster, ndir = self.rng.choice(candidates)
        home = str(ndir / "home")
        servers = [pid for pid, argv in procs.scan_cmdlines()
                   if "styx.providers.local.nodeserver" in argv and procs.arg_after(argv, "--home") == home]
        assert servers, f"no server for {ndir}"
        ready = json.loads((ndir / "ready.json").read_text())
        jobs = running_phases(ndir / "home")
        victims = self._freeze(home, servers)
        for pid in victims:
            procs.kill(pid, signal.SIGKILL)
        inj = Injection("node", time.monotonic(),
                        f"kill -9 {cluster}/{ndir.name} (server {servers}, {len(victims)} processes, "
                        f"running jobs {sorted(jobs, key=int)})")
        wait_for(lambda: not any(procs.alive(p) for p in victims), 10, "the node's processes to die")
        self._delay(low=0.5)  # the VM is down a while
        # The worker's own provider (same root, key, job user and port rules) starts it.
        asyncio.run(self.stack.provider().start(cluster, None))
        back = json.loads((ndir / "ready.json").read_text())
        assert (back["host"], back["port"]) == (ready["host"], ready["port"]), \
            f"{ndir.name} came back at {back} instead of {ready}: jobs placed there cannot reach it"
        inj.detail += f"; booted again as pid {back['pid']}"
        return inj

    @staticmethod
    def _freeze(home: str, servers: list[int]) -> set[int]:
        """SIGSTOP the node's server, then everything on the node, until nothing new appears
        (a process forked between two looks is caught by the next): a VM lost stops at once,
        and no process may see another die (a shell would log its child's death) or outlive it."""
        frozen: set[int] = set()
        found = set(servers)
        for _ in range(100):
            for pid in found - frozen:
                procs.kill(pid, signal.SIGSTOP)
            frozen |= found
            found = set(procs.processes_of([home], procs.job_groups([home])))
            if found <= frozen:
                return frozen
        raise AssertionError(f"the processes of {home} kept changing while being frozen")


def user_stop_start(stack: UpStack, cluster: str, rng: random.Random, say: Callable[[str], None]) -> Injection:
    """The user stops ``cluster`` while its jobs run, then starts it again."""
    time.sleep(rng.uniform(0.0, 2.0))  # a random point in the cluster's jobs
    with stack.client(timeout=300) as client:
        at = time.monotonic()
        stopped = client.stop(cluster)
        assert stopped.status == "STOPPED", stopped
        took = time.monotonic() - at
        started = client.start(cluster)
        assert started.status == "UP", started
    inj = Injection("stop+start", at, f"styx stop {cluster} ({took:.1f}s); styx start {cluster}", time.monotonic())
    # A stop cancels its jobs and waits (at most DRAIN_TIMEOUT) for them to end: one that
    # took the whole timeout means a job went on after its cancel.
    if took > DRAIN_TIMEOUT.total_seconds() - 5:
        inj.problems.append(f"styx stop {cluster} took {took:.0f}s: its jobs did not end when cancelled")
    say(f"stop+start: {inj.detail} ({inj.recovered_at - at:.1f}s)")
    return inj
