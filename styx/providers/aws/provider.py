"""The AWS provider: EC2 instances found, launched, stopped and terminated by their tags.

``AwsProvider`` is a plain async class; the worker wraps its methods as Temporal activities
and the cluster workflow drives failover, so each launch attempt shows in the history::

    provider = AwsProvider(deployment_id="prod", public_key=Path("~/.styx/id_ed25519.pub").expanduser().read_text())
    for attempt in provider.plan({"accelerators": "A100:8", "any_of": [{"use_spot": True}, {"use_spot": False}]}, 2):
        try:
            result = await provider.provision("train", 2, attempt)
            break
        except CapacityError as err:      # this zone has no capacity (or the quota is hit): next one
            print(f"attempt {attempt.attempt_no}: {err}")
    await provider.terminate("train", result.region)

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

Loopback mapping (``STYX_AWS_LOOPBACK_NODES=1``)
------------------------------------------------
The emulator hands out ``10.x``/``54.x`` addresses that belong to nobody. With ``loopback``
(an object shaped like ``styx.providers.local.provider.LocalProvider``: ``provision(cluster, n)``,
``stop``, ``start``, ``terminate``), each instance's SSH endpoint is the local node
``aws-<instance-id>`` on 127.0.0.1, and stopping/starting/terminating the instance does the
same to that node. The node's ``ip`` field keeps the instance's private IP for display. When
the EC2 endpoint is a loopback URL (an emulator) and no mapping is configured, ``provision``
and ``start`` refuse before launching anything rather than connect to emulated addresses.

Test hook
---------
For crash tests only: if ``STYX_TEST_CRASH_POINT`` is ``before_run_instances``,
``after_run_instances`` or ``after_running`` and ``STYX_TEST_CRASH_POINT_FILE`` names a file
that does not exist yet, ``provision`` creates that file and kills its own process with
SIGKILL at that point. The file makes the crash fire once, so the retried run goes through.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from styx.catalog import optimizer
from styx.task import Resources, TaskValidationError

__all__ = [
    "Attempt",
    "AwsProvider",
    "CapacityError",
    "InvalidRegion",
    "InvalidResources",
    "NoCredentials",
    "ProvisionError",
    "ProvisionResult",
    "client_token",
]

log = logging.getLogger("styx.aws")

TAG_CLUSTER = "styx:cluster"
TAG_DEPLOYMENT = "styx:deployment"
TAG_ATTEMPT = "styx:attempt"
TAG_RANK = "styx:rank"
TAG_MANAGED = "styx:managed"

LIVE_STATES = ("pending", "running", "stopping", "stopped")
NOT_TERMINATED = ("pending", "running", "stopping", "stopped", "shutting-down")

#: SkyPilot's default root disk, GB.
DEFAULT_DISK_GB = 256
#: With no region requested, try the cheapest few regions the catalog prices the type in.
MAX_REGIONS = 3
CANONICAL_OWNER = "099720109477"

# Zone-level: another zone (or region) may have room.
_CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientCapacityOnHost", "SpotMaxPriceTooLow",
    "Unsupported", "UnfulfillableCapacity", "InsufficientFreeAddressesInSubnet",
    "SpotInstanceTermination",
})
# Region-level: the account's quota in this region is used up; other zones of it will fail too.
_QUOTA_CODES = frozenset({
    "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
    "MaxSpotFleetRequestCountExceeded",
})
_AUTH_CODES = frozenset({"AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException",
                         "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired"})
_CRASH_POINTS = frozenset({"before_run_instances", "after_run_instances", "after_running"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


# --------------------------------------------------------------------------- errors

class ProvisionError(Exception):
    """An AWS operation failed in a way another zone would not fix. ``code`` is the EC2
    error code when there is one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class NoCredentials(ProvisionError):
    """No AWS credentials were found, or AWS rejected them."""


class InvalidRegion(ProvisionError):
    """The region is not an AWS region Styx knows."""


class CapacityError(ProvisionError):
    """No capacity (or no quota) for this attempt; the next zone or region may work.

    ``region_wide`` is true for quota errors (``VcpuLimitExceeded`` …): the other zones of
    the same region will fail the same way.
    """

    def __init__(self, code: str, message: str, region: str | None, zone: str | None) -> None:
        Exception.__init__(self, code, message, region, zone)
        self.code = code
        self.message = message
        self.region = region
        self.zone = zone
        self.region_wide = code in _QUOTA_CODES

    def __str__(self) -> str:
        where = self.zone or self.region or "?"
        return f"{self.code} in {where}: {self.message}"


