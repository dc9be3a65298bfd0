"""The autostop failsafe: nodes that stop themselves when Styx is gone.

- A local node server given a deadline that passed kills its jobs, exits and leaves the
  cluster STOPPED on disk; the next push reports it; ``start`` brings the node back.
- The shell check AWS instances and SSH hosts run (``failsafe_script``), with a real ``sh``;
  an SSH host's watcher kills Styx's jobs and removes their directories.
- On the EC2 emulator: the instance's own timer is in its user-data at launch, and a push
  over SSH (to the local node standing in for the instance) moves its deadline.
- ``long``: the whole control plane killed -9 (every Styx process and the Temporal server);
  a local cluster launched with ``-i 1`` and ``STYX_FAILSAFE_GRACE_MINUTES=1`` stops itself
  within 3 minutes; after a restart ``styx status`` shows it STOPPED and ``styx start``
  brings it back.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from styx.activities.failsafe import FailsafeActivities
from styx.contracts.failsafe import FAILSAFE_FILE, FailsafeInput
from styx.providers.failsafe_script import CHECK_SCRIPT, aws_user_data, push_command, ssh_watcher_command
from styx.providers.local import failsafe as local_failsafe
from styx.providers.local import procs
from styx.providers.local.provider import LocalProvider
from styx.providers.registry import ProviderRegistry
from styx.ssh import SshPool, ensure_client_key, public_key_line
from tests.fixtures.processes import pid_alive
from tests.fixtures.stack import traversable_tmp_dir, wait_for, wait_for_async
from tests.test_sshpool import client_key, home, key_path, machines, providers  # noqa: F401 (fixtures)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


# -- a local node on its own ---------------------------------------------------------------


def test_a_deadline_earlier_than_the_node_start_counts_from_the_start(tmp_path: Path) -> None:
    local_failsafe.write(tmp_path, deadline=1000.0, grace=60, action="stop")
    path = tmp_path / local_failsafe.DEADLINE_FILE
    assert local_failsafe.due(path, started=500.0, now=1059.0) is None
    assert local_failsafe.due(path, started=500.0, now=1060.0) == "stop"
    # Stopped at 1000, started again at 5000: not killed at once by the old deadline.
    assert local_failsafe.due(path, started=5000.0, now=5001.0) is None
    assert local_failsafe.due(path, started=5000.0, now=5060.0) == "stop"
    local_failsafe.write(tmp_path, deadline=None, grace=60)
    assert local_failsafe.due(path, started=0.0, now=1e12) is None


@pytest.fixture
def local(tmp_path: Path) -> Any:
    root = traversable_tmp_dir()
    key = ensure_client_key(tmp_path / "id_ed25519")
    provider = LocalProvider(root / "nodes", public_key_line(key), failsafe_interval=0.2)
    try:
        yield provider
    finally:
        import asyncio
        import shutil

        for cluster in provider.list_clusters():
            asyncio.run(provider.terminate(cluster, None))
        shutil.rmtree(root, ignore_errors=True)


async def test_a_node_past_its_deadline_kills_its_jobs_exits_and_leaves_the_cluster_stopped(local: LocalProvider) -> None:
    up = await local.provision("fs", 2, {})
    homes = [n["home"] for n in await local.describe_nodes("fs", None)]
    # A detached job on node 0, as the SSH activities start them (its own session, HOME the node's).
    job = subprocess.Popen(["sleep", "600"], env={"HOME": homes[0], "PATH": os.environ["PATH"]},
                           start_new_session=True)
    try:
        out = await local.set_failsafe("fs", None, up.nodes, time.time() + 3600, 1, False)
        assert out == {"fired": [], "action": None}
        assert all(n["alive"] for n in await local.describe_nodes("fs", None))

        await local.set_failsafe("fs", None, up.nodes, time.time() - 5, 1, False)  # Styx stopped pushing

        async def stopped() -> bool:
            return not any(n["alive"] for n in await local.describe_nodes("fs", None))

        await wait_for_async(stopped, 30, "both node servers to exit on their own")
        wait_for(lambda: job.poll() is not None, 10, "the node's job to be killed")
        nodes = await local.describe_nodes("fs", None)
        assert [n["failsafe_fired"]["action"] for n in nodes] == ["stop", "stop"]  # STOPPED on disk, and why
        assert not procs.processes_of(homes, procs.job_groups(homes))
        # When Styx is back, its push learns what the nodes did.
        assert await local.set_failsafe("fs", None, up.nodes, time.time() + 600, 1, False) == \
            {"fired": [0, 1], "action": "stopped"}

        again = await local.start("fs", None)
        assert all(n["alive"] and n["failsafe_fired"] is None for n in await local.describe_nodes("fs", None))
        assert [n["host_key"] for n in again.nodes] == [n["host_key"] for n in up.nodes]
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()


# -- the shell watcher of AWS instances and SSH hosts ----------------------------------------


def _check(file: Path, started: int | None = None) -> subprocess.CompletedProcess[str]:
    args = ["sh", "-c", CHECK_SCRIPT, "check", str(file)] + ([str(started)] if started is not None else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=10)


def test_the_instance_check_acts_only_past_the_deadline_plus_grace(tmp_path: Path) -> None:
    file = tmp_path / "failsafe"
    now = int(time.time())
    assert _check(file).returncode == 1  # no deadline: nothing to do
    file.write_text(f"{now - 30} 60 stop\n")
    assert _check(file, started=now - 3600).returncode == 1  # inside the grace
    file.write_text(f"{now - 120} 60 terminate\n")
    done = _check(file, started=now - 3600)
    assert done.returncode == 0 and done.stdout.strip() == "terminate"
    assert _check(file, started=now).returncode == 1  # booted since: counts from the boot
    file.write_text("garbage\n")
    assert _check(file, started=0).returncode == 1


def test_an_ssh_hosts_watcher_kills_styx_jobs_and_removes_their_directories(tmp_path: Path) -> None:
    home = tmp_path / "host"
    job_dir = home / ".styx" / "jobs" / "7"
    job_dir.mkdir(parents=True)
    (home / "styx_workdir" / "7").mkdir(parents=True)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    job = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    (job_dir / "run.pid").write_text(f"{job.pid}\n")
    watcher_pid = None
    try:
        push = push_command(time.time() - 10, 0, "stop")
        subprocess.run(["sh", "-c", ssh_watcher_command(interval=1) + "; " + push], env=env, check=True, timeout=10)
        watcher_pid = int((home / ".styx" / "failsafe.pid").read_text())
        wait_for(lambda: (home / ".styx" / "failsafe.fired").exists(), 20, "the watcher to act")
        wait_for(lambda: job.poll() is not None, 10, "the job to be killed")
        assert not (home / ".styx" / "jobs").exists() and not (home / "styx_workdir").exists()
        wait_for(lambda: not pid_alive(watcher_pid), 10, "the watcher to exit")
        # The next push tells Styx the host acted on its own.
        out = subprocess.run(["sh", "-c", push_command(time.time() + 600, 60, "stop")], env=env,
                             capture_output=True, text=True, check=True, timeout=10)
        assert out.stdout.strip() == "FIRED stop"
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
        if watcher_pid is not None and pid_alive(watcher_pid):
            os.kill(watcher_pid, signal.SIGKILL)


def test_starting_the_watcher_twice_runs_one(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    subprocess.run(["sh", "-c", ssh_watcher_command(interval=30)], env=env, check=True, timeout=10)
    first = int((tmp_path / ".styx" / "failsafe.pid").read_text())
    try:
        subprocess.run(["sh", "-c", ssh_watcher_command(interval=30)], env=env, check=True, timeout=10)
        assert int((tmp_path / ".styx" / "failsafe.pid").read_text()) == first
    finally:
        os.kill(first, signal.SIGKILL)


async def test_an_ssh_pool_host_gets_its_watcher_and_deadline_over_ssh_and_stop_forgets_them(
        machines: Any, home: Path, providers: list[Any], pool: SshPool) -> None:
    from styx.ssh import NodeEndpoint
    from tests.test_sshpool import lab, write_pools

    provider = providers[0]
    pools = lab(machines)
    pools["lab"]["hourly_price"] = 0.25  # what a host of the pool costs, for the cost report
    write_pools(home, pools)
    (attempt,) = await provider.plan({}, 1, "lab")
    assert attempt["hourly_price"] == 0.25
    nodes = (await provider.provision("fsp", 1, attempt)).nodes
    host_home = machines.home_of(NodeEndpoint.from_dict(nodes[0]))
    pushes = FailsafeActivities(ProviderRegistry({"ssh": provider}), pool, grace_seconds=120)
    deadline = int(time.time()) + 600
    out = await pushes.push_failsafe(FailsafeInput("fsp", "ssh", "lab", nodes, _iso(deadline)))
    assert (out.fired, out.unreachable) == ([], [])
    assert (host_home / FAILSAFE_FILE).read_text().split() == [str(deadline), "120", "stop"]
    watcher = int((host_home / ".styx" / "failsafe.pid").read_text())
    assert pid_alive(watcher)
    await pushes.push_failsafe(FailsafeInput("fsp", "ssh", "lab", nodes, _iso(deadline + 60)))
    assert int((host_home / ".styx" / "failsafe.pid").read_text()) == watcher  # still the one watcher

    await provider.stop("fsp", "lab")  # a stopped cluster carries no deadline
    wait_for(lambda: not pid_alive(watcher), 10, "the watcher to stop")
    assert not (host_home / FAILSAFE_FILE).exists()
    await provider.terminate("fsp", "lab")


# -- the EC2 emulator ----------------------------------------------------------------------


async def test_an_instance_gets_its_own_timer_at_launch_and_a_push_moves_its_deadline(
        aws_emulator: str, tmp_path: Path) -> None:
    import boto3

    from styx.providers.aws.provider import AwsProvider

    key = ensure_client_key(tmp_path / "id_ed25519")
    root = traversable_tmp_dir()
    local = LocalProvider(root / "nodes", public_key_line(key))
    aws = AwsProvider(deployment_id="fs-test", public_key=public_key_line(key), loopback=local,
                      failsafe_grace_seconds=60)
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 1, None))[0]
    pool = SshPool(key)
    try:
        result = await aws.provision("timer", 1, {**attempt, "autostop_minutes": 5, "autostop_down": False})
        ec2 = boto3.client("ec2", region_name="us-east-1")
        iid = result.instance_ids[0]
        user_data = base64.b64decode(
            ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]).decode()
        assert user_data == aws_user_data("ubuntu", 5, 60, False)
        assert "systemctl enable --now styx-failsafe.timer" in user_data
        assert "$(( $(date +%s) + 300 )) 60 stop" in user_data  # the first deadline: the autostop window
        behaviour = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"

        pushes = FailsafeActivities(ProviderRegistry({"aws": aws}), pool, grace_seconds=60)
        home = Path((await local.describe_nodes(f"aws-{iid}", None))[0]["home"])
        deadlines = []
        for ahead in (600, 1200):
            deadline = int(time.time()) + ahead
            out = await pushes.push_failsafe(FailsafeInput("timer", "aws", "us-east-1", result.nodes,
                                                           _iso(deadline), down=True))
            assert out.fired == [] and out.unreachable == []
            deadlines.append((home / FAILSAFE_FILE).read_text().split())
            assert deadlines[-1] == [str(deadline), "60", "terminate"]
        assert int(deadlines[1][0]) - int(deadlines[0][0]) == 600  # the push moved it
        behaviour = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"  # --down

        # An instance that shut itself down is reported as such (no SSH needed).
        ec2.stop_instances(InstanceIds=[iid])
        out = await pushes.push_failsafe(FailsafeInput("timer", "aws", "us-east-1", result.nodes,
                                                       _iso(time.time() + 600)))
        assert (out.fired, out.action) == ([0], "stopped")
    finally:
        await pool.close()
        await aws.terminate("timer", "us-east-1")
        import shutil

        shutil.rmtree(root, ignore_errors=True)


# -- the whole control plane killed ------------------------------------------------------------


@pytest.mark.long
def test_a_local_cluster_stops_itself_when_every_styx_process_and_temporal_are_killed(tmp_path: Path) -> None:
    import asyncio
    import shutil

    from tests.fixtures.temporal import free_port

    home = tmp_path / "styx-home"
    nodes_parent = traversable_tmp_dir()
    env = {**os.environ, "STYX_HOME": str(home), "STYX_API_PORT": str(free_port()),
           "STYX_TEMPORAL_PORT": str(free_port()), "STYX_TEMPORAL_UI_PORT": str(free_port()),
           "STYX_GIT_HTTP_PORT": str(free_port()), "STYX_GIT_SSH_PORT": str(free_port()),
           "STYX_WORKER_METRICS_PORT": "0", "STYX_LOCAL_NODES_DIR": str(nodes_parent / "nodes"),
           "STYX_FAILSAFE_GRACE_MINUTES": "1"}
    for var in ("TEMPORAL_ADDRESS", "STYX_TEMPORAL_ADDRESS", "STYX_DB_URL", "STYX_API_URL", "STYX_TOKEN"):
        env.pop(var, None)

    def up() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "styx", "up"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: (home / "up.json").exists() or proc.poll() is not None, 120, "styx up to be ready")
        assert proc.poll() is None, "styx up exited early"
        return proc

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "styx", *args], env={**env, "COLUMNS": "250"},
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    def kill_control_plane(proc: subprocess.Popen[bytes]) -> None:
        children = json.loads((home / "up.json").read_text())["children"]
        for pid in [proc.pid, *children.values()]:
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        for pid in children.values():
            wait_for(lambda: not pid_alive(pid), 10, f"pid {pid} to die")
        (home / "up.json").unlink(missing_ok=True)

    local = LocalProvider(nodes_parent / "nodes", "")
    proc = up()
    try:
        launched = cli("launch", "-c", "dev", "-y", "-i", "1", "--num-nodes", "2", "echo hello")
        assert launched.returncode == 0, launched.stdout + launched.stderr
        wait_for(lambda: all(n["alive"] for n in asyncio.run(local.describe_nodes("dev", None))),
                 30, "the nodes to run")
        kill_control_plane(proc)
        killed_at = time.monotonic()
        wait_for(lambda: not any(n["alive"] for n in asyncio.run(local.describe_nodes("dev", None))),
                 180, "the nodes to stop themselves")
        assert time.monotonic() - killed_at < 180
        assert all(n["failsafe_fired"] for n in asyncio.run(local.describe_nodes("dev", None)))

        proc = up()
        wait_for(lambda: "STOPPED by failsafe" in cli("status").stdout, 120, "status to show STOPPED")
        started = cli("start", "dev", "-y")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "UP" in cli("status").stdout
        assert all(n["alive"] for n in asyncio.run(local.describe_nodes("dev", None)))
        cli("down", "dev", "-y")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for cluster in local.list_clusters():
            asyncio.run(local.terminate(cluster, None))
        shutil.rmtree(nodes_parent, ignore_errors=True)
