"""Durability is the product: kill -9 the worker mid-flight and nothing is lost, run twice or
leaked. Real Temporal dev server, real worker processes, real SSH to local nodes.

Each crash test waits for the moment it names (a job running on its nodes, a provision under
way, submissions in the worker's hands) before the kill, and checks afterwards, on the
Temporal server or on the nodes, that the kill really landed there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from temporalio.api.enums.v1 import PendingWorkflowTaskState
from temporalio.client import WorkflowExecutionDescription
from temporalio.testing import WorkflowEnvironment

from styx.contracts.clusters import cluster_workflow_id
from styx.ssh.phases import JOBS_DIR
from tests.fixtures.stack import StyxStack, wait_for

pytestmark = pytest.mark.slow


def live_nodes(stack: StyxStack, cluster: str) -> int:
    count = 0
    for ready in (stack.nodes_root / cluster).glob("node-*/ready.json"):
        if Path(f"/proc/{json.loads(ready.read_text())['pid']}").exists():
            count += 1
    return count


def node_home(stack: StyxStack, cluster: str, rank: int = 0) -> Path:
    return stack.nodes_root / cluster / f"node-{rank}" / "home"


def node_job_dir(stack: StyxStack, cluster: str, job_id: int, rank: int = 0) -> Path:
    """Where the job's phases keep their pid, log and exit code on the node (styx.ssh)."""
    return node_home(stack, cluster, rank) / JOBS_DIR / str(job_id)


