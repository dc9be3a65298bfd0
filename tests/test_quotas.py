"""Quotas and bounds: a cluster larger than its provider can take is refused before anything
starts, a non-admin holds at most the clusters and nodes an admin allows (pushes included),
and a cluster whose workflow is gone can still be taken down, leaving nothing behind."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import uuid

import httpx
import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker
from temporalio.client import WorkflowExecutionStatus

from styx.config import LOCAL_NODES_PER_CPU, local_node_capacity
from styx.contracts.clusters import ClusterStatus
from styx.contracts.providers import ProviderErrors, ProviderInput, ProviderOutput, TeardownInput
from styx.db import Database
from styx.providers.base import InvalidProviderRequest
from styx.providers.local import procs
from styx.providers.local.provider import LocalProvider
from styx.sdk.transport import Forbidden
from styx.services import clusters as service
from styx.workflows.teardown import TeardownWorkflow
from tests.fixtures.git import GitStyxStack
from tests.fixtures.people import People
from tests.fixtures.stack import wait_for, wait_for_async

ONE = {"resources": {"cpus": 0.5}, "run": "true"}


# ------------------------------------------------------------------------------ without a stack


def test_the_local_maximum_comes_from_the_machine_unless_configured():
    derived = local_node_capacity(None)
    assert 1 <= derived.nodes <= LOCAL_NODES_PER_CPU * (os.cpu_count() or 1)
    assert "STYX_LOCAL_MAX_NODES" in derived.why
    assert local_node_capacity(3).nodes == 3
    assert local_node_capacity(3).refusal(10).startswith(
        "10 local nodes asked for, but this machine can host at most 3 local nodes (STYX_LOCAL_MAX_NODES=3)")


async def test_the_local_provider_refuses_a_cluster_beyond_its_maximum_before_making_anything(tmp_path: Path):
    provider = LocalProvider(tmp_path / "nodes", "ssh-ed25519 AAAA unused", max_nodes=2)
    with pytest.raises(InvalidProviderRequest, match="can host at most 2 local nodes"):
        await provider.provision("big", 3, {})
    assert not (tmp_path / "nodes" / "big").exists()
    assert provider.list_clusters() == []


def test_usage_counts_an_owners_live_clusters_and_their_nodes(database: Database):
    database.users.ensure("erin")
    for name, status, nodes in [("a", ClusterStatus.UP, 2), ("b", ClusterStatus.INIT, 3),
                                ("c", ClusterStatus.STOPPED, 1), ("d", ClusterStatus.FAILED, 5),
                                ("e", ClusterStatus.TERMINATED, 7)]:
        database.clusters.upsert(name, owner="erin", status=status, num_nodes=nodes)
    database.clusters.upsert("f", owner="frank", status=ClusterStatus.UP, num_nodes=4)
    assert database.clusters.usage("erin") == (3, 6)
    assert database.clusters.usage("nobody") == (0, 0)
    user = database.users.set_limits("erin", max_clusters=3)
    assert (user.max_clusters, user.max_nodes) == (3, None)
    user = database.users.set_limits("erin", max_nodes=8, max_clusters=None)
    assert (user.max_clusters, user.max_nodes) == (None, 8)


class FakeTeardown:
    """The provider's ``terminate`` and the state's ``record_teardown``, recording their calls."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    @activity.defn(name="terminate")
    async def terminate(self, inp: ProviderInput) -> ProviderOutput:
        self.calls.append(("terminate", inp.cluster))
        if self.fail:
            raise ApplicationError(self.fail, type=ProviderErrors.FAILED, non_retryable=True)
        return ProviderOutput()

    @activity.defn(name="record_teardown")
    async def record_teardown(self, inp: TeardownInput) -> None:
        self.calls.append(("record_teardown", inp.message))


@pytest.mark.parametrize("fail", [None, "the nodes directory is not writable"])
async def test_teardown_terminates_then_records_and_a_provider_failure_is_said(time_skipping_env, fail):
    fake = FakeTeardown(fail)
    queue = f"teardown-{uuid.uuid4().hex[:8]}"
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=[TeardownWorkflow],
                      activities=[fake.terminate, fake.record_teardown]):
        call = service.teardown(time_skipping_env.client, queue, "gone", "local", None, "taken down")
        if fail is None:
            assert (await call).status == ClusterStatus.TERMINATED
            assert fake.calls == [("terminate", "gone"), ("record_teardown", "taken down")]
        else:
            with pytest.raises(service.ClusterRefused) as refused:
                await call
            assert refused.value.type == "TeardownFailed"
            assert fail in refused.value.message and "run `styx down` again" in refused.value.message
            assert fake.calls == [("terminate", "gone")]  # not recorded TERMINATED


# ------------------------------------------------------------------------------ the stack


