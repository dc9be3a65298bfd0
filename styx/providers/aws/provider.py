'''The AWS provider: EC2 instances found, launched, stopped and terminated by their tags.

The worker registers it as the ``aws`` provider; the cluster workflow asks ``plan`` for the
launch attempts and calls ``provision`` once per attempt until one succeeds, so each try
shows in the history::

    provider = AwsProvider(deployment_id="prod", public_key=Path("~/.styx/id_ed25519.pub").expanduser().read_text())
    for attempt in await provider.plan({"accelerators": "A100:8", "any_of": [{"use_spot": True}, {"use_spot": False}]}, 2, None):
        try:
            result = await provider.provision("train", 2, attempt)
            break
        except CapacityError as err:      # this zone has no capacity (or the quota is hit): next one
            print(f"attempt {attempt['attempt_no']}: {err}")
    await provider.terminate("train", result.region)

The package's rooms: ``plan`` (attempts from the catalog), ``regions`` (key pair, security
group, image per region), ``ec2`` (clients, calls, tags), ``errors``, ``loopback`` (emulated
instances reached through local nodes). This module holds
the instance lifecycle and the wait for SSH.

What keeps it safe
------------------
* Every instance and its volumes carry ``styx:cluster``, ``styx:deployment``, ``styx:attempt``,
  ``styx:rank`` and ``styx:managed=true``, applied atomically by ``RunInstances``
  (``TagSpecifications``). The provider stores nothing else: stop, start, terminate and
  listing find instances by tag, so a cluster whose database row was lost can still be
  downed, and two deployments sharing an account never touch each other's instances.
* ``provision`` first adopts the live instances already tagged with this cluster and attempt
  (a worker killed mid-launch left them), then launches only the missing ranks, one
  ``RunInstances`` per rank with a ``ClientToken`` derived from deployment, cluster, attempt
  and rank. The lookup is what makes a retried activity safe against the EC2 emulator
  (moto ignores ``ClientToken``); the token closes the window the lookup cannot on real EC2
  (a launch whose response was lost). If a token comes back with an already-terminated
  instance (the same cluster name was launched and downed before), the next token is derived
  from that instance id, so the chain stays deterministic across retries.
* A failed attempt terminates what it launched (by tag) before raising. Capacity and quota
  errors raise ``CapacityError``; the caller moves to the next attempt.
* ``terminate`` returns only once ``DescribeInstances`` shows every instance ``terminated``.
'''

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from styx.catalog import optimizer
from styx.contracts.clusters import ClusterName
from styx.crash_seam import crash_here_if_asked
from styx.providers.aws.ec2 import (
    LIVE_STATES,
    NOT_TERMINATED,
    TAG_ATTEMPT,
    TAG_CLUSTER,
    TAG_DEPLOYMENT,
    TAG_MANAGED,
    TAG_RANK,
    Ec2,
    check_region,
    int_or_none,
    map_client_error,
    tags_of,
)
from styx.providers.aws.errors import CAPACITY_CODES, CapacityError, InvalidResources, ProvisionError
from styx.providers.aws.loopback import LoopbackNodes, endpoint_is_emulator, is_loopback_host
from styx.providers.aws.plan import Attempt, plan_attempts
from styx.providers.aws.regions import RegionSetup
from styx.providers.base import Provider, Provisioned

__all__ = ["AwsProvider", "AwsProvisioned", "client_token"]

log = logging.getLogger("styx.aws")

#: What a deployment id may be: it names the key pair and security group (``styx-<id>``).
_DEPLOYMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass
class AwsProvisioned(Provisioned):
    """``Provisioned`` plus what AWS knows of the launch; each node dict has ``instance_id``."""

    instance_ids: list[str] = field(default_factory=list)
    instance_type: str | None = None
    use_spot: bool = False
    attempt_no: int | None = None


def client_token(deployment_id: str, cluster: str, attempt_no: int, rank: int, salt: str = "") -> str:
    """The ``RunInstances`` idempotency token of one rank of one attempt (64 hex chars)."""
    text = f"styx/{deployment_id}/{cluster}/{attempt_no}/{rank}/{salt}"
    return hashlib.sha256(text.encode()).hexdigest()


