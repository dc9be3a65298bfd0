"""The optimizer: the cheapest catalog offer that satisfies a task's resources, and the
requirement named when nothing does — a table of requests a user writes, with the choice a
launch makes (and ``--dryrun`` shows), checked against the committed catalog."""

from __future__ import annotations

from typing import Any

import pytest

from styx.catalog.choose import Unsatisfiable, choose
from styx.catalog.queries import InvalidQuery, gpus, instances
from styx.providers.aws.plan import plan_attempts

#: (request, expected (instance type, region, spot)) — cheapest first, ties by catalog region order.
CHOICES: list[tuple[dict[str, Any], tuple[str, str, bool]]] = [
    ({}, ("t3.xlarge", "us-east-1", False)),                                    # the default: 4+ vCPUs
    ({"cpus": 2}, ("t3.micro", "us-east-1", False)),
    ({"cpus": "2", "memory": 4}, ("t3.medium", "us-east-1", False)),
    ({"cpus": "8+", "memory": "32+"}, ("t3.2xlarge", "us-east-1", False)),
    ({"cpus": "16+", "memory": "128+"}, ("r6i.4xlarge", "us-east-1", False)),
    ({"memory": "64+"}, ("r6i.2xlarge", "us-east-1", False)),
    ({"cpus": 8, "memory": 16, "infra": "aws/eu-west-1"}, ("c6i.2xlarge", "eu-west-1", False)),
    ({"cpus": 4, "zone": "us-west-2b"}, ("t3.xlarge", "us-west-2", False)),
    ({"cpus": 4, "use_spot": True}, ("t3.xlarge", "us-east-1", True)),
    ({"accelerators": "A100:8"}, ("p4d.24xlarge", "us-east-1", False)),
    ({"accelerators": "A100:8", "infra": "aws/us-west-2", "use_spot": True}, ("p4d.24xlarge", "us-west-2", True)),
    ({"accelerators": "V100:1"}, ("p3.2xlarge", "us-east-1", False)),
    ({"accelerators": "V100:4"}, ("p3.8xlarge", "us-east-1", False)),
    ({"accelerators": "A10G:1", "cpus": "8+"}, ("g5.2xlarge", "us-east-1", False)),
    ({"accelerators": "A10G:0.5"}, ("g5.xlarge", "us-east-1", False)),           # a fraction: a 1-device node
    ({"accelerators": {"A100:8": None, "V100:8": None}}, ("p3.16xlarge", "us-east-1", False)),   # a set: cheapest
    ({"accelerators": ["A100:8", "V100:8"]}, ("p4d.24xlarge", "us-east-1", False)),  # a list: in order
    ({"instance_type": "m6i.large"}, ("m6i.large", "us-east-1", False)),
    ({"instance_type": "m6i.large", "infra": "aws/eu-west-1"}, ("m6i.large", "eu-west-1", False)),
    ({"cpus": 4, "any_of": [{"use_spot": False}, {"use_spot": True}]}, ("t3.xlarge", "us-east-1", True)),
    ({"accelerators": "V100:8", "any_of": [{"infra": "aws/eu-west-1"}, {"infra": "aws/us-east-2"}]},
     ("p3.16xlarge", "us-east-2", False)),
    ({"ordered": [{"accelerators": "V100:8"}, {"accelerators": "A10G:8"}]}, ("p3.16xlarge", "us-east-1", False)),
    ({"ordered": [{"accelerators": "A100:8", "infra": "aws/us-east-2"}, {"accelerators": "A10G:8"}]},
     ("g5.48xlarge", "us-east-1", False)),                                      # the first fits nowhere
    ({"ordered": [{"infra": "aws/eu-west-1", "cpus": 2}, {"infra": "aws/us-east-1", "cpus": 2}]},
     ("t3.micro", "eu-west-1", False)),
]