class World(People):
    """The people of the quota tests, and the node processes of their clusters."""

    def launch_raw(self, name: str | None, body: dict) -> httpx.Response:
        """``POST /api/v1/clusters`` as ``name`` (None: the admin), answer unchecked."""
        return self.http("POST", "/api/v1/clusters", self.token(name), json=body)

    def node_servers(self, cluster: str) -> list[int]:
        """Node-server processes serving a node of ``cluster``."""
        prefix = str(self.stack.nodes_root / cluster) + "/"
        return [pid for pid, argv in procs.scan_cmdlines()
                if "styx.providers.local.nodeserver" in argv
                and (procs.arg_after(argv, "--home") or "").startswith(prefix) and procs.alive(pid)]


@pytest.fixture(scope="module")
def world(temporal_env, tmp_path_factory) -> Iterator[World]:
    address = temporal_env.client.service_client.config.target_host
    stack = GitStyxStack(tmp_path_factory.mktemp("styx-quotas"), address)
    # Non-admins run local jobs here even when the tests do not run as root.
    stack.env["STYX_LOCAL_ALLOW_NONADMIN"] = "1"
    try:
        stack.start()
        yield World(stack, tmp_path_factory.mktemp("people"))
    finally:
        stack.stop()


@pytest.mark.slow
def test_num_nodes_beyond_the_local_maximum_is_refused_naming_the_field_and_what_fits(world: World):
    refused = world.launch_raw(None, {"cluster": "huge", "task": {**ONE, "num_nodes": 10000}})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("task.num_nodes: 10000 local nodes asked for"), detail
    most = int(re.search(r"this machine can host at most (\d+) local nodes", detail)[1])
    assert 1 <= most <= LOCAL_NODES_PER_CPU * (os.cpu_count() or 1)
    # The command line says the same in one line; nothing was started either time.
    task = world.root / "huge.yaml"
    task.write_text("num_nodes: 10000\nrun: 'true'\n")
    out = world.cli(None, "launch", "-y", "-c", "huge", str(task))
    assert out.returncode == 1 and f"at most {most} local nodes" in out.stderr and len(out.stderr.splitlines()) == 1
    assert [c for c in world.admin.status(all=True) if c.name == "huge"] == []
    assert not (world.stack.nodes_root / "huge").exists()
    assert world.node_servers("huge") == []
    # One more than fits is refused the same way: the bound is the number named.
    refused = world.launch_raw(None, {"cluster": "huge", "task": {**ONE, "num_nodes": most + 1}})
    assert refused.status_code == 422 and f"at most {most} local nodes" in refused.json()["detail"]


@pytest.mark.slow
def test_a_user_at_his_cluster_limit_is_refused_naming_usage_until_he_downs_one(world: World):
    world.add("bob", key=False)
    bob = world.client("bob")
    out = world.cli(None, "user", "limits", "bob", "--clusters", "2")
    assert out.returncode == 0, out.stderr
    assert "bob holds 0 of 2 clusters and 0 of 64 nodes" in out.stdout
    assert "clusters 2 (set for bob)" in out.stdout and "nodes 64 (the default" in out.stdout
    for name in ("b1", "b2"):
        bob.wait(name, bob.launch(ONE, cluster=name).job_id, timeout=120)
    refused = world.launch_raw("bob", {"cluster": "b3", "task": ONE})
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == ("bob has 2 of 2 clusters; `styx down` one, or ask an admin to raise "
                                        "`styx user limits`")
    assert [c for c in world.admin.status(all=True) if c.name == "b3"] == []
    # A job on a cluster he holds is no new cluster; his CLI says the refusal in one line.
    assert bob.wait("b2", bob.launch(ONE, cluster="b2").job_id, timeout=120).status == "SUCCEEDED"
    (world.root / "one.yaml").write_text("resources: {cpus: 0.5}\nrun: 'true'\n")
    out = world.cli("bob", "launch", "-y", "-c", "b3", str(world.root / "one.yaml"))
    assert out.returncode == 1 and "bob has 2 of 2 clusters" in out.stderr
    assert "bob holds 2 of 2 clusters and 2 of 64 nodes" in world.cli("bob", "user", "limits").stdout
    bob.down("b1")
    assert bob.wait("b3", bob.launch(ONE, cluster="b3").job_id, timeout=120).status == "SUCCEEDED"
    # `none` clears his own limit: the default (10) applies again.
    out = world.cli(None, "user", "limits", "bob", "--clusters", "none")
    assert "bob holds 2 of 10 clusters" in out.stdout and "clusters 10 (the default" in out.stdout
    for name in ("b2", "b3"):
        bob.down(name)


