"""Clone speed through the Styx git server against `git upload-pack` over file://, measured in
the same run, and (with --push-latency) push -> job started latency.

    .venv/bin/python bench/git_clone.py [--mb 120] [--runs 3] [--push-latency 20]

Builds a repository of at least ``--mb`` MB (history of random, incompressible blobs plus
text, written with ``git fast-import``), then clones it ``--runs`` times each way:

- floor: ``git clone --no-local file://...`` (the git client spawning ``git upload-pack``
  itself: the same pack generation, no network, no server);
- Styx smart HTTP (``git clone http://user:token@127.0.0.1:<port>/...``) and SSH.

Prints the median times and the ratios (target <= 1.2). ``--push-latency N`` also starts a
Temporal dev server, a worker, the API and a local cluster, then pushes N commits whose
``.styx.yaml`` runs ``true`` on it, and prints the p50 of ``git push`` start -> job RUNNING
(from the job's ``started_at``), next to the p50 of a job submitted straight to the API.
The machines are shared and noisy: only ratios against a floor measured in the same run mean
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.git import GitUser, make_git_user, make_world  # noqa: E402


def build_repo(path: Path, megabytes: int, seed: int = 7) -> int:
    """Fill the bare repository at ``path`` with ~``megabytes`` of history; returns its pack size."""
    import random

    rng = random.Random(seed)
    per_commit = 2 << 20
    commits = max(1, (megabytes << 20) // per_commit + 1)
    proc = subprocess.Popen(["git", "--git-dir", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    write = proc.stdin.write
    mark = 0
    for c in range(commits):
        blobs = []
        for f in range(4):
            mark += 1
            data = rng.randbytes(per_commit // 4)
            write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)) + data + b"\n")
            blobs.append((f"data/{c:04d}-{f}.bin", mark))
        mark += 1
        text = "".join(f"line {c} {i} {rng.random()}\n" for i in range(2000)).encode()
        write(b"blob\nmark :%d\ndata %d\n" % (mark, len(text)) + text + b"\n")
        blobs.append(("notes.txt", mark))
        message = f"commit {c}".encode()
        stamp = 1_700_000_000 + c * 60
        write(b"commit refs/heads/main\ncommitter bench <b@e> %d +0000\ndata %d\n%s\n" % (stamp, len(message), message))
        for name, m in blobs:
            write(b"M 100644 :%d %s\n" % (m, name.encode()))
        write(b"\n")
    proc.stdin.close()
    assert proc.wait() == 0
    subprocess.run(["git", "--git-dir", str(path), "repack", "-a", "-d", "-q"], check=True)
    return sum(p.stat().st_size for p in (path / "objects" / "pack").glob("*.pack"))


def timed_clone(user: GitUser, url: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    user.git("clone", "-q", "--no-local", url, str(dest), timeout=900)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest, ignore_errors=True)
    return elapsed


def clone_bench(root: Path, megabytes: int, runs: int) -> None:
    world = make_world(root)
    user = world.add_user("bench")
    world.create_repo("bench/big", seed=False)
    path = world.repo_path("bench/big")
    t0 = time.perf_counter()
    size = build_repo(path, megabytes)
    print(f"repository: {size / (1 << 20):.0f} MB pack, built in {time.perf_counter() - t0:.1f} s")
    server = world.start_server()
    try:
        dest = root / "clone"
        timed_clone(user, f"file://{path}", dest)  # warm the page cache once
        floor, http, ssh = [], [], []
        for _ in range(runs):
            floor.append(timed_clone(user, f"file://{path}", dest))
            http.append(timed_clone(user, user.http_url(server, "bench/big"), dest))
            ssh.append(timed_clone(user, user.ssh_url(server, "bench/big"), dest))
    finally:
        server.stop()
    f, h, s = statistics.median(floor), statistics.median(http), statistics.median(ssh)
    print(f"clone, median of {runs}: file:// (git upload-pack) {f:.2f} s | Styx HTTP {h:.2f} s | Styx SSH {s:.2f} s")
    print(f"ratio HTTP / file:// = {h / f:.2f}   SSH / file:// = {s / f:.2f}   (target <= 1.2)")


STYX_YAML = """\
cluster: lat
run: "true"
"""


def push_latency(root: Path, pushes: int) -> None:
    from temporalio.testing import WorkflowEnvironment

    from styx.config import find_temporal_binary
    from styx.sdk.client import Client
    from styx.contracts.search import SEARCH_ATTRIBUTE_KEYS
    from tests.fixtures.git import GitStyxStack
    from tests.fixtures.temporal import free_port

    async def start_env() -> WorkflowEnvironment:
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=find_temporal_binary(), search_attributes=SEARCH_ATTRIBUTE_KEYS,
            ip="127.0.0.1", port=free_port(), dev_server_extra_args=["--ui-disable-news-fetch"])

    loop = asyncio.new_event_loop()
    env = loop.run_until_complete(start_env())
    stack = GitStyxStack(root / "stack", env.client.service_client.config.target_host)
    try:
        stack.start()
        assert stack.git is not None
        with Client(stack.settings.api_url, stack.token) as admin:
            created = admin.create_user("pusher")
            user = make_git_user(root, "pusher", created.token)
            admin.create_repo("pusher/lat")
            first = admin.launch({"resources": {"cpus": 2}, "run": "true"}, cluster="lat")
            admin.wait("lat", first.job_id, timeout=120)
            direct = []
            for _ in range(pushes):
                t0 = datetime.now(timezone.utc)
                job_id = admin.exec("lat", {"run": "true"}).job_id
                job = admin.wait("lat", job_id, timeout=60, poll=0.01)
                assert job.started_at is not None
                direct.append((job.started_at - t0).total_seconds())
            work = root / "work"
            user.git("clone", "-q", user.http_url(stack.git, "pusher/lat"), str(work))
            (work / ".styx.yaml").write_text(STYX_YAML)
            latencies = []
            for i in range(pushes):
                (work / "n.txt").write_text(str(i))
                user.git("add", "-A", cwd=work)
                user.git("commit", "-qm", f"push {i}", cwd=work)
                t0 = datetime.now(timezone.utc)
                out = user.git("push", "origin", "main", cwd=work).stderr
                match = re.search(r"job (\d+) queued on cluster lat", out)
                assert match, out
                job = admin.wait("lat", int(match[1]), timeout=60, poll=0.01)
                assert job.status == "SUCCEEDED" and job.started_at is not None, job
                latencies.append((job.started_at - t0).total_seconds())
            admin.down("lat")
    finally:
        stack.stop()
        loop.run_until_complete(env.shutdown())
        loop.close()
    p50, d50 = statistics.median(latencies), statistics.median(direct)
    print(f"push -> job RUNNING over {pushes} pushes: p50 {p50 * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms; API submit -> RUNNING p50 {d50 * 1000:.0f} ms "
          f"(ratio {p50 / d50:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=120, help="repository size to build (MB); 0 skips clones")
    parser.add_argument("--runs", type=int, default=3, help="clones per method")
    parser.add_argument("--push-latency", type=int, default=0, metavar="N", help="also time N pushes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="styx-git-bench-"))
    try:
        if args.mb > 0:
            clone_bench(root / "clone", args.mb, args.runs)
        if args.push_latency:
            push_latency(root / "push", args.push_latency)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
