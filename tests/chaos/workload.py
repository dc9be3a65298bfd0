"""What the chaos suite's user does: keyed jobs on three clusters, submitted through the SDK
(and by `git push`), kept at a number in flight while faults land.

Every job is named by a unique key and prints a known sequence of lines, then appends its key
to a shared effects file — its one side effect — so that afterwards each job can be checked
for having run exactly once, with its whole log, in order::

    for i in 1..N: echo "<key> line-<i>"; sleep <pause>
    echo <key> >> <effects>

A submission is ``accepted`` (the API answered with a job id), ``refused`` (a 4xx: nothing
must exist) or ``ambiguous`` (the connection broke or the API answered 5xx mid-call: the job
may exist, at most once).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from styx.contracts.rest import JobInfo
from styx.sdk.client import Client
from styx.sdk.transport import ApiUnreachable, StyxError
from tests.chaos.upstack import UpStack
from tests.fixtures.git import GitUser, make_git_user

REPO = "admin/chaos"


@dataclass
class Submission:
    key: str
    cluster: str
    kind: str  # launch | exec | push
    num_nodes: int
    submitted_at: float
    outcome: str = "pending"  # accepted | refused | ambiguous
    job_id: int | None = None
    ended_at: float | None = None
    detail: str = ""
    sha: str | None = None  # pushes: the commit
    pushed_at: float | None = None  # pushes: when git last said the push went through

    def window(self, now: float) -> tuple[float, float]:
        return self.submitted_at, self.ended_at or now


@dataclass
class Workload:
    stack: UpStack
    root: Path
    lines: int
    pause: float
    submissions: dict[str, Submission] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _n: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Jobs append to it as their clusters' users (as root): beside the nodes, where every
        # user may walk, and writable by all.
        self.effects = self.stack.shared_dir / "effects"
        self.effects.touch()
        os.chmod(self.effects, 0o666)

    # -- jobs -----------------------------------------------------------------------------
    def new_key(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix}{self._n:04d}"

    def script(self, key: str) -> str:
        return (f'for i in $(seq 1 {self.lines}); do echo "{key} line-$i"; sleep {self.pause}; done\n'
                f'echo {key} >> {self.effects}\n')

    def expected_lines(self, key: str) -> list[str]:
        return [f"{key} line-{i}" for i in range(1, self.lines + 1)]

    def task(self, key: str, **extra) -> dict:
        return {"name": key, "resources": {"cpus": 1}, "run": self.script(key), **extra}

    def _record(self, sub: Submission) -> Submission:
        with self._lock:
            self.submissions[sub.key] = sub
        return sub

    def launch(self, client: Client, cluster: str, num_nodes: int, node_cpus: int) -> Submission:
        """Create ``cluster`` with a first (keyed) job on all its nodes; must be accepted."""
        key = self.new_key("L")
        sub = self._record(Submission(key, cluster, "launch", num_nodes, time.monotonic()))
        task = {**self.task(key), "num_nodes": num_nodes, "resources": {"cpus": node_cpus}}
        submitted = client.launch(task, cluster=cluster)
        sub.outcome, sub.job_id = "accepted", submitted.job_id
        return sub

    def submit(self, client: Client, cluster: str) -> Submission:
        """Queue one keyed job on ``cluster``, as a user would, once (no retry: a retry of an
        ambiguous submission may rightly queue a second job)."""
        key = self.new_key("J")
        sub = self._record(Submission(key, cluster, "exec", 1, time.monotonic()))
        try:
            submitted = client.exec(cluster, self.task(key))
        except httpx.ConnectError as err:  # never reached the API
            sub.outcome, sub.detail = "refused", f"connect: {err}"
        except httpx.HTTPError as err:
            sub.outcome, sub.detail = "ambiguous", f"{type(err).__name__}: {err}"
        except ApiUnreachable as err:  # no answer after the SDK's own (keyed) retries
            sub.outcome, sub.detail = "ambiguous", str(err)
        except StyxError as err:
            sub.outcome = "refused" if err.status_code < 500 else "ambiguous"
            sub.detail = f"{err.status_code}: {err.message}"
        else:
            sub.outcome, sub.job_id = "accepted", submitted.job_id
        return sub

    # -- what the API says ----------------------------------------------------------------
    def rows(self, client: Client, clusters: list[str]) -> dict[str, list[JobInfo]]:
        """Every job row of the workload's clusters, by key (a key seen twice is a duplicate)."""
        by_key: dict[str, list[JobInfo]] = {}
        for cluster in clusters:
            for job in client.queue(cluster):
                if job.name:
                    by_key.setdefault(job.name, []).append(job)
        return by_key

    def note_ended(self, rows: dict[str, list[JobInfo]]) -> None:
        now = time.monotonic()
        for key, jobs in rows.items():
            sub = self.submissions.get(key)
            if sub is not None and sub.ended_at is None and all(j.finished for j in jobs):
                sub.ended_at = now

    def in_flight(self, rows: dict[str, list[JobInfo]]) -> int:
        count = 0
        for sub in list(self.submissions.values()):
            jobs = rows.get(sub.key)
            if jobs:
                count += sum(not j.finished for j in jobs)
            elif sub.outcome in ("accepted", "pending"):
                count += 1  # accepted but not yet visible
        return count