class AwsProvider:
    """EC2 clusters for one Styx deployment (see the module docstring).

    ``loopback`` (a ``Provider``, the worker's local one) maps emulated instances to local
    nodes; ``client_factory(region)`` makes the boto3 EC2 clients (tests instrument them).
    """

    def __init__(
        self,
        *,
        deployment_id: str,
        public_key: str,
        client_factory: Callable[[str], Any] | None = None,
        ssh_user: str = "ubuntu",
        use_private_ip: bool = False,
        ssh_cidr: str = "0.0.0.0/0",
        loopback: Provider | None = None,
        state_timeout: float = 900.0,
        ssh_timeout: float = 600.0,
    ) -> None:
        if not _DEPLOYMENT_ID_RE.match(deployment_id or ""):
            raise ValueError(f"deployment_id must be 1-63 letters, digits, '.', '_' or '-' (got {deployment_id!r})")
        if len((public_key or "").split()) < 2:
            raise ValueError("public_key must be an OpenSSH public key line like 'ssh-ed25519 AAAA… comment'")
        ipaddress.ip_network(ssh_cidr)  # raises ValueError on a bad CIDR
        self.deployment_id = deployment_id
        self.ssh_user = ssh_user
        self.use_private_ip = use_private_ip
        self.loopback = LoopbackNodes(loopback) if loopback is not None else None
        self.state_timeout = state_timeout
        self.ssh_timeout = ssh_timeout
        self.ec2 = Ec2(client_factory)
        self.regions = RegionSetup(self.ec2, deployment_id=deployment_id, public_key=public_key.strip(),
                                   ssh_cidr=ssh_cidr)

    # ------------------------------------------------------------------ the Provider protocol

    async def plan(self, resources: dict[str, Any], num_nodes: int, region: str | None) -> list[dict[str, Any]]:
        """``plan.plan_attempts`` as dicts. ``region`` is not used: each resource candidate
        names its own (``infra: aws/<region>``), and none means the cheapest regions."""
        return [a.to_dict() for a in plan_attempts(resources, num_nodes)]

    async def provision(self, cluster: str, num_nodes: int, attempt: Mapping[str, Any]) -> AwsProvisioned:
        """Bring up ``num_nodes`` instances for ``cluster`` as ``attempt`` (an ``Attempt``
        dict from ``plan``) says, adopting the ones a crashed earlier try of the same attempt
        launched, and wait until they run and answer SSH. Raises ``CapacityError`` (try the
        next attempt) or ``ProvisionError``; either way, nothing of this attempt is left
        running."""
        attempt = Attempt.from_dict(attempt)
        cluster = ClusterName(cluster)
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer (got {num_nodes!r})")
        if not optimizer.offers_for(attempt.instance_type):
            raise InvalidResources(f"{attempt.instance_type!r} is not an AWS instance type in the Styx catalog",
                                   field="resources.instance_type")
        region = check_region(attempt.region)
        self._refuse_emulated_ssh(region)
        group_id = await self.regions.ensure(region, attempt.ports)
        image_id, root_device = await self.regions.resolve_image(region, attempt.image_id, attempt.instance_type)

        live = await self._find(region, cluster, attempt.attempt_no)
        keep, extras = self._pick_by_rank(live, num_nodes)
        if extras:
            log.warning("cluster %s attempt %s: terminating %d duplicate instance(s) %s",
                        cluster, attempt.attempt_no, len(extras), [i["InstanceId"] for i in extras])
            await self._terminate_ids(region, [i["InstanceId"] for i in extras])
        missing = [rank for rank in range(num_nodes) if rank not in keep]
        if keep:
            log.info("cluster %s attempt %s: adopting %s", cluster, attempt.attempt_no,
                     {r: i["InstanceId"] for r, i in keep.items()})
        other = [i["InstanceId"] for i in await self._find(region, cluster)
                 if tags_of(i).get(TAG_ATTEMPT) != str(attempt.attempt_no)]
        if other:
            log.warning("cluster %s has live instances from other attempts: %s (left alone)", cluster, other)

        try:
            crash_here_if_asked("before_run_instances")
            if missing:
                results = await asyncio.gather(
                    *(self._run_one(cluster, attempt, rank, image_id, root_device, group_id) for rank in missing),
                    return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException) and not isinstance(result, Exception):
                        raise result
                errors = [r for r in results if isinstance(r, Exception)]
                if errors:
                    raise next((e for e in errors if isinstance(e, CapacityError)), errors[0])
                for rank, instance in zip(missing, results):
                    keep[rank] = instance
            crash_here_if_asked("after_run_instances")
            ids = [keep[rank]["InstanceId"] for rank in range(num_nodes)]
            await self._start_stopped(region, [keep[r] for r in range(num_nodes)])
            running = await self._wait_state(region, ids, "running", zone=attempt.zone)
            crash_here_if_asked("after_running")
            nodes = await self._endpoints(running, fresh=True)
        except Exception as err:
            if isinstance(err, ProvisionError) and err.code in ("InvalidGroup.NotFound", "InvalidKeyPair.NotFound"):
                self.regions.forget(region)  # deleted behind our back: recreate on the retry
            await self._cleanup_attempt(region, cluster, attempt.attempt_no, err)
            raise
        return AwsProvisioned(
            nodes=nodes, region=region, zone=self._zone_of(running) or attempt.zone,
            instance_ids=[n["instance_id"] for n in nodes], instance_type=attempt.instance_type,
            use_spot=attempt.use_spot, attempt_no=attempt.attempt_no)

    async def start(self, cluster: str, region: str | None) -> AwsProvisioned:
        """Start the stopped instances of ``cluster`` (found by tag), wait for running and SSH."""
        cluster = ClusterName(cluster)
        everywhere = await self._find_everywhere(cluster, region)
        if not everywhere:
            where = region or "any catalog region"
            raise ProvisionError(f"cluster {cluster} has no instances in {where} to start", "ClusterNotFound")
        if len(everywhere) > 1:
            raise ProvisionError(f"cluster {cluster} has instances in several regions: {sorted(everywhere)}",
                                 "ClusterSplit")
        reg, instances = next(iter(everywhere.items()))
        self._refuse_emulated_ssh(reg)
        attempts = {int_or_none(tags_of(i).get(TAG_ATTEMPT)) or 0 for i in instances}
        latest = max(attempts)
        if len(attempts) > 1:
            log.warning("cluster %s has instances from attempts %s; starting attempt %s", cluster, sorted(attempts), latest)
        instances = [i for i in instances if (int_or_none(tags_of(i).get(TAG_ATTEMPT)) or 0) == latest]
        ids = [i["InstanceId"] for i in instances]
        await self._start_stopped(reg, instances)
        running = await self._wait_state(reg, ids, "running")
        nodes = await self._endpoints(running, fresh=False)
        lifecycle = {i.get("InstanceLifecycle") for i in running}
        return AwsProvisioned(
            nodes=nodes, region=reg, zone=self._zone_of(running), instance_ids=[n["instance_id"] for n in nodes],
            instance_type=running[0].get("InstanceType"), use_spot=lifecycle == {"spot"}, attempt_no=latest)

    async def stop(self, cluster: str, region: str | None) -> None:
        """Stop every instance of ``cluster`` (found by tag) and wait until all are stopped.
        Spot instances cannot be stopped: that raises ``ProvisionError`` (use terminate)."""
        cluster = ClusterName(cluster)
        for reg, instances in (await self._find_everywhere(cluster, region)).items():
            spot = [i["InstanceId"] for i in instances if i.get("InstanceLifecycle") == "spot"]
            if spot:
                raise ProvisionError(f"cluster {cluster} runs on spot instances {spot}, which cannot be stopped; "
                                     "terminate it (down) instead", "SpotCannotStop")
            ids = [i["InstanceId"] for i in instances]
            to_stop = [i["InstanceId"] for i in instances if i["State"]["Name"] in ("pending", "running")]
            if to_stop:
                await self.ec2.call(reg, "stop_instances", InstanceIds=to_stop)
            await self._wait_state(reg, ids, "stopped")
            if self.loopback is not None:
                await self.loopback.stop(ids)

    async def terminate(self, cluster: str, region: str | None) -> None:
        """Terminate every instance of ``cluster`` (found by tag, in ``region`` or every
        catalog region) and return once ``DescribeInstances`` shows them all ``terminated``.
        Idempotent."""
        cluster = ClusterName(cluster)
        everywhere = await self._find_everywhere(cluster, region, states=None)
        for reg, instances in everywhere.items():
            live = [i["InstanceId"] for i in instances if i["State"]["Name"] != "terminated"]
            if live:
                await self._terminate_ids(reg, live)
            if self.loopback is not None:
                await self.loopback.terminate([i["InstanceId"] for i in instances])

    async def describe_nodes(self, cluster: str, region: str | None) -> list[dict[str, Any]]:
        """This deployment's live (not terminated) instances of ``cluster``, by rank, found
        by tag in ``region`` or every catalog region."""
        cluster = ClusterName(cluster)
        found = await self._find_everywhere(cluster, region, NOT_TERMINATED)
        infos = [self._info(r, i) for r, instances in found.items() for i in instances]
        return sorted(infos, key=lambda x: (x["rank"] if x["rank"] is not None else 1 << 30, x["instance_id"]))

    async def check(self, region: str | None) -> tuple[bool, str]:
        """``(ok, one-line reason)`` for ``styx check``: credentials, region, default VPC."""
        return await asyncio.to_thread(self._check, region)

    # ------------------------------------------------------------------ beyond the protocol

    async def list_deployment_instances(self, region: str | None = None) -> list[dict[str, Any]]:
        """Every live instance of this deployment with its cluster tag, for orphan reconcile."""
        found = await self._find_everywhere(None, region, NOT_TERMINATED)
        infos = [self._info(r, i) for r, instances in found.items() for i in instances]
        return sorted(infos, key=lambda x: (x["cluster"] or "", x["rank"] or 0, x["instance_id"]))

    # ------------------------------------------------------------------ instances by tag

    def _filters(self, cluster: str | None, attempt_no: int | None = None,
                 states: Iterable[str] | None = LIVE_STATES) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [self.deployment_id]}]
        if cluster is not None:
            filters.append({"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]})
        if attempt_no is not None:
            filters.append({"Name": f"tag:{TAG_ATTEMPT}", "Values": [str(attempt_no)]})
        if states is not None:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        return filters

    async def _find(self, region: str, cluster: str | None, attempt_no: int | None = None,
                    states: Iterable[str] | None = LIVE_STATES) -> list[dict[str, Any]]:
        found = await self.ec2.describe_instances(region, self._filters(cluster, attempt_no, states))
        # Filters are the contract; this re-check guards against an endpoint that ignores them.
        return [i for i in found
                if tags_of(i).get(TAG_DEPLOYMENT) == self.deployment_id
                and (cluster is None or tags_of(i).get(TAG_CLUSTER) == cluster)]

    async def _find_everywhere(self, cluster: str | None, region: str | None,
                               states: Iterable[str] | None = LIVE_STATES) -> dict[str, list[dict[str, Any]]]:
        regions = [check_region(region)] if region else optimizer.regions()
        found = await asyncio.gather(*(self._find(r, cluster, None, states) for r in regions))
        return {r: instances for r, instances in zip(regions, found) if instances}

    def _info(self, region: str, instance: dict[str, Any]) -> dict[str, Any]:
        tags = tags_of(instance)
        launch = instance.get("LaunchTime")
        return {
            "instance_id": instance["InstanceId"],
            "state": instance["State"]["Name"],
            "region": region,
            "zone": instance.get("Placement", {}).get("AvailabilityZone"),
            "cluster": tags.get(TAG_CLUSTER),
            "rank": int_or_none(tags.get(TAG_RANK)),
            "attempt": int_or_none(tags.get(TAG_ATTEMPT)),
            "lifecycle": instance.get("InstanceLifecycle") or "on-demand",
            "instance_type": instance.get("InstanceType"),
            "private_ip": instance.get("PrivateIpAddress"),
            "public_ip": instance.get("PublicIpAddress"),
            "launch_time": launch.isoformat() if hasattr(launch, "isoformat") else launch,
        }

    # ------------------------------------------------------------------ launching

    @staticmethod
    def _pick_by_rank(instances: list[dict[str, Any]], num_nodes: int) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
        """One instance per rank (the earliest launched, then lowest id: every worker picks
        the same one); the others of a rank are duplicates. Out-of-range ranks are ignored."""
        by_rank: dict[int, list[dict[str, Any]]] = {}
        for instance in instances:
            rank = int_or_none(tags_of(instance).get(TAG_RANK))
            if rank is not None and 0 <= rank < num_nodes:
                by_rank.setdefault(rank, []).append(instance)
        keep, extras = {}, []
        for rank, group in by_rank.items():
            group.sort(key=lambda i: (str(i.get("LaunchTime", "")), i["InstanceId"]))
            keep[rank] = group[0]
            extras.extend(group[1:])
        return keep, extras

    async def _run_one(self, cluster: str, attempt: Attempt, rank: int, image_id: str, root_device: str,
                       group_id: str) -> dict[str, Any]:
        tags = {"Name": f"styx-{cluster}-{rank}", TAG_CLUSTER: cluster, TAG_DEPLOYMENT: self.deployment_id,
                TAG_ATTEMPT: str(attempt.attempt_no), TAG_RANK: str(rank), TAG_MANAGED: "true"}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        params: dict[str, Any] = {
            "ImageId": image_id, "InstanceType": attempt.instance_type, "MinCount": 1, "MaxCount": 1,
            "KeyName": self.regions.name, "SecurityGroupIds": [group_id],
            "BlockDeviceMappings": [{"DeviceName": root_device, "Ebs": {
                "VolumeSize": int(attempt.disk_size), "VolumeType": "gp3", "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list},
                                  {"ResourceType": "volume", "Tags": tag_list}],
        }
        if attempt.zone:
            params["Placement"] = {"AvailabilityZone": attempt.zone}
        if attempt.use_spot:
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        salt = ""
        for _ in range(8):
            params["ClientToken"] = client_token(self.deployment_id, cluster, attempt.attempt_no, rank, salt)
            reply = await self.ec2.call(attempt.region, "run_instances", zone=attempt.zone, **params)
            instance = reply["Instances"][0]
            if instance.get("State", {}).get("Name") not in ("shutting-down", "terminated"):
                return instance
            # Real EC2 answered a token used by an earlier, since terminated, incarnation of
            # this cluster: derive the next token from that instance, deterministically.
            salt = instance["InstanceId"]
        raise ProvisionError(f"RunInstances kept returning terminated instances for {cluster} rank {rank}",
                             "IdempotentTokenReused")

    async def _cleanup_attempt(self, region: str, cluster: str, attempt_no: int, cause: BaseException) -> None:
        try:
            leftovers = await self._find(region, cluster, attempt_no, NOT_TERMINATED)
            if leftovers:
                ids = [i["InstanceId"] for i in leftovers]
                log.warning("cluster %s attempt %s failed (%s): terminating %s", cluster, attempt_no, cause, ids)
                await self._terminate_ids(region, ids)
                if self.loopback is not None:
                    await self.loopback.terminate(ids)
        except Exception as err:  # noqa: BLE001 - the launch error is the one to report
            log.error("cleanup of cluster %s attempt %s failed: %s (run `down` to retry)", cluster, attempt_no, err)
            cause.add_note(f"cleanup failed, instances may be left: {err}")

    async def _terminate_ids(self, region: str, ids: list[str]) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            await self.ec2.call(region, "terminate_instances", InstanceIds=chunk)
            await self._wait_state(region, chunk, "terminated")

    async def _start_stopped(self, region: str, instances: list[dict[str, Any]]) -> None:
        """Adopted instances may be stopping or stopped: bring them to running."""
        stopping = [i["InstanceId"] for i in instances if i["State"]["Name"] == "stopping"]
        if stopping:
            await self._wait_state(region, stopping, "stopped")
        stopped = [i["InstanceId"] for i in instances if i["State"]["Name"] in ("stopping", "stopped")]
        if stopped:
            await self.ec2.call(region, "start_instances", InstanceIds=stopped)

    async def _wait_state(self, region: str, ids: list[str], state: str, zone: str | None = None) -> list[dict[str, Any]]:
        """Poll until every instance in ``ids`` is in ``state``; return them in ``ids`` order."""
        deadline = time.monotonic() + self.state_timeout
        delay = 0.25
        while True:
            try:
                found = {i["InstanceId"]: i for i in await self.ec2.describe_instances(
                    region, [{"Name": "instance-id", "Values": ids}])}
            except ProvisionError as err:
                if err.code != "InvalidInstanceID.NotFound":  # eventual consistency right after launch
                    raise
                found = {}
            if state != "terminated":
                for instance in found.values():
                    name = instance["State"]["Name"]
                    if name in ("shutting-down", "terminated"):
                        reason = instance.get("StateReason") or {}
                        code = str(reason.get("Code", "")).split(".")[-1]
                        message = f"{instance['InstanceId']} went {name} while waiting for {state}: " \
                                  f"{reason.get('Message', 'no reason given')}"
                        if code in CAPACITY_CODES:
                            raise CapacityError(code, message, region, zone)
                        raise ProvisionError(message, code or "InstanceTerminated")
            if state == "terminated" and all(found.get(i, {}).get("State", {}).get("Name", state) == state
                                             for i in ids):
                return [found[i] for i in ids if i in found]  # long-gone instances count as terminated
            if len(found) == len(ids) and all(i["State"]["Name"] == state for i in found.values()):
                return [found[i] for i in ids]
            if time.monotonic() > deadline:
                states = {i: found[i]["State"]["Name"] if i in found else "unknown" for i in ids}
                raise ProvisionError(f"timed out after {self.state_timeout:.0f}s waiting for {state}: {states}",
                                     "StateTimeout")
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 5.0)

    @staticmethod
    def _zone_of(instances: list[dict[str, Any]]) -> str | None:
        zones = {i.get("Placement", {}).get("AvailabilityZone") for i in instances}
        return zones.pop() if len(zones) == 1 else None

    # ------------------------------------------------------------------ endpoints and SSH

    def _refuse_emulated_ssh(self, region: str) -> None:
        if self.loopback is None and self._endpoint_is_emulator(region):
            raise ProvisionError(
                "the EC2 endpoint is a loopback URL (an emulator) and no loopback node mapping is "
                "configured; emulated instance addresses belong to nobody, so Styx will not connect to "
                "them. Set STYX_AWS_LOOPBACK_NODES=1 to reach each instance through a local node.",
                "LoopbackMappingRequired")

    def _endpoint_is_emulator(self, region: str) -> bool:
        try:
            url = self.ec2.client(region).meta.endpoint_url
        except Exception:  # noqa: BLE001 - a client that cannot be built fails later, clearly
            url = None
        return endpoint_is_emulator(url)

    async def _endpoints(self, instances: list[dict[str, Any]], *, fresh: bool) -> list[dict[str, Any]]:
        """SSH endpoints in rank order: loopback nodes when mapped, else the instance IPs
        (after waiting for an SSH banner)."""
        ordered = sorted(instances, key=lambda i: int_or_none(tags_of(i).get(TAG_RANK)) or 0)

        async def one(instance: dict[str, Any]) -> dict[str, Any]:
            iid = instance["InstanceId"]
            rank = int_or_none(tags_of(instance).get(TAG_RANK)) or 0
            if self.loopback is not None:
                return await self.loopback.endpoint(instance, rank, fresh=fresh, ssh_user=self.ssh_user)
            private_ip = instance.get("PrivateIpAddress")
            host = private_ip if self.use_private_ip else instance.get("PublicIpAddress")
            if not host:
                raise ProvisionError(f"{iid} has no {'private' if self.use_private_ip else 'public'} IP address"
                                     + ("" if self.use_private_ip else "; run Styx inside the VPC with use_private_ip"),
                                     "NoAddress")
            await self._wait_for_ssh(host, 22)
            return {"rank": rank, "host": host, "port": 22, "user": self.ssh_user, "ip": private_ip or host,
                    "host_key": None, "instance_id": iid}

        return list(await asyncio.gather(*(one(i) for i in ordered)))

    async def _wait_for_ssh(self, host: str, port: int) -> None:
        """Until ``host:port`` sends an SSH banner (or ``ssh_timeout``)."""
        if self.loopback is None and not is_loopback_host(host) and endpoint_is_emulator():
            raise ProvisionError(f"refusing to connect to {host}: the EC2 endpoint is an emulator "
                                 "(set STYX_AWS_LOOPBACK_NODES=1)", "LoopbackMappingRequired")
        deadline = time.monotonic() + self.ssh_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                banner = await asyncio.wait_for(reader.readline(), 10)
                if banner.startswith(b"SSH-"):
                    return
                last_error = f"unexpected banner {banner[:40]!r}"
            except (OSError, asyncio.TimeoutError) as err:
                last_error = str(err) or type(err).__name__
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(3)
        raise ProvisionError(f"{host}:{port} did not answer SSH within {self.ssh_timeout:.0f}s ({last_error})",
                             "SshTimeout")

    # ------------------------------------------------------------------ check

    def _check(self, region: str | None) -> tuple[bool, str]:
        session = boto3.session.Session()
        try:
            credentials = session.get_credentials()
        except BotoCoreError as err:
            return False, f"AWS credentials cannot be loaded: {err}"
        if credentials is None:
            return False, ("no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                           "AWS_PROFILE or use an instance role)")
        region = region or session.region_name
        if not region:
            return False, "no AWS region configured (set AWS_DEFAULT_REGION or a profile region)"
        try:
            check_region(region)
            vpcs = self.ec2.client(region).describe_vpcs(
                Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
        except ProvisionError as err:
            return False, str(err)
        except ClientError as err:
            return False, str(map_client_error(err, "DescribeVpcs", region, None))
        except (BotoCoreError, OSError) as err:
            return False, f"cannot reach EC2 in {region}: {err}"
        if not vpcs:
            return False, f"no default VPC in {region} (create one: aws ec2 create-default-vpc --region {region})"
        endpoint = self.ec2.client(region).meta.endpoint_url
        return True, f"AWS ok: region {region}, default VPC {vpcs[0]['VpcId']}, endpoint {endpoint}"
