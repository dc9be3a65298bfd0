"""Managed jobs in the SDK: ``client.jobs`` (sync) and ``async_client.jobs`` (async).

A managed job runs on a cluster launched for it alone, taken down when it ends, and is
launched again elsewhere when it is preempted; a pipeline runs its tasks one after another::

    import styx

    with styx.Client() as client:
        job = client.jobs.launch("train.yaml", name="train", max_restarts_on_errors=2)
        print(client.jobs.wait(job.managed_id).status, client.jobs.logs(job.managed_id))
        pipe = client.jobs.launch_pipeline([{"run": "python prep.py"}, "train.yaml"], name="p")
        client.jobs.cancel([pipe.managed_id])

Tasks are a ``Task``, a dict, a YAML path or a bare command, as for ``Client.launch``; their
local files are sent as uploads first. A YAML file in SkyPilot's pipeline form (a header
document with ``name``, then one document per task) given to ``launch`` runs as a pipeline.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

from styx.contracts.rest_managed import ManagedCancelResult, ManagedJobInfo, ManagedJobSubmitted
from styx.sdk.tasks import as_task
from styx.sdk.transport import Invalid, Request, WaitTimeout
from styx.sdk.uploads import Progress, send_files, send_files_async

if TYPE_CHECKING:
    from styx.task import Task

if TYPE_CHECKING:
    from styx.sdk.client import AsyncClient, Client

_PATH = "/api/v1/managed-jobs"


def _tasks(tasks: Any) -> tuple[str | None, list["Task"]]:
    """One task or many, each a Task, dict, YAML path (a pipeline file gives its tasks and
    name) or bare command."""
    from styx.task import TaskValidationError, load_pipeline  # here: listing needs no task model

    items = tasks if isinstance(tasks, (list, tuple)) else [tasks]
    if not items:
        raise Invalid(None, "tasks: a pipeline needs at least one task")
    name: str | None = None
    out: list["Task"] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, Path)) and (str(item).endswith((".yaml", ".yml")) or Path(item).is_file()):
            try:
                pipeline = load_pipeline(Path(item))
            except (TaskValidationError, OSError) as err:
                raise Invalid(None, str(err)) from err
            name = name or pipeline.name
            out.extend(pipeline.tasks)
            continue
        try:
            out.append(as_task(item))
        except Invalid as err:
            if len(items) == 1:
                raise
            raise Invalid(None, f"tasks[{index}].{err.message}") from None
    return name, out


def _launch_request(bodies: list[dict[str, Any]], name: str | None, max_restarts_on_errors: int | None,
                    key: str) -> Request:
    return Request("POST", _PATH, {"tasks": bodies, "name": name, "max_restarts_on_errors": max_restarts_on_errors},
                   idempotency_key=key)


def _list_request(all_users: bool, active: bool, limit: int) -> Request:
    return Request("GET", _PATH, params={"all_users": str(all_users).lower(), "active": str(active).lower(),
                                         "limit": str(limit)})


def _cancel_request(ids: list[int] | None, name: str | None, all: bool) -> Request:
    return Request("POST", f"{_PATH}/cancel", {"ids": ids, "name": name, "all": all})


class ManagedJobs:
    """``client.jobs``: managed jobs and pipelines (see the module's docstring)."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    def launch(self, task: Any, *, name: str | None = None, max_restarts_on_errors: int | None = None,
               progress: Progress | None = None, idempotency_key: str | None = None) -> ManagedJobSubmitted:
        """Launch ``task`` as a managed job (a pipeline file: its tasks, in order)."""
        return self.launch_pipeline([task], name=name, max_restarts_on_errors=max_restarts_on_errors,
                                    progress=progress, idempotency_key=idempotency_key)

    def launch_pipeline(self, tasks: list[Any], *, name: str | None = None,
                        max_restarts_on_errors: int | None = None, progress: Progress | None = None,
                        idempotency_key: str | None = None) -> ManagedJobSubmitted:
        """Launch ``tasks`` as a pipeline: each on a cluster of its own, one after another;
        a failed task stops it. ``idempotency_key`` as for ``Client.launch``."""
        from styx.sdk.client import _key

        key = _key(idempotency_key)
        file_name, loaded = _tasks(tasks)
        bodies = [send_files(self._client, t, progress) for t in loaded]
        return ManagedJobSubmitted(**self._client._send(
            _launch_request(bodies, name or file_name, max_restarts_on_errors, key)))

    def queue(self, all_users: bool = False, active: bool = False, limit: int = 100) -> list[ManagedJobInfo]:
        """Your managed jobs, newest first (``all_users``: everyone's, admins only)."""
        return [ManagedJobInfo(**j) for j in self._client._send(_list_request(all_users, active, limit))]

    def get(self, managed_id: int) -> ManagedJobInfo:
        """One managed job, with its tasks and attempts (one per cluster launched)."""
        return ManagedJobInfo(**self._client._send(Request("GET", f"{_PATH}/{managed_id}")))

    def wait(self, managed_id: int, timeout: float | None = None, poll: float = 0.1) -> ManagedJobInfo:
        """Block until the managed job has ended; returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(managed_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(None, f"managed job {managed_id} is still {job.status} after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 2.0)

    def cancel(self, ids: list[int] | None = None, *, name: str | None = None,
               all: bool = False) -> ManagedCancelResult:
        """Cancel managed jobs by id, by name, or ``all`` your active ones."""
        return ManagedCancelResult(**self._client._send(_cancel_request(ids, name, all)))

    def logs(self, managed_id: int) -> str:
        """Every attempt's log so far, in order."""
        return b"".join(self.stream_logs(managed_id, follow=False)).decode(errors="replace")

    def stream_logs(self, managed_id: int, follow: bool = True) -> Iterator[bytes]:
        req = Request("GET", f"{_PATH}/{managed_id}/logs", params={"follow": str(follow).lower()})
        yield from self._client._stream(req)


