"""Managed jobs end to end on local nodes: the real stack (Temporal dev server, a worker and
the API as subprocesses), real SSH to local node servers. What a user checks: the job's
status, its log across recoveries, `styx jobs queue`, and that no node of any of its
clusters is left once it has ended — whatever was killed on the way.

The quick ones run under `make test`; those that kill nodes or the worker are `long`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import pytest_asyncio

from styx.db import Database
from styx.providers.local.provider import LocalProvider
from styx.sdk.client import Client
from styx.sdk.transport import Forbidden, Invalid, NotFound
from tests.fixtures.processes import pid_alive
from tests.fixtures.stack import StyxStack, wait_for
from tests.fixtures.temporal import own_dev_server


@pytest_asyncio.fixture(scope="module")
async def temporal_env():
    """This module's own dev server: it starts managed jobs (see ``own_dev_server``)."""
    async for env in own_dev_server():
        yield env


pytestmark = pytest.mark.slow

#: Probe a running managed job's nodes this often (the default is 10 s).
PROBE_SECONDS = 2
NODE_LOST_SECONDS = 5


@pytest.fixture(scope="module")
def stack(temporal_env, tmp_path_factory) -> Iterator[StyxStack]:
    address = temporal_env.client.service_client.config.target_host
    s = StyxStack(tmp_path_factory.mktemp("managed-home"), address, extra_env={
        "STYX_MANAGED_PROBE_SECONDS": str(PROBE_SECONDS), "STYX_NODE_LOST_SECONDS": str(NODE_LOST_SECONDS),
        "STYX_LOCAL_ALLOW_NONADMIN": "1", "COLUMNS": "250"})
    try:
        yield s.start()
    finally:
        s.stop()


def writable(stack: StyxStack, name: str) -> Path:
    """A path jobs may write (they run as per-cluster users when the tests run as root)."""
    folder = stack.shared_dir / "marks"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o1777)
    path = folder / name
    path.touch()
    os.chmod(path, 0o666)  # each attempt's cluster has a user of its own
    return path


def local_clusters(stack: StyxStack, managed_id: int) -> list[str]:
    """The managed job's clusters that still have anything on disk or running."""
    provider = LocalProvider(stack.nodes_root, "")
    return [c for c in provider.list_clusters() if c.startswith(f"mj-{managed_id}-")]


