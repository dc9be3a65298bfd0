"""Per-region setup a launch needs, made once per region and worker: the deployment's key
pair, its security group in the default VPC (SSH from ``ssh_cidr``, all traffic within the
group, the task's ports from anywhere), and the image to boot (the one given, or the newest
Ubuntu 22.04 — the NVIDIA driver base AMI for GPU types). Key pair and group are named
``styx-<deployment>`` and tagged ``styx:deployment``, so two deployments sharing an account
never touch each other's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from styx.catalog import optimizer
from styx.providers.aws.ec2 import TAG_DEPLOYMENT, TAG_MANAGED, Ec2, check_region
from styx.providers.aws.errors import InvalidResources, ProvisionError

__all__ = ["CANONICAL_OWNER", "RegionSetup"]

log = logging.getLogger("styx.aws")

CANONICAL_OWNER = "099720109477"


class RegionSetup:
    """Key pair, security group and images of one deployment, per region (cached)."""

    def __init__(self, ec2: Ec2, *, deployment_id: str, public_key: str, ssh_cidr: str) -> None:
        self.ec2 = ec2
        self.deployment_id = deployment_id
        self.public_key = public_key
        self.ssh_cidr = ssh_cidr
        self.name = f"styx-{deployment_id}"
        self._locks: dict[str, asyncio.Lock] = {}
        self._ready: dict[str, tuple[str, frozenset[str]]] = {}
        self._images: dict[tuple[str, bool], tuple[str, str]] = {}

    async def ensure(self, region: str, ports: Iterable[str] | None = None) -> str:
        """Import the deployment's key pair and create its security group (SSH from
        ``ssh_cidr``, all traffic within the group, and ``ports`` from anywhere) in the
        default VPC; both tagged ``styx:deployment``. Idempotent. Returns the group id."""
        region = check_region(region)
        wanted_ports = frozenset(ports or ())
        ready = self._ready.get(region)
        if ready and wanted_ports <= ready[1]:
            return ready[0]
        lock = self._locks.setdefault(region, asyncio.Lock())
        async with lock:
            ready = self._ready.get(region)
            if ready and wanted_ports <= ready[1]:
                return ready[0]
            if not ready:
                await self._ensure_key_pair(region)
            group_id = await self._ensure_security_group(region)
            opened = (ready[1] if ready else frozenset()) | wanted_ports
            await self._ensure_ingress(region, group_id, opened)
            self._ready[region] = (group_id, opened)
            return group_id

    def forget(self, region: str) -> None:
        """Set the region up again on the next ``ensure`` (its key pair or group was deleted
        behind our back)."""
        self._ready.pop(region, None)


    def _tag_spec(self, resource_type: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        tags = {"Name": self.name, TAG_DEPLOYMENT: self.deployment_id, TAG_MANAGED: "true", **(extra or {})}
        return {"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}

    async def _ensure_key_pair(self, region: str) -> None:
        wanted = self.public_key.split()[:2]
        try:
            found = await self.ec2.call(region, "describe_key_pairs", KeyNames=[self.name], IncludePublicKey=True)
            existing = found.get("KeyPairs", [])
        except ProvisionError as err:
            if err.code != "InvalidKeyPair.NotFound":
                raise
            existing = []
        if existing:
            material = (existing[0].get("PublicKey") or "").split()[:2]
            if not material or material == wanted:
                return
            log.warning("key pair %s in %s holds another public key; replacing it", self.name, region)
            await self.ec2.call(region, "delete_key_pair", KeyName=self.name)
        try:
            await self.ec2.call(region, "import_key_pair", KeyName=self.name,
                             PublicKeyMaterial=self.public_key.encode(),
                             TagSpecifications=[self._tag_spec("key-pair")])
        except ProvisionError as err:
            if err.code != "InvalidKeyPair.Duplicate":  # a concurrent worker imported it first
                raise

    async def _default_vpc(self, region: str) -> str:
        vpcs = (await self.ec2.call(region, "describe_vpcs",
                                 Filters=[{"Name": "isDefault", "Values": ["true"]}])).get("Vpcs", [])
        if not vpcs:
            raise ProvisionError(f"no default VPC in {region}; create one with "
                                 f"`aws ec2 create-default-vpc --region {region}`", "NoDefaultVpc")
        return vpcs[0]["VpcId"]

    async def _find_group(self, region: str, vpc_id: str) -> str | None:
        groups = (await self.ec2.call(region, "describe_security_groups", Filters=[
            {"Name": "group-name", "Values": [self.name]}, {"Name": "vpc-id", "Values": [vpc_id]},
        ])).get("SecurityGroups", [])
        return groups[0]["GroupId"] if groups else None

    async def _ensure_security_group(self, region: str) -> str:
        vpc_id = await self._default_vpc(region)
        group_id = await self._find_group(region, vpc_id)
        if group_id:
            return group_id
        try:
            created = await self.ec2.call(
                region, "create_security_group", GroupName=self.name, VpcId=vpc_id,
                Description=f"Styx deployment {self.deployment_id}: SSH, task ports, intra-cluster traffic",
                TagSpecifications=[self._tag_spec("security-group")])
            return created["GroupId"]
        except ProvisionError as err:
            if err.code != "InvalidGroup.Duplicate":
                raise
        group_id = await self._find_group(region, vpc_id)
        if not group_id:
            raise ProvisionError(f"security group {self.name} exists in {region} but cannot be found", "InvalidGroup.NotFound")
        return group_id

    async def _ensure_ingress(self, region: str, group_id: str, ports: Iterable[str]) -> None:
        group = (await self.ec2.call(region, "describe_security_groups", GroupIds=[group_id]))["SecurityGroups"][0]
        have: set[tuple[Any, ...]] = set()
        for perm in group.get("IpPermissions", []):
            proto, low, high = perm.get("IpProtocol"), perm.get("FromPort"), perm.get("ToPort")
            for rng in perm.get("IpRanges", []):
                have.add((proto, low, high, rng.get("CidrIp")))
            for pair in perm.get("UserIdGroupPairs", []):
                have.add((proto, None, None, pair.get("GroupId")))
        wanted: list[dict[str, Any]] = [
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": self.ssh_cidr}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]},
        ]
        for port in sorted(ports):
            low, _, high = str(port).partition("-")
            wanted.append({"IpProtocol": "tcp", "FromPort": int(low), "ToPort": int(high or low),
                           "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
        for perm in wanted:
            if "IpRanges" in perm:
                key = (perm["IpProtocol"], perm["FromPort"], perm["ToPort"], perm["IpRanges"][0]["CidrIp"])
            else:
                key = (perm["IpProtocol"], None, None, perm["UserIdGroupPairs"][0]["GroupId"])
            if key in have:
                continue
            try:
                await self.ec2.call(region, "authorize_security_group_ingress", GroupId=group_id, IpPermissions=[perm])
            except ProvisionError as err:
                if err.code != "InvalidPermission.Duplicate":
                    raise

    async def resolve_image(self, region: str, image_id: str | None, instance_type: str) -> tuple[str, str]:
        """``(image_id, root_device_name)``: the given image, or the newest Ubuntu 22.04
        (the NVIDIA driver base AMI for GPU types) published in the region."""
        if image_id:
            try:
                images = (await self.ec2.call(region, "describe_images", ImageIds=[image_id])).get("Images", [])
            except ProvisionError as err:
                if not (err.code or "").startswith("InvalidAMIID"):
                    raise
                images = []
            if not images:
                raise InvalidResources(f"image {image_id!r} does not exist in {region}", field="resources.image_id")
            return image_id, images[0].get("RootDeviceName") or "/dev/sda1"
        gpu = any(o.accelerator_count for o in optimizer.offers_for(instance_type))
        cached = self._images.get((region, gpu))
        if cached:
            return cached
        searches = [
            (["amazon"], "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"),
            ([CANONICAL_OWNER], "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*"),
            ([CANONICAL_OWNER], "ubuntu/images/hvm-ssd*/ubuntu-*-amd64-server-*"),
        ][0 if gpu else 1:]
        for owners, pattern in searches:
            images = (await self.ec2.call(region, "describe_images", Owners=owners, Filters=[
                {"Name": "name", "Values": [pattern]}, {"Name": "state", "Values": ["available"]},
                {"Name": "architecture", "Values": ["x86_64"]},
            ])).get("Images", [])
            if images:
                newest = max(images, key=lambda i: (i.get("CreationDate") or "", i.get("Name") or ""))
                result = (newest["ImageId"], newest.get("RootDeviceName") or "/dev/sda1")
                self._images[(region, gpu)] = result
                return result
        raise ProvisionError(f"no Ubuntu image found in {region}; set resources.image_id", "NoImage")
