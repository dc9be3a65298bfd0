"""What AWS failures become: EC2's error codes sorted into capacity, quota and credential
problems, and the AWS provider's errors, each a subclass of a provider-neutral one
(``styx.providers.base``) so the activities know what to do with it.

- ``CapacityError`` (base ``CapacityError``): no room in this zone, or no quota in this
  region; the next attempt may work.
- ``ProvisionError`` (base ``ProvisionError``) and its ``NoCredentials``: give up.
- ``InvalidRegion`` and ``InvalidResources`` (base ``InvalidProviderRequest``): the task asks
  for something the catalog or EC2 cannot serve.
"""

from __future__ import annotations

from styx.providers import base
from styx.task import TaskValidationError

__all__ = [
    "AUTH_CODES",
    "CAPACITY_CODES",
    "QUOTA_CODES",
    "CapacityError",
    "InvalidRegion",
    "InvalidResources",
    "NoCredentials",
    "NothingFits",
    "ProvisionError",
]

# Zone-level: another zone (or region) may have room.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientCapacityOnHost", "SpotMaxPriceTooLow",
    "Unsupported", "UnfulfillableCapacity", "InsufficientFreeAddressesInSubnet",
    "SpotInstanceTermination",
})
# Region-level: the account's quota in this region is used up; other zones of it will fail too.
QUOTA_CODES = frozenset({
    "InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
    "MaxSpotFleetRequestCountExceeded",
})
AUTH_CODES = frozenset({"AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException",
                        "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired"})


class ProvisionError(base.ProvisionError):
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


class InvalidRegion(ProvisionError, base.InvalidProviderRequest):
    """The region is not an AWS region Styx knows (a bad request; an AWS ``ProvisionError``
    too, so the EC2 plumbing handles it with the rest)."""


class CapacityError(base.CapacityError):
    """No capacity (or no quota) for this attempt; the next zone or region may work.

    ``region_wide`` is true for quota errors (``VcpuLimitExceeded`` …): the other zones of
    the same region will fail the same way.
    """

    def __init__(self, code: str, message: str, region: str | None, zone: str | None) -> None:
        super().__init__(code, message, region, zone)
        self.code = code
        self.message = message
        self.region = region
        self.zone = zone
        self.region_wide = code in QUOTA_CODES

    def __str__(self) -> str:
        where = self.zone or self.region or "?"
        return f"{self.code} in {where}: {self.message}"


class InvalidResources(TaskValidationError, base.InvalidProviderRequest):
    """The task's resources cannot be served from the AWS catalog; ``field`` names the key."""


class NothingFits(InvalidResources):
    """No catalog offer fits one candidate (``plan`` raises it only if none fits at all)."""
