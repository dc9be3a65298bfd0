"""Managed jobs at scale: many at once, one worker process, against a floor measured in the
same run and SkyPilot's published controller figures.

    .venv/bin/python bench/managed_jobs.py [--jobs 2000] [--slots 16] [--floor-jobs 32]

``--jobs`` managed jobs of a trivial task (``true``) are submitted at once through the SDK
(REST API, one worker process, real local nodes over SSH: each job launches a one-node local
cluster, runs, and takes it down). ``STYX_MANAGED_MAX_ACTIVE=--slots`` of them hold a cluster
at a time; the others wait, PENDING, in their workflows. Printed: that all completed, the
rate, the worker's peak RSS (``VmHWM``), and the ratio to the floor: the same trivial task
run by hand — ``launch`` a fresh cluster, wait, ``down`` — with ``--slots`` at a time, on the
same stack. Then what one worker process held, next to SkyPilot's published 600 running /
24 launching managed jobs on a 16 GiB controller VM. Also printed: the clusters and node
processes the jobs left (none expected). ``--stall``: give up (and clean up) when no job has
ended for that long.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from bench.common import dev_stack  # noqa: E402
from styx.db import Database, ManagedJob  # noqa: E402
from styx.providers.local import procs  # noqa: E402
from styx.providers.local.provider import LocalProvider  # noqa: E402
from tests.fixtures.stack import StyxStack  # noqa: E402

TASK = {"resources": {"cpus": 0.5}, "run": "true"}
#: SkyPilot's published controller figures (its managed jobs docs): a 16 GiB controller VM
#: runs about 600 jobs at once, launching 24 at a time.
SKYPILOT_RUNNING, SKYPILOT_LAUNCHING, SKYPILOT_CONTROLLER_GIB = 600, 24, 16


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def floor(stack: StyxStack, jobs: int, slots: int) -> float:
    """Jobs/s of the trivial task run by hand, each on a fresh cluster: launch, wait, down."""
    def one(i: int) -> None:
        client = stack.client()
        job = client.launch(TASK, cluster=f"floor-{i}")
        assert client.wait(f"floor-{i}", job.job_id, timeout=300).status == "SUCCEEDED"
        client.down(f"floor-{i}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(one, range(jobs)))
    return jobs / (time.perf_counter() - t0)


def node_processes(stack: StyxStack) -> int:
    """Local node servers still running under the stack's nodes directory."""
    root = str(stack.nodes_root)
    return sum(1 for pid, argv in procs.scan_cmdlines()
               if "styx.providers.local.nodeserver" in argv and (procs.arg_after(argv, "--home") or "").startswith(root)
               and procs.alive(pid))


class Stalled(RuntimeError):
    """No managed job ended for ``--stall`` seconds."""


def managed(stack: StyxStack, jobs: int, stall: float) -> tuple[float, dict[str, int], int, int]:
    """Submit ``jobs`` managed jobs at once; wait for all to end. Returns the rate, the count
    by status, the most jobs in flight at once, and the worker's peak RSS (KB) sampled.
    ``Stalled`` if no job ends for ``stall`` seconds."""
    db = Database(stack.settings.db_url)
    table = ManagedJob.__table__  # type: ignore[attr-defined]
    worker = stack.worker
    assert worker is not None
    peak = {"rss": 0, "inflight": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_kb(worker.pid, "VmRSS"))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda i: stack.client().jobs.launch(TASK, name=f"bench-{i}").managed_id, range(jobs)))
    submitted = time.perf_counter() - t0
    print(f"submitted {len(ids)} managed jobs in {submitted:.1f}s ({len(ids) / submitted:.0f}/s)", flush=True)
    terminal = ("SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_NO_RESOURCE", "CANCELLED")
    last = 0.0
    progress, progress_at = -1, time.perf_counter()
    while True:
        with db.engine.connect() as conn:
            counts = dict(conn.execute(sa.select(table.c.status, sa.func.count()).group_by(table.c.status)).all())
        done = sum(n for s, n in counts.items() if s in terminal)
        peak["inflight"] = max(peak["inflight"], jobs - done)
        if done >= jobs:
            break
        if done != progress:
            progress, progress_at = done, time.perf_counter()
        elif time.perf_counter() - progress_at > stall:
            stop.set()
            raise Stalled(f"no managed job ended for {stall:.0f} s: {counts}")
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            print(f"  {time.perf_counter() - t0:.0f}s: {counts}", flush=True)
        time.sleep(1)
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()
    peak["rss"] = max(peak["rss"], rss_kb(worker.pid, "VmHWM"))
    return jobs / elapsed, counts, peak["inflight"], peak["rss"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="managed jobs submitted at once")
    parser.add_argument("--slots", type=int, default=16, help="STYX_MANAGED_MAX_ACTIVE: clusters at once")
    parser.add_argument("--floor-jobs", type=int, default=32, help="jobs run by hand for the floor")
    parser.add_argument("--stall", type=float, default=600, help="give up when no job ends for this many seconds")
    args = parser.parse_args()
    slots = {"STYX_MANAGED_MAX_ACTIVE": str(args.slots)}
    async with dev_stack(prefix="styx-bench-managed-", extra_env=slots) as (env, home, stack):
        floor_rate = await asyncio.to_thread(floor, stack, args.floor_jobs, args.slots)
        print(f"floor: {args.floor_jobs} jobs by hand (launch, wait, down), {args.slots} at a time: "
              f"{floor_rate:.2f} jobs/s", flush=True)
        rate, counts, inflight, peak_kb = await asyncio.to_thread(managed, stack, args.jobs, args.stall)
        # What a managed job leaves behind, before the stack's cleanup would hide it.
        left = [c for c in LocalProvider(stack.nodes_root, "").list_clusters() if c.startswith("mj-")]
        nodes_left = node_processes(stack)
    peak_mb = peak_kb / 1024
    print(f"managed: {counts.get('SUCCEEDED', 0)}/{args.jobs} SUCCEEDED ({counts}), {rate:.2f} jobs/s, "
          f"clusters left: {len(left)}, node processes left: {nodes_left}")
    print(f"ratio managed / by hand: {rate / floor_rate:.2f}")
    print(f"one worker process: {inflight} managed jobs in flight at once (at most {args.slots} holding a cluster), "
          f"peak RSS {peak_mb:.0f} MB = {peak_mb / max(inflight, 1):.2f} MB per job in flight")
    per_job = SKYPILOT_CONTROLLER_GIB * 1024 / SKYPILOT_RUNNING
    print(f"SkyPilot (published): {SKYPILOT_RUNNING} running / {SKYPILOT_LAUNCHING} launching on a "
          f"{SKYPILOT_CONTROLLER_GIB} GiB controller VM = {per_job:.1f} MB per running job; "
          f"Styx's worker used {peak_mb / max(inflight, 1) / per_job:.3f}x that per job in flight")


if __name__ == "__main__":
    asyncio.run(main())
