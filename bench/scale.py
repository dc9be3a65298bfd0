"""The read side at 1,000 clusters and 10,000 jobs, and a worker's memory per idle cluster
workflow, each against a floor measured in the same run.

    .venv/bin/python bench/scale.py [--clusters 1000] [--jobs 10000] [--requests 200] [--runs 30]
                                    [--workflows 100,1000] [--no-postgres] [--no-memory]

1. The listing. The database (SQLite; PostgreSQL too when one answers at 127.0.0.1:5432) is
   seeded with ``--clusters`` clusters (2 nodes each, owned by 100 users, each shared with one
   more) and ``--jobs`` jobs (three in ten running or waiting), then a real ``styx api``
   process answers ``GET /api/v1/clusters`` ``--requests`` times each way: as the admin (the
   default page, 100 clusters), as one user (their own and shared clusters), and as the admin
   asking for the largest page (``limit=1000``: every cluster, what ``styx status`` asks for):
   p50 / p99. Floor: the same API's ``GET /api/v1/users/me`` (authenticated, one row).
2. The CLI. ``styx status`` (the admin: every cluster, printed), ``styx queue`` and
   ``styx --help`` as fresh processes, ``--runs`` times each, wall time of the whole process:
   p50 / p99. Floors: ``python -c pass``, and a minimal typer command that makes the same kind
   of HTTP request with httpx (what any typer + httpx command costs here, before Styx).
3. Worker memory. A Temporal dev server (in memory) and a real ``styx worker`` process; then
   idle ClusterWorkflows are started until ``--workflows`` of them run (100, then 1,000), and
   the worker's RSS is read once it settles: (RSS - RSS before any) / workflows, and the
   growth ratio between the two sizes. Each workflow starts as a continued-as-new run would:
   UP, two nodes, autostop armed (60 min), nothing queued — against rows, without
   provisioning: a local cluster's nodes are a process each (~41 MB), which a thousand
   clusters would not fit on this machine, and no node process is part of a worker's memory.

Prints each figure with its floor and ratio; the machines are shared and noisy, so only the
ratios against a floor measured in the same run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from styx.config import find_temporal_binary  # noqa: E402
from styx.contracts.clusters import CLUSTER_WORKFLOW, ClusterInput, ClusterSpec, ClusterState  # noqa: E402
from styx.contracts.rest import DEFAULT_CLUSTER_PAGE, MAX_CLUSTER_PAGE  # noqa: E402
from styx.contracts.search import SEARCH_ATTRIBUTE_KEYS  # noqa: E402
from styx.db import Database, dispose_engine, migrate  # noqa: E402
from styx.temporal import connect  # noqa: E402
from tests.fixtures.seed import seed_clusters  # noqa: E402
from tests.fixtures.stack import StyxStack, wait_for  # noqa: E402

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:6.1f} ms  p99 {pct(values, 0.99) * 1000:6.1f} ms"


# --------------------------------------------------------------------------- the listing


def start_api(stack: StyxStack) -> None:
    stack.api = stack._spawn("api")

    def answers() -> bool:
        assert stack.api is not None and stack.api.poll() is None, (stack.home / "logs" / "api.log").read_text()[-3000:]
        try:
            return httpx.get(f"{stack.settings.api_url}/healthz", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_for(answers, 90, "the API to answer")


def timed_gets(http: httpx.Client, calls: dict[str, tuple[str, str, dict[str, str]]], n: int) -> dict[str, list[float]]:
    """``n`` timings of each call (name -> path, token, params), taken in turn: the machine's
    load moves, and each figure and its floor see the same moments."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(n + 5):  # the first five warm up: connections, caches, lazy imports
        for name, (path, token, params) in calls.items():
            t0 = time.perf_counter()
            resp = http.get(path, headers={"Authorization": f"Bearer {token}"}, params=params)
            elapsed = time.perf_counter() - t0
            resp.raise_for_status()
            if round_ >= 5:
                times[name].append(elapsed)
    return times


def user_token(db: Database, user: str) -> str:
    from styx import auth

    made = auth.new_token()
    db.users.add_token(user, made.token_id, made.salt, made.digest, description="bench")
    return made.token


