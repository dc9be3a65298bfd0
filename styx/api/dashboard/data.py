"""What each page shows, read through the same code the REST API uses.

Nothing here decides who sees what: the cluster listing is filtered by the rule of
``styx.services.access`` applied in SQL, as ``GET /api/v1/clusters`` applies it; one
cluster's access is ``resolve_cluster_access``, and each row is the API's public shape, read
by the REST listing (``services.listing``) or mapped by the routes' own ``cluster_info`` /
``job_info``. What is added is presentation: filters and paging of the listing, per-cluster
job counts (one grouped query) and when autostop fires, and a finished job's log (its tail,
bounded) for the page.

- ``ClusterFilters``: status / provider / owner / history / page from the URL, checked.
- ``cluster_page``: one page of the clusters the viewer may see, filtered.
- ``ClusterRow``: a cluster as a table row (``ClusterInfo`` plus its jobs at a glance).
- ``read_log_window``: part of a finished job's log (its end, at first) as lines marked by node;
  ``read_live_tail``: a running one's last lines, and where following it resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Mapping, NamedTuple
from urllib.parse import urlencode

from styx.api.deps import AppState
from styx.contracts.clusters import ClusterStatus
from styx.contracts.rest import ClusterInfo
from styx.db import User
from styx.db.clusters import JobActivity
from styx.services import listing
from styx.services.access import ClusterAccess, cluster_access

#: Clusters per page of the listing.
CLUSTERS_PER_PAGE = 100
#: Jobs shown on a cluster's page at first, and at most (``?limit=``).
JOBS_SHOWN = 100
MAX_JOBS_SHOWN = 1000
#: What a finished job's page shows of its log at first (its end), and what each *earlier*
#: adds before it; the raw log has all of it.
LOG_TAIL_BYTES = 64 << 10
LOG_WINDOW_BYTES = 128 << 10
#: A line longer than this is shown cut.
MAX_SHOWN_LINE = 16 << 10

LIVE_STATUSES = [s.value for s in ClusterStatus if s != ClusterStatus.TERMINATED]


class BadFilter(ValueError):
    """A filter in the URL that cannot apply; the message names it."""


@dataclass(frozen=True)
class ClusterFilters:
    status: str | None = None
    provider: str | None = None
    owner: str | None = None
    #: The downed clusters' history (TERMINATED) instead of the live ones.
    history: bool = False
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> tuple["ClusterFilters", list[str]]:
        """The filters in ``query``, and a message for each one that was refused (and dropped)."""
        problems = []
        history = query.get("history", "") in ("1", "true", "yes")
        status = (query.get("status") or "").strip().upper() or None
        if status is not None and status not in (["TERMINATED"] if history else LIVE_STATUSES):
            problems.append(f"status: {status!r} is not one of {', '.join(LIVE_STATUSES)}"
                            if not history else f"status: the history holds only TERMINATED clusters, not {status!r}")
            status = None
        page = 1
        raw_page = (query.get("page") or "").strip()
        if raw_page:
            if not raw_page.isdigit() or not 1 <= int(raw_page) <= 1_000_000:
                problems.append(f"page: {raw_page!r} is not a page number")
            else:
                page = int(raw_page)
        return cls(status=status, provider=(query.get("provider") or "").strip()[:64] or None,
                   owner=(query.get("owner") or "").strip()[:64] or None, history=history, page=page), problems

    def url(self, **changes: object) -> str:
        """The listing's URL with these filters (and ``changes``): what links and paging keep."""
        chosen = replace(self, **changes)  # type: ignore[arg-type]
        params = {"status": chosen.status, "provider": chosen.provider, "owner": chosen.owner,
                  "history": "1" if chosen.history else None, "page": chosen.page if chosen.page > 1 else None}
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"/?{query}" if query else "/"

    @property
    def any(self) -> bool:
        return bool(self.status or self.provider or self.owner)


@dataclass(frozen=True)
class ClusterRow:
    info: ClusterInfo
    #: The viewer's access (``styx.services.access``): OWN may stop, start, down, set autostop.
    access: ClusterAccess
    activity: JobActivity
    #: When autostop is expected to fire (idle clusters with autostop on), else None.
    autostop_at: datetime | None
    now: datetime

    @property
    def key(self) -> str:
        return self.info.name

    @property
    def owns(self) -> bool:
        return self.access >= ClusterAccess.OWN

    @property
    def down_nodes(self) -> int:
        return sum(1 for n in self.info.nodes if n.status != "UP")


@dataclass
class ClusterPage:
    rows: list[ClusterRow]
    filters: ClusterFilters
    #: How many clusters match the filters (over every page).
    total: int
    pages: int
    #: The values each filter may take among the clusters the viewer sees.
    options: dict[str, list[str]] = field(default_factory=dict)


NO_JOBS = JobActivity(0, 0, None)


def autostop_at(info: ClusterInfo, updated_at: datetime | None, activity: JobActivity) -> datetime | None:
    """When an idle UP cluster's autostop fires: the time its workflow recorded
    (``info.autostop_at``), or, for a row that has none, an estimate — its idle minutes after
    the last thing that kept it busy that the read model saw (a job submitted or ended, the
    cluster started or its autostop set, which write the row: ``updated_at``)."""
    if info.autostop_minutes is None or info.status != ClusterStatus.UP or activity.active:
        return None
    if info.autostop_at is not None:
        return info.autostop_at
    busy = max((t for t in (updated_at, info.launched_at, activity.last_moved) if t is not None), default=None)
    return busy + timedelta(minutes=info.autostop_minutes) if busy is not None else None


