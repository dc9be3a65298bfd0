"""The Python SDK: ``styx.Client`` (sync) and ``styx.AsyncClient``.

Both find the API and the token the way the CLI does: arguments first, then ``STYX_API_URL``
/ ``STYX_TOKEN``, then ``STYX_HOME/credentials`` (written by ``styx up``)::

    import styx

    client = styx.Client()
    submitted = client.launch("examples/hello.yaml", cluster="dev")
    job = client.wait("dev", submitted.job_id)
    print(job.status, client.logs("dev", submitted.job_id))
    client.share("dev", "bob")       # bob may now run jobs on dev too
    client.down("dev")

Every failure is a ``styx.StyxError`` (``NotFound``, ``Conflict``, ``Invalid``, ``Unauthorized``,
``Forbidden``, ``Unavailable``, ``ApiUnreachable`` …) with a ``hint``; they are defined in
``styx.sdk.transport``, with the connection. ``launch`` and ``exec`` send an idempotency key
(a new uuid4, or yours) and retry with it when no answer comes back, so a submission runs once::

    try:
        client.exec("dev", "python train.py", idempotency_key="train-2024-06-01")
    except styx.ApiUnreachable as err:   # no answer, even after retries
        ...                               # the same call again cannot queue a second job

Managed jobs and pipelines are ``client.jobs`` (``styx.sdk.managed``). The users, keys and
repositories methods are in ``styx.sdk.repos``; services (``serve_up``, ``serve_status``,
``serve_update``, ``serve_down`` ...) in ``styx.sdk.serve``; prices and costs (``dryrun``,
``show_gpus``, ``show_instances``, ``cost_report``) in ``styx.sdk.costs``; how a task's local files
are sent (as uploads the task then names) in ``styx.sdk.uploads``.
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator
from urllib.parse import quote

from pydantic import TypeAdapter

from styx.contracts.rest import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_CLUSTER_PAGE,
    CancelResult,
    ClusterInfo,
    DoctorReport,
    JobInfo,
    JobSubmitted,
    Orphan,
    ProviderCheck,
)
from styx.sdk.costs import AsyncCostsMixin, CostsMixin
from styx.sdk.tasks import as_task as _as_task
from styx.sdk.managed import AsyncManagedJobs, ManagedJobs
from styx.sdk.repos import AsyncReposMixin, ReposMixin
from styx.sdk.serve import AsyncServeMixin, ServeMixin
from styx.sdk.transport import (
    AsyncTransport,
    Invalid,
    Request,
    SyncTransport,
    WaitTimeout,
)
from styx.sdk.uploads import AsyncUploadsMixin, Progress, UploadsMixin, send_files, send_files_async

if TYPE_CHECKING:
    from styx.task import Task


@functools.cache
def _clusters() -> TypeAdapter[list[ClusterInfo]]:
    """A page of ``GET /clusters``, parsed from its bytes in one pass (made on first use)."""
    return TypeAdapter(list[ClusterInfo])


def _key(idempotency_key: str | None) -> str:
    """The key of one logical submission: the caller's (checked as the API would), or a new one."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    if not isinstance(idempotency_key, str) or not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, idempotency_key):
        raise Invalid(None, f"Idempotency-Key header: use 1-64 letters, digits, '_' or '-', not {idempotency_key!r}")
    return idempotency_key


