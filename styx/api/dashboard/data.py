"""What each page shows, read through the same code the REST API uses.

Nothing here decides who sees what: the cluster listing is filtered by
``styx.services.access.visible`` (the rule behind ``GET /api/v1/clusters``), one
cluster's access is ``resolve_cluster_access``, and each row is mapped to the API's public shape
by the routes' own ``cluster_info`` / ``job_info``. What is added is presentation: filters
and paging of the listing, per-cluster job counts (one grouped query) and the autostop
estimate, and a finished job's log read whole (bounded) for the page.

- ``ClusterFilters``: status / provider / owner / history / page from the URL, checked.
- ``cluster_page``: one page of the clusters the viewer may see, filtered.
- ``ClusterRow``: a cluster as a table row (``ClusterInfo`` plus its jobs at a glance).
- ``read_whole_log``: a finished job's log as lines marked by node, at most ``MAX_PAGE_LOG_BYTES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Mapping, NamedTuple
from urllib.parse import urlencode

from styx.api.deps import AppState
from styx.api.routes.clusters import cluster_info
from styx.contracts.clusters import ClusterStatus
from styx.contracts.rest import ClusterInfo
from styx.db import Cluster, User
from styx.db.clusters import JobActivity
from styx.db.joblogs import MAX_CHUNK_BYTES
from styx.joblogs import LogReader
from styx.services import costs
from styx.services.access import ClusterAccess, cluster_access, visible

#: Clusters per page of the listing.
CLUSTERS_PER_PAGE = 100
#: Jobs shown on a cluster's page at first, and at most (``?limit=``).
JOBS_SHOWN = 100
MAX_JOBS_SHOWN = 1000
#: The most of a finished job's log its page shows inline; the raw log has all of it.
MAX_PAGE_LOG_BYTES = 512 << 10

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


def autostop_at(cluster: Cluster, activity: JobActivity) -> datetime | None:
    """When an idle UP cluster's autostop should fire: its idle minutes after the last thing
    that kept it busy that the read model saw (a job submitted or ended, the cluster started
    or its autostop set — both write the row). An estimate: the workflow's timer is the truth."""
    if cluster.autostop_minutes is None or cluster.status != ClusterStatus.UP or activity.active:
        return None
    busy = max(t for t in (cluster.updated_at, cluster.launched_at, activity.last_moved) if t is not None)
    return busy + timedelta(minutes=cluster.autostop_minutes)


def cluster_page(state: AppState, user: User, filters: ClusterFilters,
                 per_page: int = CLUSTERS_PER_PAGE) -> ClusterPage:
    """The page of clusters ``user`` may see that the filters select (blocking: run in a thread).

    Filters and pages over ``db.clusters.summaries`` (a few columns of every cluster) and the
    clusters shared with the viewer, then reads the page's rows, nodes, shares and job counts
    in one query each."""
    db = state.db.clusters
    summaries = [c for c in db.summaries(include_gone=filters.history)
                 if (c.status == ClusterStatus.TERMINATED) == filters.history]
    # Whether a cluster is shared with the viewer is all the rule reads of its shares.
    seen = visible(user, summaries, {name: [user.name] for name in db.shared_with(user.name)})
    options = {
        "status": ["TERMINATED"] if filters.history else LIVE_STATUSES,
        "provider": sorted({c.provider for c in seen}),
        "owner": sorted({c.owner for c in seen if c.owner}),
    }
    chosen = [c for c in seen if (filters.status is None or c.status == filters.status)
              and (filters.provider is None or c.provider == filters.provider)
              and (filters.owner is None or c.owner == filters.owner)]
    if filters.history:  # the most recently taken down first
        chosen.sort(key=lambda c: c.updated_at, reverse=True)
    pages = max(1, math.ceil(len(chosen) / per_page))
    page = min(filters.page, pages)
    names = [c.name for c in chosen[(page - 1) * per_page: page * per_page]]
    rows, nodes, activity, shares = db.get_many(names), db.nodes_of(names), db.job_activity(names), db.shares_of(names)
    spent = costs.spent_by_launch(state.db, names)
    now = datetime.now(timezone.utc)
    out = []
    for name in names:
        cluster = rows.get(name)
        if cluster is None:  # deleted since the summaries were read
            continue
        act, users = activity.get(name, NO_JOBS), shares.get(name, [])
        out.append(ClusterRow(cluster_info(state, cluster, users, spent, nodes.get(name, [])),
                              cluster_access(user, cluster, users), act, autostop_at(cluster, act), now))
    return ClusterPage(out, replace(filters, page=page), len(chosen), pages, options)


class LogLine(NamedTuple):
    rank: int
    text: str


@dataclass
class WholeLog:
    lines: list[LogLine]
    #: Bytes stored for the job (every node, every phase) and bytes shown.
    size: int
    shown: int

    @property
    def cut(self) -> bool:
        return self.shown < self.size


def read_whole_log(state: AppState, cluster: str, job_id: int, num_nodes: int,
                   max_bytes: int = MAX_PAGE_LOG_BYTES) -> WholeLog:
    """A finished job's log, node by node (setup before run), each line with its rank; at
    most ``max_bytes`` of it (blocking: run in a thread)."""
    size = sum(s.size for s in state.db.joblogs.streams(cluster, job_id))
    # Rows of at most 256 KB: read no more of them at once than the page may show.
    rows = max(1, -(-max_bytes // MAX_CHUNK_BYTES))
    reader = LogReader(state.db, cluster, job_id, num_nodes, rows_per_read=rows)
    lines: list[LogLine] = []
    shown = 0
    while shown < max_bytes:
        got = False
        for piece in reader.read_pieces(final=True):  # one stream's next rows at a time
            got = True
            data = piece.text
            if shown + len(data) > max_bytes:  # keep the whole lines that fit
                data = data[:data.rfind(b"\n", 0, max_bytes - shown) + 1]
            text = data.decode(errors="replace")
            parts = text.split("\n")
            if parts[-1] == "":
                parts.pop()
            if parts and piece.continues and lines and lines[-1].rank == piece.rank:
                lines[-1] = LogLine(piece.rank, lines[-1].text + parts.pop(0))
            lines.extend([LogLine(piece.rank, part) for part in parts])
            shown += len(data)
            if len(data) < len(piece.text):
                return WholeLog(lines, size, shown)
        if not got:
            break
    return WholeLog(lines, size, min(shown, size))
