"""EC2 plumbing: one boto3 client per region, calls run in a thread with botocore's errors
turned into the provider's (``errors``), and the tags Styx puts on what it creates.

- ``Ec2(client_factory)``: ``call(region, operation, **params)`` and the paginated
  ``describe_instances(region, filters)``; ``client(region)`` for the few synchronous uses.
- ``default_client_factory(region)``: boto3's credential chain and ``AWS_ENDPOINT_URL`` apply
  (tests hand in a factory whose clients they instrument).
- ``check_region``: a region the catalog prices or boto3 knows, else ``InvalidRegion``.
- ``TAG_*``, ``tags_of``: every instance and volume carries ``styx:cluster``,
  ``styx:deployment``, ``styx:attempt``, ``styx:rank`` and ``styx:managed=true``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any

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
from styx.providers.aws.errors import (
    AUTH_CODES,
    CAPACITY_CODES,
    QUOTA_CODES,
    CapacityError,
    InvalidRegion,
    NoCredentials,
    ProvisionError,
)

__all__ = [
    "LIVE_STATES",
    "NOT_TERMINATED",
    "TAG_ATTEMPT",
    "TAG_CLUSTER",
    "TAG_DEPLOYMENT",
    "TAG_MANAGED",
    "TAG_RANK",
    "Ec2",
    "check_region",
    "default_client_factory",
    "int_or_none",
    "map_client_error",
    "tags_of",
]

TAG_CLUSTER = "styx:cluster"
TAG_DEPLOYMENT = "styx:deployment"
TAG_ATTEMPT = "styx:attempt"
TAG_RANK = "styx:rank"
TAG_MANAGED = "styx:managed"

LIVE_STATES = ("pending", "running", "stopping", "stopped")
NOT_TERMINATED = ("pending", "running", "stopping", "stopped", "shutting-down")


def default_client_factory(region: str) -> Any:
    """A fresh session's EC2 client: boto3's credential chain and ``AWS_ENDPOINT_URL`` apply."""
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3},
                                    connect_timeout=10, read_timeout=60)
    return boto3.session.Session().client("ec2", region_name=region, config=config)


@functools.lru_cache(maxsize=1)
def _aws_regions() -> frozenset[str]:
    return frozenset(boto3.session.Session().get_available_regions("ec2"))


def check_region(region: str | None) -> str:
    if not region or not isinstance(region, str):
        raise InvalidRegion("no AWS region given (set resources.region / infra: aws/<region>, or AWS_DEFAULT_REGION)")
    if region not in optimizer.regions() and region not in _aws_regions():
        raise InvalidRegion(f"unknown AWS region {region!r} (Styx's catalog prices: {', '.join(optimizer.regions())})")
    return region


def tags_of(item: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags") or []}


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def map_client_error(err: ClientError, operation: str, region: str, zone: str | None) -> CapacityError | ProvisionError:
    """EC2's error code -> ``CapacityError`` (zone or quota), ``NoCredentials`` or ``ProvisionError``."""
    error = err.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    bare = code.split(".", 1)[1] if code.startswith(("Server.", "Client.")) else code
    message = str(error.get("Message") or err)
    if bare in CAPACITY_CODES or bare in QUOTA_CODES:
        return CapacityError(bare, message, region, zone)
    if bare in AUTH_CODES:
        return NoCredentials(f"AWS rejected the credentials ({code}): {message}", bare)
    return ProvisionError(f"EC2 {operation} in {region} failed: {code}: {message}", bare)


class Ec2:
    """EC2 clients by region (made on first use, shared by threads) and calls on them."""

    def __init__(self, client_factory: Callable[[str], Any] | None = None) -> None:
        self.client_factory = client_factory or default_client_factory
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self.client_factory(region)
            return client

    async def call(self, region: str, operation: str, *, zone: str | None = None, **kwargs: Any) -> Any:
        """Run one EC2 call in a thread, turning botocore's errors into Styx's."""
        region = check_region(region)
        try:
            client = await asyncio.to_thread(self.client, region)
            return await asyncio.to_thread(getattr(client, operation), **kwargs)
        except (NoCredentialsError, PartialCredentialsError) as err:
            raise NoCredentials(f"no AWS credentials found ({err}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                "AWS_PROFILE or an instance role") from None
        except NoRegionError:
            raise InvalidRegion("no AWS region configured") from None
        except EndpointConnectionError as err:
            raise ProvisionError(f"cannot reach the EC2 endpoint for {region}: {err}", "EndpointConnectionError") from None
        except ClientError as err:
            raise map_client_error(err, operation, region, zone) from None
        except BotoCoreError as err:
            raise ProvisionError(f"EC2 {operation} in {region} failed: {err}", type(err).__name__) from None

    async def describe_instances(self, region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every instance matching ``filters`` (all pages)."""
        instances: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Filters": filters}
        while True:
            page = await self.call(region, "describe_instances", **kwargs)
            for reservation in page.get("Reservations", []):
                instances.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return instances
            kwargs["NextToken"] = token
