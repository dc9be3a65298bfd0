"""Pick the cheapest AWS instance type (and region) that fits a resource request.

The catalog is ``aws_instances.csv`` next to this module: one row per instance type and
region, with vCPUs, memory, accelerators, the on-demand price and an indicative spot
price (see the file's header for where the numbers come from). Requests follow SkyPilot:
``cpus: 4`` means exactly 4 vCPUs and ``cpus: 4+`` at least 4 (the same for memory in
GiB); accelerators match by name (case-insensitive) and exact count.

>>> from styx.catalog.optimizer import cheapest
>>> cheapest({"accelerators": "A100:8"})[0][:2]
('p4d.24xlarge', 'us-east-1')
>>> cheapest({"cpus": 8, "memory": 16, "infra": "aws/eu-west-1"})[0]
('c6i.2xlarge', 'eu-west-1', 0.3648)
"""

from __future__ import annotations

import csv
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from styx.task import Resources

__all__ = [
    "CATALOG_PATH",
    "DEFAULT_CPUS",
    "Offer",
    "accelerator_names",
    "cheapest",
    "load_catalog",
    "matching_offers",
    "offers_for",
    "regions",
    "region_of_zone",
    "zones",
]

CATALOG_PATH = Path(__file__).with_name("aws_instances.csv")

#: What a request that names no cpus, memory, accelerator or instance type gets.
DEFAULT_CPUS = "4+"

# Availability zones of the catalog's regions, in the order Styx tries them. Zone names are
# mapped per AWS account, and not every type is offered in every zone: a launch in a zone
# without the type fails with `Unsupported`, which the provider treats as "try the next zone".
# us-east-1e is last: it offers few current-generation types.
_REGION_ZONES: dict[str, tuple[str, ...]] = {
    "us-east-1": ("a", "b", "c", "d", "f", "e"),
    "us-east-2": ("a", "b", "c"),
    "us-west-2": ("a", "b", "c", "d"),
    "eu-west-1": ("a", "b", "c"),
}
_ZONE_RE = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)[a-z]+$")


@dataclass(frozen=True)
class Offer:
    """One instance type in one region, with its hourly prices in USD."""

    instance_type: str
    vcpus: float
    memory_gib: float
    accelerator_name: str | None
    accelerator_count: int
    region: str
    price: float
    spot_price: float | None

    def hourly(self, use_spot: bool) -> float | None:
        return self.spot_price if use_spot else self.price


@functools.lru_cache(maxsize=4)
def load_catalog(path: Path = CATALOG_PATH) -> tuple[Offer, ...]:
    """Parse the catalog CSV (lines starting with ``#`` are comments)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return tuple(
            Offer(
                instance_type=row["instance_type"],
                vcpus=float(row["vcpus"]),
                memory_gib=float(row["memory_gib"]),
                accelerator_name=row["accelerator_name"] or None,
                accelerator_count=int(float(row["accelerator_count"] or 0)),
                region=row["region"],
                price=float(row["price"]),
                spot_price=float(row["spot_price"]) if row.get("spot_price") else None,
            )
            for row in rows
        )


def regions() -> list[str]:
    """The regions the catalog prices, in catalog order (the tie-break order)."""
    seen: dict[str, None] = {}
    for offer in load_catalog():
        seen.setdefault(offer.region)
    return list(seen)


def zones(region: str) -> list[str]:
    """Availability zones of a catalog region, in the order to try them."""
    return [region + letter for letter in _REGION_ZONES.get(region, ())]


def region_of_zone(zone: str) -> str | None:
    """``us-east-1a`` -> ``us-east-1``; None if ``zone`` does not look like a zone name."""
    match = _ZONE_RE.match(zone)
    return match.group(1) if match else None


def accelerator_names() -> list[str]:
    return sorted({o.accelerator_name for o in load_catalog() if o.accelerator_name})


def offers_for(instance_type: str) -> list[Offer]:
    """Every region's row for one instance type (empty if the catalog does not know it)."""
    return [o for o in load_catalog() if o.instance_type == instance_type]


def _as_resources(resources: Resources | Mapping[str, Any]) -> Resources:
    return resources if isinstance(resources, Resources) else Resources.model_validate(dict(resources))


def _fits(offer: Offer, res: Resources) -> bool:
    if res.instance_type is not None:
        return offer.instance_type == res.instance_type
    accelerators = res.accelerators or {}
    if accelerators:
        name, count = next(iter(accelerators.items()))
        # A fraction (T4:0.5) shares a device: it fits a type with one.
        if (offer.accelerator_name or "").lower() != name.lower() or offer.accelerator_count != math.ceil(count):
            return False
    elif offer.accelerator_count:
        return False  # never hand a GPU machine to a CPU-only request
    cpus = res.cpus or (None if (accelerators or res.memory) else DEFAULT_CPUS)
    if cpus is not None:
        want = float(cpus.rstrip("+"))
        if offer.vcpus < want or (not cpus.endswith("+") and offer.vcpus != want):
            return False
    if res.memory is not None:
        want = float(res.memory.rstrip("+"))
        if offer.memory_gib < want or (not res.memory.endswith("+") and offer.memory_gib != want):
            return False
    return True


def matching_offers(resources: Resources | Mapping[str, Any], *, use_spot: bool | None = None) -> list[Offer]:
    """Offers that satisfy one resource request (its region and zone included), cheapest
    first; ties go to catalog region order, then instance type name."""
    res = _as_resources(resources)
    spot = bool(res.use_spot) if use_spot is None else use_spot
    region = res.region or (region_of_zone(res.zone) if res.zone else None)
    order = {r: i for i, r in enumerate(regions())}
    found = [
        o for o in load_catalog()
        if _fits(o, res) and (region is None or o.region == region) and o.hourly(spot) is not None
    ]
    return sorted(found, key=lambda o: (o.hourly(spot), order.get(o.region, len(order)), o.instance_type))


def cheapest(resources: Resources | Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(instance_type, region, hourly_price)`` for every offer that fits, cheapest first.

    Spot prices are used when the request says ``use_spot: true``. A request with
    ``any_of``/``ordered`` candidates is answered for all of them together.
    """
    res = _as_resources(resources)
    result: dict[tuple[str, str], float] = {}
    for candidate in res.candidates():
        spot = bool(candidate.use_spot)
        for offer in matching_offers(candidate):
            price = offer.hourly(spot)
            key = (offer.instance_type, offer.region)
            if price is not None and (key not in result or price < result[key]):
                result[key] = price
    order = {r: i for i, r in enumerate(regions())}
    return sorted(((t, r, p) for (t, r), p in result.items()),
                  key=lambda x: (x[2], order.get(x[1], len(order)), x[0]))
