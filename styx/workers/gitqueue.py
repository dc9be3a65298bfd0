"""The git server's own task queue: the activities that read repositories.

``push_plan`` (read ``.styx.yaml``, store the commit's tree as an upload) and ``push_submit``
(read the task again, with its secrets) need the repositories, which only the git server's
host keeps (``STYX_HOME/git``). So the git server polls ``git_task_queue(STYX_TASK_QUEUE)``
for them (``serve_repo_activities``, run beside its HTTP and SSH servers) and worker hosts
need no repository: everything a worker uses of a push -- the plan, the tree -- comes
through Temporal and the database.

While Temporal cannot be reached the git server still serves git; it keeps trying to
connect, and push runs wait in the queue meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from temporalio.worker import Worker

from styx.activities.git import GitActivities
from styx.config import Settings
from styx.contracts.pushes import git_task_queue
from styx.temporal import TemporalUnavailable, connect

log = logging.getLogger("styx.gitserver.queue")

#: Seconds between attempts to reach Temporal, or to poll again after the worker stopped.
RETRY_SECONDS = 2.0


async def serve_repo_activities(settings: Settings, stop: asyncio.Event) -> None:
    """Run ``push_plan`` and ``push_submit`` from the git server's task queue until ``stop``."""
    activities = GitActivities(settings)
    queue = git_task_queue(settings.task_queue)
    warned = False
    while not stop.is_set():
        try:
            client = await connect(settings)
        except TemporalUnavailable as err:
            if not warned:
                log.warning("push runs wait until Temporal answers: %s", err)
                warned = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
            continue
        warned = False
        worker = Worker(client, task_queue=queue, activities=activities.repo_activities(),
                        graceful_shutdown_timeout=timedelta(seconds=5))
        running = asyncio.create_task(worker.run())
        stopping = asyncio.create_task(stop.wait())
        log.info("polling task queue %r for push runs", queue)
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not running.done():
            await worker.shutdown()
        try:
            await running
        except Exception as err:  # a fatal poll error: connect and poll again
            log.warning("the push-run worker on %r stopped (%s); polling again in %.0fs", queue, err,
                        RETRY_SECONDS)
        if not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_SECONDS)
