"""The sweep of orphan job specs: a job's body is stored (``db.jobspecs.put``) before its
submission reaches the cluster workflow (``styx.services.clusters.submit_job``); a submitter
that dies in between — an API replica killed, a git server or a managed job's worker cut off —
leaves a body no job will ever name. Nothing else removes it (a cluster's specs go with its
jobs' rows), so every API replica sweeps: at start and then every
``STYX_SPEC_SWEEP_SECONDS`` (default 300), it deletes at most ``SWEEP_BATCH`` specs stored
more than ``STYX_SPEC_ORPHAN_SECONDS`` ago (default a day) that no job names. The grace is far
longer than any submission takes to be answered and its row written, so a body whose job is
about to be recorded is never taken; deleting is idempotent, so replicas sweeping at once
only repeat each other.

- ``sweep_once(db, grace_seconds)`` -> how many went (one bounded batch).
- ``sweep_forever(db, interval, grace)``: the API's background task.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from styx.db import Database, utcnow

__all__ = ["SWEEP_BATCH", "sweep_forever", "sweep_once"]

log = logging.getLogger("styx.services.specsweep")

#: The most specs one pass deletes (one short write transaction).
SWEEP_BATCH = 500


def sweep_once(db: Database, grace_seconds: float, batch: int = SWEEP_BATCH) -> int:
    """Delete up to ``batch`` specs stored more than ``grace_seconds`` ago that no job names."""
    swept = db.jobspecs.sweep_orphans(utcnow() - timedelta(seconds=grace_seconds), batch)
    if swept:
        log.info("swept %d job spec(s) no job names, stored more than %.0f s ago", swept, grace_seconds)
    return swept


async def sweep_forever(db: Database, interval_seconds: float, grace_seconds: float) -> None:
    """``sweep_once`` now and every ``interval_seconds``; a failure (the database away) is
    logged and the next pass tries again. A full batch is followed by the next one at once,
    up to ten in a row, so a backlog drains without one pass holding the database long."""
    while True:
        for _ in range(10):
            try:
                swept = await asyncio.to_thread(sweep_once, db, grace_seconds)
            except Exception:  # noqa: BLE001 - a sweep must never take the API down
                log.warning("the job spec sweep failed; trying again in %.0f s", interval_seconds, exc_info=True)
                break
            if swept < SWEEP_BATCH:
                break
        await asyncio.sleep(interval_seconds)
