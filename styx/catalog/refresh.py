"""Rebuild ``aws_instances.csv`` from EC2: shapes, availability and live spot prices.

    python -m styx.catalog.refresh                      # the catalog's own types and regions
    python -m styx.catalog.refresh --types g5.xlarge,g6.xlarge --regions us-east-1,eu-west-1 --pricing

What comes from where:

* ``describe_instance_types``: vCPUs, memory, GPU name and count.
* ``describe_instance_type_offerings`` (per region): which types the region offers.
* ``describe_spot_price_history`` (Linux/UNIX, now): the median over zones of each zone's
  latest price, as ``spot_price``.
* on-demand ``price``: EC2 has no API for it. With ``--pricing`` the AWS Price List API
  (``pricing:GetProducts``) is asked; otherwise, or when it does not answer, the price in
  the current catalog is kept and a type with no known price is left out.

It uses boto3's standard chain, so it also runs against the EC2 emulator
(``AWS_ENDPOINT_URL``) — whose spot prices are placeholders, not market data.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3

from styx.catalog.optimizer import CATALOG_PATH, Offer, load_catalog

COLUMNS = ["instance_type", "vcpus", "memory_gib", "accelerator_name", "accelerator_count",
           "region", "price", "spot_price"]

# Price List API location names of the catalog's regions.
_PRICING_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)",
    "us-west-2": "US West (Oregon)", "eu-west-1": "EU (Ireland)",
}


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def instance_shapes(client: Any, types: list[str]) -> dict[str, dict[str, Any]]:
    shapes: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(types, 100):
        for info in client.describe_instance_types(InstanceTypes=chunk)["InstanceTypes"]:
            gpus = (info.get("GpuInfo") or {}).get("Gpus") or []
            shapes[info["InstanceType"]] = {
                "vcpus": info["VCpuInfo"]["DefaultVCpus"],
                "memory_gib": round(info["MemoryInfo"]["SizeInMiB"] / 1024, 2),
                "accelerator_name": gpus[0]["Name"] if gpus else "",
                "accelerator_count": sum(g.get("Count", 0) for g in gpus) if gpus else "",
            }
    return shapes


def offered_types(client: Any, region: str, types: list[str]) -> set[str]:
    offered: set[str] = set()
    for chunk in _chunks(types, 100):
        pages = client.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="region", Filters=[{"Name": "instance-type", "Values": chunk},
                                            {"Name": "location", "Values": [region]}])
        for page in pages:
            offered.update(o["InstanceType"] for o in page["InstanceTypeOfferings"])
    return offered


def spot_prices(client: Any, types: list[str]) -> dict[str, float]:
    latest: dict[tuple[str, str], tuple[Any, float]] = {}
    for chunk in _chunks(types, 100):
        pages = client.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=chunk, ProductDescriptions=["Linux/UNIX"],
            StartTime=dt.datetime.now(dt.timezone.utc))
        for page in pages:
            for row in page["SpotPriceHistory"]:
                key = (row["InstanceType"], row["AvailabilityZone"])
                if key not in latest or row["Timestamp"] > latest[key][0]:
                    latest[key] = (row["Timestamp"], float(row["SpotPrice"]))
    by_type: dict[str, list[float]] = {}
    for (instance_type, _zone), (_ts, price) in latest.items():
        by_type.setdefault(instance_type, []).append(price)
    return {t: round(statistics.median(p), 6) for t, p in by_type.items()}


def on_demand_price(pricing: Any, instance_type: str, region: str) -> float | None:
    """The Linux, shared-tenancy, no-license on-demand hourly price from the Price List API."""
    location = _PRICING_LOCATIONS.get(region)
    filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in {
        "instanceType": instance_type, "operatingSystem": "Linux", "tenancy": "Shared",
        "preInstalledSw": "NA", "capacitystatus": "Used", "licenseModel": "No License required",
        **({"location": location} if location else {"regionCode": region}),
    }.items()]
    for item in pricing.get_products(ServiceCode="AmazonEC2", Filters=filters, MaxResults=10)["PriceList"]:
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                if usd > 0:
                    return usd
    return None


def build_rows(regions: list[str], types: list[str], *, use_pricing: bool = False,
               current: Iterable[Offer] = (), client_factory: Callable[[str], Any] | None = None,
               log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[dict[str, Any]]:
    factory = client_factory or (lambda region: boto3.session.Session().client("ec2", region_name=region))
    known = {(o.instance_type, o.region): o for o in current}
    shapes = instance_shapes(factory(regions[0]), types)
    pricing = boto3.session.Session().client("pricing", region_name="us-east-1") if use_pricing else None
    rows = []
    for region in regions:
        client = factory(region)
        offered = offered_types(client, region, types)
        spot = spot_prices(client, sorted(offered))
        for instance_type in types:
            if instance_type not in offered or instance_type not in shapes:
                continue
            price = None
            if pricing is not None:
                try:
                    price = on_demand_price(pricing, instance_type, region)
                except Exception as err:  # noqa: BLE001 - keep the old price, say why
                    log(f"pricing for {instance_type} in {region} failed: {err}")
            if price is None and (instance_type, region) in known:
                price = known[(instance_type, region)].price
            if price is None:
                log(f"skipping {instance_type} in {region}: no on-demand price known")
                continue
            rows.append({"instance_type": instance_type, **shapes[instance_type], "region": region,
                         "price": price, "spot_price": spot.get(instance_type, "")})
    return rows


def render(rows: list[dict[str, Any]], *, use_pricing: bool, endpoint: str | None) -> str:
    today = dt.date.today().isoformat()
    header = [
        f"# Styx AWS catalog, rebuilt by styx.catalog.refresh on {today}"
        + (f" from {endpoint}" if endpoint else "") + ".",
        "# vcpus, memory_gib, accelerators: describe_instance_types; regions: describe_instance_type_offerings.",
        "# price: " + ("AWS Price List API (Linux, shared tenancy), else kept from the previous catalog."
                       if use_pricing else "kept from the previous catalog (no EC2 API gives on-demand prices)."),
        "# spot_price: median over zones of the latest describe_spot_price_history price (moves hourly).",
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(header) + "\n" + out.getvalue()


def main(argv: list[str] | None = None) -> int:
    current = load_catalog()
    parser = argparse.ArgumentParser(prog="python -m styx.catalog.refresh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--regions", default=",".join(dict.fromkeys(o.region for o in current)))
    parser.add_argument("--types", default=",".join(dict.fromkeys(o.instance_type for o in current)))
    parser.add_argument("--output", type=Path, default=CATALOG_PATH)
    parser.add_argument("--pricing", action="store_true", help="ask the AWS Price List API for on-demand prices")
    args = parser.parse_args(argv)
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    rows = build_rows(regions, types, use_pricing=args.pricing, current=current)
    if not rows:
        print("no rows: nothing written", file=sys.stderr)
        return 1
    endpoint = boto3.session.Session().client("ec2", region_name=regions[0]).meta.endpoint_url
    args.output.write_text(render(rows, use_pricing=args.pricing, endpoint=endpoint), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