def bench_route(stack: StyxStack, db: Database, requests: int, label: str) -> dict[str, list[float]]:
    user = "u7"
    token = user_token(db, user)
    full = str(MAX_CLUSTER_PAGE)
    with httpx.Client(base_url=stack.settings.api_url, timeout=60) as http:
        found = timed_gets(http, {
            "floor": ("/api/v1/users/me", stack.token, {}),
            "admin": ("/api/v1/clusters", stack.token, {}),
            "full": ("/api/v1/clusters", stack.token, {"limit": full}),
            "user": ("/api/v1/clusters", token, {}),
        }, requests)
        admin = {"Authorization": f"Bearer {stack.token}"}
        size = len(http.get("/api/v1/clusters", headers=admin, params={"limit": full}).content)
        seen = len(http.get("/api/v1/clusters", headers={"Authorization": f"Bearer {token}"}).json())
    floor = statistics.median(found["floor"])
    rows = [("floor: GET /api/v1/users/me", "floor", ""),
            (f"GET /api/v1/clusters, admin: default page ({DEFAULT_CLUSTER_PAGE})", "admin", "  (target p99 < 50 ms)"),
            (f"GET /api/v1/clusters, a user ({seen} seen)", "user", ""),
            (f"GET /api/v1/clusters?limit={full}, admin ({size // 1024} KB)", "full", "")]
    for name, key, note in rows:
        ratio = "" if key == "floor" else f"  p50 ratio {statistics.median(found[key]) / floor:.1f}"
        print(f"[{label}] {name:<56}{ms(found[key])}{ratio}{note}")
    return found


# --------------------------------------------------------------------------- the CLI

MINIMAL_CLI = """
import sys
sys.modules.setdefault("httpx._main", None)
import typer
app = typer.Typer()

@app.command()
def get(path: str = typer.Argument(...), verbose: bool = typer.Option(False, "-v")) -> None:
    import os
    import httpx
    with httpx.Client(base_url=os.environ["STYX_API_URL"], transport=httpx.HTTPTransport(verify=False)) as http:
        resp = http.get(path, headers={"Authorization": "Bearer " + os.environ["STYX_TOKEN"]})
        print(len(resp.json()))

@app.command()
def other() -> None:
    pass

app()
"""