def node_processes(stack: StyxStack, cluster: str) -> list[int]:
    """Live processes of a cluster's nodes: node servers and the jobs they started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        mine = f"STYX_CLUSTER_NAME={cluster}".encode() in env or f"/{cluster}/".encode() in cmd
        if mine and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def leaves_nothing(stack: StyxStack, managed_id: int, clusters: list[str]) -> None:
    wait_for(lambda: not local_clusters(stack, managed_id), 60, "the job's clusters to be gone from disk")
    for cluster in clusters:
        assert not node_processes(stack, cluster), f"{cluster} left processes"
    db = Database(stack.settings.db_url)
    for cluster in clusters:
        row = db.clusters.get(cluster)
        assert row is None or row.status in ("TERMINATED", "FAILED"), (cluster, row.status)


def queue_rows(stack: StyxStack) -> list[list[str]]:
    """`styx jobs queue` as a user reads it: one list of cells per row."""
    out = stack.cli("jobs", "queue", check=True).stdout
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def kill_node(stack: StyxStack, cluster: str, rank: int = 0) -> None:
    """A VM lost: kill -9 the node's server and every process of the cluster's jobs (a local
    node's jobs are detached and would outlive its server; on a lost VM nothing does)."""
    described = asyncio.run(LocalProvider(stack.nodes_root, "").describe_nodes(cluster, None))
    assert len(described) == 1, "these tests run one-node clusters"
    os.kill(described[rank]["pid"], signal.SIGKILL)

    def gone() -> bool:
        for pid in node_processes(stack, cluster):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not node_processes(stack, cluster)

    wait_for(gone, 10, f"every process of {cluster} to die")


def test_a_managed_job_runs_on_its_own_cluster_and_leaves_nothing(stack: StyxStack):
    client = stack.client()
    submitted = client.jobs.launch({"name": "hello", "setup": "echo set-up",
                                    "run": "echo hello from $STYX_CLUSTER_NAME job $STYX_MANAGED_JOB_ID "
                                           "attempt $STYX_MANAGED_ATTEMPT"})
    job = client.jobs.wait(submitted.managed_id, timeout=120)
    assert job.status == "SUCCEEDED", job
    assert job.recoveries == 0 and job.cluster is None and job.name == "hello"
    cluster = f"mj-{job.managed_id}-0-1"
    assert [a.cluster for a in client.jobs.get(job.managed_id).attempts] == [cluster]
    log = client.jobs.logs(job.managed_id)
    assert f"attempt 1 on cluster {cluster}" in log and "set-up" in log, log
    assert f"hello from {cluster} job {job.managed_id} attempt 1" in log, log
    assert f"managed job {job.managed_id}: SUCCEEDED" in log
    leaves_nothing(stack, job.managed_id, [cluster])
    row = next(r for r in queue_rows(stack) if r[0] == str(job.managed_id))
    assert row[1:5] == ["hello", "SUCCEEDED", "0", "-"] and row[7] == "0.00", row


def test_a_failing_program_runs_max_restarts_plus_one_times_then_fails(stack: StyxStack):
    client = stack.client()
    marks = writable(stack, "runs-exit1")
    task = {"run": f"echo run >> {marks}; exit 1",
            "resources": {"job_recovery": {"max_restarts_on_errors": 2}}}
    job = client.jobs.wait(client.jobs.launch(task, name="exit1").managed_id, timeout=180)
    assert job.status == "FAILED" and re.fullmatch(r"rank 0 \(127\.[\d.]+\) exited 1", job.message or ""), job
    assert marks.read_text().count("run") == 3
    attempts = client.jobs.get(job.managed_id).attempts
    assert [a.status for a in attempts] == ["FAILED", "FAILED", "FAILED"] and job.recoveries == 0
    leaves_nothing(stack, job.managed_id, [a.cluster for a in attempts])
    # --max-restarts overrides the task's setting; by default a failure ends the job at once.
    again = client.jobs.wait(client.jobs.launch({"run": "exit 3"}).managed_id, timeout=120)
    assert again.status == "FAILED" and len(client.jobs.get(again.managed_id).attempts) == 1


def test_bad_input_is_refused_naming_the_field_and_starts_nothing(stack: StyxStack):
    client = stack.client()
    before = len(client.jobs.queue(limit=1000))
    with pytest.raises(Invalid, match=r"tasks\[1\]\.resources\.cpuz"):
        client.jobs.launch_pipeline([{"run": "true"}, {"run": "true", "resources": {"cpuz": 1}}])
    r = httpx.post(f"{stack.settings.api_url}/api/v1/managed-jobs", headers={"Authorization": f"Bearer {stack.token}"},
                   json={"tasks": [{"run": "true"}, {"run": "true", "resources": {"cpus": "many"}}]})
    assert r.status_code == 422 and r.json()["detail"].startswith("tasks[1].resources.cpus"), r.text
    with pytest.raises(Invalid, match=r"task\.resources\.job_recovery\.strategy: 'SOMETIMES' is not one of"):
        client.jobs.launch({"run": "true", "resources": {"job_recovery": "SOMETIMES"}})
    with pytest.raises(Invalid, match=r"max_restarts_on_errors"):
        client.jobs.launch({"run": "true"}, max_restarts_on_errors=101)
    r = stack.cli("jobs", "launch", "-y", "-d", "--max-restarts", "-1", "true")
    assert r.returncode != 0 and "--max-restarts" in r.stderr and "Traceback" not in r.stderr
    too_many = stack.home / "too-many.yaml"
    too_many.write_text("name: p\n" + "".join("---\nrun: true\n" for _ in range(33)))
    r = stack.cli("jobs", "launch", "-y", "-d", str(too_many))
    assert r.returncode == 1 and "at most 32 tasks" in r.stderr, r.stderr
    assert len(client.jobs.queue(limit=1000)) == before


def test_a_user_sees_and_cancels_only_their_own_managed_jobs(stack: StyxStack):
    admin = stack.client()
    alice = Client(stack.settings.api_url, admin.create_user("mj-alice").token)
    bob = Client(stack.settings.api_url, admin.create_user("mj-bob").token)
    mine = alice.jobs.launch({"run": "sleep 300"}, name="alices")
    assert [j.managed_id for j in alice.jobs.queue()] == [mine.managed_id]
    assert bob.jobs.queue() == []
    with pytest.raises(NotFound):
        bob.jobs.get(mine.managed_id)
    with pytest.raises(NotFound):
        bob.jobs.cancel([mine.managed_id])
    with pytest.raises(NotFound):
        bob.jobs.logs(mine.managed_id)
    with pytest.raises(Forbidden):
        bob.jobs.queue(all_users=True)
    with pytest.raises(NotFound):
        bob.jobs.cancel(all=True)
    everyone = admin.jobs.queue(all_users=True)
    assert mine.managed_id in [j.managed_id for j in everyone]
    assert {j.owner for j in everyone if j.managed_id == mine.managed_id} == {"mj-alice"}
    wait_for(lambda: alice.jobs.get(mine.managed_id).status == "RUNNING", 60, "alice's job to run")
    assert alice.jobs.cancel([mine.managed_id]).cancelled == [mine.managed_id]
    job = alice.jobs.wait(mine.managed_id, timeout=90)
    assert job.status == "CANCELLED"
    leaves_nothing(stack, mine.managed_id, [f"mj-{mine.managed_id}-0-1"])
    r = httpx.post(f"{stack.settings.api_url}/api/v1/managed-jobs/cancel", json={"ids": [mine.managed_id]},
                   headers={"Authorization": f"Bearer {stack.token}"})
    assert r.status_code == 409 and "already finished" in r.json()["detail"]


@pytest.mark.long
def test_a_killed_node_is_recovered_on_a_fresh_cluster_and_the_job_finishes(stack: StyxStack):
    client = stack.client()
    checkpoint = "~/ckpt"  # the node's home: a fresh cluster starts without it
    run = (f"mkdir -p {checkpoint}; n=$(cat {checkpoint}/step 2>/dev/null || echo 0); echo start at $n; "
           "for i in $(seq 1 600); do sleep 0.1; done; echo finished")
    job = client.jobs.launch({"name": "survivor", "run": run}, name="survivor")
    first = f"mj-{job.managed_id}-0-1"
    wait_for(lambda: "start at" in client.jobs.logs(job.managed_id), 60, "the job to run")
    killed = time.monotonic()
    kill_node(stack, first)
    wait_for(lambda: client.jobs.get(job.managed_id).recoveries == 1, 60, "the recovery to start")
    noticed = time.monotonic() - killed
    assert noticed < PROBE_SECONDS + 20, noticed  # the probe, not the job's end, noticed it
    info = client.jobs.wait(job.managed_id, timeout=240)
    assert info.status == "SUCCEEDED" and info.recoveries == 1, info
    attempts = client.jobs.get(job.managed_id).attempts
    assert [a.status for a in attempts] == ["PREEMPTED", "SUCCEEDED"], attempts
    assert "lost" in (attempts[0].reason or ""), attempts[0].reason
    log = client.jobs.logs(job.managed_id)
    assert log.index(f"attempt 1 on cluster {first}") < log.index("PREEMPTED") < \
        log.index(f"attempt 2 on cluster mj-{job.managed_id}-0-2") < log.index("finished")
    row = next(r for r in queue_rows(stack) if r[0] == str(job.managed_id))
    assert row[1:4] == ["survivor", "SUCCEEDED", "1"], row
    leaves_nothing(stack, job.managed_id, [a.cluster for a in attempts])


@pytest.mark.long
def test_cancel_during_recovering_leaves_no_cluster(stack: StyxStack):
    client = stack.client()
    job = client.jobs.launch({"run": "echo up; sleep 600"})
    first = f"mj-{job.managed_id}-0-1"
    wait_for(lambda: "up" in client.jobs.logs(job.managed_id), 60, "the job to run")
    kill_node(stack, first)
    wait_for(lambda: client.jobs.get(job.managed_id).status == "RECOVERING", 60, "RECOVERING")
    r = stack.cli("jobs", "cancel", str(job.managed_id), check=True)
    assert "cancelling" in r.stdout
    info = client.jobs.wait(job.managed_id, timeout=240)  # the relaunch finishes, then goes down
    assert info.status == "CANCELLED", info
    leaves_nothing(stack, job.managed_id, [a.cluster for a in client.jobs.get(job.managed_id).attempts])


@pytest.mark.long
def test_kill_9_of_the_worker_during_recovery_gives_one_cluster_and_one_completion(stack: StyxStack):
    client = stack.client()
    marks = writable(stack, "completions")
    job = client.jobs.launch({"run": f"echo up; sleep 3; echo done >> {marks}"}, name="crashy")
    first = f"mj-{job.managed_id}-0-1"
    wait_for(lambda: "up" in client.jobs.logs(job.managed_id), 60, "the job to run")
    kill_node(stack, first)
    wait_for(lambda: client.jobs.get(job.managed_id).status == "RECOVERING", 60, "RECOVERING")
    stack.kill_worker()
    stack.start_worker()
    info = client.jobs.wait(job.managed_id, timeout=240)
    assert info.status == "SUCCEEDED", info
    assert marks.read_text().count("done") == 1
    attempts = client.jobs.get(job.managed_id).attempts
    assert len(attempts) == 2, attempts
    leaves_nothing(stack, job.managed_id, [a.cluster for a in attempts])


@pytest.mark.long
def test_a_pipeline_runs_in_order_and_recovers_its_preempted_task_alone(stack: StyxStack, tmp_path: Path):
    client = stack.client()
    order = writable(stack, "pipeline-order")
    gate = stack.shared_dir / "pipeline-gate"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "name: three\n"
        f"---\nname: prep\nrun: echo prep >> {order}\n"
        f"---\nname: train\nrun: |\n  echo train-start >> {order}\n  while [ ! -e {gate} ]; do sleep 0.1; done\n"
        f"  echo train >> {order}\n"
        f"---\nname: eval\nrun: echo eval >> {order}\n")
    r = stack.cli("jobs", "launch", "-y", "-d", str(pipeline), check=True)
    managed_id = int(re.search(r"managed job (\d+) launched", r.stdout).group(1))
    wait_for(lambda: "train-start" in order.read_text(), 90, "task 2 to run")
    rows = queue_rows(stack)
    at = next(i for i, r in enumerate(rows) if r[0] == str(managed_id))
    assert [r[1:3] for r in rows[at + 1:at + 4]] == [["↳ 0 prep", "SUCCEEDED"], ["↳ 1 train", "RUNNING"],
                                                   ["↳ 2 eval", "PENDING"]], rows
    kill_node(stack, f"mj-{managed_id}-1-1")
    wait_for(lambda: client.jobs.get(managed_id).recoveries == 1, 60, "task 2's recovery")
    gate.touch()
    info = client.jobs.wait(managed_id, timeout=240)
    assert info.status == "SUCCEEDED", (info.message, client.jobs.get(managed_id).attempts)
    assert order.read_text().split() == ["prep", "train-start", "train-start", "train", "eval"]
    assert [(t.name, t.status, t.recoveries) for t in info.tasks] == [
        ("prep", "SUCCEEDED", 0), ("train", "SUCCEEDED", 1), ("eval", "SUCCEEDED", 0)]
    leaves_nothing(stack, managed_id, [a.cluster for a in client.jobs.get(managed_id).attempts])


