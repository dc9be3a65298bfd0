"""Clusters and jobs end to end: the CLI, the REST API and the SDK against a real Temporal dev
server, a real worker process and real SSH to local nodes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from styx.sdk.client import AsyncClient
from styx.sdk.transport import Conflict, NotFound
from tests.fixtures.stack import StyxStack, wait_for

pytestmark = pytest.mark.slow
CORPUS = Path(__file__).parent / "skypilot_corpus"


def node_pids(stack: StyxStack, cluster: str) -> list[int]:
    """Pids of the cluster's live node servers, from the ready files the nodes write."""
    pids = []
    for ready in (stack.nodes_root / cluster).glob("node-*/ready.json"):
        pid = json.loads(ready.read_text())["pid"]
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def test_launch_exec_logs_cancel_stop_start_exec_down_through_cli(stack: StyxStack, tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "data.txt").write_text("payload-from-workdir\n")

    r = stack.cli("launch", "-y", "-c", "life", "--workdir", str(workdir), "--env", "WHO=styx",
                  "cat data.txt; echo hello $WHO")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "payload-from-workdir" in r.stdout and "hello styx" in r.stdout
    assert "SUCCEEDED" in r.stdout

    r = stack.cli("exec", "life", 'python3 -c "print(6*7)"', check=True)
    assert "42" in r.stdout and "job 2" in r.stdout

    r = stack.cli("status", check=True)
    assert "life" in r.stdout and "UP" in r.stdout and "local" in r.stdout

    r = stack.cli("queue", "life", check=True)
    assert re.search(r"1 .*SUCCEEDED", r.stdout) and re.search(r"2 .*SUCCEEDED", r.stdout)

    r = stack.cli("logs", "life", "2", check=True)
    assert r.stdout.strip() == "42"
    assert stack.cli("logs", "life", "2", "--status").returncode == 0
    assert stack.cli("logs", "life", "99", "--status").returncode == 102

    # A long job, cancelled while it runs: its whole process group dies on the node.
    # A duration no other test sleeps: tests run side by side, and this looks machine-wide.
    r = stack.cli("exec", "life", "-d", "sleep 3017 & echo started; wait", check=True)
    job_id = int(re.search(r"job (\d+)", r.stdout).group(1))
    client = stack.client()
    wait_for(lambda: client.job("life", job_id).status == "RUNNING", 30, "the job to run")
    wait_for(lambda: "started" in client.logs("life", job_id), 30, "the job's output")
    assert stack.cli("logs", "life", str(job_id), "--status").returncode == 101
    r = stack.cli("cancel", "life", str(job_id), check=True)
    job = client.wait("life", job_id, timeout=60)
    assert job.status == "CANCELLED"
    assert stack.cli("logs", "life", str(job_id), "--status").returncode == 103
    # Killed processes vanish asynchronously (a loaded machine may take a moment to reap them).
    wait_for(lambda: not _sleepers(3017), 15, "the cancelled job's `sleep 3017` to be gone")

    # Cancel of a finished job: 409 through the API, a one-line CLI error, nothing changed.
    r = stack.cli("cancel", "life", "1")
    assert r.returncode == 1 and "already finished" in r.stderr
    assert client.job("life", 1).status == "SUCCEEDED"

    r = stack.cli("stop", "-y", "life", check=True)
    assert "STOPPED" in r.stdout
    assert node_pids(stack, "life") == []
    r = stack.cli("exec", "life", "echo never")
    assert r.returncode == 1 and "styx start life" in r.stderr

    r = stack.cli("start", "life", check=True)
    assert "UP" in r.stdout
    # The nodes came back on the same home directories: the synced workdir is still there, and
    # a job without a workdir runs in it (~/sky_workdir, the last one synced), as `sky exec` does.
    r = stack.cli("exec", "life", "pwd; cat data.txt ~/styx_workdir/1/data.txt", check=True)
    assert r.stdout.count("payload-from-workdir") == 2 and "/sky_workdir\n" in r.stdout

    r = stack.cli("down", "-y", "life", check=True)
    assert "TERMINATED" in r.stdout
    assert node_pids(stack, "life") == []
    assert not (stack.nodes_root / "life").exists()
    assert "life" not in stack.cli("status", check=True).stdout


