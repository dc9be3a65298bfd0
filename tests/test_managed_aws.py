"""Managed jobs on the EC2 emulator (moto's server mode on loopback, real boto3 over HTTP):
the test terminates the job's instance itself (``TerminateInstances``, as a spot reclaim
would), the workflow notices while the job runs (its probe: the provider no longer has the
node), takes down what is left, launches again — in the same zone first (FAILOVER), in
another region first (EAGER_NEXT_REGION) — and at the end the emulator holds no running
instance of the job. ``STYX_AWS_LOOPBACK_NODES=1`` maps every emulated instance to a local
SSH node on 127.x: no packet goes to the emulator's addresses."""

from __future__ import annotations

from typing import Iterator

import boto3
import pytest
import pytest_asyncio

from tests.fixtures.moto import reset_emulator
from tests.fixtures.stack import StyxStack, wait_for
from tests.fixtures.temporal import own_dev_server


@pytest_asyncio.fixture(scope="module")
async def temporal_env():
    """This module's own dev server: it starts managed jobs (see ``own_dev_server``)."""
    async for env in own_dev_server():
        yield env


pytestmark = [pytest.mark.slow, pytest.mark.long]


def instances(prefix: str, states=("pending", "running", "stopping", "stopped")) -> list[dict]:
    """Instances of clusters whose name starts with ``prefix``, in every catalog region."""
    found = []
    for region in ("us-east-1", "us-east-2", "us-west-2", "eu-west-1"):
        ec2 = boto3.client("ec2", region_name=region)
        for res in ec2.describe_instances(Filters=[
                {"Name": "instance-state-name", "Values": list(states)}])["Reservations"]:
            for inst in res["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                if tags.get("styx:cluster", "").startswith(prefix):
                    found.append({**inst, "region": region, "cluster": tags["styx:cluster"]})
    return found


@pytest.fixture(scope="module")
def aws_stack(moto_server, temporal_env, tmp_path_factory) -> Iterator[StyxStack]:
    reset_emulator(moto_server)
    address = temporal_env.client.service_client.config.target_host
    stack = StyxStack(tmp_path_factory.mktemp("managed-aws"), address, extra_env={
        "STYX_AWS_LOOPBACK_NODES": "1", "STYX_DEPLOYMENT_ID": "test-managed", "STYX_MANAGED_PROBE_SECONDS": "2"})
    try:
        stack.start()
        # The session's Temporal server saw other stacks' managed/1, managed/2 ...: this
        # stack's database numbers its jobs from 10001 (one Temporal namespace, one database).
        from styx.db import Database, utcnow
        db = Database(stack.settings.db_url)
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO managed_jobs (id, name, owner, status, num_tasks, current_task, recoveries, "
                "workflow_id, submitted_at) VALUES (10000, 'placeholder', 'nobody', 'CANCELLED', 0, 0, 0, '', ?)",
                (utcnow(),))
        yield stack
    finally:
        stack.stop()


def _preempt_and_finish(stack: StyxStack, task: dict, name: str) -> tuple[list, list]:
    client = stack.client()
    gate = stack.shared_dir / f"gate-{name}"
    task = {**task, "run": f"echo up; while [ ! -e {gate} ]; do sleep 0.1; done; echo finished"}
    job = client.jobs.launch(task, name=name)
    prefix = f"mj-{job.managed_id}-"
    wait_for(lambda: "up" in client.jobs.logs(job.managed_id), 300, "the job to run on its instance")
    first = instances(prefix)
    assert len(first) == 1, first
    boto3.client("ec2", region_name=first[0]["region"]).terminate_instances(InstanceIds=[first[0]["InstanceId"]])
    wait_for(lambda: client.jobs.get(job.managed_id).recoveries == 1, 60, "the workflow to notice")
    wait_for(lambda: client.jobs.logs(job.managed_id).count("up") == 2, 180, "the job to run again")
    gate.touch()
    info = client.jobs.wait(job.managed_id, timeout=180)
    assert info.status == "SUCCEEDED" and info.recoveries == 1, info
    assert "finished" in client.jobs.logs(job.managed_id)
    attempts = client.jobs.get(job.managed_id).attempts
    assert [a.status for a in attempts] == ["PREEMPTED", "SUCCEEDED"], attempts
    assert "the provider has no node 0 any more" in (attempts[0].reason or ""), attempts[0].reason
    # Nothing of the job is left running in the emulator (nor on loopback).
    wait_for(lambda: instances(prefix) == [], 60, "no live instance of the job")
    assert len(instances(prefix, states=("terminated",))) == 2
    assert info.cost > 0
    return first, attempts


def test_a_terminated_instance_is_replaced_in_the_same_zone_first(aws_stack: StyxStack):
    first, attempts = _preempt_and_finish(
        aws_stack, {"resources": {"infra": "aws/us-east-1", "use_spot": True}}, "spot")
    assert attempts[0].zone == attempts[1].zone == first[0]["Placement"]["AvailabilityZone"]


def test_eager_next_region_relaunches_in_another_region(aws_stack: StyxStack):
    _, attempts = _preempt_and_finish(
        aws_stack, {"resources": {"infra": "aws", "cpus": "2+", "job_recovery": "EAGER_NEXT_REGION"}}, "eager")
    assert attempts[0].region != attempts[1].region, attempts
