"""AWS clusters end to end: the REST API and a real worker against the EC2 emulator (moto's
server mode on loopback, real boto3 over HTTP). ``STYX_AWS_LOOPBACK_NODES=1`` maps every
emulated instance to a local SSH node on 127.x, so jobs run over real SSH while no packet
ever goes to the emulator's 10.x/54.x addresses."""

from __future__ import annotations

import boto3
import pytest
from temporalio.api.enums.v1 import EventType

from styx.providers.aws.provider import AwsProvider
from styx.sdk.transport import StyxError
from styx.workers.worker import build_worker
from tests.fixtures.moto import reset_emulator
from tests.fixtures.stack import StyxStack, wait_for
from tests.test_aws import capacity_hook, hooked_factory

pytestmark = pytest.mark.slow
REGION = "us-east-1"


def ec2():
    return boto3.client("ec2", region_name=REGION)


def instances(cluster: str, states=("pending", "running", "stopping", "stopped")) -> list[dict]:
    found = []
    for res in ec2().describe_instances(Filters=[
            {"Name": "tag:styx:cluster", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": list(states)}])["Reservations"]:
        found.extend(res["Instances"])
    return found


@pytest.fixture(scope="module")
def aws_stack(moto_server, temporal_env, tmp_path_factory):
    reset_emulator(moto_server)
    address = temporal_env.client.service_client.config.target_host
    stack = StyxStack(tmp_path_factory.mktemp("aws-home"), address,
                      extra_env={"STYX_AWS_LOOPBACK_NODES": "1", "STYX_DEPLOYMENT_ID": "test-aws"})
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_aws_cluster_launch_stop_start_down_matches_the_emulator(aws_stack: StyxStack):
    client = aws_stack.client()
    task = {"num_nodes": 2, "resources": {"infra": f"aws/{REGION}", "cpus": "2+"},
            "run": 'echo "rank $STYX_NODE_RANK on $(hostname)"'}
    job = client.wait("ec2a", client.launch(task, cluster="ec2a").job_id, timeout=180)
    assert job.status == "SUCCEEDED", job
    live = instances("ec2a")
    assert len(live) == 2 and {i["State"]["Name"] for i in live} == {"running"}
    tags = {t["Key"]: t["Value"] for t in live[0]["Tags"]}
    assert tags["styx:cluster"] == "ec2a" and tags["styx:deployment"] == "test-aws"
    volumes = ec2().describe_volumes(Filters=[{"Name": "tag:styx:cluster", "Values": ["ec2a"]}])["Volumes"]
    assert len(volumes) >= 2
    info = client.cluster("ec2a")
    assert info.provider == "aws" and info.region == REGION and info.zone
    assert all(n.host.startswith("127.") for n in info.nodes), "nodes must be reached on loopback only"

    assert client.stop("ec2a").status == "STOPPED"
    assert {i["State"]["Name"] for i in instances("ec2a")} == {"stopped"}
    assert client.start("ec2a").status == "UP"
    assert {i["State"]["Name"] for i in instances("ec2a")} == {"running"}
    again = client.wait("ec2a", client.exec("ec2a", {"run": "echo back"}).job_id, timeout=120)
    assert again.status == "SUCCEEDED"

    # A second cluster reuses the deployment's key pair and security group.
    second = client.launch({"resources": {"infra": f"aws/{REGION}"}, "run": "true"}, cluster="ec2b")
    assert client.wait("ec2b", second.job_id, timeout=180).status == "SUCCEEDED"
    assert len(ec2().describe_key_pairs(KeyNames=["styx-test-aws"])["KeyPairs"]) == 1
    groups = ec2().describe_security_groups(Filters=[{"Name": "group-name", "Values": ["styx-test-aws"]}])
    assert len(groups["SecurityGroups"]) == 1

    assert client.down("ec2a").status == "TERMINATED"
    assert instances("ec2a") == []
    assert {i["State"]["Name"] for i in instances("ec2a", states=("terminated",))} == {"terminated"}
    client.down("ec2b")


def test_down_of_a_cluster_whose_row_was_lost_terminates_by_tag(aws_stack: StyxStack):
    from styx.db import Database

    client = aws_stack.client()
    submitted = client.launch({"resources": {"infra": f"aws/{REGION}"}, "run": "true"}, cluster="lost")
    client.wait("lost", submitted.job_id, timeout=180)
    assert len(instances("lost")) == 1
    Database(aws_stack.settings.db_url).clusters.delete("lost")
    assert client.down("lost").status == "TERMINATED"
    assert instances("lost") == []


def test_bad_aws_requests_fail_before_any_workflow_starts(aws_stack: StyxStack):
    client = aws_stack.client()
    with pytest.raises(StyxError, match="unknown AWS region"):
        client.launch({"resources": {"infra": "aws/mars-north-1"}, "run": "true"}, cluster="bad1")
    with pytest.raises(StyxError, match="resources.instance_type"):
        client.launch({"resources": {"infra": "aws", "instance_type": "zz.huge"}, "run": "true"}, cluster="bad2")
    assert [c.name for c in client.status(all=True) if c.name.startswith("bad")] == []


@pytest.mark.parametrize("point", ["before_run_instances", "after_run_instances", "after_running"])
def test_worker_killed_mid_launch_leaves_exactly_num_nodes_instances(aws_stack: StyxStack, tmp_path, point):
    cluster = f"crash-{point.replace('_', '-')}"
    aws_stack.kill_worker()
    marker = tmp_path / "crashed"
    aws_stack.env.update(STYX_TEST_CRASH_POINT=point, STYX_TEST_CRASH_POINT_FILE=str(marker))
    try:
        crashing = aws_stack.start_worker()
        client = aws_stack.client()
        submitted = client.launch({"num_nodes": 2, "resources": {"infra": f"aws/{REGION}"}, "run": "echo up"},
                                  cluster=cluster)
        wait_for(lambda: crashing.poll() is not None, 120, f"the worker to kill itself at {point}")
        assert crashing.returncode == -9 and marker.exists()
        aws_stack.start_worker()
        job = client.wait(cluster, submitted.job_id, timeout=180)
        assert job.status == "SUCCEEDED", job
        assert len(instances(cluster)) == 2, "a retried launch must adopt, never duplicate"
        client.down(cluster)
        assert instances(cluster) == []
    finally:
        for key in ("STYX_TEST_CRASH_POINT", "STYX_TEST_CRASH_POINT_FILE"):
            aws_stack.env.pop(key, None)
        if aws_stack.worker.poll() is not None:
            aws_stack.start_worker()


async def test_capacity_error_in_the_first_zone_fails_over_to_the_next(aws_stack: StyxStack, temporal_env):
    """An in-process worker whose boto3 client answers InsufficientInstanceCapacity for one zone."""
    zones = [z["ZoneName"] for z in ec2().describe_availability_zones()["AvailabilityZones"]]
    failing = zones[0]

    calls: list = []
    refuse_first_zone = capacity_hook(lambda params: params.get("Placement.AvailabilityZone") == [failing], calls)
    client_factory = hooked_factory(**{"before-send.ec2.RunInstances": refuse_first_zone})

    from styx.ssh import ensure_client_key, public_key_line
    from styx.providers.local.provider import LocalProvider
    from styx.workers.worker import client_key_path

    settings = aws_stack.settings
    key = ensure_client_key(client_key_path(settings))
    aws = AwsProvider(deployment_id="test-aws", public_key=public_key_line(key), client_factory=client_factory,
                      loopback=LocalProvider(settings.local_nodes_dir(), public_key_line(key),
                                            isolate=settings.local_isolation))
    aws_stack.kill_worker()
    try:
        async with build_worker(temporal_env.client, settings, aws=aws):
            import asyncio

            client = aws_stack.client()
            task = {"resources": {"infra": f"aws/{REGION}"}, "run": "echo ok"}
            submitted = await asyncio.to_thread(client.launch, task, "failover")
            job = await asyncio.to_thread(client.wait, "failover", submitted.job_id, 180)
            assert job.status == "SUCCEEDED"
            info = await asyncio.to_thread(client.cluster, "failover")
            assert info.zone != failing and info.zone in zones
            assert "InsufficientInstanceCapacity" in (info.status_message or "")
            history = await temporal_env.client.get_workflow_handle("cluster/failover").fetch_history()
            provisions = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                          and e.activity_task_scheduled_event_attributes.activity_type.name == "provision"]
            failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
                      and "InsufficientInstanceCapacity" in e.activity_task_failed_event_attributes.failure.message]
            assert len(provisions) == 2 and len(failed) == 1
            assert all(i["Placement"]["AvailabilityZone"] != failing for i in instances("failover"))
            await asyncio.to_thread(client.down, "failover")
    finally:
        aws_stack.start_worker()



def test_orphans_are_reported_and_terminated_on_request(aws_stack: StyxStack):
    from styx.db import Database

    client = aws_stack.client()
    submitted = client.launch({"resources": {"infra": f"aws/{REGION}"}, "run": "true"}, cluster="kept")
    client.wait("kept", submitted.job_id, timeout=180)
    # An instance of this deployment whose cluster nobody knows any more.
    stray = client.launch({"resources": {"infra": f"aws/{REGION}"}, "run": "true"}, cluster="stray")
    client.wait("stray", stray.job_id, timeout=180)
    Database(aws_stack.settings.db_url).clusters.upsert("stray", status="TERMINATED")

    r = aws_stack.cli("status", "--orphans", check=True)
    assert "stray" in r.stdout and "kept" not in r.stdout
    found = client.orphans(terminate=True)
    assert {o.cluster for o in found} == {"stray"} and all(o.terminated for o in found)
    assert instances("stray") == [] and len(instances("kept")) == 1
    assert client.orphans() == []
    client.down("kept")


def test_check_reports_each_provider_from_the_worker(aws_stack: StyxStack):
    results = {r.provider: r for r in aws_stack.client().check(region=REGION)}
    assert results["local"].ok
    assert results["aws"].ok, results["aws"].reason  # the emulator's fake credentials and default VPC
    assert not results["ssh"].ok and "ssh_pools.yaml" in results["ssh"].reason
    r = aws_stack.cli("check", check=True, env={"COLUMNS": "200"})  # a wide terminal: no reason wrapped
    assert "aws" in r.stdout and "ssh_pools.yaml" in r.stdout