#: (request, the field named, words the message must hold) — nothing in the catalog fits.
UNSATISFIABLE: list[tuple[dict[str, Any], str, list[str]]] = [
    ({"accelerators": "H100:64"}, "accelerators", ["H100:64", "H100 is not offered"]),
    ({"accelerators": "A100:64"}, "accelerators", ["A100:64", "8 to an instance"]),
    ({"accelerators": "A100:8", "infra": "aws/us-east-2"}, "accelerators", ["A100:8", "us-east-2"]),
    ({"cpus": 500}, "cpus", ["cpus 500"]),
    ({"cpus": 3}, "cpus", ["cpus 3", "2, 4, 8"]),
    ({"memory": "4096+"}, "memory", ["4096+ GB"]),
    ({"infra": "aws/ap-south-1"}, "region", ["ap-south-1"]),
    ({"zone": "us-east-1z"}, "zone", ["us-east-1z"]),
    ({"instance_type": "zz.huge"}, "instance_type", ["zz.huge"]),
    ({"ordered": [{"accelerators": "H100:8"}, {"accelerators": "A10G:8"}]}, "accelerators", ["H100:8"]),  # a typo
    ({"cpus": 4, "any_of": [{"infra": "aws/ap-south-1"}, {"infra": "aws/mars-1"}]}, "region", ["ap-south-1"]),
]


@pytest.mark.parametrize(("request_", "expected"), CHOICES, ids=[str(r) for r, _ in CHOICES])
def test_the_cheapest_offer_that_satisfies_the_request(request_: dict[str, Any], expected: tuple[str, str, bool]) -> None:
    chosen = choose(request_).chosen
    assert (chosen.instance_type, chosen.region, chosen.use_spot) == expected
    # What a launch tries first is what --dryrun shows.
    first = plan_attempts(request_, 1)[0]
    assert (first.instance_type, first.region, first.use_spot) == expected


@pytest.mark.parametrize(("request_", "field", "words"), UNSATISFIABLE, ids=[str(r) for r, _, _ in UNSATISFIABLE])
def test_an_unsatisfiable_request_names_the_requirement(request_: dict[str, Any], field: str, words: list[str]) -> None:
    with pytest.raises(Unsatisfiable) as err:
        choose(request_)
    assert err.value.field == field
    for word in words:
        assert word in str(err.value)


def test_the_table_is_large_enough() -> None:
    assert len(CHOICES) + len(UNSATISFIABLE) >= 20
    assert any("any_of" in r for r, _ in CHOICES) and any("ordered" in r for r, _ in CHOICES)


def test_runners_up_say_why_they_lost() -> None:
    plan = choose({"cpus": "8+", "memory": "32+"}, num_nodes=3)
    assert plan.hourly_total == pytest.approx(3 * plan.chosen.hourly_price)
    assert plan.chosen.also_in == ["us-east-2", "us-west-2", "eu-west-1"]
    assert plan.runners_up[0].instance_type == "m6i.2xlarge"
    assert plan.runners_up[0].why_not.endswith("/h more per node")
    prices = [plan.chosen.hourly_price] + [r.hourly_price for r in plan.runners_up]
    assert prices == sorted(prices)
    ordered = choose({"ordered": [{"accelerators": "V100:8"}, {"accelerators": "A10G:8"}]})
    assert ordered.mode == "ordered"
    assert ordered.runners_up[0].instance_type == "g5.48xlarge"
    assert "tried only if candidate 1 cannot launch" in ordered.runners_up[0].why_not


def test_catalog_queries_are_cheapest_first_and_refuse_bad_filters() -> None:
    a100 = gpus("A100", "aws/us-east-1")
    assert [(o.instance_type, o.region, o.price) for o in a100] == [("p4d.24xlarge", "us-east-1", 32.7726)]
    every = gpus()
    assert {o.accelerator_name for o in every} == {"A100", "A10G", "V100"}
    rows = instances(cpus="8+", memory="32+")
    assert rows[0].instance_type == "t3.2xlarge" and all(r.vcpus >= 8 and r.memory_gib >= 32 for r in rows)
    assert [r.price for r in rows] == sorted(r.price for r in rows)
    for bad, field in (({"cpus": "lots"}, "cpus"), ({"infra": "gcp"}, "infra"), ({"gpu": "H100"}, "gpu")):
        with pytest.raises(InvalidQuery) as err:
            instances(**bad)
        assert err.value.field == field