def cluster_page(state: AppState, user: User, filters: ClusterFilters,
                 per_page: int = CLUSTERS_PER_PAGE) -> ClusterPage:
    """The page of clusters ``user`` may see that the filters select (blocking: run in a thread).

    The page's names, the count and the filters' choices come from ``db.clusters.numbered_page``
    (the visibility rule of ``styx.services.access`` applied in SQL, as the REST listing
    applies it); the page's clusters are then read through the REST listing
    (``services.listing.cluster_infos``) and their job counts in one grouped query: a few
    statements whatever the number of clusters, no ORM rows."""
    if user.disabled:
        return ClusterPage([], filters, 0, 1, {"status": [], "provider": [], "owner": []})
    found = state.db.clusters.numbered_page(
        gone=filters.history, status=filters.status, provider=filters.provider, owner=filters.owner,
        owned_or_shared_with=None if user.is_admin else user.name, newest_first=filters.history,
        page=filters.page, per_page=per_page)
    options = {"status": ["TERMINATED"] if filters.history else LIVE_STATUSES,
               "provider": found.providers, "owner": found.owners}
    names = [name for name, _ in found.names]
    infos = listing.cluster_infos(state.db, state.settings, names)
    activity = state.db.clusters.job_activity(names)
    now = datetime.now(timezone.utc)
    out = []
    for name, updated_at in found.names:
        info = infos.get(name)
        if info is None:  # deleted since the page was read
            continue
        act = activity.get(name, NO_JOBS)
        out.append(ClusterRow(info, cluster_access(user, info, info.shared_with), act,
                              autostop_at(info, updated_at, act), now))
    return ClusterPage(out, replace(filters, page=found.page), found.total, found.pages, options)


class LogLine(NamedTuple):
    rank: int
    text: str


@dataclass
class LogWindow:
    """Part of a finished job's log: the lines that start between ``start`` and ``end``, where
    the log is its streams one after another (rank by rank, setup before run, as ``styx
    logs`` prints them) and positions are bytes of that whole."""

    lines: list[LogLine]
    start: int
    end: int
    #: Bytes of the whole log (every node, every phase).
    size: int

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end >= self.size

    @property
    def shown(self) -> int:
        return self.end - self.start


def read_log_window(state: AppState, cluster: str, job_id: int, end: int | None = None,
                    max_bytes: int = LOG_TAIL_BYTES) -> LogWindow:
    """The lines of a finished job's log that start in the ``max_bytes`` before ``end`` (None:
    its end), each with its node's rank (blocking: run in a thread). Reads only those bytes
    (and the rest of the window's last line, up to ``MAX_SHOWN_LINE``), whatever the log's size."""
    db = state.db.joblogs
    streams = db.streams(cluster, job_id)
    size = sum(s.size for s in streams)
    end = size if end is None else max(0, min(end, size))
    start = max(0, end - max_bytes)
    lines: list[LogLine] = []
    base = 0
    for stream in streams:
        lo, hi = max(start - base, 0), min(end - base, stream.size)
        if lo < hi:
            lines.extend(_stream_lines(state, cluster, job_id, stream.phase, stream.rank, stream.size, lo, hi))
        base += stream.size
    return LogWindow(lines, start, end, size)


def read_live_tail(state: AppState, cluster: str, job_id: int,
                   max_bytes: int = LOG_TAIL_BYTES) -> tuple[LogWindow, dict[str, int]]:
    """A running job's log as its page starts: the complete lines of its last ``max_bytes``,
    and where following it resumes — for each stream (``run.0`` …), the byte after its last
    complete line (the live stream's cursor, so no line is shown twice or lost). Blocking."""
    db = state.db.joblogs
    streams = db.streams(cluster, job_id)
    size = sum(s.size for s in streams)
    start = max(0, size - max_bytes)
    lines: list[LogLine] = []
    cursor: dict[str, int] = {}
    base = 0
    for stream in streams:
        lo = max(start - base, 0)
        tail_from = max(lo - 1, 0) if lo < stream.size else max(stream.size - MAX_SHOWN_LINE, 0)
        tail = db.read_range(cluster, job_id, stream.phase, stream.rank, tail_from, stream.size)
        done = tail_from + tail.rfind(b"\n") + 1 if b"\n" in tail else tail_from
        cursor[f"{stream.phase}.{stream.rank}"] = done
        if lo < done:
            lines.extend(_stream_lines(state, cluster, job_id, stream.phase, stream.rank, stream.size, lo, done))
        base += stream.size
    return LogWindow(lines, start, size, size), cursor


def _stream_lines(state: AppState, cluster: str, job_id: int, phase: str, rank: int, size: int,
                  lo: int, hi: int) -> list[LogLine]:
    """The lines of one stream that start at bytes ``lo`` to ``hi`` (a line that began before
    ``lo`` belongs to the window before; the last one is read to its end)."""
    first, last = max(lo - 1, 0), min(hi + MAX_SHOWN_LINE, size)
    data = state.db.joblogs.read_range(cluster, job_id, phase, rank, first, last)
    pos = first
    if lo > 0:  # skip to the first line that starts at ``lo`` or after
        cut = data.find(b"\n")
        if cut < 0:
            return []
        data, pos = data[cut + 1:], first + cut + 1
    if pos >= hi or not data:
        return []
    stop = data.find(b"\n", hi - pos - 1)
    cut_short = stop < 0 and last < size
    texts = data[:len(data) if stop < 0 else stop].decode(errors="replace").split("\n")
    if cut_short:
        texts[-1] += f" … (a line longer than {MAX_SHOWN_LINE >> 10} KB: the raw log has it whole)"
    return [LogLine(rank, text) for text in texts]