class _Routes:
    """Every API call, as a request; both clients send these."""

    @staticmethod
    def launch(task: dict[str, Any], cluster: str, idle_minutes_to_autostop: int | None, down: bool,
               idempotency_key: str | None) -> Request:
        return Request("POST", "/api/v1/clusters", {"cluster": cluster, "task": task,
                                                     "idle_minutes_to_autostop": idle_minutes_to_autostop,
                                                     "down": down}, idempotency_key=_key(idempotency_key))

    @staticmethod
    def exec(cluster: str, task: dict[str, Any], idempotency_key: str | None) -> Request:
        return Request("POST", f"/api/v1/clusters/{cluster}/jobs", {"task": task},
                       idempotency_key=_key(idempotency_key))

    @staticmethod
    def status(all: bool, refresh: bool = False, status: list[str] | None = None, provider: str | None = None,
               owner: str | None = None, after: str | None = None) -> Request:
        params: dict[str, Any] = {"all": str(all).lower(), "limit": MAX_CLUSTER_PAGE}
        if refresh:
            params["refresh"] = "true"
        for name, value in (("status", status or None), ("provider", provider), ("owner", owner),
                            ("after", after)):
            if value is not None:
                params[name] = value
        return Request("GET", "/api/v1/clusters", params=params)

    @staticmethod
    def cluster(cluster: str, refresh: bool = False) -> Request:
        return Request("GET", f"/api/v1/clusters/{cluster}", params={"refresh": "true"} if refresh else None)

    @staticmethod
    def queue(cluster: str) -> Request:
        return Request("GET", f"/api/v1/clusters/{cluster}/jobs")

    @staticmethod
    def job(cluster: str, job_id: int) -> Request:
        return Request("GET", f"/api/v1/clusters/{cluster}/jobs/{job_id}")

    @staticmethod
    def cancel(cluster: str, job_ids: list[int] | None) -> Request:
        return Request("POST", f"/api/v1/clusters/{cluster}/jobs/cancel", {"job_ids": job_ids})

    @staticmethod
    def lifecycle(cluster: str, action: str) -> Request:
        return Request("POST", f"/api/v1/clusters/{cluster}/{action}")

    @staticmethod
    def autostop(cluster: str, idle_minutes: int | None, down: bool) -> Request:
        return Request("POST", f"/api/v1/clusters/{cluster}/autostop", {"idle_minutes": idle_minutes, "down": down})

    @staticmethod
    def check(region: str | None) -> Request:
        return Request("GET", "/api/v1/check", params={"region": region} if region else None)

    @staticmethod
    def orphans(terminate: bool) -> Request:
        return Request("GET", "/api/v1/orphans", params={"terminate": str(terminate).lower()})

    @staticmethod
    def doctor() -> Request:
        return Request("GET", "/api/v1/doctor")

    @staticmethod
    def logs(cluster: str, job_id: int, follow: bool) -> Request:
        return Request("GET", f"/api/v1/clusters/{cluster}/jobs/{job_id}/logs", params={"follow": str(follow).lower()})

    @staticmethod
    def share(cluster: str, user: str) -> Request:
        return Request("POST", f"/api/v1/clusters/{cluster}/shares", {"user": user})

    @staticmethod
    def unshare(cluster: str, user: str) -> Request:
        return Request("DELETE", f"/api/v1/clusters/{cluster}/shares/{quote(user, safe='')}")