def timed_runs(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """``runs`` wall times of each command as a fresh process, taken in turn (see ``timed_gets``)."""
    for cmd in commands.values():  # warm: the .pyc files
        subprocess.run(cmd, env=env, capture_output=True, check=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            times[name].append(time.perf_counter() - t0)
            assert result.returncode == 0, f"{cmd}: {result.stderr[-2000:]}"
    return times


def bench_cli(stack: StyxStack, runs: int, clusters: int) -> None:
    # As a user's shell runs it: bytecode cached (this environment may turn caching off).
    env = {k: v for k, v in stack.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "160"
    py = sys.executable
    found = timed_runs({
        "floor python -c pass": [py, "-c", "pass"],
        "floor typer + httpx, one request": [py, "-c", MINIMAL_CLI, "get", "/api/v1/users/me"],
        f"styx status ({clusters} clusters)": [py, "-m", "styx", "status"],
        "styx queue c0001": [py, "-m", "styx", "queue", "c0001"],
        "styx --help": [py, "-m", "styx", "--help"],
    }, env, runs)
    base = statistics.median(found["floor python -c pass"])
    typer_floor = statistics.median(found["floor typer + httpx, one request"])
    for name, values in found.items():
        p50 = statistics.median(values)
        ratios = "" if name.startswith("floor") else \
            f"  p50 ratio {p50 / base:.1f} to python, {p50 / typer_floor:.2f} to typer+httpx"
        print(f"[cli] {name:<36}{ms(values)}{ratios}" + ("  (target p99 < 300 ms)" if "status" in name else ""))


# --------------------------------------------------------------------------- worker memory


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def settled_rss(pid: int) -> int:
    """The RSS once two readings half a second apart agree within 0.5%."""
    last = rss_kb(pid)
    for _ in range(40):
        time.sleep(0.5)
        now = rss_kb(pid)
        if abs(now - last) <= last * 0.005:
            return now
        last = now
    return last


async def start_idle(client, queue: str, first: int, last: int) -> list:
    limit = asyncio.Semaphore(32)

    async def one(i: int):
        name = f"idle{i:04d}"
        nodes = [{"host": f"127.0.{i % 250}.{r + 1}", "port": 22, "user": "styx", "ip": f"127.0.{i % 250}.{r + 1}",
                  "rank": r, "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + secrets.token_hex(22)}
                 for r in range(2)]
        spec = ClusterSpec(name=name, provider="local", num_nodes=2, resources={"cpus": 1}, node_cpus=1.0,
                           autostop_minutes=60, owner="admin")
        state = ClusterState(status="UP", nodes=nodes, idle_since=None)
        async with limit:
            return await client.start_workflow(CLUSTER_WORKFLOW, ClusterInput(spec, state), id=f"cluster/{name}",
                                               task_queue=queue)

    return list(await asyncio.gather(*(one(i) for i in range(first, last))))


async def wait_loaded(handles: list) -> None:
    """Every workflow has run its first task on the worker (it answers its ``describe`` query)."""
    limit = asyncio.Semaphore(32)

    async def one(handle) -> None:
        async with limit:
            await handle.query("describe")

    await asyncio.gather(*(one(h) for h in handles))


async def bench_memory(home: Path, sizes: list[int]) -> None:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=find_temporal_binary(),
                                                search_attributes=SEARCH_ATTRIBUTE_KEYS,
                                                port=_free_port(), dev_server_log_level="error")
    stack = StyxStack(home / "memory", env.client.service_client.config.target_host)
    handles: list = []
    try:
        worker = await asyncio.to_thread(stack.start_worker)
        client = await connect(stack.settings)
        queue = stack.env["STYX_TASK_QUEUE"]
        base = await asyncio.to_thread(settled_rss, worker.pid)
        print(f"[memory] worker RSS with no cluster workflow: {base / 1024:.1f} MB (the floor)")
        per: dict[int, float] = {}
        rss_at: dict[int, int] = {}
        for size in sizes:
            handles += await start_idle(client, queue, len(handles), size)
            await wait_loaded(handles)
            rss = rss_at[size] = await asyncio.to_thread(settled_rss, worker.pid)
            per[size] = (rss - base) / size
            print(f"[memory] {size:5d} idle cluster workflows: RSS {rss / 1024:.1f} MB, "
                  f"{per[size]:.0f} KB per workflow ({per[size] / 1024:.2f} MB; target <= 1 MB)")
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            marginal = (rss_at[large] - rss_at[small]) / (large - small)
            print(f"[memory] growth ratio, per workflow at {large} / at {small}: {per[large] / per[small]:.2f} "
                  f"(each of the {large - small} added: {marginal:.0f} KB)")
    finally:
        for h in handles:
            try:
                await h.terminate("bench over")
            except Exception:  # noqa: BLE001 - best effort: the dev server goes next anyway
                pass
        await asyncio.to_thread(stack.stop)
        await env.shutdown()


def _free_port() -> int:
    from tests.fixtures.temporal import free_port

    return free_port()


# --------------------------------------------------------------------------- main


def postgres_url() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3) as conn:
            name = f"styx_bench_{secrets.token_hex(4)}"
            conn.execute(f'CREATE DATABASE "{name}"')
        return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name
    except Exception as err:  # noqa: BLE001 - any failure: PostgreSQL is optional here
        print(f"[postgresql] skipped: {err}")
        return None


def drop_postgres(url: str) -> None:
    import psycopg

    dispose_engine(url)
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def read_side(home: Path, label: str, db_url: str | None, args: argparse.Namespace, cli: bool) -> None:
    stack = StyxStack(home / label, "127.0.0.1:9", db_url=db_url)  # the listing needs no Temporal
    try:
        url = stack.settings.db_url
        migrate(url)
        db = Database(url)
        t0 = time.perf_counter()
        seed_clusters(db, args.clusters, jobs=args.jobs, users=100)
        print(f"[{label}] seeded {args.clusters} clusters, {args.jobs} jobs in {time.perf_counter() - t0:.1f} s")
        start_api(stack)
        bench_route(stack, db, args.requests, label)
        if cli:
            bench_cli(stack, args.runs, args.clusters)
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=200, help="requests per route")
    parser.add_argument("--runs", type=int, default=30, help="runs per CLI command")
    parser.add_argument("--workflows", default="100,1000", help="idle cluster workflows, in steps")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    home = Path(tempfile.mkdtemp(prefix="styx-bench-scale-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    try:
        read_side(home, "sqlite", None, args, cli=True)
        url = None if args.no_postgres else postgres_url()
        if url:
            try:
                read_side(home, "postgresql", url, args, cli=False)
            finally:
                drop_postgres(url)
        if not args.no_memory:
            asyncio.run(bench_memory(home, [int(n) for n in args.workflows.split(",")]))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")

if __name__ == "__main__":
    main()