@pytest.mark.slow
def test_a_user_at_his_node_limit_is_refused_and_admins_are_not_limited(world: World):
    world.add("carol", key=False)
    carol = world.client("carol")
    limits = world.admin.set_user_limits("carol", max_nodes=3)
    assert (limits.max_nodes, limits.effective_max_nodes, limits.nodes) == (3, 3, 0)
    carol.wait("c1", carol.launch({**ONE, "num_nodes": 2}, cluster="c1").job_id, timeout=120)
    refused = world.launch_raw("carol", {"cluster": "c2", "task": {**ONE, "num_nodes": 2}})
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("carol has 2 of 3 nodes and cluster 'c2' asks for 2 more; `styx down`")
    carol.wait("c2", carol.launch(ONE, cluster="c2").job_id, timeout=120)  # 1 more fits
    assert carol.user_limits().nodes == 3
    # Only an admin sets limits; a user reads his own, not another's.
    with pytest.raises(Forbidden):
        carol.set_user_limits("carol", max_nodes=100)
    with pytest.raises(Forbidden):
        carol.user_limits("bob")
    bad = httpx.put(f"{world.stack.settings.api_url}/api/v1/users/carol/limits", json={"max_node": 5},
                    headers={"Authorization": f"Bearer {world.stack.token}"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("body.max_node")
    assert world.cli(None, "user", "limits", "carol", "--nodes", "lots").stderr.startswith(
        "error: --nodes: expected a whole number")
    # An admin with limits of 0 still launches: admins are not limited.
    world.admin.set_user_limits("admin", max_clusters=0, max_nodes=0)
    job = world.admin.launch(ONE, cluster="adm")
    assert world.admin.wait("adm", job.job_id, timeout=120).status == "SUCCEEDED"
    assert "admin is an admin: not limited" in world.cli(None, "user", "limits", "admin").stdout
    for name in ("c1", "c2"):
        carol.down(name)
    world.admin.down("adm")


@pytest.mark.slow
def test_a_managed_push_over_the_pushers_limit_fails_its_run_naming_the_limit(world: World):
    world.add("dave", key=False)
    dave = world.client("dave")
    dave.create_repo("ml")
    world.admin.set_user_limits("dave", max_clusters=0)
    assert world.stack.git is not None
    user = world.users["dave"]
    work = world.root / "dave-ml"
    user.git("clone", "-q", user.http_url(world.stack.git, "dave/ml"), str(work))
    (work / ".styx.yaml").write_text("managed: true\nresources: {cpus: 0.5}\nrun: echo never\n")
    user.git("add", "-A", cwd=work)
    user.git("commit", "-qm", "managed", cwd=work)
    user.git("push", "-q", "origin", "HEAD:main", cwd=work)
    sha = user.git("rev-parse", "HEAD", cwd=work).stdout.strip()
    run = dave.wait_commit("dave/ml", sha, timeout=120)
    assert run.status == "FAILED", run
    [job] = run.jobs
    assert job.managed and job.status == "FAILED" and not job.job_id and not job.managed_id
    assert "dave has 0 of 0 clusters" in (job.message or ""), job
    assert dave.jobs.queue() == []  # no managed job was started for it
    assert dave.user_limits().clusters == 0  # nothing was launched


@pytest.mark.slow
async def test_a_cluster_whose_workflow_was_terminated_mid_launch_is_taken_down_by_styx_down(world: World,
                                                                                             temporal_env):
    nodes = min(8, local_node_capacity(None).nodes)
    job = world.admin.launch({**ONE, "num_nodes": nodes}, cluster="halfway")
    root = world.stack.nodes_root / "halfway"
    # Terminate the cluster's workflow while its nodes are starting (it is still INIT).
    await wait_for_async(lambda: root.is_dir() and any(root.glob("node-*")), 60, "the first node directory")
    await temporal_env.client.get_workflow_handle("cluster/halfway").terminate(reason="test: killed mid launch")
    assert world.db.clusters.get("halfway").status == ClusterStatus.INIT
    out = world.cli(None, "down", "-y", "halfway")
    assert out.returncode == 0, out.stderr
    cluster = world.admin.cluster("halfway")
    assert cluster.status == "TERMINATED" and cluster.nodes == []
    assert "taken down after its workflow had ended" in (cluster.status_message or "")
    teardown = await temporal_env.client.get_workflow_handle("teardown/halfway").describe()
    assert teardown.status == WorkflowExecutionStatus.COMPLETED
    assert not root.exists()
    wait_for(lambda: world.node_servers("halfway") == [], 10, "the node servers to be gone")
    assert job.job_id == 1
    # Down again: nothing to do, still TERMINATED; a fresh launch of the name works.
    assert world.admin.down("halfway").status == "TERMINATED"
    again = world.admin.launch(ONE, cluster="halfway")
    assert world.admin.wait("halfway", again.job_id, timeout=120).status == "SUCCEEDED"
    world.admin.down("halfway")
    assert not root.exists()