def _sleepers(seconds: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if cmd[:2] == [b"sleep", str(seconds).encode()] and stat != "Z":
                found.append(int(proc.name))
    return found


def test_three_node_job_sees_ranks_and_all_node_ips(stack: StyxStack):
    client = stack.client()
    run = 'echo "rank=$STYX_NODE_RANK n=$STYX_NUM_NODES ips=$(echo $STYX_NODE_IPS) sky=$SKYPILOT_NODE_RANK"'
    submitted = client.launch({"num_nodes": 3, "resources": {"cpus": 1}, "run": run}, cluster="trio")
    job = client.wait("trio", submitted.job_id, timeout=120)
    assert job.status == "SUCCEEDED", job
    assert job.exit_codes == [0, 0, 0]
    info = client.cluster("trio")
    ips = [n.ip for n in info.nodes]
    assert len(ips) == 3
    log = client.logs("trio", submitted.job_id)
    for rank in range(3):
        assert f"(rank={rank}) rank={rank} n=3 ips={' '.join(ips)} sky={rank}" in log
    client.down("trio")


def test_two_cpu_cluster_runs_two_one_cpu_jobs_at_once_and_the_third_waits(stack: StyxStack):
    client = stack.client()
    first = client.launch({"resources": {"cpus": 2}, "run": "true"}, cluster="pair")
    client.wait("pair", first.job_id, timeout=60)
    gate = stack.shared_dir / "gate-pair"
    ids = [client.exec("pair", {"resources": {"cpus": 1}, "run": f"while [ ! -e {gate} ]; do sleep 0.05; done"}).job_id
           for _ in range(3)]
    wait_for(lambda: [client.job("pair", i).status for i in ids] == ["RUNNING", "RUNNING", "PENDING"],
             30, "two jobs running and the third waiting")
    time.sleep(1)  # the third must keep waiting while the first two hold both CPUs
    assert client.job("pair", ids[2]).status == "PENDING"
    gate.touch()
    for i in ids:
        assert client.wait("pair", i, timeout=60).status == "SUCCEEDED"
    started = [client.job("pair", i).started_at for i in ids]
    ended = [client.job("pair", i).ended_at for i in ids]
    assert started[2] >= min(ended[:2]), "the third job started before a CPU was free"
    client.down("pair")


def test_bad_input_gets_clear_errors_and_changes_nothing(stack: StyxStack):
    client = stack.client()
    r = stack.cli("exec", "nosuch", "echo hi")
    assert r.returncode == 1 and "cluster 'nosuch' not found" in r.stderr
    with pytest.raises(NotFound):
        client.job("nosuch", 1)

    r = stack.cli("launch", "-y", "-c", "Bad_Name", "echo hi")
    assert r.returncode == 1 and "not a valid cluster name" in r.stderr
    assert all(c.name != "Bad_Name" for c in client.status(all=True))

    r = stack.cli("launch", "-y", "-c", "ok", "--cpus", "four", "echo hi")
    assert r.returncode == 1 and "--cpus" in r.stderr

    bad_yaml = stack.home / "bad.yaml"
    bad_yaml.write_text("name: x\nresources:\n  cpus: 1\n  acelerators: A100:1\nrun: echo\n")
    r = stack.cli("launch", "-y", "-c", "ok", str(bad_yaml))
    assert r.returncode == 1 and "resources.acelerators" in r.stderr and "line 4" in r.stderr
    assert "accelerators" in r.stderr  # did-you-mean

    resp = httpx.post(f"{stack.settings.api_url}/api/v1/clusters", json={"cluster": "ok", "task": {"run": "true"}})
    assert resp.status_code == 401

    first = client.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="fixed")
    client.wait("fixed", first.job_id, timeout=60)
    # A launch onto the cluster that its nodes cannot fit: refused, naming the requirement.
    with pytest.raises(Conflict, match="the task asks for 2 CPUs per node; nodes of 'fixed' have 1"):
        client.launch({"resources": {"cpus": 2}, "run": "true"}, cluster="fixed")
    assert [j.job_id for j in client.queue("fixed")] == [first.job_id]
    with pytest.raises(Conflict, match="already finished"):
        client.cancel("fixed", [first.job_id])
    with pytest.raises(Exception, match="asks for 8 CPUs"):
        client.exec("fixed", {"resources": {"cpus": 8}, "run": "true"})
    client.down("fixed")


