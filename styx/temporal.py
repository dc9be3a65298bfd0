"""Connecting to Temporal, and the names Styx registers there."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError

from styx.config import SEARCH_ATTRIBUTES, Settings

CLUSTER_KEY = SearchAttributeKey.for_keyword("StyxCluster")
JOB_STATUS_KEY = SearchAttributeKey.for_keyword("StyxJobStatus")
REPO_KEY = SearchAttributeKey.for_keyword("StyxRepo")
SEARCH_ATTRIBUTE_KEYS = [CLUSTER_KEY, JOB_STATUS_KEY, REPO_KEY]
assert {k.name for k in SEARCH_ATTRIBUTE_KEYS} == set(SEARCH_ATTRIBUTES)


class TemporalUnavailable(RuntimeError):
    """Temporal did not answer within the time we were willing to wait."""


async def connect(settings: Settings, wait_seconds: float = 0.0) -> Client:
    """Connect to Temporal, retrying for up to ``wait_seconds`` while it starts."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(**settings.client_connect_kwargs())
        except (RuntimeError, RPCError) as err:
            if time.monotonic() >= deadline:
                raise TemporalUnavailable(
                    f"cannot reach Temporal at {settings.temporal_address}: {err}"
                ) from err
            await asyncio.sleep(0.5)