class Client(ReposMixin, CostsMixin, UploadsMixin, ServeMixin, SyncTransport):
    """Synchronous client: ``Client(url=None, token=None, timeout=120.0)``. Every method raises
    a :class:`styx.StyxError` (``NotFound``, ``Conflict``, ``ApiUnreachable`` …) on failure,
    with the API's message and a hint. Managed jobs and pipelines are ``client.jobs``
    (``styx.sdk.managed``)."""

    @property
    def jobs(self) -> ManagedJobs:
        """Managed jobs: ``client.jobs.launch(...)``, ``launch_pipeline([...])``, ``queue()`` …"""
        return ManagedJobs(self)

    def launch(self, task: Task | dict | str | Path, cluster: str, *,
               idle_minutes_to_autostop: int | None = None, down: bool = False,
               progress: Progress | None = None, idempotency_key: str | None = None) -> JobSubmitted:
        """Launch ``cluster`` (if it does not exist; one that exists is reused when ``task``
        fits its nodes, else ``Conflict`` names what does not) and queue ``task`` on it,
        ``setup`` first. Its local workdir and file mounts are sent first as uploads
        (``styx.sdk.uploads``; ``progress`` is told how that goes).

        ``idempotency_key`` (up to 64 letters, digits, '_' or '-'; default: a new uuid4) names
        this submission: sent again with the same key, it returns the first one's job."""
        key = _key(idempotency_key)  # checked before anything is sent
        body = send_files(self, _as_task(task), progress)
        return JobSubmitted(**self._send(_Routes.launch(body, cluster, idle_minutes_to_autostop, down, key)))

    def exec(self, cluster: str, task: Task | dict | str | Path, *, progress: Progress | None = None,
             idempotency_key: str | None = None) -> JobSubmitted:
        """Queue ``task`` (a Task, dict, YAML path or bare command) on an existing cluster.
        As SkyPilot's ``exec``, its ``setup`` is not run (``launch`` runs it);
        ``idempotency_key`` as for :meth:`launch`."""
        key = _key(idempotency_key)
        return JobSubmitted(**self._send(_Routes.exec(cluster, send_files(self, _as_task(task), progress), key)))

    def status(self, all: bool = False, refresh: bool = False, *, status: list[str] | None = None,
               provider: str | None = None, owner: str | None = None) -> list[ClusterInfo]:
        """Clusters (with ``all``, also those taken down; ``status``, ``provider``, ``owner``
        keep to those), by name, every page of them. With ``refresh``, the nodes of each UP
        cluster are probed first: those that do not answer show as DOWN (``nodes[].status``,
        ``status_message``) and get no more jobs; those that answer again get jobs again."""
        found: list[ClusterInfo] = []
        while True:
            page = self._send(_Routes.status(all, refresh, status, provider, owner,
                                             after=found[-1].name if found else None), shape=_clusters())
            found.extend(page)
            if len(page) < MAX_CLUSTER_PAGE:
                return found

    def cluster(self, cluster: str, refresh: bool = False) -> ClusterInfo:
        """One cluster with its nodes (``refresh``: probe them first, as ``status``)."""
        return ClusterInfo(**self._send(_Routes.cluster(cluster, refresh)))

    def queue(self, cluster: str) -> list[JobInfo]:
        return [JobInfo(**j) for j in self._send(_Routes.queue(cluster))]

    def job(self, cluster: str, job_id: int) -> JobInfo:
        return JobInfo(**self._send(_Routes.job(cluster, job_id)))

    def wait(self, cluster: str, job_id: int, timeout: float | None = None, poll: float = 0.05) -> JobInfo:
        """Block until the job has finished; returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(cluster, job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(None, f"job {job_id} on {cluster} is still {job.status} after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)

    def cancel(self, cluster: str, job_ids: list[int] | None = None) -> CancelResult:
        return CancelResult(**self._send(_Routes.cancel(cluster, job_ids)))

    def stop(self, cluster: str) -> ClusterInfo:
        return ClusterInfo(**self._send(_Routes.lifecycle(cluster, "stop")))

    def start(self, cluster: str) -> ClusterInfo:
        return ClusterInfo(**self._send(_Routes.lifecycle(cluster, "start")))

    def down(self, cluster: str) -> ClusterInfo:
        return ClusterInfo(**self._send(_Routes.lifecycle(cluster, "down")))

    def autostop(self, cluster: str, idle_minutes: int | None, down: bool = False) -> ClusterInfo:
        return ClusterInfo(**self._send(_Routes.autostop(cluster, idle_minutes, down)))

    def check(self, region: str | None = None) -> list[ProviderCheck]:
        """Which providers the workers can use, and why not."""
        return [ProviderCheck(**r) for r in self._send(_Routes.check(region))]

    def orphans(self, terminate: bool = False) -> list[Orphan]:
        """Cloud instances of this deployment that belong to no live cluster."""
        return [Orphan(**o) for o in self._send(_Routes.orphans(terminate))]

    def doctor(self) -> DoctorReport:
        """Whether the API's database and Temporal answer, and which worker ran a trivial workflow."""
        return DoctorReport(**self._send(_Routes.doctor()))

    def logs(self, cluster: str, job_id: int) -> str:
        """The job's whole log so far."""
        return b"".join(self.stream_logs(cluster, job_id, follow=False)).decode(errors="replace")

    def stream_logs(self, cluster: str, job_id: int, follow: bool = True) -> Iterator[bytes]:
        """The job's log as it arrives; with ``follow`` it ends when the job does."""
        req = _Routes.logs(cluster, job_id, follow)
        yield from self._stream(req)

    def share(self, cluster: str, user: str) -> ClusterInfo:
        """Let ``user`` use your cluster: see it, queue jobs, read its jobs and logs, cancel
        their own jobs. Stopping, tearing down and sharing stay yours (and the admins')."""
        return ClusterInfo(**self._send(_Routes.share(cluster, user)))

    def unshare(self, cluster: str, user: str) -> ClusterInfo:
        return ClusterInfo(**self._send(_Routes.unshare(cluster, user)))


