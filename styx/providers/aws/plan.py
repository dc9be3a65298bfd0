"""Launch attempts from the catalog: which instance type, in which zones and regions, spot
or on-demand, in the order to try them. Pure: the catalog (``styx.catalog.optimizer``) is
the only input besides the task's resources.

    >>> attempts = plan_attempts({"accelerators": "A100:8",
    ...                           "any_of": [{"use_spot": True}, {"use_spot": False}]}, 2)
    >>> (attempts[0].instance_type, attempts[0].use_spot)
    ('p4d.24xlarge', True)

``Attempt`` is what one launch try needs (``to_dict`` / ``from_dict`` carry it through the
workflow history); the provider's ``plan`` returns the dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from styx.catalog import optimizer
from styx.providers.aws.errors import InvalidRegion, InvalidResources, NothingFits
from styx.task import Resources

__all__ = ["DEFAULT_DISK_GB", "MAX_REGIONS", "Attempt", "plan_attempts"]

#: SkyPilot's default root disk, GB.
DEFAULT_DISK_GB = 256
#: With no region requested, try the cheapest few regions the catalog prices the type in.
MAX_REGIONS = 3


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
    #: Catalog price per node-hour in USD (spot price for spot), for display and the cost report.
    hourly_price: float | None = None
    #: Set by the cluster workflow for a cluster launched with autostop: the instance's own
    #: failsafe timer starts with this window (``failsafe_script.aws_user_data``).
    autostop_minutes: int | None = None
    autostop_down: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def plan_attempts(resources: Mapping[str, Any] | Resources, num_nodes: int) -> list[Attempt]:
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
    if res.any_of:
        # Any candidate will do: the cheapest first (as ``styx launch --dryrun`` shows).
        candidates.sort(key=_cheapest_price)
    attempts: list[Attempt] = []
    seen: set[tuple[Any, ...]] = set()
    unfit: list[InvalidResources] = []
    for candidate in candidates:
        try:
            planned = _plan_candidate(candidate)
        except NothingFits as err:  # another candidate may fit; unknown names still raise
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


def _cheapest_price(res: Resources) -> float:
    offers = optimizer.matching_offers(res, use_spot=bool(res.use_spot))
    return offers[0].hourly(bool(res.use_spot)) or float("inf") if offers else float("inf")


def _plan_candidate(res: Resources) -> list[Attempt]:
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
        raise NothingFits(f"no AWS {what}instance type in the catalog fits {_describe_request(res)}{where}",
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

