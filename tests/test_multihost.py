"""Several hosts, one Styx: two workers, two API replicas and the git server, each a process
with its own STYX_HOME (no directory shared), against one Temporal dev server and one
PostgreSQL database. What they share is what the README's "Production" section lists: the
database URL, Temporal's address and task queue, STYX_SECRET_KEY, STYX_DEPLOYMENT_ID and a
copy of Styx's SSH key (STYX_SSH_KEY).

200 jobs go round-robin to both APIs over four clusters; while they run, one worker and one
API replica are killed with SIGKILL. Every job still runs exactly once (each appends its own
token to a file on its node), the jobs the dead worker was running are taken over by the
other within the heartbeat timeout, and every log is read, whole and once, from the replica
the job was NOT submitted to (the dead one's place taken by a fresh replica on a new home).
A push to the git server runs on a cluster whose nodes a worker with another home started,
from the commit's tree stored as an upload.

Local nodes are started by whichever worker provisions the cluster and live under that
worker's STYX_HOME/nodes (the local provider is for one machine); the jobs reach them over
SSH from either worker, which is all the test needs of them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from styx.contracts.clusters import cluster_workflow_id
from styx.db import Database
from styx.gitserver.config import GitServerConfig
from styx.gitserver.names import RepoName
from styx.gitserver.storage import RepoStore
from styx.sdk.client import Client
from styx.workers.credentials import ensure_admin_credentials
from tests.fixtures.git import REPO_ROOT, make_git_user
from tests.fixtures.stack import kill_local_nodes, settings_for, traversable_tmp_dir, wait_for
from tests.fixtures.temporal import UI_PORT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.long]

CLUSTERS = ("mh-a", "mh-b", "mh-c", "mh-d")
JOBS = 200
#: Every SLOW_EVERY-th job sleeps SLOW_SECONDS, so that some run when the worker dies.
SLOW_EVERY, SLOW_SECONDS = 8, 6
#: run_phase's heartbeat timeout (styx/workflows/job.py): the dead worker's activities move
#: to the other worker this long after the kill at most (plus the retry's first backoff).
HEARTBEAT_TIMEOUT = 10.0


def script(token: str, slow: bool) -> str:
    pause = f"sleep {SLOW_SECONDS}; " if slow else ""
    return f"echo start-{token}; {pause}echo {token} >> ~/done.txt; echo end-{token}"


def expected_log(token: str) -> str:
    return f"start-{token}\nend-{token}\n"


# ------------------------------------------------------------------------------ the hosts


@dataclass
class Host:
    """One process of the deployment on a 'host' of its own: its own STYX_HOME."""

    name: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, *argv: str) -> subprocess.Popen:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.home / "logs" / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, *argv], env=self.env, cwd=REPO_ROOT,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self.proc

    def log_tail(self) -> str:
        path = self.home / "logs" / f"{self.name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Deployment:
    root: Path
    shared: dict[str, str]
    key_file: Path
    hosts: list[Host] = field(default_factory=list)
    token: str = ""

    def host(self, name: str, **env: str) -> Host:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("STYX_", "TEMPORAL_"))}
        host = Host(name, home, {**base, **self.shared, "STYX_HOME": str(home), **env})
        self.hosts.append(host)
        return host

    def worker(self, name: str) -> Host:
        # Each worker host has its own copy of the one SSH key every node lets in.
        own_key = self.root / name / "keys" / "styx_ed25519"
        own_key.parent.mkdir(parents=True)
        own_key.write_bytes(self.key_file.read_bytes())
        own_key.chmod(0o600)
        ready = self.root / f"{name}.ready"
        # Its local nodes where the (per-cluster, when root) job users can walk to their homes.
        nodes = traversable_tmp_dir() / "nodes"
        host = self.host(name, STYX_SSH_KEY=str(own_key), STYX_READY_FILE=str(ready),
                         STYX_LOCAL_NODES_DIR=str(nodes))
        host.spawn("-m", "styx", "worker")
        wait_for(lambda: ready.exists() or host.proc.poll() is not None, 60, f"{name} to poll")
        assert host.proc.poll() is None, host.log_tail()
        return host

    def api(self, name: str) -> Host:
        port = free_port()
        host = self.host(name, STYX_API_PORT=str(port))
        host.port = port
        if not self.token:
            self.token = ensure_admin_credentials(settings_for(host.env))
        host.spawn("-m", "styx", "api")

        def healthy() -> bool:
            assert host.proc.poll() is None, host.log_tail()
            try:
                return httpx.get(f"{host.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, f"{name} to answer")
        return host

    def gitserver(self, name: str) -> Host:
        port = free_port()
        ready = self.root / f"{name}.ready"
        host = self.host(name, STYX_GIT_HTTP_PORT=str(port), STYX_GIT_SSH_PORT=str(free_port()),
                         STYX_READY_FILE=str(ready))
        host.port = port
        host.spawn("-m", "styx.gitserver")
        wait_for(lambda: ready.exists() or host.proc.poll() is not None, 60, f"{name} to listen")
        assert host.proc.poll() is None, host.log_tail()
        return host

    def client(self, api: Host) -> Client:
        return Client(api.url, self.token)

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
        for host in self.hosts:
            if "STYX_LOCAL_NODES_DIR" in host.env:
                nodes = Path(host.env["STYX_LOCAL_NODES_DIR"])
                kill_local_nodes(nodes)
                shutil.rmtree(nodes.parent, ignore_errors=True)


@pytest.fixture
def deployment(postgres_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[Deployment]:
    key_file = tmp_path / "styx_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "styx", "-f", str(key_file)],
                   check=True, capture_output=True)
    shared = {
        "STYX_DB_URL": postgres_url,
        "STYX_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "STYX_TEMPORAL_UI_URL": f"http://127.0.0.1:{UI_PORT}",
        "STYX_TASK_QUEUE": f"styx-mh-{uuid.uuid4().hex[:8]}",
        "STYX_SECRET_KEY": Fernet.generate_key().decode(),
        "STYX_DEPLOYMENT_ID": f"mh{secrets.token_hex(4)}",
        "PYTHONUNBUFFERED": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    made = Deployment(tmp_path / "hosts", shared, key_file)
    try:
        yield made
    finally:
        made.stop()


# ------------------------------------------------------------------------------ Temporal


def _run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _run_phase_ids(history: Any, job_id: int) -> set[str]:
    """The activity ids of the job's run activities in its cluster's history (a job runs inside
    its cluster's workflow; its activities' summaries start ``job <id>: run on``)."""
    ids = set()
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            summary = event.user_metadata.summary.data.decode(errors="replace")
            if attrs.activity_type.name == "run_phase" and f"job {job_id}: run on" in summary:
                ids.add(attrs.activity_id)
    return ids


def run_phase_worker(temporal: WorkflowEnvironment, cluster: str, job_id: int,
                     started_within: float | None = None) -> str | None:
    """The identity (``pid@host``) of the worker running the job's run activity, if one is
    (a job still queued has none yet); with ``started_within``, only if that attempt started
    at most so many seconds ago."""
    handle = temporal.client.get_workflow_handle(cluster_workflow_id(cluster))
    try:
        desc = _run(handle.describe())
        ids = _run_phase_ids(_run(handle.fetch_history()), job_id)
    except RPCError:
        return None
    for pending in desc.raw_description.pending_activities:
        if pending.activity_id in ids and pending.last_worker_identity:
            if started_within is not None and (
                    time.time() - pending.last_started_time.ToNanoseconds() / 1e9 > started_within):
                continue
            return pending.last_worker_identity
    return None


def run_phase_history_worker(temporal: WorkflowEnvironment, cluster: str, job_id: int) -> str:
    """The identity of the worker whose attempt of the run activity completed it."""
    history = _run(temporal.client.get_workflow_handle(cluster_workflow_id(cluster)).fetch_history())
    ids = _run_phase_ids(history, job_id)
    scheduled = {e.event_id for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")
                 and e.activity_task_scheduled_event_attributes.activity_id in ids}
    for event in history.events:
        if event.HasField("activity_task_started_event_attributes"):
            attrs = event.activity_task_started_event_attributes
            if attrs.scheduled_event_id in scheduled:
                return attrs.identity
    return ""


# ------------------------------------------------------------------------------ the test


def test_two_workers_and_two_apis_sharing_only_temporal_and_postgres_survive_a_kill_of_each(
        deployment: Deployment, temporal_env: WorkflowEnvironment, tmp_path: Path):
    worker_a, worker_b = deployment.worker("worker-a"), deployment.worker("worker-b")
    apis = [deployment.api("api-1"), deployment.api("api-2")]
    git = deployment.gitserver("gitserver")
    assert len({h.home for h in deployment.hosts}) == len(deployment.hosts)

    # Four clusters, launched through either replica: 4 CPUs a node, jobs take 1.
    for i, cluster in enumerate(CLUSTERS):
        with deployment.client(apis[i % 2]) as client:
            client.launch({"resources": {"cpus": 4}, "run": "true"}, cluster=cluster)
    with deployment.client(apis[0]) as client:
        for cluster in CLUSTERS:
            assert client.wait(cluster, 1, timeout=120).status == "SUCCEEDED"

    # 200 jobs, round-robin over the replicas and the clusters.
    local = threading.local()

    def submit(i: int) -> tuple[int, str, int, str]:
        api_index, cluster, token = i % 2, CLUSTERS[(i // 2) % len(CLUSTERS)], f"tok-{i:03d}"
        clients = getattr(local, "clients", None)
        if clients is None:
            clients = local.clients = [deployment.client(api) for api in apis]
        task = {"resources": {"cpus": 1}, "run": script(token, i % SLOW_EVERY == 0)}
        return api_index, cluster, clients[api_index].exec(cluster, task).job_id, token

    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(submit, range(JOBS)))
    assert len({(c, j) for _, c, j, _ in jobs}) == JOBS

    # Wait until the first worker is running a slow job's run activity, then kill it and the
    # second API replica.
    pid_a, pid_b = worker_a.proc.pid, worker_b.proc.pid
    slow = [(c, j, t) for i, (_, c, j, t) in enumerate(jobs) if i % SLOW_EVERY == 0]

    def on_worker_a() -> list[tuple[str, int, str]]:
        # Started lately: the job still sleeps when the kill lands.
        return [(c, j, t) for c, j, t in slow
                if (run_phase_worker(temporal_env, c, j, SLOW_SECONDS / 3) or "").startswith(f"{pid_a}@")]

    candidates = wait_for(on_worker_a, 120, "worker-a to run a slow job", interval=0.2)
    survivor = deployment.client(apis[0])
    follows: dict[tuple[str, int], list[bytes]] = {}

    def follow(cluster: str, job_id: int) -> None:
        with deployment.client(apis[0]) as client:
            follows[(cluster, job_id)] = list(client.stream_logs(cluster, job_id, follow=True))

    followers = [threading.Thread(target=follow, args=(c, j), daemon=True) for c, j, _ in candidates]
    for thread in followers:
        thread.start()
    worker_a.kill()
    killed_at = time.monotonic()
    apis[1].kill()
    # The window: the activities the dead worker held (Temporal still has them pending there).
    victims = [(c, j, t) for c, j, t in candidates
               if (run_phase_worker(temporal_env, c, j) or "").startswith(f"{pid_a}@")]
    assert victims, "the slow jobs worker-a ran all ended before it was killed"

    # The other worker takes the dead one's run activities over within the heartbeat timeout.
    taken_over: dict[tuple[str, int], float] = {}

    def all_taken_over() -> bool:
        for c, j, _ in victims:
            if (c, j) in taken_over:
                continue
            now = run_phase_worker(temporal_env, c, j)
            if (now or "").startswith(f"{pid_b}@") or (now is None and survivor.job(c, j).status == "SUCCEEDED"):
                taken_over[(c, j)] = time.monotonic() - killed_at
        return len(taken_over) == len(victims)

    wait_for(all_taken_over, HEARTBEAT_TIMEOUT + 20, "worker-b to take the dead worker's jobs over", interval=0.2)
    assert max(taken_over.values()) <= HEARTBEAT_TIMEOUT + 5, taken_over
    for c, j, token in victims:
        assert survivor.wait(c, j, timeout=60).status == "SUCCEEDED"
        assert run_phase_history_worker(temporal_env, c, j).startswith(f"{pid_b}@"), (c, j)

    # Every job ends, once.
    def all_done() -> bool:
        done = [job for cluster in CLUSTERS for job in survivor.queue(cluster)]
        return len(done) == JOBS + len(CLUSTERS) and all(job.status in ("SUCCEEDED", "FAILED", "CANCELLED")
                                                        for job in done)

    wait_for(all_done, 240, "all 200 jobs to end", interval=1.0)
    statuses = Counter(job.status for cluster in CLUSTERS for job in survivor.queue(cluster))
    assert statuses == {"SUCCEEDED": JOBS + len(CLUSTERS)}, statuses
    appended = Counter()
    for host in (worker_a, worker_b):
        nodes = Path(host.env.get("STYX_LOCAL_NODES_DIR") or host.home / "nodes")
        for done in nodes.glob("*/node-*/home/done.txt"):
            appended.update(done.read_text().split())
    assert appended == Counter({token: 1 for *_, token in jobs}), "a job ran twice or never"

    # A new replica takes the dead one's place (a new host: a new home).
    apis[1] = deployment.api("api-3")
    readers = [deployment.client(api) for api in apis]
    for api_index, cluster, job_id, token in jobs:
        other = readers[1 - api_index]
        assert other.logs(cluster, job_id) == expected_log(token), (cluster, job_id, api_index)
    for thread in followers:
        thread.join(30)
    for c, j, token in candidates:
        assert b"".join(follows[(c, j)]).decode() == expected_log(token), (c, j)

    # Followed, while running, from the replica it was not submitted to.
    for api_index in (0, 1):
        token = f"late-{api_index}"
        submitted = readers[api_index].exec(CLUSTERS[0], {"resources": {"cpus": 1}, "run": script(token, True)})
        streamed = b"".join(readers[1 - api_index].stream_logs(CLUSTERS[0], submitted.job_id, follow=True))
        assert streamed.decode() == expected_log(token)
        assert readers[1 - api_index].job(CLUSTERS[0], submitted.job_id).status == "SUCCEEDED"

    # A push: the git server (its own home, the repositories on its disk) plans it and stores
    # the commit's tree as an upload; a worker with another home runs the job from it.
    settings = settings_for(git.env)
    config = GitServerConfig.from_settings(settings)
    repo = RepoName("admin", "mh")
    Database(settings.db_url).repos.create(repo.owner, repo.name)
    RepoStore(config.repo_root, git=config.git, git_home=config.state_dir / "home").create(repo)
    pusher = make_git_user(tmp_path / "clients", "admin", deployment.token, with_key=False)
    work = tmp_path / "work"
    pusher.git("init", "-q", "-b", "main", str(work))
    (work / "data.txt").write_text("pushed-data-42\n")
    (work / ".styx.yaml").write_text(f"jobs:\n  t:\n    cluster: {CLUSTERS[1]}\n    resources: {{cpus: 1}}\n"
                                     "    run: cat data.txt\n")
    pusher.git("add", "-A", cwd=work)
    pusher.git("commit", "-qm", "run", cwd=work)
    sha = pusher.git("rev-parse", "HEAD", cwd=work).stdout.strip()
    pusher.git("push", "-q", f"http://admin:{deployment.token}@127.0.0.1:{git.port}/admin/mh.git", "main", cwd=work)
    run = readers[1].wait_commit("admin/mh", sha, timeout=120)
    assert run.status == "SUCCEEDED", run
    (job,) = run.jobs
    assert readers[0].logs(job.cluster, job.job_id) == "pushed-data-42\n"
    assert not (worker_b.home / "git").exists() and not (worker_b.home / "git-runs").exists()

    for client in [survivor, *readers]:
        client.close()