def test_skypilot_style_tasks_run_on_local_nodes(stack: StyxStack):
    client = stack.client()
    first = client.launch({"num_nodes": 2, "resources": {"cpus": 4}, "run": "true"}, cluster="corpus")
    client.wait("corpus", first.job_id, timeout=60)
    ran = 0
    for path in sorted(CORPUS.glob("*.yaml")):
        header = path.read_text().splitlines()[:2]
        if header[0] != "# styx-corpus: runs-locally":
            continue
        expected = int(header[1].split(":")[1])
        r = stack.cli("exec", "corpus", str(path), "--env", "MODEL_NAME=tiny") if "required_at_launch" in path.name \
            else stack.cli("exec", "corpus", str(path))
        assert r.returncode == (0 if expected == 0 else 100), f"{path.name}:\n{r.stdout}\n{r.stderr}"
        ran += 1
    assert ran >= 10
    r = stack.cli("exec", "corpus", str(CORPUS / "pipeline.yaml"))
    assert r.returncode == 1 and "not supported" in r.stderr
    client.down("corpus")


async def test_async_sdk_launches_waits_and_reads_logs(stack: StyxStack, tmp_path: Path):
    (tmp_path / "w.txt").write_text("from-the-workdir\n")
    (tmp_path / "m.txt").write_text("from-a-mount\n")
    async with AsyncClient(stack.settings.api_url, stack.token) as client:
        events = []
        submitted = await client.launch({"run": "echo from-async-sdk; cat w.txt ~/m.txt", "envs": {"X": "1"},
                                         "workdir": str(tmp_path), "file_mounts": {"~/m.txt": str(tmp_path / "m.txt")}},
                                        cluster="asdk", progress=events.append)
        # The job runs in its cluster's workflow: the link is that one's.
        assert submitted.workflow_url and submitted.workflow_url.endswith("/workflows/cluster%2Fasdk")
        assert {(e.field, e.state) for e in events} >= {("workdir", "sent"), ("file_mounts.~/m.txt", "sent")}
        job = await client.wait("asdk", submitted.job_id, timeout=60)
        assert job.status == "SUCCEEDED"
        assert (await client.logs("asdk", submitted.job_id)).split() == ["from-async-sdk", "from-the-workdir",
                                                                        "from-a-mount"]
        info = await client.down("asdk")
        assert info.status == "TERMINATED"


async def test_doctor_names_the_worker_that_answered_and_needs_a_token(stack: StyxStack):
    report = stack.client().doctor()
    assert report.ok and report.database.ok and report.temporal.ok
    assert report.worker.detail.endswith(f":{stack.worker.pid}")
    async with AsyncClient(stack.settings.api_url, stack.token) as client:
        assert (await client.doctor()).ok
    assert httpx.get(f"{stack.settings.api_url}/api/v1/doctor", timeout=30).status_code == 401


