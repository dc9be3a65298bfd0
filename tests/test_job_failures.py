"""Jobs fail as a SkyPilot user expects, end to end: a real Temporal dev server, a real worker
and API, real SSH to local nodes, driven through the CLI and the SDK.

- One rank failing fails the whole job within seconds (FAILED, or FAILED_SETUP in setup), and
  no process of the job is left on the other ranks.
- A node whose server dies under a running job fails the job within the bound
  (``STYX_NODE_LOST_SECONDS``, 6 s here) naming the node; the cluster shows the node DOWN
  (``styx status``, and ``--refresh`` agrees), and the next job runs on the healthy node.
- The job's Temporal workflow closes FAILED when the job failed, CANCELED when cancelled.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from styx.contracts.clusters import ClusterDescription, cluster_workflow_id
from styx.providers.local.provider import LocalProvider
from tests.fixtures.processes import pid_alive
from tests.fixtures.stack import StyxStack, wait_for

pytestmark = pytest.mark.slow

#: How long a node may stay unreachable in these tests (the default is 30 s).
NODE_LOST_SECONDS = 6


@pytest.fixture(scope="module")
def stack(temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StyxStack]:
    address = temporal_env.client.service_client.config.target_host
    # COLUMNS: the CLI's tables are as wide as a terminal would be, not cut at 80 columns.
    s = StyxStack(tmp_path_factory.mktemp("styx-home"), address,
                  extra_env={"STYX_NODE_LOST_SECONDS": str(NODE_LOST_SECONDS), "COLUMNS": "250"})
    try:
        yield s.start()
    finally:
        s.stop()


def job_processes(cluster: str, job_id: int) -> list[int]:
    """Live processes of the job on any node: they carry its cluster and job id in their env."""
    marks = {f"STYX_CLUSTER_NAME={cluster}".encode(), f"STYX_JOB_ID={job_id}".encode()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if marks <= env and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def running_in_temporal(temporal: WorkflowEnvironment, cluster: str) -> list[int]:
    """The jobs the cluster's workflow still runs (a job runs inside it: its activities)."""
    loop = asyncio.new_event_loop()
    try:
        handle = temporal.client.get_workflow_handle(cluster_workflow_id(cluster))
        return loop.run_until_complete(handle.query("describe", result_type=ClusterDescription)).running
    finally:
        loop.close()


def wait_job_ended_in_temporal(temporal: WorkflowEnvironment, cluster: str, job_id: int) -> None:
    """Wait for the cluster's workflow to be done with the job: the job's row turns terminal a
    moment before the workflow hears its end."""
    wait_for(lambda: job_id not in running_in_temporal(temporal, cluster), 15,
             f"job {job_id} to end in its cluster's workflow")


def job_id_of(output: str) -> int:
    return int(re.search(r"job (\d+) queued", output).group(1))


def test_a_failing_rank_fails_the_job_within_seconds_and_stops_the_others(stack: StyxStack, temporal_env):
    client = stack.client()
    gate = stack.shared_dir / "gate-trio"
    # Rank 1 fails once every rank runs; the others would run for five minutes.
    run = ("# rank 1 fails\n"
           'echo started\n'
           f'if [ "$STYX_NODE_RANK" = 1 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; exit 1; fi\n'
           'sleep 300 & wait')
    r = stack.cli("launch", "-y", "-d", "-c", "trio", "--num-nodes", "3", run, check=True)
    job = job_id_of(r.stdout)
    wait_for(lambda: client.logs("trio", job).count("started") == 3 and len(job_processes("trio", job)) >= 3,
             60, "the job to run on the three nodes")
    ips = [n.ip for n in client.cluster("trio").nodes]

    gate.touch()
    started = time.monotonic()
    wait_for(lambda: client.job("trio", job).finished, 15, "the job to end")
    failed = client.job("trio", job)
    assert failed.status == "FAILED", failed
    assert failed.message == f"rank 1 ({ips[1]}) exited 1"
    assert failed.exit_codes == [None, 1, None]  # the other ranks were stopped, not ended by themselves
    wait_for(lambda: not job_processes("trio", job), 15, "no process of the job left on any node")
    assert time.monotonic() - started < 20

    r = stack.cli("queue", "trio", check=True)
    assert re.search(rf"{job} .*FAILED: rank 1 \({re.escape(ips[1])}\) exited 1 .* -,1,-", r.stdout), r.stdout
    r = stack.cli("logs", "trio", str(job), "--status")
    assert r.returncode == 100 and f"rank 1 ({ips[1]}) exited 1" in r.stdout, r.stdout
    wait_job_ended_in_temporal(temporal_env, "trio", job)

    # Every rank failing at once is one failure too, and as quick.
    everyone = client.exec("trio", {"num_nodes": 3, "run": "exit 3"}).job_id
    ended = client.wait("trio", everyone, timeout=20)
    assert ended.status == "FAILED" and re.fullmatch(r"rank \d \(127\.[\d.]+\) exited 3", ended.message or "")
    assert 3 in (ended.exit_codes or [])

    # A failing setup on one rank: FAILED_SETUP, and the other ranks' setups are stopped.
    task = stack.home / "setup-fails.yaml"
    task.write_text(json.dumps({
        "num_nodes": 3,
        "setup": 'if [ "$STYX_NODE_RANK" = 2 ]; then sleep 0.5; exit 7; fi; sleep 300',
        "run": "echo never-runs",
    }))
    r = stack.cli("launch", "-c", "trio", str(task))  # a launch runs setup (an exec does not)
    assert r.returncode == 100, r.stdout + r.stderr
    assert f"FAILED_SETUP (exit codes -,-,7) — setup on rank 2 ({ips[2]}) exited 7" in r.stdout, r.stdout
    setup_job = job_id_of(r.stdout)
    assert "never-runs" not in client.logs("trio", setup_job)
    wait_for(lambda: not job_processes("trio", setup_job), 15, "the other ranks' setups to be killed")
    wait_job_ended_in_temporal(temporal_env, "trio", setup_job)

    # A cancelled job's workflow is CANCELED in Temporal, not failed.
    long = client.exec("trio", {"run": "sleep 300"}).job_id
    wait_for(lambda: client.job("trio", long).status == "RUNNING", 30, "the long job to run")
    stack.cli("cancel", "trio", str(long), check=True)
    assert client.wait("trio", long, timeout=30).status == "CANCELLED"
    wait_job_ended_in_temporal(temporal_env, "trio", long)
    stack.cli("down", "-y", "trio", check=True)


