"""One Provider interface: the three providers share its signatures, and the provider
activities find them by name and turn their errors into the workflow's error types."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from styx.activities.providers import ProviderActivities
from styx.contracts.providers import CheckInput, ProviderErrors, ProviderInput
from styx.providers.aws.provider import AwsProvider
from styx.providers.base import CapacityError, InvalidProviderRequest, Provider, Provisioned, ProvisionError
from styx.providers.local.provider import LocalProvider
from styx.providers.registry import ProviderRegistry, UnknownProvider
from styx.providers.ssh.provider import SshPoolProvider

OPERATIONS = ("plan", "provision", "start", "stop", "terminate", "describe_nodes", "check")


def _parameters(method: Any) -> list[str]:
    return [p.name for p in inspect.signature(method).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("cls", [LocalProvider, AwsProvider, SshPoolProvider])
def test_every_provider_has_the_one_signature_of_each_operation(cls: type) -> None:
    for name in OPERATIONS:
        method = getattr(cls, name)
        assert inspect.iscoroutinefunction(method), f"{cls.__name__}.{name} must be async"
        assert _parameters(method) == _parameters(getattr(Provider, name)), f"{cls.__name__}.{name}"


class Scripted:
    """A provider whose provision raises what the test says, and records what it was asked."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def plan(self, resources: dict[str, Any], num_nodes: int, region: str | None) -> list[dict[str, Any]]:
        self.calls.append(("plan", (resources, num_nodes, region)))
        return [{"attempt_no": 1, "zone": "z1"}]

    async def provision(self, cluster: str, num_nodes: int, attempt: dict[str, Any]) -> Provisioned:
        self.calls.append(("provision", (cluster, num_nodes, attempt)))
        if self.error:
            raise self.error
        return Provisioned(nodes=[{"rank": 0}], region="r1", zone=attempt["zone"])

    async def start(self, cluster: str, region: str | None) -> Provisioned:
        return Provisioned(region=region)

    async def stop(self, cluster: str, region: str | None) -> None:
        self.calls.append(("stop", (cluster, region)))

    async def terminate(self, cluster: str, region: str | None) -> None:
        self.calls.append(("terminate", (cluster, region)))

    async def describe_nodes(self, cluster: str, region: str | None) -> list[dict[str, Any]]:
        return []

    async def check(self, region: str | None) -> tuple[bool, str]:
        return region == "here", f"asked about {region}"


async def test_activities_call_the_named_provider_with_the_one_signature() -> None:
    scripted = Scripted()
    activities = ProviderActivities(ProviderRegistry({"local": Scripted(), "fake": scripted}))
    env = ActivityEnvironment()
    plan = await env.run(activities.plan, ProviderInput("c", "fake", 2, {"cpus": 1}, region="r1"))
    out = await env.run(activities.provision, ProviderInput("c", "fake", 2, attempt=plan.attempts[0]))
    await env.run(activities.stop, ProviderInput("c", "fake", region="r1"))

    assert (out.nodes, out.region, out.zone) == ([{"rank": 0}], "r1", "z1")
    assert scripted.calls == [("plan", ({"cpus": 1}, 2, "r1")),
                              ("provision", ("c", 2, {"attempt_no": 1, "zone": "z1"})),
                              ("stop", ("c", "r1"))]
    checked = await env.run(activities.check_providers, CheckInput(region="here"))
    assert [(r["provider"], r["ok"]) for r in checked.results] == [("local", True), ("fake", True)]


@pytest.mark.parametrize("error, kind", [
    (CapacityError("no room in z1"), ProviderErrors.CAPACITY),
    (InvalidProviderRequest("no such pool"), ProviderErrors.INVALID),
    (ProvisionError("quota"), ProviderErrors.FAILED),
])
async def test_provider_errors_become_the_workflows_error_types(error: Exception, kind: str) -> None:
    activities = ProviderActivities(ProviderRegistry({"fake": Scripted(error)}))
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(activities.provision, ProviderInput("c", "fake", attempt={"zone": "z1"}))
    assert raised.value.type == kind and raised.value.non_retryable and str(error) in str(raised.value)


async def test_an_unknown_provider_is_an_invalid_task() -> None:
    registry = ProviderRegistry({"local": Scripted()})
    with pytest.raises(UnknownProvider, match="'gcp' is not configured"):
        registry.lookup("gcp")
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(ProviderActivities(registry).terminate, ProviderInput("c", "gcp"))
    assert raised.value.type == ProviderErrors.INVALID
