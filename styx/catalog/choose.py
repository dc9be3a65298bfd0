"""The optimizer's answer for a whole request: the offer a launch takes, the runners-up and
why each lost, or the one requirement nothing in the catalog meets.

``optimizer`` matches one concrete request against the catalog; this module walks a task's
resource candidates the way a launch does — ``any_of``: the cheapest offer of any candidate;
``ordered``: the first candidate that has an offer, in the order written (a later one is
tried only if the earlier cannot launch) — and explains the result::

    >>> from styx.catalog.choose import choose
    >>> plan = choose({"accelerators": "A100:8"})
    >>> (plan.chosen.instance_type, plan.chosen.region, plan.chosen.hourly_price)
    ('p4d.24xlarge', 'us-east-1', 32.7726)
    >>> choose({"accelerators": "H100:64"})
    Traceback (most recent call last):
    ...
    styx.catalog.choose.Unsatisfiable: accelerators: nothing in the catalog has H100:64 (H100 is not offered; known: A100, A10G, V100)

``Unsatisfiable.field`` names the task field (``accelerators``, ``cpus``, ``memory``,
``instance_type``, ``region``, ``zone``, ``use_spot``) so that a launch is refused with it
before anything is provisioned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from styx.catalog import optimizer
from styx.catalog.optimizer import Offer
from styx.task import Resources

__all__ = ["Choice", "LaunchPlan", "Unsatisfiable", "choose", "MAX_RUNNERS_UP"]

#: How many runners-up a plan lists.
MAX_RUNNERS_UP = 5


class Unsatisfiable(ValueError):
    """Nothing in the catalog meets ``requirement`` (of task field ``field``)."""

    def __init__(self, field: str, requirement: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.requirement = requirement


@dataclass
class Choice:
    """One offer for a request: an instance type in a region (zone: the first one tried)."""

    instance_type: str
    region: str
    zone: str | None
    use_spot: bool
    #: USD per node-hour (the spot price for spot).
    hourly_price: float
    vcpus: float
    memory_gib: float
    accelerators: dict[str, int] = field(default_factory=dict)
    #: Which resource candidate (``any_of``/``ordered`` entry, from 0) it satisfies.
    candidate: int = 0
    #: For a runner-up: why the chosen offer won over it.
    why_not: str = ""
    #: Other regions offering the same type (at the same or a higher price), tried next.
    also_in: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LaunchPlan:
    chosen: Choice
    num_nodes: int = 1
    runners_up: list[Choice] = field(default_factory=list)
    #: How the candidates were combined: "single", "any_of" or "ordered".
    mode: str = "single"

    @property
    def hourly_total(self) -> float:
        return self.chosen.hourly_price * self.num_nodes

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "num_nodes": self.num_nodes, "mode": self.mode,
                "hourly_total": self.hourly_total, "runners_up": [c.to_dict() for c in self.runners_up]}


def _as_resources(resources: Resources | Mapping[str, Any]) -> Resources:
    return resources if isinstance(resources, Resources) else Resources.model_validate(dict(resources))


def _choice(offer: Offer, res: Resources, spot: bool, candidate: int) -> Choice:
    zone = res.zone or next(iter(optimizer.zones(offer.region)), None)
    price = offer.hourly(spot)
    assert price is not None
    accelerators = {offer.accelerator_name: offer.accelerator_count} if offer.accelerator_name else {}
    return Choice(offer.instance_type, offer.region, zone, spot, price, offer.vcpus, offer.memory_gib,
                  accelerators, candidate)


def _offers(res: Resources, candidate: int) -> list[Choice]:
    if res.zone and res.zone not in optimizer.zones(optimizer.region_of_zone(res.zone) or ""):
        return []
    spot = bool(res.use_spot)
    return [_choice(o, res, spot, candidate) for o in optimizer.matching_offers(res, use_spot=spot)]


def _money(x: float) -> str:
    return f"${x:,.4f}".rstrip("0").rstrip(".") if x < 1 else f"${x:,.2f}"


def _why_not(winner: Choice, other: Choice, mode: str) -> str:
    if mode == "ordered" and other.candidate != winner.candidate:
        return (f"ordered candidate {other.candidate + 1} is tried only if candidate "
                f"{winner.candidate + 1} cannot launch")
    diff = other.hourly_price - winner.hourly_price
    if diff > 1e-9:
        market = "" if other.use_spot == winner.use_spot else (" (spot)" if other.use_spot else " (on-demand)")
        return f"{_money(diff)}/h more per node{market}"
    if other.use_spot != winner.use_spot:
        return "same price; " + ("spot" if winner.use_spot else "on-demand") + " comes first"
    return "same price; the chosen type comes first by name"


def choose(resources: Resources | Mapping[str, Any], num_nodes: int = 1,
           max_runners_up: int = MAX_RUNNERS_UP) -> LaunchPlan:
    """The offer a launch of ``resources`` takes on AWS, the next ``max_runners_up`` and
    why they lost. Raises ``Unsatisfiable`` naming the requirement nothing meets (for
    several candidates: the first candidate's)."""
    res = _as_resources(resources)
    candidates = res.candidates()
    mode = "ordered" if res.ordered else "any_of" if res.any_of else "single"
    per_candidate = [_offers(c, i) for i, c in enumerate(candidates)]
    known = {n.lower() for n in optimizer.accelerator_names()}
    for c in candidates:  # a name the catalog does not know is a typo, not a candidate to skip
        if c.accelerators and next(iter(c.accelerators)).lower() not in known:
            diagnose(c)
    if not any(per_candidate):
        diagnose(candidates[0])  # raises, naming the requirement
        raise Unsatisfiable("resources", "resources", "nothing in the catalog fits this request")
    if mode == "ordered":
        first = next(i for i, offers in enumerate(per_candidate) if offers)
        ranked = [c for offers in per_candidate[first:] for c in offers]
    else:
        ranked = sorted((c for offers in per_candidate for c in offers),
                        key=lambda c: (c.hourly_price, _region_rank(c.region), c.instance_type, c.use_spot))
    # One entry per (type, spot), in its first region; the others are where a launch tries
    # next (``also_in``), not different choices.
    unique: dict[tuple[str, bool], Choice] = {}
    for c in ranked:
        first = unique.setdefault((c.instance_type, c.use_spot), c)
        if first is not c and c.region not in first.also_in and c.region != first.region:
            first.also_in.append(c.region)
    ordered_choices = list(unique.values())
    chosen, rest = ordered_choices[0], ordered_choices[1:1 + max_runners_up]
    for other in rest:
        other.why_not = _why_not(chosen, other, mode)
    return LaunchPlan(chosen, num_nodes, rest, mode)


def _region_rank(region: str) -> int:
    order = optimizer.regions()
    return order.index(region) if region in order else len(order)


def _count(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def diagnose(res: Resources) -> None:
    """Raise ``Unsatisfiable`` for the first requirement of ``res`` (one candidate) that
    leaves no catalog offer; return if something fits."""
    offers = list(optimizer.load_catalog())
    spot = bool(res.use_spot)
    region = res.region or (optimizer.region_of_zone(res.zone) if res.zone else None)

    def narrow(keep: Callable[[Offer], bool], field_name: str, requirement: str, why: Callable[[], str]) -> None:
        nonlocal offers
        left = [o for o in offers if keep(o)]
        if not left:
            raise Unsatisfiable(field_name, requirement, f"nothing in the catalog has {requirement} ({why()})")
        offers = left

    if region is not None:
        narrow(lambda o: o.region == region, "region", region,
               lambda: f"regions priced: {', '.join(optimizer.regions())}")
    if res.zone is not None:
        zones = optimizer.zones(region or "")
        if res.zone not in zones:
            raise Unsatisfiable("zone", res.zone, f"nothing in the catalog has zone {res.zone} "
                                f"(zones of {region}: {', '.join(zones) or 'none known'})")
    if res.instance_type is not None:
        narrow(lambda o: o.instance_type == res.instance_type, "instance_type", res.instance_type,
               lambda: "not an instance type in the catalog" + (f" in {region}" if region else ""))
    if res.accelerators:
        name, count = next(iter(res.accelerators.items()))
        want = f"{name}:{_count(count)}"
        known = optimizer.accelerator_names()
        narrow(lambda o: (o.accelerator_name or "").lower() == name.lower(), "accelerators", want,
               lambda: f"{name} is not offered" + (f" in {region}" if region else "")
               + f"; known: {', '.join(known)}")
        counts = sorted({o.accelerator_count for o in offers})
        narrow(lambda o: o.accelerator_count == math.ceil(count - 1e-9), "accelerators", want,
               lambda: f"{name} comes {', '.join(str(c) for c in counts)} to an instance")
    elif res.instance_type is None:
        offers = [o for o in offers if not o.accelerator_count] or offers
    cpus = res.cpus or (None if (res.accelerators or res.memory or res.instance_type) else optimizer.DEFAULT_CPUS)
    if cpus is not None and res.instance_type is None:
        want_cpus = float(cpus.rstrip("+"))
        narrow(lambda o: o.vcpus >= want_cpus and (cpus.endswith("+") or o.vcpus == want_cpus),
               "cpus", f"cpus {cpus}", lambda: f"types that meet the rest have "
               f"{', '.join(sorted({_count(o.vcpus) for o in offers}, key=float))} vCPUs")
    if res.memory is not None and res.instance_type is None:
        want_mem = float(res.memory.rstrip("+"))
        most = max(o.memory_gib for o in offers)
        narrow(lambda o: o.memory_gib >= want_mem and (res.memory.endswith("+") or o.memory_gib == want_mem),
               "memory", f"memory {res.memory} GB", lambda: f"types that meet the rest have at most {_count(most)} GB")
    if spot:
        narrow(lambda o: o.spot_price is not None, "use_spot", "spot",
               lambda: "no spot price for the types that fit")
