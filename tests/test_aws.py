"""The AWS provider against the EC2 emulator (moto's server mode) over real HTTP with real boto3.

No test may connect anywhere but loopback: the autouse ``loopback_only`` guard fails any
connection to another address, and the emulated instances (10.x / 54.x) are reached only
through the loopback mapping, here a fake local provider that starts nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from styx.providers.aws.ec2 import default_client_factory
from styx.providers.aws.errors import CapacityError, InvalidRegion, InvalidResources, NoCredentials, ProvisionError
from styx.providers.aws.plan import Attempt, plan_attempts
from styx.providers.aws.provider import AwsProvider, client_token
from styx.providers.base import Provisioned
from styx.ssh import NodeEndpoint

REPO = Path(__file__).resolve().parents[1]
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl styx-test"
DEP = "test-dep"
LIVE = ["pending", "running", "stopping", "stopped"]


# --------------------------------------------------------------------------- helpers

class FakeLoopback:
    """Shaped like styx.providers.local.provider.LocalProvider; starts nothing, hands out 127.0.0.x."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeEndpoint] = {}
        self.state: dict[str, str] = {}

    async def provision(self, cluster: str, num_nodes: int, attempt: dict[str, Any]) -> Provisioned:
        assert num_nodes == 1
        if cluster not in self.nodes:
            n = len(self.nodes) + 2
            self.nodes[cluster] = NodeEndpoint(host=f"127.0.0.{n}", port=2200 + n, user="styx",
                                               ip=f"127.0.0.{n}", rank=0, host_key=f"ssh-ed25519 AAAAfake{n}")
        self.state[cluster] = "running"
        return Provisioned(nodes=[self.nodes[cluster].to_dict()])

    async def stop(self, cluster: str, region: str | None) -> None:
        self.state[cluster] = "stopped"

    async def start(self, cluster: str, region: str | None) -> Provisioned:
        self.state[cluster] = "running"
        return Provisioned(nodes=[self.nodes[cluster].to_dict()])

    async def terminate(self, cluster: str, region: str | None) -> None:
        self.state[cluster] = "terminated"


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an unresolved name: refuse, it might not be local


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail (and record) any connection this process tries to a non-loopback address."""
    refused: list[Any] = []

    def check(address: Any) -> None:
        if not _is_loopback(address):
            refused.append(address)
            raise AssertionError(f"test tried to connect to non-loopback {address!r}")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create, real_open = socket.create_connection, asyncio.open_connection

    def connect(self: socket.socket, address: Any) -> Any:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        check(address)
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        check(address)
        return real_create(address, *args, **kwargs)

    async def open_connection(host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        check((host, port))
        return await real_open(host, port, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    yield refused
    assert not refused, f"non-loopback connections were attempted: {refused}"


@pytest.fixture
def ec2(aws_emulator: str) -> Any:
    """A plain client on the emulator, to look at what the provider did."""
    return boto3.client("ec2", region_name="us-east-1")


def provider(deployment: str = DEP, loopback: Any = "fake", **kwargs: Any) -> AwsProvider:
    return AwsProvider(deployment_id=deployment, public_key=PUBLIC_KEY,
                       loopback=FakeLoopback() if loopback == "fake" else loopback, **kwargs)


def instances(ec2: Any, states: list[str] | None = LIVE, **tags: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{k.replace('_', ':')}", "Values": [v]} for k, v in tags.items()]
    if states:
        filters.append({"Name": "instance-state-name", "Values": states})
    reservations = ec2.describe_instances(Filters=filters)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def capacity_hook(fails: Callable[[dict[str, list[str]]], bool], calls: list[dict[str, list[str]]]) -> Callable[..., Any]:
    """A before-send hook answering RunInstances with EC2's InsufficientInstanceCapacity (HTTP 500)
    when ``fails(request parameters)``."""
    body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            b"<Code>InsufficientInstanceCapacity</Code><Message>We currently do not have sufficient "
            b"capacity in the Availability Zone you requested.</Message></Error></Errors>"
            b"<RequestID>test</RequestID></Response>")

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield body

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        raw_body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        params = parse_qs(raw_body)
        calls.append(params)
        if fails(params):
            return AWSResponse(request.url, 500, {"Content-Type": "text/xml"}, Raw())
        return None

    return hook


def hooked_factory(**events: Callable[..., Any]) -> Callable[[str], Any]:
    def factory(region: str) -> Any:
        client = default_client_factory(region)
        for event, handler in events.items():
            client.meta.events.register(event, handler)
        return client
    return factory


# --------------------------------------------------------------------------- plan

def test_plan_picks_the_cheapest_type_for_at_least_4_cpus_in_the_cheapest_regions() -> None:
    attempts = plan_attempts({"cpus": "4+"}, 1)
    assert {a.instance_type for a in attempts} == {"t3.xlarge"}
    regions = list(dict.fromkeys(a.region for a in attempts))
    assert regions == ["us-east-1", "us-east-2", "us-west-2"]  # eu-west-1 costs more; capped at 3
    assert [a.attempt_no for a in attempts] == list(range(1, len(attempts) + 1))
    assert attempts[0].zone == "us-east-1a" and attempts[0].hourly_price == pytest.approx(0.1664)


def test_plan_for_eight_a100s_is_p4d() -> None:
    attempts = plan_attempts({"accelerators": "A100:8"}, 2)
    assert {a.instance_type for a in attempts} == {"p4d.24xlarge"}
    assert "us-east-2" not in {a.region for a in attempts}  # the catalog does not list p4d there


def test_plan_rejects_an_unknown_instance_type_naming_the_field() -> None:
    with pytest.raises(InvalidResources) as err:
        plan_attempts({"instance_type": "zz.huge"}, 1)
    assert err.value.field == "resources.instance_type"
    assert "resources.instance_type" in str(err.value) and "zz.huge" in str(err.value)


def test_plan_tries_spot_in_every_zone_then_on_demand() -> None:
    resources = {"infra": "aws/us-east-2", "cpus": 2, "memory": 4,
                 "any_of": [{"use_spot": True}, {"use_spot": False}]}
    attempts = plan_attempts(resources, 1)
    assert [(a.zone, a.use_spot) for a in attempts] == [
        ("us-east-2a", True), ("us-east-2b", True), ("us-east-2c", True),
        ("us-east-2a", False), ("us-east-2b", False), ("us-east-2c", False)]
    assert {a.instance_type for a in attempts} == {"t3.medium"}
    again = Attempt.from_dict(json.loads(json.dumps(attempts[4].to_dict())))
    assert again == attempts[4] and again.attempt_no == 5


def test_plan_rejects_what_the_catalog_cannot_serve() -> None:
    with pytest.raises(InvalidResources) as err:
        plan_attempts({"accelerators": "H100:8"}, 1)
    assert err.value.field == "resources.accelerators"
    with pytest.raises(InvalidRegion, match="mars-1"):
        plan_attempts({"infra": "aws/mars-1"}, 1)
    with pytest.raises(InvalidResources, match="us-east-2"):
        plan_attempts({"instance_type": "p4d.24xlarge", "infra": "aws/us-east-2"}, 1)
    # One candidate that fits nowhere is skipped when another one fits.
    attempts = plan_attempts({"accelerators": "A100:8", "any_of": [{"infra": "aws/us-east-2"},
                                                                      {"infra": "aws/us-west-2"}]}, 1)
    assert {a.region for a in attempts} == {"us-west-2"}


def test_client_token_is_stable_and_fits_ec2s_limit() -> None:
    token = client_token(DEP, "c", 1, 0)
    assert token == client_token(DEP, "c", 1, 0) and len(token) <= 64
    assert len({token, client_token(DEP, "c", 2, 0), client_token(DEP, "c", 1, 1),
                client_token("other", "c", 1, 0)}) == 4


# --------------------------------------------------------------------------- lifecycle

async def test_two_node_cluster_is_tagged_and_stops_starts_and_terminates(ec2: Any) -> None:
    aws = provider()
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": "2+", "ports": [8080]}, 2, None))[0]
    result = await aws.provision("web", 2, attempt)

    assert [n["rank"] for n in result.nodes] == [0, 1]
    assert result.region == "us-east-1" and result.zone == "us-east-1a"
    running = {i["InstanceId"]: i for i in instances(ec2, ["running"], styx_cluster="web")}
    assert set(running) == set(result.instance_ids)
    for node in result.nodes:
        instance = running[node["instance_id"]]
        assert tags_of(instance) == {
            "Name": f"styx-web-{node['rank']}", "styx:cluster": "web", "styx:deployment": DEP,
            "styx:attempt": "1", "styx:rank": str(node["rank"]), "styx:managed": "true"}
        assert instance["InstanceType"] == attempt["instance_type"]
        assert ipaddress.ip_address(node["host"]).is_loopback  # reached through the loopback node
        assert node["ip"] == instance["PrivateIpAddress"]      # shown as the instance's own IP
        assert NodeEndpoint.from_dict(node).port == node["port"]
    volumes = ec2.describe_volumes(Filters=[{"Name": "tag:styx:cluster", "Values": ["web"]}])["Volumes"]
    assert len(volumes) == 2 and all(tags_of(v)["styx:deployment"] == DEP for v in volumes)
    assert {tags_of(v)["styx:rank"] for v in volumes} == {"0", "1"}

    await aws.provision("db", 1, attempt)
    key_pairs = ec2.describe_key_pairs()["KeyPairs"]
    assert [k["KeyName"] for k in key_pairs] == [f"styx-{DEP}"]
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"styx-{DEP}"]}])["SecurityGroups"]
    assert len(groups) == 1 and tags_of(groups[0])["styx:deployment"] == DEP
    assert {(p.get("FromPort"), p.get("ToPort")) for p in groups[0]["IpPermissions"]} >= {(22, 22), (8080, 8080)}

    await aws.stop("web", "us-east-1")
    assert {i["State"]["Name"] for i in instances(ec2, None, styx_cluster="web")} == {"stopped"}
    assert {i["State"]["Name"] for i in instances(ec2, None, styx_cluster="db")} == {"running"}
    assert {aws.loopback.local.state[f"aws-{i}"] for i in result.instance_ids} == {"stopped"}

    started = await aws.start("web", "us-east-1")
    assert sorted(started.instance_ids) == sorted(result.instance_ids)
    assert {i["State"]["Name"] for i in instances(ec2, None, styx_cluster="web")} == {"running"}
    assert [n["host"] for n in started.nodes] == [n["host"] for n in result.nodes]

    await aws.terminate("web", "us-east-1")
    assert {i["State"]["Name"] for i in instances(ec2, None, styx_cluster="web")} == {"terminated"}
    assert await aws.describe_nodes("web", "us-east-1") == []
    assert {aws.loopback.local.state[f"aws-{i}"] for i in result.instance_ids} == {"terminated"}
    await aws.terminate("web", "us-east-1")  # idempotent
    assert await aws.describe_nodes("web", "us-east-1") == []


async def test_terminate_returns_only_once_described_terminated(ec2: Any) -> None:
    """The emulator terminates at once, so make DescribeInstances report shutting-down a few times."""
    seen = {"terminate_called": False, "describes_after": 0, "rewritten": 0}

    def after_terminate(**_: Any) -> None:
        seen["terminate_called"] = True

    def after_describe(parsed: dict[str, Any], **_: Any) -> None:
        if not seen["terminate_called"]:
            return
        seen["describes_after"] += 1
        if seen["rewritten"] < 3:
            seen["rewritten"] += 1
            for reservation in parsed.get("Reservations", []):
                for instance in reservation["Instances"]:
                    if instance["State"]["Name"] == "terminated":
                        instance["State"] = {"Code": 32, "Name": "shutting-down"}

    aws = provider(client_factory=hooked_factory(**{
        "after-call.ec2.TerminateInstances": after_terminate,
        "after-call.ec2.DescribeInstances": after_describe}))
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 1, None))[0]
    await aws.provision("slow", 1, attempt)
    await aws.terminate("slow", "us-east-1")
    assert seen["rewritten"] == 3 and seen["describes_after"] >= 4
    assert {i["State"]["Name"] for i in instances(ec2, None, styx_cluster="slow")} == {"terminated"}


async def test_spot_cluster_launches_as_spot_and_refuses_to_stop(ec2: Any) -> None:
    aws = provider()
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1, "use_spot": True}, 1, None))[0]
    result = await aws.provision("cheap", 1, attempt)
    assert result.use_spot
    listed = await aws.describe_nodes("cheap", None)
    assert [(x["lifecycle"], x["state"], x["rank"], x["attempt"]) for x in listed] == [("spot", "running", 0, 1)]
    with pytest.raises(ProvisionError, match="cannot be stopped"):
        await aws.stop("cheap", "us-east-1")


# --------------------------------------------------------------------------- crash safety

CRASH_HELPER = """
import asyncio, json, sys
from styx.providers.aws.provider import AwsProvider
from styx.providers.base import Provisioned