async def test_secrets_reach_the_job_but_never_the_api_or_the_history(stack: StyxStack, temporal_env):
    client = stack.client()
    submitted = client.launch({"run": 'test "$(echo $TOKEN | rev)" = eulav-t3rc3s && echo ok',
                               "secrets": {"TOKEN": "s3cr3t-value"}}, cluster="secret")
    job = client.wait("secret", submitted.job_id, timeout=60)
    assert job.status == "SUCCEEDED"
    assert client.logs("secret", submitted.job_id).strip() == "ok"
    for path in ("/api/v1/clusters", "/api/v1/clusters/secret", "/api/v1/clusters/secret/jobs",
                 f"/api/v1/clusters/secret/jobs/{submitted.job_id}"):
        body = httpx.get(stack.settings.api_url + path, headers={"Authorization": f"Bearer {stack.token}"}).text
        assert "s3cr3t-value" not in body
    # Nor the workflow history that the Temporal web UI shows (payload bytes, searched raw): the
    # job runs in its cluster's workflow.
    for wid in ("cluster/secret",):
        history = await temporal_env.client.get_workflow_handle(wid).fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        assert b"sealed_secrets" in raw and b"s3cr3t-value" not in raw
    client.down("secret")


def test_the_whole_stack_on_postgresql(postgres_url, temporal_env, tmp_path):
    """The same launch → exec → queue → down, with PostgreSQL as the read model."""
    stack = StyxStack(tmp_path / "home", temporal_env.client.service_client.config.target_host,
                      db_url=postgres_url).start()
    try:
        client = stack.client()
        first = client.launch({"num_nodes": 2, "resources": {"cpus": 1}, "run": "echo on-pg $STYX_NODE_RANK"},
                              cluster="pg")
        assert client.wait("pg", first.job_id, timeout=120).status == "SUCCEEDED"
        second = client.exec("pg", {"run": "exit 3"})
        job = client.wait("pg", second.job_id, timeout=60)
        assert (job.status, job.exit_codes) == ("FAILED", [3])
        assert [j.job_id for j in client.queue("pg")] == [2, 1]
        assert "(rank=1) on-pg 1" in client.logs("pg", first.job_id)
        r = stack.cli("status", check=True)
        assert "pg" in r.stdout and "UP" in r.stdout
        assert client.down("pg").status == "TERMINATED"
    finally:
        stack.stop()


def test_ssh_pool_launch_exec_down_through_the_cli(stack: StyxStack, tmp_path):
    """Machines you already have: two loopback SSH servers stand in for them."""
    import asyncio
    import socket

    import yaml

    from styx.providers.local.provider import LocalProvider
    from styx.ssh import ensure_client_key, public_key_line
    from styx.workers.worker import client_key_path

    styx_key = public_key_line(ensure_client_key(client_key_path(stack.settings)))
    machines = LocalProvider(tmp_path / "machines", styx_key)
    nodes = asyncio.run(machines.provision("owned", 2, {})).endpoints()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        hosts = [{"host": n.host, "port": n.port, "host_key": n.host_key} for n in nodes]
        (stack.home / "ssh_pools.yaml").write_text(yaml.safe_dump({
            "lab": {"user": nodes[0].user, "hosts": hosts},
            "dead": {"user": nodes[0].user, "hosts": [{"host": "127.0.0.1", "port": closed.getsockname()[1]}]},
        }))
        r = stack.cli("launch", "-y", "-c", "owned", "--infra", "ssh/lab", "--num-nodes", "2",
                      "echo rank $STYX_NODE_RANK on the pool")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "(rank=1) rank 1 on the pool" in r.stdout
        homes = [Path(d["home"]) for d in asyncio.run(machines.describe_nodes("owned", None))]
        assert all((h / ".styx" / "jobs" / "1").is_dir() for h in homes)

        # Both hosts are taken: a second cluster on the pool fails, naming who holds them.
        client = stack.client()
        other = client.launch({"resources": {"infra": "ssh/lab"}, "run": "true"}, cluster="other")
        assert client.wait("other", other.job_id, timeout=60).status == "FAILED"
        assert "owned" in client.cluster("other").status_message

        dead = client.launch({"resources": {"infra": "ssh/dead"}, "run": "true"}, cluster="dead")
        assert client.wait("dead", dead.job_id, timeout=60).status == "FAILED"
        assert f"127.0.0.1:{closed.getsockname()[1]}" in client.cluster("dead").status_message

        assert "TERMINATED" in stack.cli("down", "-y", "owned", check=True).stdout
        assert not any((h / ".styx" / "jobs").exists() for h in homes)
        assert json.loads((stack.home / "ssh_reservations.json").read_text())["clusters"] == {}
    finally:
        closed.close()
        asyncio.run(machines.terminate("owned", None))


