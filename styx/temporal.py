"""Connecting to Temporal, and the search attributes Styx registers there.

Styx's workflows set custom search attributes (``styx.contracts.search``). A Temporal that
does not know them refuses to start those workflows, and one that learns of them too late
leaves a workflow task failing for ever (see the Temporal notes), so they are registered
before any work: by ``styx up`` when it starts the dev server, and by every worker at start
on any other Temporal (``ensure_search_attributes``, through the operator service). Where
that is not allowed (Temporal Cloud), the worker stops with the exact command to run, and
``styx doctor`` and the API's 503 answers say the same.
"""

from __future__ import annotations

import asyncio
import time

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from styx.config import Settings
from styx.contracts.search import SEARCH_ATTRIBUTES


class TemporalUnavailable(RuntimeError):
    """Temporal did not answer within the time we were willing to wait."""


async def connect(settings: Settings, wait_seconds: float = 0.0, runtime: Runtime | None = None) -> Client:
    """Connect to Temporal, retrying for up to ``wait_seconds`` while it starts (on ``runtime``,
    or the SDK's default one)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(**settings.client_connect_kwargs(), runtime=runtime)
        except (RuntimeError, RPCError) as err:
            if time.monotonic() >= deadline:
                raise TemporalUnavailable(
                    f"cannot reach Temporal at {settings.temporal_address}: {err}"
                ) from err
            await asyncio.sleep(0.5)


class SearchAttributesMissing(RuntimeError):
    """Temporal lacks some of Styx's search attributes and Styx may not add them."""

    def __init__(self, missing: list[str], namespace: str, reason: str = "") -> None:
        self.missing = missing
        self.command = create_command(missing, namespace)
        super().__init__(f"Temporal namespace {namespace!r} lacks Styx's search attributes "
                         f"{', '.join(missing)}{f' ({reason})' if reason else ''}; create them with: "
                         f"{self.command}")


def create_command(missing: list[str], namespace: str) -> str:
    """The command an operator runs to register ``missing`` (Temporal Cloud: ``tcld``)."""
    names = " ".join(f"--name {name}" for name in missing)
    cloud = " ".join(f"--search-attribute {name}={SEARCH_ATTRIBUTES[name]}" for name in missing)
    return (f"temporal operator search-attribute create --namespace {namespace} {names} "
            f"--type Keyword   (Temporal Cloud: tcld namespace search-attributes add "
            f"--namespace {namespace} {cloud})")


async def missing_search_attributes(client: Client, namespace: str) -> list[str]:
    known = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    return [name for name in SEARCH_ATTRIBUTES if name not in known.custom_attributes]


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register whichever of Styx's search attributes ``namespace`` lacks; raises
    ``SearchAttributesMissing`` (with the command to run) when Styx may not."""
    try:
        missing = await missing_search_attributes(client, namespace)
        if not missing:
            return
        await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing}))
    except RPCError as err:
        raise SearchAttributesMissing(list(SEARCH_ATTRIBUTES), namespace, err.message) from err
