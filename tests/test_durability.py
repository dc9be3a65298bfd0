"""Durability is the product: kill -9 the worker mid-flight and nothing is lost, run twice or
leaked. Real Temporal dev server, real worker processes, real SSH to local nodes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from styx.config import find_temporal_binary
from styx.contracts.search import SEARCH_ATTRIBUTE_KEYS
from tests.fixtures.stack import StyxStack, wait_for
from tests.fixtures.temporal import free_port

pytestmark = pytest.mark.slow


def live_nodes(stack: StyxStack, cluster: str) -> int:
    count = 0
    for ready in (stack.nodes_root / cluster).glob("node-*/ready.json"):
        if Path(f"/proc/{json.loads(ready.read_text())['pid']}").exists():
            count += 1
    return count


def node_home(stack: StyxStack, cluster: str, rank: int = 0) -> Path:
    return stack.nodes_root / cluster / f"node-{rank}" / "home"


def test_worker_killed_while_a_job_runs_the_job_finishes_once(stack: StyxStack):
    client = stack.client()
    run = ('echo started >> ~/starts; for i in $(seq 1 40); do echo line-$i; sleep 0.05; done')
    submitted = client.launch({"num_nodes": 2, "resources": {"cpus": 1}, "run": run}, cluster="crash-run")
    wait_for(lambda: "line-5" in client.logs("crash-run", submitted.job_id), 60, "the job's first lines")
    stack.kill_worker()
    time.sleep(0.5)  # the job goes on on the nodes while no worker exists
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


def test_worker_killed_while_a_cluster_provisions_leaves_exactly_its_nodes(stack: StyxStack):
    client = stack.client()
    submitted = client.launch({"num_nodes": 3, "resources": {"cpus": 1}, "run": "echo provisioned"},
                              cluster="crash-launch")
    time.sleep(0.3)  # provisioning is under way: node servers are starting
    stack.kill_worker()
    stack.start_worker()
    job = client.wait("crash-launch", submitted.job_id, timeout=120)
    assert job.status == "SUCCEEDED"
    assert client.cluster("crash-launch").status == "UP"
    assert live_nodes(stack, "crash-launch") == 3
    assert len(list((stack.nodes_root / "crash-launch").glob("node-*"))) == 3
    assert client.logs("crash-launch", submitted.job_id).count("provisioned") == 3
    client.down("crash-launch")


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1])
def test_worker_killed_while_jobs_are_submitted_runs_each_once(stack: StyxStack, delay: float):
    client = stack.client()
    cluster = f"crash-submit-{int(delay * 1000)}"
    first = client.launch({"resources": {"cpus": 4}, "run": "true"}, cluster=cluster)
    client.wait(cluster, first.job_id, timeout=60)
    results: dict[int, object] = {}

    def submit(i: int) -> None:
        results[i] = client.exec(cluster, {"run": f"echo run-{i} >> ~/runs"}).job_id

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    time.sleep(delay)
    stack.kill_worker()
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


@pytest.fixture(scope="module")
def eager_temporal():
    """A dev server that suggests continue-as-new after 40 history events."""
    import asyncio

    loop = asyncio.new_event_loop()
    env = loop.run_until_complete(WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_binary(), search_attributes=SEARCH_ATTRIBUTE_KEYS,
        port=free_port(),
        dev_server_extra_args=["--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=40"],
    ))
    yield env
    loop.run_until_complete(env.shutdown())
    loop.close()


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
        run_ids = set()

        async def describe():
            return await eager_temporal.client.get_workflow_handle("cluster/can").describe()

        import asyncio

        loop = asyncio.new_event_loop()
        try:
            run_ids.add(loop.run_until_complete(describe()).run_id)
            gate.touch()
            for job_id in [first.job_id, *waiting]:
                assert client.wait("can", job_id, timeout=120).status == "SUCCEEDED"
            run_ids.add(loop.run_until_complete(describe()).run_id)
        finally:
            loop.close()
        assert len(run_ids) == 2, "the cluster workflow never continued as new"
        for job_id in [first.job_id, *waiting]:
            assert client.logs("can", job_id).strip() == f"job-{job_id}"
        assert [j.status for j in client.queue("can")] == ["SUCCEEDED"] * 11
        assert client.exec("can", {"run": "echo after"}).job_id == 12  # ids continue across runs
        client.wait("can", 12, timeout=60)
        client.down("can")
    finally:
        stack.stop()