def describe(temporal: WorkflowEnvironment, workflow_id: str) -> WorkflowExecutionDescription:
    """The workflow as the Temporal server sees it (these tests are synchronous)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(temporal.client.get_workflow_handle(workflow_id).describe())
    finally:
        loop.close()


def pending_activities(temporal: WorkflowEnvironment, workflow_id: str) -> list[str]:
    return sorted(a.activity_type.name for a in describe(temporal, workflow_id).raw_description.pending_activities)


def worker_holds_a_workflow_task(temporal: WorkflowEnvironment, workflow_id: str) -> bool:
    raw = describe(temporal, workflow_id).raw_description
    return (raw.HasField("pending_workflow_task")
            and raw.pending_workflow_task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED)


@contextlib.contextmanager
def jobs_table_write_locked(db_url: str) -> Iterator[None]:
    """Keep job rows from being written: readers (the API) and other tables' writes (the
    API stores each job's spec before submitting it) go on; job writes wait (PostgreSQL) or
    fail and are retried (SQLite, whose write lock is the whole database's: a trigger instead)."""
    engine = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                for op in ("INSERT", "UPDATE"):
                    conn.exec_driver_sql(f"CREATE TRIGGER test_jobs_locked_{op.lower()} BEFORE {op} ON jobs "
                                         "BEGIN SELECT RAISE(ABORT, 'jobs locked by the test'); END")
                try:
                    yield
                finally:
                    for op in ("insert", "update"):
                        conn.exec_driver_sql(f"DROP TRIGGER test_jobs_locked_{op}")
                return
            else:
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql("LOCK TABLE jobs IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def test_worker_killed_while_a_job_runs_the_job_finishes_once(stack: StyxStack, temporal_env):
    client = stack.client()
    run = ('echo started >> ~/starts; for i in $(seq 1 40); do echo line-$i; sleep 0.05; done')
    submitted = client.launch({"num_nodes": 2, "resources": {"cpus": 1}, "run": run}, cluster="crash-run")
    job_dirs = [node_job_dir(stack, "crash-run", submitted.job_id, rank) for rank in (0, 1)]
    wait_for(lambda: client.job("crash-run", submitted.job_id).status == "RUNNING"
             and all((d / "run.pid").exists() for d in job_dirs)
             and "line-5" in client.logs("crash-run", submitted.job_id), 60,
             "the job to run on both nodes and its first lines to be copied")
    stack.kill_worker()
    # The window: the job was running on both nodes, its run activities (half-way through
    # copying its log) in the dead worker.
    # (The job runs in its cluster's workflow.)
    assert pending_activities(temporal_env, cluster_workflow_id("crash-run")) == ["run_phase"] * 2
    assert not any((d / "run.exit").exists() for d in job_dirs), "the job ended before the worker died"
    wait_for(lambda: all("line-10" in (d / "run.log").read_text() for d in job_dirs), 60,
             "the job to go on on the nodes while no worker exists")
    stack.start_worker()
    job = client.wait("crash-run", submitted.job_id, timeout=120)
    assert job.status == "SUCCEEDED" and job.exit_codes == [0, 0]
    log = client.logs("crash-run", submitted.job_id)
    for rank in (0, 1):
        lines = [line for line in log.splitlines() if line.startswith(f"(rank={rank}) ")]
        assert lines == [f"(rank={rank}) line-{i}" for i in range(1, 41)], "output lost or duplicated"
        assert (node_home(stack, "crash-run", rank) / "starts").read_text() == "started\n", "job ran twice"
    assert live_nodes(stack, "crash-run") == 2
    client.down("crash-run")
    assert live_nodes(stack, "crash-run") == 0


def test_worker_killed_while_a_cluster_provisions_leaves_exactly_its_nodes(stack: StyxStack, temporal_env):
    client = stack.client()
    submitted = client.launch({"num_nodes": 3, "resources": {"cpus": 1}, "run": "echo provisioned"},
                              cluster="crash-launch")
    nodes = stack.nodes_root / "crash-launch"
    wait_for(lambda: any(nodes.glob("node-*/server.log")), 60, "node servers to start", interval=0.005)
    stack.kill_worker()
    # The window: the provision activity was under way in the dead worker.
    assert pending_activities(temporal_env, cluster_workflow_id("crash-launch")) == ["provision"]
    assert client.cluster("crash-launch").status == "INIT"
    stack.start_worker()
    job = client.wait("crash-launch", submitted.job_id, timeout=120)
    assert job.status == "SUCCEEDED"
    assert client.cluster("crash-launch").status == "UP"
    assert live_nodes(stack, "crash-launch") == 3
    assert len(list((stack.nodes_root / "crash-launch").glob("node-*"))) == 3
    assert client.logs("crash-launch", submitted.job_id).count("provisioned") == 3
    client.down("crash-launch")


def test_worker_killed_while_jobs_are_submitted_runs_each_once(stack: StyxStack, temporal_env):
    client = stack.client()
    cluster = "crash-submit"
    first = client.launch({"resources": {"cpus": 4}, "run": "true"}, cluster=cluster)
    client.wait(cluster, first.job_id, timeout=60)
    results: dict[int, int] = {}

    def submit(i: int) -> None:
        results[i] = client.exec(cluster, {"run": f"echo run-{i} >> ~/runs"}).job_id

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    # With job rows unwritable, a submission the worker takes gets its id but cannot answer.
    with jobs_table_write_locked(stack.settings.db_url):
        for th in threads:
            th.start()
        wait_for(lambda: worker_holds_a_workflow_task(temporal_env, cluster_workflow_id(cluster)), 60,
                 "the worker to take the submissions")
        stack.kill_worker()
        # The window: the worker died holding submissions, none of them answered.
        assert results == {}
    stack.start_worker()
    for th in threads:
        th.join(timeout=120)
    job_ids = sorted(results.values())
    assert job_ids == [2, 3, 4], f"submissions lost or duplicated: {results}"
    for job_id in job_ids:
        assert client.wait(cluster, job_id, timeout=120).status == "SUCCEEDED"
    runs = sorted((node_home(stack, cluster) / "runs").read_text().split())
    assert runs == ["run-0", "run-1", "run-2"]
    assert [j.job_id for j in client.queue(cluster)] == [4, 3, 2, 1]
    client.down(cluster)


def test_fifty_megabytes_of_output_arrive_whole_and_worker_memory_stays_flat(stack: StyxStack):
    client = stack.client()
    first = client.launch({"run": "true"}, cluster="bulk")
    client.wait("bulk", first.job_id, timeout=60)
    rss_before = _rss_peak_kb(stack.worker.pid)
    script = ("python3 -c \"import sys\nfor i in range(500000): sys.stdout.write('%099d\\n' % i)\"")
    submitted = client.exec("bulk", {"run": script})
    job = client.wait("bulk", submitted.job_id, timeout=300)
    assert job.status == "SUCCEEDED"
    size = 0
    expected = 0
    buffer = b""
    for chunk in client.stream_logs("bulk", submitted.job_id, follow=False):
        size += len(chunk)
        buffer += chunk
        lines = buffer.split(b"\n")
        buffer = lines.pop()
        for line in lines:
            assert line == b"%099d" % expected
            expected += 1
    assert size == 50_000_000 and expected == 500_000
    grown_mb = (_rss_peak_kb(stack.worker.pid) - rss_before) / 1024
    assert grown_mb < 64, f"worker peak memory grew by {grown_mb:.0f} MB copying 50 MB of log"
    client.down("bulk")


def _rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_continue_as_new_with_a_job_running_and_jobs_waiting_loses_nothing(eager_temporal, tmp_path):
    address = eager_temporal.client.service_client.config.target_host
    stack = StyxStack(tmp_path / "home", address).start()
    try:
        client = stack.client()
        gate = stack.shared_dir / "gate"
        first = client.launch({"resources": {"cpus": 1}, "run": f"while [ ! -e {gate} ]; do sleep 0.05; done; echo job-1"},
                              cluster="can")
        wait_for(lambda: client.job("can", first.job_id).status == "RUNNING", 60, "the first job to run")
        waiting = [client.exec("can", {"resources": {"cpus": 1}, "run": f"echo job-{i}"}).job_id for i in range(2, 12)]
        first_run = describe(eager_temporal, cluster_workflow_id("can")).run_id
        gate.touch()
        for job_id in [first.job_id, *waiting]:
            assert client.wait("can", job_id, timeout=120).status == "SUCCEEDED"
        assert describe(eager_temporal, cluster_workflow_id("can")).run_id != first_run, \
            "the cluster workflow never continued as new"
        for job_id in [first.job_id, *waiting]:
            assert client.logs("can", job_id).strip() == f"job-{job_id}"
        assert [j.status for j in client.queue("can")] == ["SUCCEEDED"] * 11
        assert client.exec("can", {"run": "echo after"}).job_id == 12  # ids continue across runs
        client.wait("can", 12, timeout=60)
        client.down("can")
    finally:
        stack.stop()
