"""Job throughput end to end, against bare one-activity workflows in the same run.

    .venv/bin/python bench/throughput.py [--burst 500] [--cpus 4]

Styx: ``--burst`` jobs running ``true`` submitted at once (32 at a time, through the SDK: REST
API, a worker process, real SSH to a local node) onto a warm ``--cpus``-CPU local cluster, from
the first submission to the last job SUCCEEDED. Floor: as many bare Temporal workflows, each
running one no-op activity, started at once on the same dev server and machine. Prints both
rates and their ratio (target >= 0.5); the machines are shared and noisy, so only the ratio
against a floor measured in the same run means anything.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.common import dev_stack  # noqa: E402
from styx.activities.ping import ping  # noqa: E402
from styx.contracts.system import PingWorkflowInput  # noqa: E402
from styx.sdk.client import Client  # noqa: E402
from styx.workflows.ping import PingWorkflow  # noqa: E402
from tests.fixtures.stack import StyxStack  # noqa: E402


async def floor(env: WorkflowEnvironment, burst: int) -> float:
    """Bare one-activity workflows per second, ``burst`` started at once."""
    queue = f"floor-{uuid.uuid4().hex[:6]}"
    async with Worker(env.client, task_queue=queue, workflows=[PingWorkflow], activities=[ping]):
        await env.client.execute_workflow(PingWorkflow.run, PingWorkflowInput("warm"), id=f"floor/{uuid.uuid4()}",
                                          task_queue=queue)
        t0 = time.perf_counter()
        await asyncio.gather(*(
            env.client.execute_workflow(PingWorkflow.run, PingWorkflowInput("x"), id=f"floor/{uuid.uuid4()}",
                                        task_queue=queue)
            for _ in range(burst)))
        return burst / (time.perf_counter() - t0)


def wait_all(client: Client, cluster: str, n_last: int) -> list[str]:
    """Every job's status once none is left waiting or running. Jobs start in submission
    order, so the last one is watched first (one row a poll), then the whole listing: listing
    all the jobs every 50 ms cost the API about a third of a core, which the floor never pays."""
    while not client.job(cluster, n_last).finished:
        time.sleep(0.05)
    while True:
        jobs = client.queue(cluster)
        if len(jobs) >= n_last and all(j.finished for j in jobs):
            return [j.status for j in jobs]
        time.sleep(0.05)


def styx(stack: StyxStack, burst: int, cpus: int) -> float:
    client = stack.client()
    client.wait("tput", client.launch({"resources": {"cpus": cpus}, "run": "true"}, cluster="tput").job_id,
                timeout=120)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(lambda _: stack.client().exec("tput", {"run": "true"}).job_id, range(burst)))
    statuses = wait_all(client, "tput", burst + 1)
    elapsed = time.perf_counter() - t0
    assert sorted(ids) == list(range(2, burst + 2)), "a submission was lost or doubled"
    assert statuses.count("SUCCEEDED") == burst + 1, statuses
    client.down("tput")
    return burst / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=500, help="jobs (and floor workflows) at once")
    parser.add_argument("--cpus", type=int, default=4, help="CPUs of the cluster (jobs take 0.5 each)")
    args = parser.parse_args()
    async with dev_stack() as (env, home, stack):
        floor_rate = await floor(env, args.burst)
        rate = await asyncio.to_thread(styx, stack, args.burst, args.cpus)
    print(f"throughput: styx {rate:.1f} jobs/s ({args.burst} jobs of `true`, {args.cpus}-CPU local cluster), "
          f"floor {floor_rate:.1f} one-activity workflows/s; ratio {rate / floor_rate:.2f}   (target >= 0.5)",
          flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` stops it: clean up the stack
    asyncio.run(main())
