"""Questions a user asks the catalog before launching: ``styx show-gpus`` and
``styx show-instances``. Pure functions over ``optimizer.load_catalog()``; the rows come
back cheapest first.

    >>> from styx.catalog.queries import gpus, instances
    >>> gpus("A100")[0].instance_type
    'p4d.24xlarge'
    >>> instances(cpus="8+", memory="32+")[0].instance_type
    't3.2xlarge'

A bad filter raises ``InvalidQuery`` naming it (``cpus``, ``memory``, ``infra``, ``gpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from styx.catalog import optimizer
from styx.catalog.optimizer import Offer
from styx.task import Resources, TaskValidationError

__all__ = ["CatalogRow", "InvalidQuery", "gpus", "instances", "parse_infra"]


class InvalidQuery(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class CatalogRow:
    instance_type: str
    region: str
    vcpus: float
    memory_gib: float
    accelerator_name: str | None
    accelerator_count: int
    #: USD per hour, on-demand and (indicative) spot.
    price: float
    spot_price: float | None

    @classmethod
    def of(cls, offer: Offer) -> CatalogRow:
        return cls(offer.instance_type, offer.region, offer.vcpus, offer.memory_gib, offer.accelerator_name,
                   offer.accelerator_count, offer.price, offer.spot_price)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_infra(infra: str | None) -> str | None:
    """``aws`` / ``aws/<region>`` -> the region (None: every region)."""
    if not infra:
        return None
    cloud, _, region = infra.strip().partition("/")
    if cloud.lower() != "aws":
        raise InvalidQuery("infra", f"the catalog prices AWS only (got {infra!r}); use aws or aws/<region>")
    region = region.split("/")[0]
    if region and region not in optimizer.regions():
        raise InvalidQuery("infra", f"unknown region {region!r} (priced: {', '.join(optimizer.regions())})")
    return region or None


def _amount(field: str, value: str | None) -> tuple[float, bool] | None:
    if value is None or value == "":
        return None
    try:
        res = Resources.model_validate({field: value})
    except (TaskValidationError, ValidationError) as err:
        errors = err.errors() if isinstance(err, ValidationError) else []
        message = str(errors[0]["msg"]).removeprefix("Value error, ") if errors else str(err)
        raise InvalidQuery(field, message) from None
    text = getattr(res, field)
    return float(text.rstrip("+")), text.endswith("+")


def _meets(got: float, want: tuple[float, bool] | None) -> bool:
    if want is None:
        return True
    amount, at_least = want
    return got >= amount - 1e-9 if at_least else abs(got - amount) < 1e-9


def _sorted(rows: list[Offer], key: Callable[[Offer], Any] | None = None) -> list[CatalogRow]:
    order = {r: i for i, r in enumerate(optimizer.regions())}
    return [CatalogRow.of(o) for o in sorted(rows, key=key or (lambda o: (o.price, order.get(o.region, 99),
                                                                           o.instance_type)))]


def gpus(name: str | None = None, infra: str | None = None) -> list[CatalogRow]:
    """Accelerator instance types, cheapest first. With ``name`` (``A100``, ``A100:8``):
    that accelerator's types in every region (or ``infra``'s); without it, every
    accelerator's types in their cheapest region."""
    region = parse_infra(infra)
    rows = [o for o in optimizer.load_catalog() if o.accelerator_name and (region is None or o.region == region)]
    count = None
    if name:
        accel, _, count_text = name.partition(":")
        known = optimizer.accelerator_names()
        if accel.lower() not in {k.lower() for k in known}:
            raise InvalidQuery("gpu", f"no instance type in the catalog has {accel} (known: {', '.join(known)})")
        if count_text:
            try:
                count = float(count_text)
            except ValueError:
                raise InvalidQuery("gpu", f"count must be a number, as in {accel}:8 (got {count_text!r})") from None
        rows = [o for o in rows if (o.accelerator_name or "").lower() == accel.lower()
                and (count is None or o.accelerator_count >= count)]
        return _sorted(rows, key=lambda o: (o.accelerator_name, o.accelerator_count, o.price, o.region))
    cheapest: dict[str, Offer] = {}
    for o in rows:
        if o.instance_type not in cheapest or o.price < cheapest[o.instance_type].price:
            cheapest[o.instance_type] = o
    return _sorted(list(cheapest.values()),
                   key=lambda o: (o.accelerator_name or "", o.accelerator_count, o.price))


def instances(cpus: str | None = None, memory: str | None = None, infra: str | None = None,
              gpu: str | None = None) -> list[CatalogRow]:
    """Instance types with ``cpus`` vCPUs and ``memory`` GB (``8`` exactly, ``8+`` at
    least), cheapest first, one row per region (``infra`` narrows to one)."""
    region = parse_infra(infra)
    want_cpus, want_mem = _amount("cpus", cpus), _amount("memory", memory)
    rows = [o for o in optimizer.load_catalog()
            if (region is None or o.region == region) and _meets(o.vcpus, want_cpus)
            and _meets(o.memory_gib, want_mem)]
    if gpu:
        return [r for r in gpus(gpu, infra) if _meets(r.vcpus, want_cpus) and _meets(r.memory_gib, want_mem)]
    return _sorted(rows)
