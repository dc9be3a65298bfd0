"""A deep queue of large scripts on one local cluster, against the same cluster empty, in one run.

    .venv/bin/python bench/deep_queue.py [--jobs 10000] [--script-kb 64] [--sample 200] [--concurrency 4]

A 1-CPU local cluster runs a job that waits on a gate file while ``--jobs`` jobs, each with a
``--script-kb`` inline ``run`` script, are submitted through the SDK (``--concurrency`` at a
time). Then the
gate opens, the first job past the cluster workflow's window runs, and ``down`` takes the
cluster down with the rest still waiting.

Floors, in the same run on the same stack: the submission rate of the first ``--sample`` jobs
(the queue empty), and ``down`` of a cluster with nothing queued. Prints the submission rate of
the last ``--sample`` jobs (the queue at its deepest) against the first, and ``down``'s time
against the empty cluster's, plus the largest payload in the cluster workflow's history and how
many runs it continued through. On main this wedged at ~300 jobs of 10 KB (a 2.5 MB state).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from bench.common import dev_stack  # noqa: E402
from styx.contracts.clusters import cluster_workflow_id  # noqa: E402
from tests.fixtures.stack import StyxStack, wait_for  # noqa: E402
from tests.test_deep_queue import _largest_payload, big_script, gate_script, marks  # noqa: E402


def submit(stack: StyxStack, cluster: str, task: dict, n: int, concurrency: int) -> tuple[list[int], list[float]]:
    """Submit ``n`` copies of ``task``; the job ids and each submission's end time."""
    ends: list[float] = []

    def one(_: int) -> int:
        job_id = stack.client().exec(cluster, task).job_id
        ends.append(time.perf_counter())
        return job_id

    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(pool.map(one, range(n)))
    return ids, sorted(ends)


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def rate(ends: list[float]) -> float:
    return (len(ends) - 1) / (ends[-1] - ends[0])


async def runs_of(env: WorkflowEnvironment, workflow_id: str) -> int:
    runs = 0
    async for _ in env.client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        runs += 1
    return runs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs queued behind the gate")
    parser.add_argument("--script-kb", type=int, default=64, help="size of each job's run script")
    parser.add_argument("--sample", type=int, default=200, help="submissions timed at each end")
    parser.add_argument("--concurrency", type=int, default=4, help="submissions in flight at once")
    args = parser.parse_args()
    async with dev_stack() as (env, home, stack):
        progress(f"stack up in {home}")
        client = stack.client()
        # Floor: down of a cluster with nothing queued.
        client.wait("empty", client.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="empty").job_id,
                    timeout=120)
        t0 = time.perf_counter()
        client.down("empty")
        down_floor = time.perf_counter() - t0

        gate, marker = stack.shared_dir / "gate", marks(stack, "order")
        first = client.launch({"resources": {"cpus": 1}, "run": gate_script(gate)}, cluster="deep").job_id
        wait_for(lambda: client.job("deep", first).status == "RUNNING", 120, "the gate job to run")
        task = {"resources": {"cpus": 1}, "run": big_script(marker, args.script_kb * 1024)}
        progress(f"submitting {args.jobs} jobs of {args.script_kb} KB")
        t0 = time.perf_counter()
        ids, ends = submit(stack, "deep", task, args.jobs, args.concurrency)
        total = time.perf_counter() - t0
        assert sorted(ids) == list(range(2, args.jobs + 2)), "a submission was lost or doubled"
        first_rate, deep_rate = rate(ends[: args.sample]), rate(ends[-args.sample:])
        wid = cluster_workflow_id("deep")
        assert (await env.client.get_workflow_handle(wid).describe()).status.name == "RUNNING"
        largest = await _largest_payload(env, "deep")
        runs = await runs_of(env, wid)

        progress("queued; opening the gate")
        gate.touch()
        past = min(args.jobs + 1, 2 + 250)  # past the first window of 200
        t0 = time.perf_counter()
        ran = client.wait("deep", past, timeout=1200).status
        drain = time.perf_counter() - t0

        progress(f"job {past} {ran}; down")
        t0 = time.perf_counter()
        downed = client.down("deep").status
        down_deep = time.perf_counter() - t0
        left = [j.status for j in client.queue("deep") if j.status in ("PENDING", "RUNNING")]
    print(f"queued {args.jobs} jobs of {args.script_kb} KB scripts in {total:.0f} s "
          f"({args.jobs / total:.1f} submissions/s); cluster workflow: {runs} run(s), largest payload "
          f"{largest:,} bytes; job {past} (past the window) {ran} {drain:.1f} s after the gate opened")
    print(f"submissions/s: first {args.sample} {first_rate:.1f} (floor), last {args.sample} {deep_rate:.1f}; "
          f"ratio {deep_rate / first_rate:.2f}   (target >= 0.5: depth does not slow submissions)", flush=True)
    print(f"down: {down_deep:.2f} s with {args.jobs + 1 - past} queued -> {downed}, {len(left)} left waiting; "
          f"empty cluster {down_floor:.2f} s (floor); ratio {down_deep / down_floor:.2f}", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` stops it: clean up the stack
    asyncio.run(main())
