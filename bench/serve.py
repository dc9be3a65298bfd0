"""The services' load balancer: overhead per request and failover time, against floors measured
in the same run.

    .venv/bin/python bench/serve.py [--requests 500]

A service of two replicas (local nodes running a small HTTP server) behind `styx lb`:

- **Overhead**: p50/p95 of a GET through the load balancer's endpoint (one keep-alive client,
  one request at a time), against the same GET sent straight to a replica (the floor).
- **Throughput**: requests per second with 8 concurrent clients, through the load balancer
  and straight to one replica.
- **Failover**: a replica's node is killed (its server and everything on it) under load; the
  time until the workflow has a replacement READY, and how many requests failed meanwhile
  (the load balancer retries another replica), against the floor of launching one replica
  from nothing (``serve up`` to READY).

Prints ratios: the machines are shared and noisy, so only ratios against a floor measured in
the same run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from styx.config import find_temporal_binary  # noqa: E402
from styx.contracts.search import SEARCH_ATTRIBUTE_KEYS  # noqa: E402
from tests.fixtures.stack import wait_for  # noqa: E402
from tests.fixtures.temporal import free_port  # noqa: E402
from tests.serve_fixtures import Load, ServeStack, kill_node, service_task  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(trust_env=False, timeout=30) as http:
        for _ in range(20):  # warm the connections
            http.get(url).raise_for_status()
        for _ in range(n):
            t0 = time.perf_counter()
            http.get(url).raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


def throughput(url: str, n: int, clients: int = 8) -> float:
    def worker(count: int) -> None:
        with httpx.Client(trust_env=False, timeout=30) as http:
            for _ in range(count):
                http.get(url).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [n // clients] * clients))
    return (n // clients * clients) / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="styx-bench-serve-"))
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=find_temporal_binary(),
                                                search_attributes=SEARCH_ATTRIBUTE_KEYS, ip="127.0.0.1",
                                                port=free_port())
    stack = ServeStack(home / "home", env.client.service_client.config.target_host).start()
    try:
        port = free_port()
        with stack.client() as client:
            t0 = time.perf_counter()
            client.serve_up(service_task(port), "bench")
            info = client.serve_wait("bench", ready=2, timeout=300)
            up_seconds = time.perf_counter() - t0
            lb_url = info.endpoint + "/"
            direct_url = info.replicas[0].endpoint + "/"

            direct = latencies(direct_url, args.requests)
            through = latencies(lb_url, args.requests)
            direct_rps = throughput(direct_url, args.requests)
            lb_rps = throughput(lb_url, args.requests)

            with Load(lb_url, threads=4) as load:
                wait_for(lambda: load.count() > 50, 30, "load")
                killed = time.perf_counter()
                victim = info.replicas[0]
                kill_node(stack.nodes_root, victim.cluster)
                wait_for(lambda: sum(r.status == "READY" and r.replica_id != victim.replica_id
                                     for r in client.service("bench").replicas) >= 2, 300, "a replacement")
                failover = time.perf_counter() - killed
            failed = len(load.failures())
            total = load.count()
            client.serve_down("bench", wait=True, timeout=300)
    finally:
        stack.stop()
        await env.shutdown()

    p50d, p95d, p50l, p95l = (pct(direct, .5), pct(direct, .95), pct(through, .5), pct(through, .95))
    print(f"{'what':<44} {'styx':>12} {'floor':>12} {'ratio':>7}")
    print(f"{'GET p50 through the LB vs direct (ms)':<44} {p50l * 1000:>12.2f} {p50d * 1000:>12.2f} "
          f"{p50l / p50d:>7.2f}")
    print(f"{'GET p95 through the LB vs direct (ms)':<44} {p95l * 1000:>12.2f} {p95d * 1000:>12.2f} "
          f"{p95l / p95d:>7.2f}")
    print(f"{'LB overhead per request, p50 (ms)':<44} {(p50l - p50d) * 1000:>12.2f}")
    print(f"{'throughput, 8 clients (req/s)':<44} {lb_rps:>12.0f} {direct_rps:>12.0f} {lb_rps / direct_rps:>7.2f}")
    print(f"{'failover: node lost -> replacement READY (s)':<44} {failover:>12.1f} {up_seconds:>12.1f} "
          f"{failover / up_seconds:>7.2f}   (floor: serve up -> 2 READY)")
    print(f"{'requests failed during failover':<44} {failed:>12d} {'of ' + str(total):>12}")
    print(f"(mean direct {statistics.mean(direct) * 1000:.2f} ms over {len(direct)} requests)")


if __name__ == "__main__":
    asyncio.run(main())