def test_a_dead_node_fails_its_job_in_bounded_time_and_gets_no_more_jobs(stack: StyxStack, temporal_env):
    client = stack.client()
    r = stack.cli("launch", "-y", "-d", "-c", "pair", "--num-nodes", "2", "--cpus", "1",
                  "echo on $STYX_NODE_IPS; sleep 60", check=True)
    job = job_id_of(r.stdout)
    wait_for(lambda: "on " in client.logs("pair", job), 60, "the job to run")
    nodes = client.cluster("pair").nodes
    on = client.logs("pair", job).split("on ", 1)[1].split()[0]
    victim = next(n for n in nodes if n.ip == on)
    healthy = next(n for n in nodes if n.ip != on)

    described = asyncio.run(LocalProvider(stack.nodes_root, "").describe_nodes("pair", None))
    os.kill(described[victim.rank]["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: client.job("pair", job).finished, NODE_LOST_SECONDS + 30, "the job on the dead node to end")
    took = time.monotonic() - killed_at
    failed = client.job("pair", job)
    assert failed.status == "FAILED", failed
    assert failed.message.startswith(f"rank 0 ({victim.ip}) lost: node unreachable for "), failed.message
    assert NODE_LOST_SECONDS <= took < NODE_LOST_SECONDS + 30, took
    wait_job_ended_in_temporal(temporal_env, "pair", job)

    # The cluster says so: the node is DOWN, in the nodes, the NODES column and the message.
    info = client.cluster("pair")
    assert [n.status for n in sorted(info.nodes, key=lambda n: n.rank)] == \
        ["DOWN" if n.rank == victim.rank else "UP" for n in sorted(nodes, key=lambda n: n.rank)]
    assert f"node {victim.rank} ({victim.ip}) is DOWN" in (info.status_message or ""), info.status_message
    r = stack.cli("status", check=True)
    assert re.search(rf"pair .* 2 \(1 DOWN\) .*UP: node {victim.rank} \({re.escape(victim.ip)}\) is DOWN",
                     r.stdout), r.stdout
    r = stack.cli("status", "--refresh", check=True)  # a fresh look finds it dead too
    assert f"node {victim.rank} ({victim.ip}) is DOWN" in r.stdout and "2 (1 DOWN)" in r.stdout, r.stdout
    assert [n.status for n in client.cluster("pair", refresh=True).nodes if n.rank == victim.rank] == ["DOWN"]

    # The next job runs on the healthy node, never on the dead one.
    after = client.exec("pair", {"resources": {"cpus": 1}, "run": "echo on $STYX_NODE_IPS"}).job_id
    assert client.wait("pair", after, timeout=60).status == "SUCCEEDED"
    assert client.logs("pair", after).strip().endswith(f"on {healthy.ip}")
    # A job that needs both nodes waits: there is one healthy node.
    both = client.exec("pair", {"num_nodes": 2, "run": "echo both"}).job_id
    time.sleep(2)  # it must keep waiting while the node stays DOWN
    assert client.job("pair", both).status == "PENDING"
    stack.cli("cancel", "pair", str(both), check=True)
    stack.cli("down", "-y", "pair", check=True)
    assert not job_processes("pair", job), "down left the dead node's job running"


@pytest.mark.parametrize("value", ["0", "3601", "soon"])
def test_a_node_lost_bound_out_of_range_is_refused_naming_the_setting(stack: StyxStack, value: str):
    env = {**stack.env, "STYX_NODE_LOST_SECONDS": value}
    r = subprocess.run([sys.executable, "-m", "styx", "worker"], env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"STYX_NODE_LOST_SECONDS must be a whole number of seconds from 1 to 3600, got {value!r}" in r.stderr
