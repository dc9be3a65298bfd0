"""Services in the SDK (``styx.Client`` has these methods; ``styx.AsyncClient`` the same, awaited)::

    import styx

    with styx.Client() as client:
        svc = client.serve_up("service.yaml", name="api")      # returns at once
        svc = client.serve_wait("api", ready=2)                # until 2 replicas are READY
        print(svc.endpoint)                                    # http://127.0.0.1:30001
        client.serve_update("api", "service-v2.yaml")          # rolling; mode="blue_green"
        print(client.serve_logs("api", 1), client.serve_lb_logs("api"))
        client.serve_down("api", wait=True)

A task's local workdir and file mounts are sent as uploads first, as for ``launch``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

import httpx

from styx.contracts.rest_services import ServiceInfo
from styx.sdk.transport import AsyncTransport, NotFound, Request, SyncTransport, WaitTimeout, raise_for_status, unreachable
from styx.sdk.tasks import as_task
from styx.sdk.uploads import Progress, send_files, send_files_async

if TYPE_CHECKING:
    from styx.task import Task


class _Routes:
    @staticmethod
    def up(name: str, task: dict[str, Any]) -> Request:
        return Request("POST", "/api/v1/services", {"name": name, "task": task})

    @staticmethod
    def status() -> Request:
        return Request("GET", "/api/v1/services")

    @staticmethod
    def one(name: str) -> Request:
        return Request("GET", f"/api/v1/services/{name}")

    @staticmethod
    def update(name: str, task: dict[str, Any], mode: str) -> Request:
        return Request("POST", f"/api/v1/services/{name}/update", {"task": task, "mode": mode})

    @staticmethod
    def down(name: str) -> Request:
        return Request("POST", f"/api/v1/services/{name}/down")

    @staticmethod
    def logs(name: str, replica_id: int, follow: bool) -> Request:
        return Request("GET", f"/api/v1/services/{name}/replicas/{replica_id}/logs",
                       params={"follow": str(follow).lower()})

    @staticmethod
    def lb_logs(name: str, lines: int) -> Request:
        return Request("GET", f"/api/v1/services/{name}/lb-logs", params={"lines": lines})


def _ready(info: ServiceInfo, ready: int | None, version: int | None) -> bool:
    serving = [r for r in info.replicas if r.status == "READY" and (version is None or r.version == version)]
    if version is not None and (info.version != version or info.status == "UPDATING"
                                or any(r.version != version for r in info.replicas)):
        return False  # the update is done when the old replicas are gone, not only out of the set
    return len(serving) >= (ready if ready is not None else max(info.target_replicas, 1))


class ServeMixin(SyncTransport):
    def serve_up(self, task: Task | dict | str | Path, name: str, *, progress: Progress | None = None) -> ServiceInfo:
        """Bring service ``name`` up from ``task`` (a path, dict or Task with a ``service:``
        section, as SkyPilot's service YAML). Returns at once (status STARTING)."""
        body = send_files(self, as_task(task), progress)
        return ServiceInfo(**self._send(_Routes.up(name, body)))

    def serve_status(self, name: str | None = None) -> list[ServiceInfo]:
        """Your services (admins: all), or the one named, with their replicas."""
        if name is not None:
            return [ServiceInfo(**self._send(_Routes.one(name)))]
        return [ServiceInfo(**s) for s in self._send(_Routes.status())]

    def service(self, name: str) -> ServiceInfo:
        return ServiceInfo(**self._send(_Routes.one(name)))

    def serve_wait(self, name: str, *, ready: int | None = None, version: int | None = None,
                   timeout: float = 600.0, poll: float = 0.5) -> ServiceInfo:
        """Until ``ready`` replicas (default: the target count) are READY (with ``version``:
        of that version, and no replica of another left); ``WaitTimeout`` after ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.service(name)
            if _ready(info, ready, version):
                return info
            if time.monotonic() > deadline:
                raise WaitTimeout(None, f"service {name!r} is {info.status} with "
                                        f"{sum(r.status == 'READY' for r in info.replicas)} ready replica(s) "
                                        f"after {timeout:g} s")
            time.sleep(poll)

    def serve_update(self, name: str, task: Task | dict | str | Path, *, mode: str = "rolling",
                     progress: Progress | None = None) -> ServiceInfo:
        """Roll out ``task`` as the next version (``mode``: "rolling" or "blue_green")."""
        body = send_files(self, as_task(task), progress)
        return ServiceInfo(**self._send(_Routes.update(name, body, mode)))

    def serve_down(self, name: str, *, wait: bool = False, timeout: float = 600.0) -> ServiceInfo:
        """Take the service down; with ``wait``, until it is gone (its replicas down)."""
        info = ServiceInfo(**self._send(_Routes.down(name)))
        deadline = time.monotonic() + timeout
        while wait:
            try:
                self.service(name)
            except NotFound:
                break
            if time.monotonic() > deadline:
                raise WaitTimeout(None, f"service {name!r} still shutting down after {timeout:g} s")
            time.sleep(0.5)
        return info

    def serve_logs(self, name: str, replica_id: int) -> str:
        """Replica ``replica_id``'s log so far (its job's, every node)."""
        return b"".join(self.stream_serve_logs(name, replica_id, follow=False)).decode(errors="replace")

    def stream_serve_logs(self, name: str, replica_id: int, follow: bool = True) -> Iterator[bytes]:
        req = _Routes.logs(name, replica_id, follow)
        yield from self._stream(req)

    def serve_lb_logs(self, name: str, lines: int = 200) -> str:
        """The load balancers' log of the service: retries, failures, replica set changes."""
        req = _Routes.lb_logs(name, lines)
        try:
            resp = self._http.get(req.path, params=req.params)
        except httpx.HTTPError as err:
            raise unreachable(self.url, err, req) from None
        raise_for_status(resp)
        return resp.text