class Loopback:
    async def provision(self, cluster, n, attempt):
        return Provisioned(nodes=[{"host": "127.0.0.9", "port": 2222, "user": "styx", "ip": "127.0.0.9",
                                   "rank": 0, "host_key": None}])
    async def start(self, cluster, region):
        return await self.provision(cluster, 1, {})
    async def stop(self, cluster, region): pass
    async def terminate(self, cluster, region): pass

async def main():
    deployment, public_key, cluster, num_nodes, attempt = sys.argv[1:6]
    aws = AwsProvider(deployment_id=deployment, public_key=public_key, loopback=Loopback())
    result = await aws.provision(cluster, int(num_nodes), json.loads(attempt))
    print(json.dumps(result.to_dict()))

asyncio.run(main())
"""


@pytest.mark.parametrize("point, launched_before_retry", [
    ("before_run_instances", 0), ("after_run_instances", 2), ("after_running", 2)])
async def test_worker_killed_mid_launch_leaves_exactly_num_nodes(
        ec2: Any, tmp_path: Path, point: str, launched_before_retry: int) -> None:
    helper = tmp_path / "provision_helper.py"
    helper.write_text(CRASH_HELPER)
    attempt = (await provider().plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 2, None))[0]
    env = {**os.environ, "STYX_TEST_CRASH_POINT": point, "STYX_TEST_CRASH_POINT_FILE": str(tmp_path / "crashed"),
           "PYTHONPATH": str(REPO)}
    args = [sys.executable, str(helper), DEP, PUBLIC_KEY, "crashy", "2", json.dumps(attempt)]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)

    killed = await asyncio.to_thread(run)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "crashed").exists()
    before = instances(ec2, styx_cluster="crashy")
    assert len(before) == launched_before_retry

    retried = await asyncio.to_thread(run)  # the same activity, retried: same cluster, same attempt
    assert retried.returncode == 0, retried.stderr
    result = json.loads(retried.stdout.strip().splitlines()[-1])
    live = instances(ec2, styx_cluster="crashy")
    assert len(live) == 2 and {i["State"]["Name"] for i in live} == {"running"}
    assert sorted(result["instance_ids"]) == sorted(i["InstanceId"] for i in live)
    if before:  # the killed worker's instances were adopted, not relaunched
        assert {i["InstanceId"] for i in before} == set(result["instance_ids"])
    assert {tags_of(i)["styx:rank"] for i in live} == {"0", "1"}


# --------------------------------------------------------------------------- failover

async def test_no_capacity_in_first_zone_fails_over_to_the_second(ec2: Any) -> None:
    calls: list[dict[str, list[str]]] = []
    hook = capacity_hook(lambda p: p.get("Placement.AvailabilityZone") == ["us-east-1a"], calls)
    aws = provider(client_factory=hooked_factory(**{"before-send.ec2.RunInstances": hook}))
    attempts = await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 2, None)

    with pytest.raises(CapacityError) as err:
        await aws.provision("gpu", 2, attempts[0])
    assert (err.value.code, err.value.region, err.value.zone) == ("InsufficientInstanceCapacity", "us-east-1", "us-east-1a")
    assert not err.value.region_wide
    assert instances(ec2, styx_cluster="gpu") == []

    result = await aws.provision("gpu", 2, attempts[1])
    assert result.zone == "us-east-1b" and result.attempt_no == 2
    live = instances(ec2, styx_cluster="gpu")
    assert {i["Placement"]["AvailabilityZone"] for i in live} == {"us-east-1b"}
    assert {tags_of(i)["styx:attempt"] for i in live} == {"2"}
    assert any(c.get("Placement.AvailabilityZone") == ["us-east-1a"] for c in calls)


async def test_partial_launch_is_terminated_before_the_capacity_error(ec2: Any) -> None:
    def rank_one(params: dict[str, list[str]]) -> bool:
        return any(k.endswith(".Value") and v == ["1"] and params.get(k[:-6] + ".Key") == ["styx:rank"]
                   for k, v in params.items())

    aws = provider(client_factory=hooked_factory(**{"before-send.ec2.RunInstances": capacity_hook(rank_one, [])}))
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 2, None))[0]
    with pytest.raises(CapacityError):
        await aws.provision("half", 2, attempt)
    everything = instances(ec2, None, styx_cluster="half")
    assert len(everything) == 1 and everything[0]["State"]["Name"] == "terminated"  # rank 0 launched, then cleaned up


# --------------------------------------------------------------------------- by tag alone

async def test_down_works_for_a_cluster_whose_db_row_was_lost(ec2: Any) -> None:
    first = provider()
    attempt = (await first.plan({"infra": "aws/us-west-2", "cpus": 2, "memory": 1}, 2, None))[0]
    await first.provision("lost", 2, attempt)

    fresh = provider(loopback=FakeLoopback())  # a new worker: no state but the tags in EC2
    listed = await fresh.describe_nodes("lost", None)
    assert [(x["region"], x["rank"]) for x in listed] == [("us-west-2", 0), ("us-west-2", 1)]
    await fresh.terminate("lost", None)  # region unknown: searched everywhere
    west = boto3.client("ec2", region_name="us-west-2")
    assert [i["State"]["Name"] for i in instances(west, None, styx_cluster="lost")] == ["terminated"] * 2


async def test_two_deployments_sharing_an_account_never_touch_each_other(ec2: Any) -> None:
    a, b = provider("alpha"), provider("beta")
    attempt = (await a.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 1, None))[0]
    ra = await a.provision("shared", 1, attempt)
    rb = await b.provision("shared", 1, attempt)

    region = "us-east-1"  # region=None (every region) is covered by the lost-row test
    assert [x["instance_id"] for x in await b.describe_nodes("shared", region)] == rb.instance_ids
    assert [(x["cluster"], x["instance_id"]) for x in await b.list_deployment_instances(region)] == \
        [("shared", rb.instance_ids[0])]
    await b.stop("shared", region)
    await b.terminate("shared", region)
    assert instances(ec2, ["running"], styx_deployment="alpha")[0]["InstanceId"] == ra.instance_ids[0]
    assert [x["state"] for x in await a.describe_nodes("shared", region)] == ["running"]
    assert [x["instance_id"] for x in await a.list_deployment_instances(region)] == ra.instance_ids
    assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == {"styx-alpha", "styx-beta"}


# --------------------------------------------------------------------------- loopback safety

async def test_loopback_mapping_gives_127_endpoints_and_never_connects_to_instance_ips(
        ec2: Any, loopback_only: list[Any]) -> None:
    aws = provider()
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 2, None))[0]
    result = await aws.provision("local", 2, attempt)
    for node in result.nodes:
        assert ipaddress.ip_address(node["host"]).is_loopback
        assert ipaddress.ip_address(node["ip"]).is_private and not ipaddress.ip_address(node["ip"]).is_loopback
        assert node["host_key"].startswith("ssh-ed25519 ")
    public = {i.get("PublicIpAddress") for i in instances(ec2, styx_cluster="local")}
    assert public and None not in public  # the emulator gave 54.x addresses; nobody dialled them
    assert loopback_only == []


async def test_real_local_nodes_stand_in_for_instances_through_stop_and_start(ec2: Any, tmp_path: Path) -> None:
    from styx.providers.local.provider import LocalProvider
    from styx.ssh import connect, ensure_client_key, public_key_line, run

    key = ensure_client_key(tmp_path / "id_ed25519")
    local = LocalProvider(tmp_path / "local", public_key_line(key))
    aws = AwsProvider(deployment_id=DEP, public_key=public_key_line(key), loopback=local)
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 2, None))[0]

    async def home_of(node: dict[str, Any]) -> str:
        async with await connect(NodeEndpoint.from_dict(node), key) as conn:  # pinned to the node's host key
            status, out, _ = await run(conn, "echo $HOME", timeout=10)
        assert status == 0
        return out.decode().strip()

    result = await aws.provision("real", 2, attempt)
    try:
        homes = [await home_of(node) for node in result.nodes]
        assert len(set(homes)) == 2 and all(f"aws-{i}" in h for i, h in zip(result.instance_ids, homes))
        assert local.list_clusters() == sorted(f"aws-{i}" for i in result.instance_ids)

        await aws.stop("real", "us-east-1")
        for iid in result.instance_ids:
            assert [n["alive"] for n in await local.describe_nodes(f"aws-{iid}", None)] == [False]

        started = await aws.start("real", "us-east-1")
        assert [n["host_key"] for n in started.nodes] == [n["host_key"] for n in result.nodes]
        assert [await home_of(node) for node in started.nodes] == homes
    finally:
        await aws.terminate("real", "us-east-1")
    assert local.list_clusters() == []


async def test_without_a_mapping_the_emulator_is_refused_before_launching(ec2: Any) -> None:
    aws = provider(loopback=None)
    attempt = (await aws.plan({"infra": "aws/us-east-1", "cpus": 2, "memory": 1}, 1, None))[0]
    with pytest.raises(ProvisionError, match="STYX_AWS_LOOPBACK_NODES") as err:
        await aws.provision("nomap", 1, attempt)
    assert err.value.code == "LoopbackMappingRequired"
    assert instances(ec2, None) == [] and ec2.describe_key_pairs()["KeyPairs"] == []


async def test_ssh_wait_reads_the_banner() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.wait_for(provider()._wait_for_ssh("127.0.0.1", port), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_the_guard_itself_refuses_instance_addresses(loopback_only: list[Any]) -> None:
    with pytest.raises(AssertionError):
        socket.create_connection(("10.0.0.7", 22), timeout=1)
    with pytest.raises(AssertionError):
        await asyncio.open_connection("54.210.1.2", 22)
    with pytest.raises(AssertionError), socket.socket() as raw:
        raw.connect(("54.210.1.2", 22))
    assert len(loopback_only) == 3
    loopback_only.clear()


# --------------------------------------------------------------------------- catalog refresh

def test_catalog_refresh_rebuilds_shapes_from_the_emulator(aws_emulator: str, tmp_path: Path) -> None:
    from styx.catalog import refresh
    from styx.catalog.optimizer import load_catalog

    out = tmp_path / "aws.csv"
    assert refresh.main(["--regions", "us-east-1", "--types", "t3.micro,p4d.24xlarge", "--output", str(out)]) == 0
    rows = {o.instance_type: o for o in load_catalog(out)}
    p4d = rows["p4d.24xlarge"]
    assert (p4d.vcpus, p4d.memory_gib, p4d.accelerator_name, p4d.accelerator_count) == (96, 1152, "A100", 8)
    assert p4d.price == pytest.approx(32.7726) and p4d.spot_price is not None  # price kept, spot from EC2
    assert rows["t3.micro"].accelerator_count == 0
    assert out.read_text().startswith("# Styx AWS catalog, rebuilt")


# --------------------------------------------------------------------------- check and errors

async def test_check_passes_against_the_emulator(aws_emulator: str) -> None:
    ok, reason = await provider().check(None)
    assert ok, reason
    assert "us-east-1" in reason


async def test_missing_credentials_and_unknown_regions_are_one_line_errors(
        aws_emulator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    ok, reason = await provider().check(None)
    assert not ok and "credentials" in reason and "\n" not in reason
    with pytest.raises(NoCredentials):
        await provider().describe_nodes("x", "us-east-1")
    with pytest.raises(InvalidRegion, match="mars-1"):
        await provider().terminate("x", "mars-1")