class InvalidResources(TaskValidationError):
    """The task's resources cannot be served from the AWS catalog; ``field`` names the key."""


class _NothingFits(InvalidResources):
    """No catalog offer fits one candidate (``plan`` raises it only if none fits at all)."""


# --------------------------------------------------------------------------- data

@dataclass
class Attempt:
    """One place to try a launch: what ``plan`` returns and ``provision`` takes (JSON-able)."""

    region: str
    zone: str | None
    instance_type: str
    use_spot: bool
    image_id: str | None
    disk_size: int
    ports: list[str] = field(default_factory=list)
    attempt_no: int = 1
    #: Catalog price per node-hour in USD (spot price for spot), for display.
    hourly_price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ProvisionResult:
    """Nodes in rank order, each a ``styx.ssh.NodeEndpoint`` dict plus ``instance_id``."""

    nodes: list[dict[str, Any]]
    region: str
    zone: str | None
    instance_ids: list[str]
    instance_type: str | None = None
    use_spot: bool = False
    attempt_no: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_token(deployment_id: str, cluster: str, attempt_no: int, rank: int, salt: str = "") -> str:
    """The ``RunInstances`` idempotency token of one rank of one attempt (64 hex chars)."""
    text = f"styx/{deployment_id}/{cluster}/{attempt_no}/{rank}/{salt}"
    return hashlib.sha256(text.encode()).hexdigest()


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _crash_point(name: str) -> None:
    """The test hook described in the module docstring."""
    if os.environ.get("STYX_TEST_CRASH_POINT") != name:
        return
    marker = os.environ.get("STYX_TEST_CRASH_POINT_FILE")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    os.close(fd)
    log.warning("STYX_TEST_CRASH_POINT=%s: killing this process", name)
    os.kill(os.getpid(), signal.SIGKILL)


@functools.lru_cache(maxsize=1)
def _aws_regions() -> frozenset[str]:
    return frozenset(boto3.session.Session().get_available_regions("ec2"))