class AsyncServeMixin(AsyncTransport):
    async def serve_up(self, task: Task | dict | str | Path, name: str, *,
                       progress: Progress | None = None) -> ServiceInfo:
        body = await send_files_async(self, as_task(task), progress)
        return ServiceInfo(**await self._send(_Routes.up(name, body)))

    async def serve_status(self, name: str | None = None) -> list[ServiceInfo]:
        if name is not None:
            return [ServiceInfo(**await self._send(_Routes.one(name)))]
        return [ServiceInfo(**s) for s in await self._send(_Routes.status())]

    async def service(self, name: str) -> ServiceInfo:
        return ServiceInfo(**await self._send(_Routes.one(name)))

    async def serve_wait(self, name: str, *, ready: int | None = None, version: int | None = None,
                         timeout: float = 600.0, poll: float = 0.5) -> ServiceInfo:
        import asyncio  # here: the sync client needs no event loop

        deadline = time.monotonic() + timeout
        while True:
            info = await self.service(name)
            if _ready(info, ready, version):
                return info
            if time.monotonic() > deadline:
                raise WaitTimeout(None, f"service {name!r} is {info.status} after {timeout:g} s")
            await asyncio.sleep(poll)

    async def serve_update(self, name: str, task: Task | dict | str | Path, *, mode: str = "rolling",
                           progress: Progress | None = None) -> ServiceInfo:
        body = await send_files_async(self, as_task(task), progress)
        return ServiceInfo(**await self._send(_Routes.update(name, body, mode)))

    async def serve_down(self, name: str, *, wait: bool = False, timeout: float = 600.0) -> ServiceInfo:
        import asyncio  # here: the sync client needs no event loop

        info = ServiceInfo(**await self._send(_Routes.down(name)))
        deadline = time.monotonic() + timeout
        while wait:
            try:
                await self.service(name)
            except NotFound:
                break
            if time.monotonic() > deadline:
                raise WaitTimeout(None, f"service {name!r} still shutting down after {timeout:g} s")
            await asyncio.sleep(0.5)
        return info

    async def serve_logs(self, name: str, replica_id: int) -> str:
        chunks = [c async for c in self.stream_serve_logs(name, replica_id, follow=False)]
        return b"".join(chunks).decode(errors="replace")

    async def stream_serve_logs(self, name: str, replica_id: int, follow: bool = True) -> AsyncIterator[bytes]:
        req = _Routes.logs(name, replica_id, follow)
        async for chunk in self._stream(req):
            yield chunk

    async def serve_lb_logs(self, name: str, lines: int = 200) -> str:
        req = _Routes.lb_logs(name, lines)
        try:
            resp = await self._http.get(req.path, params=req.params)
        except httpx.HTTPError as err:
            raise unreachable(self.url, err, req) from None
        raise_for_status(resp)
        return resp.text