class AsyncClient(AsyncReposMixin, AsyncCostsMixin, AsyncUploadsMixin, AsyncServeMixin, AsyncTransport):
    """The asynchronous twin of :class:`Client`; same methods, awaited."""

    @property
    def jobs(self) -> AsyncManagedJobs:
        return AsyncManagedJobs(self)

    async def launch(self, task: Task | dict | str | Path, cluster: str, *,
                     idle_minutes_to_autostop: int | None = None, down: bool = False,
                     progress: Progress | None = None, idempotency_key: str | None = None) -> JobSubmitted:
        key = _key(idempotency_key)
        body = await send_files_async(self, _as_task(task), progress)
        return JobSubmitted(**await self._send(_Routes.launch(body, cluster, idle_minutes_to_autostop, down, key)))

    async def exec(self, cluster: str, task: Task | dict | str | Path, *, progress: Progress | None = None,
                   idempotency_key: str | None = None) -> JobSubmitted:
        key = _key(idempotency_key)
        body = await send_files_async(self, _as_task(task), progress)
        return JobSubmitted(**await self._send(_Routes.exec(cluster, body, key)))

    async def status(self, all: bool = False, refresh: bool = False, *, status: list[str] | None = None,
                     provider: str | None = None, owner: str | None = None) -> list[ClusterInfo]:
        found: list[ClusterInfo] = []
        while True:
            page = await self._send(_Routes.status(all, refresh, status, provider, owner,
                                                   after=found[-1].name if found else None), shape=_clusters())
            found.extend(page)
            if len(page) < MAX_CLUSTER_PAGE:
                return found

    async def cluster(self, cluster: str, refresh: bool = False) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.cluster(cluster, refresh)))

    async def queue(self, cluster: str) -> list[JobInfo]:
        return [JobInfo(**j) for j in await self._send(_Routes.queue(cluster))]

    async def job(self, cluster: str, job_id: int) -> JobInfo:
        return JobInfo(**await self._send(_Routes.job(cluster, job_id)))

    async def wait(self, cluster: str, job_id: int, timeout: float | None = None, poll: float = 0.05) -> JobInfo:
        import asyncio  # here: a sync client never needs the event loop's modules

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(cluster, job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(None, f"job {job_id} on {cluster} is still {job.status} after {timeout}s")
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, 1.0)

    async def cancel(self, cluster: str, job_ids: list[int] | None = None) -> CancelResult:
        return CancelResult(**await self._send(_Routes.cancel(cluster, job_ids)))

    async def stop(self, cluster: str) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.lifecycle(cluster, "stop")))

    async def start(self, cluster: str) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.lifecycle(cluster, "start")))

    async def down(self, cluster: str) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.lifecycle(cluster, "down")))

    async def autostop(self, cluster: str, idle_minutes: int | None, down: bool = False) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.autostop(cluster, idle_minutes, down)))

    async def check(self, region: str | None = None) -> list[ProviderCheck]:
        return [ProviderCheck(**r) for r in await self._send(_Routes.check(region))]

    async def orphans(self, terminate: bool = False) -> list[Orphan]:
        return [Orphan(**o) for o in await self._send(_Routes.orphans(terminate))]

    async def doctor(self) -> DoctorReport:
        return DoctorReport(**await self._send(_Routes.doctor()))

    async def logs(self, cluster: str, job_id: int) -> str:
        chunks = [c async for c in self.stream_logs(cluster, job_id, follow=False)]
        return b"".join(chunks).decode(errors="replace")

    async def stream_logs(self, cluster: str, job_id: int, follow: bool = True) -> AsyncIterator[bytes]:
        req = _Routes.logs(cluster, job_id, follow)
        async for chunk in self._stream(req):
            yield chunk

    async def share(self, cluster: str, user: str) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.share(cluster, user)))

    async def unshare(self, cluster: str, user: str) -> ClusterInfo:
        return ClusterInfo(**await self._send(_Routes.unshare(cluster, user)))