@pytest.mark.parametrize("down", [False, True])
def test_idle_cluster_stops_or_goes_down_by_itself(stack: StyxStack, down: bool):
    client = stack.client()
    cluster = "idle-down" if down else "idle-stop"
    first = client.launch({"num_nodes": 2, "resources": {"cpus": 1}, "run": "true"}, cluster=cluster)
    client.wait(cluster, first.job_id, timeout=60)
    assert len(node_pids(stack, cluster)) == 2
    # Autostop after 0 idle minutes: as soon as nothing runs or waits.
    info = client.autostop(cluster, 0, down=down)
    assert info.autostop_minutes == 0
    wanted = "TERMINATED" if down else "STOPPED"
    wait_for(lambda: client.cluster(cluster).status == wanted, 60, f"the idle cluster to be {wanted}")
    assert node_pids(stack, cluster) == []
    assert (stack.nodes_root / cluster).exists() is not down
    if not down:
        client.down(cluster)


def test_a_burst_of_submissions_gets_one_job_each(stack: StyxStack):
    """More concurrent submissions than Temporal admits updates at once (10 per workflow):
    the API waits its turn instead of failing, and no submission is lost or doubled."""
    from concurrent.futures import ThreadPoolExecutor

    client = stack.client()
    client.wait("burst", client.launch({"resources": {"cpus": 4}, "run": "true"}, cluster="burst").job_id, timeout=60)
    with ThreadPoolExecutor(24) as pool:
        ids = list(pool.map(lambda i: stack.client().exec("burst", {"run": f"echo {i}"}).job_id, range(40)))
    assert sorted(ids) == list(range(2, 42))
    for job_id in ids:
        assert client.wait("burst", job_id, timeout=120).status == "SUCCEEDED"
    client.down("burst")


def test_a_name_launched_again_after_down_starts_a_fresh_cluster(stack: StyxStack):
    client = stack.client()
    first = client.launch({"run": "echo first life"}, cluster="again")
    assert client.wait("again", first.job_id, timeout=60).status == "SUCCEEDED"
    client.down("again")
    second = client.launch({"run": "echo second life; exit 4"}, cluster="again")
    assert second.job_id == 1
    job = client.wait("again", 1, timeout=60)
    assert (job.status, job.exit_codes) == ("FAILED", [4])
    assert client.logs("again", 1) == "second life\n"
    assert [j.job_id for j in client.queue("again")] == [1]
    client.down("again")


def test_a_job_cancelled_while_it_prints_keeps_its_whole_log(stack: StyxStack):
    """What a job printed between its log's last copy and its death is stored too: Styx's
    copy is the node's, byte for byte (the faults suite saw 39 of 52 bytes after a `stop`)."""
    from styx.db import Database
    from tests.chaos.verify import stored_logs

    client = stack.client()
    chatty = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.005; done'
    job = client.launch({"run": chatty}, cluster="chatty").job_id
    wait_for(lambda: "line 50" in client.logs("chatty", job), 60, "the job to print 50 lines")
    client.cancel("chatty", [job])
    assert client.wait("chatty", job, timeout=60).status == "CANCELLED"
    node_log = stack.nodes_root / "chatty" / "node-0" / "home" / ".styx" / "jobs" / str(job) / "run.log"
    stored, tiling = stored_logs(Database(stack.settings.db_url), "chatty", job, "run")
    assert tiling == []
    assert stored[0] == node_log.read_bytes()
    client.down("chatty")
