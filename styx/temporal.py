"""Connecting to Temporal, and the names Styx registers there."""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client
from temporalio.service import RPCError

from styx.config import Settings


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