class Submitter(threading.Thread):
    """Keeps about ``target`` jobs in flight on ``clusters`` until stopped."""

    def __init__(self, workload: Workload, clusters: list[str], target: int, rng: random.Random) -> None:
        super().__init__(name="chaos-submitter", daemon=True)
        self.workload, self.clusters, self.target, self.rng = workload, clusters, target, rng
        self._halt = threading.Event()
        self.errors: list[str] = []

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=150)

    def run(self) -> None:
        with self.workload.stack.client(timeout=60) as client:
            refused_at: dict[str, float] = {}
            while not self._halt.is_set():
                try:
                    rows = self.workload.rows(client, self.clusters)
                except (httpx.HTTPError, StyxError):
                    self._halt.wait(0.3)
                    continue
                self.workload.note_ended(rows)
                need = self.target - self.workload.in_flight(rows)
                for _ in range(max(0, min(need, 8))):
                    now = time.monotonic()
                    open_ = [c for c in self.clusters if now - refused_at.get(c, -99) > 2]
                    if not open_ or self._halt.is_set():
                        break
                    sub = self.workload.submit(client, self.rng.choice(open_))
                    if sub.outcome != "accepted":
                        refused_at[sub.cluster] = now
                        if sub.outcome == "ambiguous":
                            self.errors.append(f"{sub.key} on {sub.cluster}: {sub.detail}")
                self._halt.wait(0.5)


class Pusher:
    """`git push` of commits whose `.styx.yaml` runs one keyed job on ``cluster``."""

    def __init__(self, workload: Workload, cluster: str) -> None:
        self.workload, self.cluster = workload, cluster
        stack = workload.stack
        self.user: GitUser = make_git_user(workload.root / "git", "admin", stack.token, with_key=False)
        self.work = workload.root / "git" / "work"
        self.url = f"http://admin:{stack.token}@127.0.0.1:{stack.git_http_port}/{REPO}.git"
        self.user.git("init", "-q", "-b", "main", str(self.work))
        self.user.git("remote", "add", "origin", self.url, cwd=self.work)
        (self.work / "README.md").write_text("chaos\n")

    def commit(self) -> Submission:
        key = self.workload.new_key("P")
        script = "\n".join("      " + line for line in self.workload.script(key).splitlines())
        (self.work / ".styx.yaml").write_text(
            f"jobs:\n  {key}:\n    cluster: {self.cluster}\n    resources: {{cpus: 1}}\n    run: |\n{script}\n")
        self.user.git("add", "-A", cwd=self.work)
        self.user.git("commit", "-qm", key, cwd=self.work)
        sha = self.user.git("rev-parse", "HEAD", cwd=self.work).stdout.strip()
        sub = Submission(key, self.cluster, "push", 1, time.monotonic(), sha=sha)
        return self.workload._record(sub)

    def push(self, sub: Submission) -> bool:
        """One `git push`; True if git says it went through."""
        done = self.user.git("push", "-q", "origin", "main", cwd=self.work, check=False, timeout=120)
        sub.detail += f"push exit {done.returncode}: {done.stderr.strip()[-300:]}\n"
        return done.returncode == 0