class AsyncManagedJobs:
    """``async_client.jobs``: the asynchronous twin of :class:`ManagedJobs`."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def launch(self, task: Any, *, name: str | None = None, max_restarts_on_errors: int | None = None,
                     progress: Progress | None = None, idempotency_key: str | None = None) -> ManagedJobSubmitted:
        return await self.launch_pipeline([task], name=name, max_restarts_on_errors=max_restarts_on_errors,
                                          progress=progress, idempotency_key=idempotency_key)

    async def launch_pipeline(self, tasks: list[Any], *, name: str | None = None,
                              max_restarts_on_errors: int | None = None, progress: Progress | None = None,
                              idempotency_key: str | None = None) -> ManagedJobSubmitted:
        from styx.sdk.client import _key

        key = _key(idempotency_key)
        file_name, loaded = _tasks(tasks)
        bodies = [await send_files_async(self._client, t, progress) for t in loaded]
        return ManagedJobSubmitted(**await self._client._send(
            _launch_request(bodies, name or file_name, max_restarts_on_errors, key)))

    async def queue(self, all_users: bool = False, active: bool = False, limit: int = 100) -> list[ManagedJobInfo]:
        return [ManagedJobInfo(**j) for j in await self._client._send(_list_request(all_users, active, limit))]

    async def get(self, managed_id: int) -> ManagedJobInfo:
        return ManagedJobInfo(**await self._client._send(Request("GET", f"{_PATH}/{managed_id}")))

    async def wait(self, managed_id: int, timeout: float | None = None, poll: float = 0.1) -> ManagedJobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(managed_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(None, f"managed job {managed_id} is still {job.status} after {timeout}s")
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, 2.0)

    async def cancel(self, ids: list[int] | None = None, *, name: str | None = None,
                     all: bool = False) -> ManagedCancelResult:
        return ManagedCancelResult(**await self._client._send(_cancel_request(ids, name, all)))

    async def logs(self, managed_id: int) -> str:
        chunks = [c async for c in self.stream_logs(managed_id, follow=False)]
        return b"".join(chunks).decode(errors="replace")

    async def stream_logs(self, managed_id: int, follow: bool = True) -> AsyncIterator[bytes]:
        req = Request("GET", f"{_PATH}/{managed_id}/logs", params={"follow": str(follow).lower()})
        async for chunk in self._client._stream(req):
            yield chunk
