"""Pages: one job (``/clusters/{name}/jobs/{id}``) with its log, the log's live stream, the raw
log, and cancel.

- A finished job's page shows its log's end (``data.LOG_TAIL_BYTES``), each node's lines
  marked; *earlier* (``GET .../log?before=N``) puts the ``LOG_WINDOW_BYTES`` before them in
  front, as often as asked; the raw log has it all at once.
- A running job's page shows its log's last lines and follows it from there over server-sent
  events (``GET .../events?after=<cursor>``): ``log`` events (``{"rank", "text", "continues"}``), a ``status``
  event when the job's status changes, and ``end`` once it finished and every line is out
  (``busy`` instead, when this process already follows ``MAX_LOG_FOLLOWERS`` logs).
  Each ``log`` event's id is how many bytes of each stream were sent, so a browser that
  reconnects (it sends the id back as ``Last-Event-ID``) gets only what it has not seen.
- ``log.txt``: the log as ``styx logs`` prints it (the REST route's own answer).
- ``POST .../cancel``: the REST route's cancel (who may cancel is its rule).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from styx.api.dashboard.actions import perform
from styx.api.dashboard.clusters import not_found
from styx.api.dashboard.columns import cancel_job as cancel_button
from styx.api.dashboard.data import LOG_WINDOW_BYTES, read_live_tail, read_log_window
from styx.api.dashboard.render import page, render
from styx.api.dashboard.session import ViewerDep, read_form
from styx.api.deps import PathId, StateDep, get_temporal
from styx.api.routes import clusters as api
from styx.contracts.rest import CancelRequest, CancelResult
from styx.joblogs import LogReader
from styx.services.access import may_cancel, resolve_cluster_access

router = APIRouter(include_in_schema=False)

#: A comment line keeps the stream open through proxies that drop quiet connections.
KEEPALIVE_SECONDS = 15.0
#: The longest ``Last-Event-ID`` read (a cursor holds a count per node and phase).
MAX_CURSOR_CHARS = 8192
#: Live logs one API process streams at once (each polls the database while its job runs);
#: past it a browser gets a ``busy`` event and says so.
MAX_LOG_FOLLOWERS = 256


class Followers:
    """How many live logs this process streams now, at most ``limit``."""

    def __init__(self, limit: int = MAX_LOG_FOLLOWERS) -> None:
        self.limit = limit
        self.count = 0

    def take(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def give_back(self) -> None:
        self.count -= 1


def followers(request: Request) -> Followers:
    found = getattr(request.app.state, "styx_log_followers", None)
    if found is None:
        found = request.app.state.styx_log_followers = Followers()
    return found


@router.get("/clusters/{name}/jobs/{job_id}")
async def job_page(name: str, job_id: PathId, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    try:
        job = await api.get_job(name, job_id, state, viewer.user)
    except HTTPException as err:
        return not_found(request, viewer, str(err.detail))
    cluster, access, _ = await asyncio.to_thread(resolve_cluster_access, state.db, viewer.user, name)
    follow = None
    if job.finished:
        log = await asyncio.to_thread(read_log_window, state, name, job_id)
    else:  # its last lines now, then the live stream from where they end
        log, cursor = await asyncio.to_thread(read_live_tail, state, name, job_id)
        follow = f"/clusters/{name}/jobs/{job_id}/events?" + urlencode({"after": format_cursor(cursor)})
    return page(request, viewer, "job.html", job=job, log=log, follow=follow, live=not job.finished,
                multi=job.num_nodes > 1, cancel_button=cancel_button,
                may_cancel=not job.finished and may_cancel(viewer.user, access, job))


@router.get("/clusters/{name}/jobs/{job_id}/log")
async def log_window(name: str, job_id: PathId, request: Request, state: StateDep, viewer: ViewerDep,
                     before: int = Query(ge=0, le=1 << 62)) -> Response:
    """The ``LOG_WINDOW_BYTES`` of a finished job's log before byte ``before``: the lines the
    page's *earlier* button puts before those it shows (and a button for the ones before them)."""
    try:
        job = await api.get_job(name, job_id, state, viewer.user)
    except HTTPException as err:
        return PlainTextResponse(str(err.detail), status_code=err.status_code)
    window = await asyncio.to_thread(read_log_window, state, name, job_id, before, LOG_WINDOW_BYTES)
    html = render("log_window.html", job=job, log=window, live=False, fragment=True, multi=job.num_nodes > 1)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@router.get("/clusters/{name}/jobs/{job_id}/log.txt")