@pytest.mark.long
@pytest.mark.parametrize("point", ["managed_after_submit", "managed_job_running", "managed_before_down",
                                   "managed_after_down"])
def test_kill_9_of_the_worker_at_any_point_runs_once_and_leaves_no_cluster(stack: StyxStack, tmp_path: Path,
                                                                           point: str):
    client = stack.client()
    marks = writable(stack, f"ran-{point}")
    stack.kill_worker()
    stack.env.update(STYX_TEST_CRASH_POINT=point, STYX_TEST_CRASH_POINT_FILE=str(tmp_path / "crashed"))
    try:
        crashing = stack.start_worker()
        job = client.jobs.launch({"run": f"echo ran >> {marks}; sleep 1"}, name=point)
        wait_for(lambda: crashing.poll() is not None, 120, f"the worker to kill itself at {point}")
        assert crashing.returncode == -9 and (tmp_path / "crashed").exists()
    finally:
        for key in ("STYX_TEST_CRASH_POINT", "STYX_TEST_CRASH_POINT_FILE"):
            stack.env.pop(key, None)
        stack.start_worker()
    info = client.jobs.wait(job.managed_id, timeout=180)
    assert info.status == "SUCCEEDED" and info.recoveries == 0, info
    assert marks.read_text().count("ran") == 1
    attempts = client.jobs.get(job.managed_id).attempts
    assert [a.cluster for a in attempts] == [f"mj-{job.managed_id}-0-1"]
    leaves_nothing(stack, job.managed_id, [a.cluster for a in attempts])
