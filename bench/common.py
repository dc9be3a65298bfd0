"""What the benchmarks share: a Temporal dev server and a Styx stack on it, for one run."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from styx.config import find_temporal_binary
from styx.contracts.search import SEARCH_ATTRIBUTE_KEYS
from tests.fixtures.stack import StyxStack
from tests.fixtures.temporal import free_port


@asynccontextmanager
async def dev_stack(prefix: str = "styx-bench-",
                    extra_env: dict[str, str] | None = None) -> AsyncIterator[tuple[WorkflowEnvironment, Path, StyxStack]]:
    """A fresh dev server (in memory) and a Styx stack started on it under a new temporary
    home: ``(env, home, stack)``; both are stopped on the way out, whatever happened."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_temporal_binary(), search_attributes=SEARCH_ATTRIBUTE_KEYS, port=free_port())
    try:
        home = Path(tempfile.mkdtemp(prefix=prefix))
        stack = StyxStack(home / "home", env.client.service_client.config.target_host, extra_env=extra_env).start()
        try:
            yield env, home, stack
        finally:
            await asyncio.to_thread(stack.stop)
    finally:
        await env.shutdown()