async def raw_log(name: str, job_id: PathId, state: StateDep, viewer: ViewerDep) -> Response:
    try:
        return await api.job_logs(name, job_id, state, viewer.user, follow=False)
    except HTTPException as err:
        return PlainTextResponse(str(err.detail), status_code=err.status_code)


def format_cursor(sent: dict[str, int]) -> str:
    """``{"run.0": 4096, "setup.0": 120}`` -> ``run.0:4096,setup.0:120`` (``parse_cursor`` reads it)."""
    return ",".join(f"{k}:{v}" for k, v in sorted(sent.items()))


def parse_cursor(raw: str | None) -> dict[str, int]:
    """``setup.0:120,run.0:4096`` -> bytes sent of each stream (malformed parts are ignored)."""
    out: dict[str, int] = {}
    for part in (raw or "")[:MAX_CURSOR_CHARS].split(","):
        key, _, value = part.partition(":")
        if key and value.isdigit():
            out[key] = int(value)
    return out


def _event(kind: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n"


@router.get("/clusters/{name}/jobs/{job_id}/events")
async def log_events(name: str, job_id: PathId, request: Request, state: StateDep,
                     viewer: ViewerDep) -> Response:
    try:
        job = await api.get_job(name, job_id, state, viewer.user)
    except HTTPException as err:
        return PlainTextResponse(str(err.detail), status_code=err.status_code)
    # Where to start: what the browser saw (its ``Last-Event-ID`` on a reconnect), else where
    # the lines its page showed end (``?after=``).
    skip = parse_cursor(request.headers.get("last-event-id") or request.query_params.get("after"))
    reader = LogReader(state.db, name, job_id, job.num_nodes)
    slots = followers(request)

    async def stream() -> AsyncIterator[str]:
        # Taken here, given back when the stream ends or the browser goes (no slot leaks
        # for a response never started).
        if not slots.take():
            yield _event("busy", {"detail": f"this API follows {slots.limit} live logs already "
                                            "(MAX_LOG_FOLLOWERS): close some, or reload later"})
            return
        try:
            async for chunk in follow():
                yield chunk
        finally:
            slots.give_back()

    async def follow() -> AsyncIterator[str]:
        sent = dict(skip)
        status = None
        delay = 0.05
        quiet_since = time.monotonic()
        yield "retry: 2000\n\n"
        while True:
            current = await asyncio.to_thread(state.db.clusters.get_job, name, job_id)
            ended = current is None or current.status.is_terminal
            if current is not None and current.status != status:
                status = current.status
                yield _event("status", {"status": status.value, "message": current.message})
            got = False
            while True:
                pieces = await asyncio.to_thread(lambda: list(reader.read_pieces(final=ended)))
                if not pieces:
                    break
                for piece in pieces:
                    key = f"{piece.phase}.{piece.rank}"
                    text, continues = piece.text, piece.continues
                    already = skip.get(key, 0)
                    if already:  # sent before the browser reconnected
                        skip[key] = max(0, already - len(text))
                        if already >= len(text):
                            continue
                        continues = text[already - 1:already] != b"\n"
                        text = text[already:]
                    sent[key] = sent.get(key, 0) + len(text)
                    got = True
                    cursor = format_cursor(sent)
                    yield _event("log", {"rank": piece.rank, "text": text.decode(errors="replace"),
                                         "continues": continues}, cursor)
            if ended:
                yield _event("end", {"status": current.status.value if current else "GONE",
                                     "message": current.message if current else None,
                                     "exit_codes": api.job_info(state, current).exit_codes if current else None})
                return
            if got:
                delay, quiet_since = 0.05, time.monotonic()
            else:
                delay = min(delay * 2, 0.5)
                if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
            await asyncio.sleep(delay)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/clusters/{name}/jobs/{job_id}/cancel")
async def cancel_job(name: str, job_id: PathId, request: Request, state: StateDep, viewer: ViewerDep) -> Response:
    await read_form(request, viewer)

    async def call() -> CancelResult:
        return await api.cancel(name, CancelRequest(job_ids=[job_id]), state, await get_temporal(state), viewer.user)

    return await perform(request, call, lambda r: f"cluster {name}: job {job_id} cancelled",
                         f"/clusters/{name}/jobs/{job_id}")