def _tags(item: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _endpoint_dict(endpoint: Any) -> dict[str, Any]:
    if hasattr(endpoint, "to_dict"):
        return dict(endpoint.to_dict())
    return dict(endpoint)


# --------------------------------------------------------------------------- provider

class AwsProvider:
    """EC2 clusters for one Styx deployment (see the module docstring)."""

    def __init__(
        self,
        *,
        deployment_id: str,
        public_key: str,
        client_factory: Callable[[str], Any] | None = None,
        ssh_user: str = "ubuntu",
        use_private_ip: bool = False,
        ssh_cidr: str = "0.0.0.0/0",
        loopback: Any | None = None,
        state_timeout: float = 900.0,
        ssh_timeout: float = 600.0,
    ) -> None:
        if not _NAME_RE.match(deployment_id or ""):
            raise ValueError(f"deployment_id must be 1-63 letters, digits, '.', '_' or '-' (got {deployment_id!r})")
        if len((public_key or "").split()) < 2:
            raise ValueError("public_key must be an OpenSSH public key line like 'ssh-ed25519 AAAA… comment'")
        ipaddress.ip_network(ssh_cidr)  # raises ValueError on a bad CIDR
        self.deployment_id = deployment_id
        self.public_key = public_key.strip()
        self.client_factory = client_factory or self.default_client_factory
        self.ssh_user = ssh_user
        self.use_private_ip = use_private_ip
        self.ssh_cidr = ssh_cidr
        self.loopback = loopback
        self.state_timeout = state_timeout
        self.ssh_timeout = ssh_timeout
        self.name = f"styx-{deployment_id}"
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._region_locks: dict[str, asyncio.Lock] = {}
        self._region_ready: dict[str, tuple[str, frozenset[str]]] = {}
        self._images: dict[tuple[str, bool], tuple[str, str]] = {}

    @staticmethod
    def default_client_factory(region: str) -> Any:
        """A fresh session's EC2 client: boto3's credential chain and ``AWS_ENDPOINT_URL`` apply."""
        config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3},
                                        connect_timeout=10, read_timeout=60)
        return boto3.session.Session().client("ec2", region_name=region, config=config)

    # ------------------------------------------------------------------ planning

    def plan(self, resources: Mapping[str, Any] | Resources, num_nodes: int) -> list[Attempt]:
        """The launch attempts to try in order: per resource candidate (``any_of`` /
        ``ordered``), the cheapest catalog type that fits, in each zone of the requested
        region, or of the cheapest regions (at most ``MAX_REGIONS``) when none is requested.

        Raises ``InvalidResources`` (naming the field) when nothing in the catalog fits, and
        ``InvalidRegion`` for a region the catalog does not price.
        """
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise InvalidResources(f"num_nodes must be a positive integer (got {num_nodes!r})", field="num_nodes")
        res = resources if isinstance(resources, Resources) else Resources.model_validate(dict(resources))
        candidates = [c for c in res.candidates() if c.cloud in (None, "aws")]
        if not candidates:
            raise InvalidResources("no resource candidate targets AWS (set infra: aws or leave the cloud unset)",
                                   field="resources.infra")
        attempts: list[Attempt] = []
        seen: set[tuple[Any, ...]] = set()
        unfit: list[InvalidResources] = []
        for candidate in candidates:
            try:
                planned = self._plan_candidate(candidate)
            except _NothingFits as err:  # another candidate may fit; unknown names still raise
                unfit.append(err)
                continue
            for attempt in planned:
                key = (attempt.region, attempt.zone, attempt.instance_type, attempt.use_spot, attempt.image_id)
                if key not in seen:
                    seen.add(key)
                    attempt.attempt_no = len(attempts) + 1
                    attempts.append(attempt)
        if not attempts:
            raise unfit[0]
        return attempts

    def _plan_candidate(self, res: Resources) -> list[Attempt]:
        use_spot = bool(res.use_spot)
        region = res.region
        if res.zone and not region:
            region = optimizer.region_of_zone(res.zone)
        if region is not None and region not in optimizer.regions():
            raise InvalidRegion(f"resources.region: {region!r} is not a region the Styx AWS catalog prices "
                                f"(known: {', '.join(optimizer.regions())})")
        if res.zone and optimizer.region_of_zone(res.zone) != region:
            raise InvalidResources(f"zone {res.zone!r} is not in region {region!r}", field="resources.zone")
        image_regions: set[str] | None = set(res.image_id) if isinstance(res.image_id, dict) else None

        if res.instance_type is not None and not optimizer.offers_for(res.instance_type):
            known = sorted({o.instance_type for o in optimizer.load_catalog()})
            close = [t for t in known if t.split(".")[0] == res.instance_type.split(".")[0]] or known[:6]
            raise InvalidResources(f"{res.instance_type!r} is not an AWS instance type in the Styx catalog "
                                   f"(e.g. {', '.join(close[:6])})", field="resources.instance_type")
        if res.accelerators:
            name = next(iter(res.accelerators))
            if name.lower() not in {n.lower() for n in optimizer.accelerator_names()}:
                raise InvalidResources(f"no AWS instance type in the catalog has {name} accelerators "
                                       f"(known: {', '.join(optimizer.accelerator_names())})",
                                       field="resources.accelerators")
        offers = [o for o in optimizer.matching_offers(res, use_spot=use_spot)
                  if image_regions is None or o.region in image_regions]
        if not offers:
            field_name = ("resources.instance_type" if res.instance_type else
                          "resources.accelerators" if res.accelerators else
                          "resources.memory" if res.memory and not res.cpus else "resources.cpus")
            where = f" in {region}" if region else ""
            what = "spot " if use_spot else ""
            raise _NothingFits(f"no AWS {what}instance type in the catalog fits {self._describe_request(res)}{where}",
                               field=field_name)
        instance_type = offers[0].instance_type
        type_offers = [o for o in offers if o.instance_type == instance_type]
        if region is None:
            type_offers = type_offers[:MAX_REGIONS]
        attempts = []
        for offer in type_offers:
            zone_list = [res.zone] if res.zone else optimizer.zones(offer.region) or [None]
            image = res.image_id.get(offer.region) if isinstance(res.image_id, dict) else res.image_id
            for zone in zone_list:
                attempts.append(Attempt(
                    region=offer.region, zone=zone, instance_type=instance_type, use_spot=use_spot,
                    image_id=image, disk_size=res.disk_size or DEFAULT_DISK_GB, ports=list(res.ports or []),
                    hourly_price=offer.hourly(use_spot)))
        return attempts

    @staticmethod
    def _describe_request(res: Resources) -> str:
        parts = []
        if res.instance_type:
            parts.append(f"instance_type={res.instance_type}")
        if res.cpus:
            parts.append(f"cpus={res.cpus}")
        if res.memory:
            parts.append(f"memory={res.memory}GB")
        if res.accelerators:
            parts.append("accelerators=" + ",".join(f"{k}:{v}" for k, v in res.accelerators.items()))
        return " ".join(parts) or "the default request"

    # ------------------------------------------------------------------ boto plumbing

    def _check_region(self, region: str | None) -> str:
        if not region or not isinstance(region, str):
            raise InvalidRegion("no AWS region given (set resources.region / infra: aws/<region>, or AWS_DEFAULT_REGION)")
        if region not in optimizer.regions() and region not in _aws_regions():
            raise InvalidRegion(f"unknown AWS region {region!r} (Styx's catalog prices: {', '.join(optimizer.regions())})")
        return region

    def _client(self, region: str) -> Any:
        with self._clients_lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self.client_factory(region)
            return client

    async def _call(self, region: str, operation: str, *, zone: str | None = None, **kwargs: Any) -> Any:
        """Run one EC2 call in a thread, turning botocore's errors into Styx's."""
        region = self._check_region(region)
        try:
            client = await asyncio.to_thread(self._client, region)
            return await asyncio.to_thread(getattr(client, operation), **kwargs)
        except (NoCredentialsError, PartialCredentialsError) as err:
            raise NoCredentials(f"no AWS credentials found ({err}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                "AWS_PROFILE or an instance role") from None
        except NoRegionError:
            raise InvalidRegion("no AWS region configured") from None
        except EndpointConnectionError as err:
            raise ProvisionError(f"cannot reach the EC2 endpoint for {region}: {err}", "EndpointConnectionError") from None
        except ClientError as err:
            raise self._map_client_error(err, operation, region, zone) from None
        except BotoCoreError as err:
            raise ProvisionError(f"EC2 {operation} in {region} failed: {err}", type(err).__name__) from None

    @staticmethod
    def _map_client_error(err: ClientError, operation: str, region: str, zone: str | None) -> ProvisionError:
        error = err.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        bare = code.split(".", 1)[1] if code.startswith(("Server.", "Client.")) else code
        message = str(error.get("Message") or err)
        if bare in _CAPACITY_CODES or bare in _QUOTA_CODES:
            return CapacityError(bare, message, region, zone)
        if bare in _AUTH_CODES:
            return NoCredentials(f"AWS rejected the credentials ({code}): {message}", bare)
        return ProvisionError(f"EC2 {operation} in {region} failed: {code}: {message}", bare)

    def _endpoint_is_loopback(self, region: str) -> bool:
        for var in ("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"):
            if _is_loopback_host(urlparse(os.environ.get(var, "")).hostname):
                return True
        try:
            return _is_loopback_host(urlparse(self._client(region).meta.endpoint_url).hostname)
        except Exception:  # noqa: BLE001 - a client that cannot be built fails later, clearly
            return False

    def _refuse_emulated_ssh(self, region: str) -> None:
        if self.loopback is None and self._endpoint_is_loopback(region):
            raise ProvisionError(
                "the EC2 endpoint is a loopback URL (an emulator) and no loopback node mapping is "
                "configured; emulated instance addresses belong to nobody, so Styx will not connect to "
                "them. Set STYX_AWS_LOOPBACK_NODES=1 to reach each instance through a local node.",
                "LoopbackMappingRequired")

    async def _describe(self, region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        instances: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Filters": filters}
        while True:
            page = await self._call(region, "describe_instances", **kwargs)
            for reservation in page.get("Reservations", []):
                instances.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return instances
            kwargs["NextToken"] = token

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
        found = await self._describe(region, self._filters(cluster, attempt_no, states))
        # Filters are the contract; this re-check guards against an endpoint that ignores them.
        return [i for i in found
                if _tags(i).get(TAG_DEPLOYMENT) == self.deployment_id
                and (cluster is None or _tags(i).get(TAG_CLUSTER) == cluster)]

    def _search_regions(self, region: str | None) -> list[str]:
        return [self._check_region(region)] if region else optimizer.regions()

    # ------------------------------------------------------------------ region setup

    async def ensure_region(self, region: str, ports: Iterable[str] | None = None) -> str:
        """Import the deployment's key pair and create its security group (SSH from
        ``ssh_cidr``, all traffic within the group, and ``ports`` from anywhere) in the
        default VPC; both tagged ``styx:deployment``. Idempotent. Returns the group id."""
        region = self._check_region(region)
        wanted_ports = frozenset(ports or ())
        ready = self._region_ready.get(region)
        if ready and wanted_ports <= ready[1]:
            return ready[0]
        lock = self._region_locks.setdefault(region, asyncio.Lock())
        async with lock:
            ready = self._region_ready.get(region)
            if ready and wanted_ports <= ready[1]:
                return ready[0]
            if not ready:
                await self._ensure_key_pair(region)
            group_id = await self._ensure_security_group(region)
            opened = (ready[1] if ready else frozenset()) | wanted_ports
            await self._ensure_ingress(region, group_id, opened)
            self._region_ready[region] = (group_id, opened)
            return group_id

    def _tag_spec(self, resource_type: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        tags = {"Name": self.name, TAG_DEPLOYMENT: self.deployment_id, TAG_MANAGED: "true", **(extra or {})}
        return {"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}

    async def _ensure_key_pair(self, region: str) -> None:
        wanted = self.public_key.split()[:2]
        try:
            found = await self._call(region, "describe_key_pairs", KeyNames=[self.name], IncludePublicKey=True)
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
            await self._call(region, "delete_key_pair", KeyName=self.name)
        try:
            await self._call(region, "import_key_pair", KeyName=self.name,
                             PublicKeyMaterial=self.public_key.encode(),
                             TagSpecifications=[self._tag_spec("key-pair")])
        except ProvisionError as err:
            if err.code != "InvalidKeyPair.Duplicate":  # a concurrent worker imported it first
                raise

    async def _default_vpc(self, region: str) -> str:
        vpcs = (await self._call(region, "describe_vpcs",
                                 Filters=[{"Name": "isDefault", "Values": ["true"]}])).get("Vpcs", [])
        if not vpcs:
            raise ProvisionError(f"no default VPC in {region}; create one with "
                                 f"`aws ec2 create-default-vpc --region {region}`", "NoDefaultVpc")
        return vpcs[0]["VpcId"]

    async def _find_group(self, region: str, vpc_id: str) -> str | None:
        groups = (await self._call(region, "describe_security_groups", Filters=[
            {"Name": "group-name", "Values": [self.name]}, {"Name": "vpc-id", "Values": [vpc_id]},
        ])).get("SecurityGroups", [])
        return groups[0]["GroupId"] if groups else None

    async def _ensure_security_group(self, region: str) -> str:
        vpc_id = await self._default_vpc(region)
        group_id = await self._find_group(region, vpc_id)
        if group_id:
            return group_id
        try:
            created = await self._call(
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
        group = (await self._call(region, "describe_security_groups", GroupIds=[group_id]))["SecurityGroups"][0]
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
                await self._call(region, "authorize_security_group_ingress", GroupId=group_id, IpPermissions=[perm])
            except ProvisionError as err:
                if err.code != "InvalidPermission.Duplicate":
                    raise

    async def _resolve_image(self, region: str, image_id: str | None, instance_type: str) -> tuple[str, str]:
        """``(image_id, root_device_name)``: the given image, or the newest Ubuntu 22.04
        (the NVIDIA driver base AMI for GPU types) published in the region."""
        if image_id:
            try:
                images = (await self._call(region, "describe_images", ImageIds=[image_id])).get("Images", [])
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
            images = (await self._call(region, "describe_images", Owners=owners, Filters=[
                {"Name": "name", "Values": [pattern]}, {"Name": "state", "Values": ["available"]},
                {"Name": "architecture", "Values": ["x86_64"]},
            ])).get("Images", [])
            if images:
                newest = max(images, key=lambda i: (i.get("CreationDate") or "", i.get("Name") or ""))
                result = (newest["ImageId"], newest.get("RootDeviceName") or "/dev/sda1")
                self._images[(region, gpu)] = result
                return result
        raise ProvisionError(f"no Ubuntu image found in {region}; set resources.image_id", "NoImage")

    # ------------------------------------------------------------------ provision

    async def provision(self, cluster: str, num_nodes: int, attempt: Attempt | Mapping[str, Any]) -> ProvisionResult:
        """Bring up ``num_nodes`` instances for ``cluster`` as ``attempt`` says, adopting the
        ones a crashed earlier try of the same attempt launched, and wait until they run and
        answer SSH. Raises ``CapacityError`` (try the next attempt) or ``ProvisionError``;
        either way, nothing of this attempt is left running."""
        attempt = attempt if isinstance(attempt, Attempt) else Attempt.from_dict(attempt)
        self._check_cluster(cluster)
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer (got {num_nodes!r})")
        if not optimizer.offers_for(attempt.instance_type):
            raise InvalidResources(f"{attempt.instance_type!r} is not an AWS instance type in the Styx catalog",
                                   field="resources.instance_type")
        region = self._check_region(attempt.region)
        self._refuse_emulated_ssh(region)
        group_id = await self.ensure_region(region, attempt.ports)
        image_id, root_device = await self._resolve_image(region, attempt.image_id, attempt.instance_type)

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
                 if _tags(i).get(TAG_ATTEMPT) != str(attempt.attempt_no)]
        if other:
            log.warning("cluster %s has live instances from other attempts: %s (left alone)", cluster, other)

        try:
            _crash_point("before_run_instances")
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
            _crash_point("after_run_instances")
            ids = [keep[rank]["InstanceId"] for rank in range(num_nodes)]
            await self._start_stopped(region, [keep[r] for r in range(num_nodes)])
            running = await self._wait_state(region, ids, "running", zone=attempt.zone)
            _crash_point("after_running")
            nodes = await self._endpoints(running, fresh=True)
        except Exception as err:
            if isinstance(err, ProvisionError) and err.code in ("InvalidGroup.NotFound", "InvalidKeyPair.NotFound"):
                self._region_ready.pop(region, None)  # deleted behind our back: recreate on the retry
            await self._cleanup_attempt(region, cluster, attempt.attempt_no, err)
            raise
        return ProvisionResult(
            nodes=nodes, region=region, zone=self._zone_of(running) or attempt.zone,
            instance_ids=[n["instance_id"] for n in nodes], instance_type=attempt.instance_type,
            use_spot=attempt.use_spot, attempt_no=attempt.attempt_no)

    @staticmethod
    def _check_cluster(cluster: str) -> None:
        if not isinstance(cluster, str) or not _NAME_RE.match(cluster):
            raise ValueError(f"cluster name must be 1-63 letters, digits, '.', '_' or '-' (got {cluster!r})")

    @staticmethod
    def _pick_by_rank(instances: list[dict[str, Any]], num_nodes: int) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
        """One instance per rank (the earliest launched, then lowest id: every worker picks
        the same one); the others of a rank are duplicates. Out-of-range ranks are ignored."""
        by_rank: dict[int, list[dict[str, Any]]] = {}
        for instance in instances:
            rank = _int_or_none(_tags(instance).get(TAG_RANK))
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
            "KeyName": self.name, "SecurityGroupIds": [group_id],
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
            reply = await self._call(attempt.region, "run_instances", zone=attempt.zone, **params)
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
                await self._loopback_each("terminate", ids)
        except Exception as err:  # noqa: BLE001 - the launch error is the one to report
            log.error("cleanup of cluster %s attempt %s failed: %s (run `down` to retry)", cluster, attempt_no, err)
            cause.add_note(f"cleanup failed, instances may be left: {err}")

    async def _start_stopped(self, region: str, instances: list[dict[str, Any]]) -> None:
        """Adopted instances may be stopping or stopped: bring them to running."""
        stopping = [i["InstanceId"] for i in instances if i["State"]["Name"] == "stopping"]
        if stopping:
            await self._wait_state(region, stopping, "stopped")
        stopped = [i["InstanceId"] for i in instances if i["State"]["Name"] in ("stopping", "stopped")]
        if stopped:
            await self._call(region, "start_instances", InstanceIds=stopped)

    async def _wait_state(self, region: str, ids: list[str], state: str, zone: str | None = None) -> list[dict[str, Any]]:
        """Poll until every instance in ``ids`` is in ``state``; return them in ``ids`` order."""
        deadline = time.monotonic() + self.state_timeout
        delay = 0.25
        while True:
            try:
                found = {i["InstanceId"]: i for i in await self._describe(
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
                        if code in _CAPACITY_CODES:
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

    # ------------------------------------------------------------------ endpoints

    async def _endpoints(self, instances: list[dict[str, Any]], *, fresh: bool) -> list[dict[str, Any]]:
        """SSH endpoints in rank order: loopback nodes when mapped, else the instance IPs
        (after waiting for an SSH banner)."""
        ordered = sorted(instances, key=lambda i: _int_or_none(_tags(i).get(TAG_RANK)) or 0)

        async def one(instance: dict[str, Any]) -> dict[str, Any]:
            iid = instance["InstanceId"]
            rank = _int_or_none(_tags(instance).get(TAG_RANK)) or 0
            private_ip = instance.get("PrivateIpAddress")
            if self.loopback is not None:
                node_name = f"aws-{iid}"
                nodes = await (self.loopback.provision(node_name, 1) if fresh else self.loopback.start(node_name))
                endpoint = _endpoint_dict(nodes[0])
                if not _is_loopback_host(endpoint.get("host")):
                    raise ProvisionError(f"loopback node for {iid} is not on a loopback address: {endpoint.get('host')}",
                                         "LoopbackMappingInvalid")
                # `ip` shows the instance's address; `loopback_ip` is the one nodes can really
                # reach each other on here (the 10.x address belongs to nobody).
                return {"rank": rank, "host": endpoint["host"], "port": int(endpoint["port"]),
                        "user": endpoint.get("user") or self.ssh_user, "ip": private_ip or endpoint.get("ip"),
                        "host_key": endpoint.get("host_key"), "instance_id": iid,
                        "loopback_ip": endpoint.get("ip") or endpoint["host"]}
            host = private_ip if self.use_private_ip else instance.get("PublicIpAddress")
            if not host:
                raise ProvisionError(f"{iid} has no {'private' if self.use_private_ip else 'public'} IP address"
                                     + ("" if self.use_private_ip else "; run Styx inside the VPC with use_private_ip"),
                                     "NoAddress")
            await self._wait_for_ssh(host, 22, instance.get("Placement", {}).get("AvailabilityZone"))
            return {"rank": rank, "host": host, "port": 22, "user": self.ssh_user, "ip": private_ip or host,
                    "host_key": None, "instance_id": iid}

        return list(await asyncio.gather(*(one(i) for i in ordered)))

    async def _wait_for_ssh(self, host: str, port: int, region_hint: str | None = None) -> None:
        """Until ``host:port`` sends an SSH banner (or ``ssh_timeout``)."""
        if self.loopback is None and not _is_loopback_host(host) and any(
                _is_loopback_host(urlparse(os.environ.get(v, "")).hostname)
                for v in ("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL")):
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

    async def _loopback_each(self, method: str, instance_ids: Iterable[str]) -> None:
        if self.loopback is None:
            return
        for iid in instance_ids:
            await getattr(self.loopback, method)(f"aws-{iid}")

    # ------------------------------------------------------------------ lifecycle by tag

    async def _find_everywhere(self, cluster: str | None, region: str | None,
                               states: Iterable[str] | None = LIVE_STATES) -> dict[str, list[dict[str, Any]]]:
        regions = self._search_regions(region)
        found = await asyncio.gather(*(self._find(r, cluster, None, states) for r in regions))
        return {r: instances for r, instances in zip(regions, found) if instances}

    async def stop(self, cluster: str, region: str | None = None) -> None:
        """Stop every instance of ``cluster`` (found by tag) and wait until all are stopped.
        Spot instances cannot be stopped: that raises ``ProvisionError`` (use terminate)."""
        self._check_cluster(cluster)
        for reg, instances in (await self._find_everywhere(cluster, region)).items():
            spot = [i["InstanceId"] for i in instances if i.get("InstanceLifecycle") == "spot"]
            if spot:
                raise ProvisionError(f"cluster {cluster} runs on spot instances {spot}, which cannot be stopped; "
                                     "terminate it (down) instead", "SpotCannotStop")
            ids = [i["InstanceId"] for i in instances]
            to_stop = [i["InstanceId"] for i in instances if i["State"]["Name"] in ("pending", "running")]
            if to_stop:
                await self._call(reg, "stop_instances", InstanceIds=to_stop)
            await self._wait_state(reg, ids, "stopped")
            await self._loopback_each("stop", ids)

    async def start(self, cluster: str, region: str | None = None) -> ProvisionResult:
        """Start the stopped instances of ``cluster`` (found by tag), wait for running and SSH."""
        self._check_cluster(cluster)
        everywhere = await self._find_everywhere(cluster, region)
        if not everywhere:
            where = region or "any catalog region"
            raise ProvisionError(f"cluster {cluster} has no instances in {where} to start", "ClusterNotFound")
        if len(everywhere) > 1:
            raise ProvisionError(f"cluster {cluster} has instances in several regions: {sorted(everywhere)}",
                                 "ClusterSplit")
        reg, instances = next(iter(everywhere.items()))
        self._refuse_emulated_ssh(reg)
        attempts = {_int_or_none(_tags(i).get(TAG_ATTEMPT)) or 0 for i in instances}
        latest = max(attempts)
        if len(attempts) > 1:
            log.warning("cluster %s has instances from attempts %s; starting attempt %s", cluster, sorted(attempts), latest)
        instances = [i for i in instances if (_int_or_none(_tags(i).get(TAG_ATTEMPT)) or 0) == latest]
        ids = [i["InstanceId"] for i in instances]
        await self._start_stopped(reg, instances)
        running = await self._wait_state(reg, ids, "running")
        nodes = await self._endpoints(running, fresh=False)
        lifecycle = {i.get("InstanceLifecycle") for i in running}
        return ProvisionResult(
            nodes=nodes, region=reg, zone=self._zone_of(running), instance_ids=[n["instance_id"] for n in nodes],
            instance_type=running[0].get("InstanceType"), use_spot=lifecycle == {"spot"}, attempt_no=latest)

    async def terminate(self, cluster: str, region: str | None = None) -> list[str]:
        """Terminate every instance of ``cluster`` (found by tag, in ``region`` or every
        catalog region) and return their ids once ``DescribeInstances`` shows them all
        ``terminated``. Idempotent."""
        self._check_cluster(cluster)
        everywhere = await self._find_everywhere(cluster, region, states=None)
        terminated: list[str] = []
        for reg, instances in everywhere.items():
            live = [i["InstanceId"] for i in instances if i["State"]["Name"] != "terminated"]
            if live:
                await self._terminate_ids(reg, live)
            terminated.extend(live)
            await self._loopback_each("terminate", [i["InstanceId"] for i in instances])
        return terminated

    async def _terminate_ids(self, region: str, ids: list[str]) -> None:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            await self._call(region, "terminate_instances", InstanceIds=chunk)
            await self._wait_state(region, chunk, "terminated")

    # ------------------------------------------------------------------ listing

    def _info(self, region: str, instance: dict[str, Any]) -> dict[str, Any]:
        tags = _tags(instance)
        launch = instance.get("LaunchTime")
        return {
            "instance_id": instance["InstanceId"],
            "state": instance["State"]["Name"],
            "region": region,
            "zone": instance.get("Placement", {}).get("AvailabilityZone"),
            "cluster": tags.get(TAG_CLUSTER),
            "rank": _int_or_none(tags.get(TAG_RANK)),
            "attempt": _int_or_none(tags.get(TAG_ATTEMPT)),
            "lifecycle": instance.get("InstanceLifecycle") or "on-demand",
            "instance_type": instance.get("InstanceType"),
            "private_ip": instance.get("PrivateIpAddress"),
            "public_ip": instance.get("PublicIpAddress"),
            "launch_time": launch.isoformat() if hasattr(launch, "isoformat") else launch,
        }

    async def list_by_cluster(self, cluster: str, region: str | None = None, *,
                              include_terminated: bool = False) -> list[dict[str, Any]]:
        """This deployment's instances of ``cluster``, by rank (live only unless asked)."""
        self._check_cluster(cluster)
        states = None if include_terminated else NOT_TERMINATED
        found = await self._find_everywhere(cluster, region, states)
        infos = [self._info(r, i) for r, instances in found.items() for i in instances]
        return sorted(infos, key=lambda x: (x["rank"] if x["rank"] is not None else 1 << 30, x["instance_id"]))

    async def list_deployment_instances(self, region: str | None = None) -> list[dict[str, Any]]:
        """Every live instance of this deployment with its cluster tag, for orphan reconcile."""
        found = await self._find_everywhere(None, region, NOT_TERMINATED)
        infos = [self._info(r, i) for r, instances in found.items() for i in instances]
        return sorted(infos, key=lambda x: (x["cluster"] or "", x["rank"] or 0, x["instance_id"]))

    # ------------------------------------------------------------------ check

    def check(self, region: str | None = None) -> tuple[bool, str]:
        """``(ok, one-line reason)`` for ``styx check``: credentials, region, default VPC."""
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
            self._check_region(region)
            vpcs = self._client(region).describe_vpcs(
                Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
        except ProvisionError as err:
            return False, str(err)
        except ClientError as err:
            mapped = self._map_client_error(err, "DescribeVpcs", region, None)
            return False, str(mapped)
        except (BotoCoreError, OSError) as err:
            return False, f"cannot reach EC2 in {region}: {err}"
        if not vpcs:
            return False, f"no default VPC in {region} (create one: aws ec2 create-default-vpc --region {region})"
        endpoint = self._client(region).meta.endpoint_url
        return True, f"AWS ok: region {region}, default VPC {vpcs[0]['VpcId']}, endpoint {endpoint}"
