"""Job latency and throughput on a warm local cluster, against a floor measured in the same run.

    .venv/bin/python bench/exec_latency.py [--jobs 30] [--burst 500]

Latency: ``submit -> job SUCCEEDED`` for a job running ``true``, through the SDK (REST API,
a worker process, real SSH to a local node), p50/p95. Floor: a bare Temporal workflow with one
no-op activity, plus one SSH exec on an open connection, on the same dev server and machine.
Throughput: ``--burst`` such jobs submitted at once on a 4-CPU cluster, against the floor's
throughput (the same number of bare workflows started at once). Prints ratios; the machines are
shared and noisy, so only ratios against a floor measured in the same run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.common import dev_stack  # noqa: E402
from styx.providers.local.provider import LocalProvider  # noqa: E402
from styx.activities.ping import ping  # noqa: E402
from styx.sdk.client import Client  # noqa: E402
from styx.ssh import SshPool, ensure_client_key, public_key_line, run  # noqa: E402
from styx.contracts.system import PingWorkflowInput  # noqa: E402
from styx.workflows.ping import PingWorkflow  # noqa: E402
from tests.fixtures.stack import StyxStack  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def floor_workflow(env: WorkflowEnvironment, n: int, burst: int) -> tuple[list[float], float]:
    queue = f"floor-{uuid.uuid4().hex[:6]}"
    async with Worker(env.client, task_queue=queue, workflows=[PingWorkflow], activities=[ping]):
        latencies = []
        for _ in range(n):
            t0 = time.perf_counter()
            await env.client.execute_workflow(PingWorkflow.run, PingWorkflowInput("x"), id=f"floor/{uuid.uuid4()}",
                                              task_queue=queue)
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(
            env.client.execute_workflow(PingWorkflow.run, PingWorkflowInput("x"), id=f"floor/{uuid.uuid4()}",
                                        task_queue=queue)
            for _ in range(burst)))
        throughput = burst / (time.perf_counter() - t0)
    return latencies, throughput


async def floor_ssh(home: Path, n: int) -> list[float]:
    key = ensure_client_key(home / "bench_key")
    provider = LocalProvider(home / "floor-nodes", public_key_line(key))
    nodes = (await provider.provision("floor", 1, {})).endpoints()
    pool = SshPool(key)
    try:
        conn = await pool.get(nodes[0])
        latencies = []
        for _ in range(n):
            t0 = time.perf_counter()
            await run(conn, "true")
            latencies.append(time.perf_counter() - t0)
        return latencies
    finally:
        await pool.close()
        await provider.terminate("floor", None)


def wait_done(client: Client, cluster: str, job_id: int) -> str:
    while True:
        job = client.job(cluster, job_id)
        if job.finished:
            return job.status
        time.sleep(0.005)


def styx_latency(client: Client, n: int) -> list[float]:
    client.wait("lat", client.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="lat").job_id, timeout=120)
    latencies = []
    for _ in range(n):
        t0 = time.perf_counter()
        job_id = client.exec("lat", {"run": "true"}).job_id
        assert wait_done(client, "lat", job_id) == "SUCCEEDED"
        latencies.append(time.perf_counter() - t0)
    client.down("lat")
    return latencies


def styx_throughput(stack: StyxStack, burst: int) -> float:
    client = stack.client()
    client.wait("burst", client.launch({"resources": {"cpus": 4}, "run": "true"}, cluster="burst").job_id, timeout=120)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(lambda _: stack.client().exec("burst", {"run": "true"}).job_id, range(burst)))
    statuses = [wait_done(client, "burst", job_id) for job_id in ids]
    elapsed = time.perf_counter() - t0
    assert statuses.count("SUCCEEDED") == burst, statuses
    client.down("burst")
    return burst / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=30, help="sequential jobs for latency")
    parser.add_argument("--burst", type=int, default=500, help="jobs submitted at once for throughput")
    args = parser.parse_args()
    async with dev_stack() as (env, home, stack):
        wf_lat, wf_tput = await floor_workflow(env, args.jobs, args.burst)
        ssh_lat = await floor_ssh(home, args.jobs)
        lat = await asyncio.to_thread(styx_latency, stack.client(), args.jobs)
        tput = await asyncio.to_thread(styx_throughput, stack, args.burst)
    floor = statistics.median(wf_lat) + statistics.median(ssh_lat)
    print(f"floor: workflow+activity p50 {statistics.median(wf_lat)*1000:.0f} ms, "
          f"ssh exec p50 {statistics.median(ssh_lat)*1000:.1f} ms -> {floor*1000:.0f} ms")
    print(f"styx:  submit->SUCCEEDED p50 {statistics.median(lat)*1000:.0f} ms, p95 {pct(lat, 0.95)*1000:.0f} ms")
    print(f"latency ratio (p50 / floor): {statistics.median(lat) / floor:.2f}   (target <= 2)")
    print(f"throughput: styx {tput:.1f} jobs/s, floor {wf_tput:.1f} workflows/s, ratio {tput / wf_tput:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
