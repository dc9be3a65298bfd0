"""The cluster listing: what ``GET /api/v1/clusters``, ``styx status`` and the dashboard show.

- ``ClusterQuery``: the filters (statuses, provider, owner; taken-down clusters only when
  asked) and the page (``after`` a cluster name, at most ``limit`` clusters, by name).
- ``list_clusters(db, settings, user, query)``: the page of clusters ``user`` may see — their
  own and those shared with them, every one for an admin, nothing for a disabled user (the
  rule of ``styx.services.access``, applied in SQL) — as ``ClusterInfo`` with nodes, shares,
  unfinished jobs by status, Temporal UI link, $/hour and cost so far. It costs the same few
  SQL statements whatever the number of clusters (``ClusterStore.page``, then the page's
  node-uptime rows), never one per cluster.
- ``list_clusters_json``: the same page as the API's JSON bytes, in one pass.
- ``cluster_info(db, settings, name)``: one cluster in the same shape (the caller checked
  who may see it); ``cluster_infos(db, settings, names)``: several, in the same statements
  (the dashboard's page of clusters, chosen from those the viewer may see).

>>> ClusterQuery(limit=0)
Traceback (most recent call last):
...
ValueError: limit: 0 is not between 1 and 1000
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pydantic_core
from pydantic import TypeAdapter

from styx.contracts.clusters import ClusterStatus
from styx.contracts.rest import DEFAULT_CLUSTER_PAGE, MAX_CLUSTER_PAGE, ClusterInfo

from styx.db import User
from styx.services import costs

if TYPE_CHECKING:
    from styx.config import Settings
    from styx.db import Database

_INFOS = TypeAdapter(list[ClusterInfo])
#: What a listing shows unless taken-down clusters are asked for.
_LIVE = tuple(s for s in ClusterStatus if s != ClusterStatus.TERMINATED)
_FIELDS = tuple(ClusterInfo.model_fields)
#: A workflow id whose only character ``quote`` changes is ``/``.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.~/-]*")
#: Who reads one cluster for a route that checked access already.
_ANYONE = User(name="", is_admin=True)


@dataclass(frozen=True)
class ClusterQuery:
    """Which clusters, and which page of them. ``statuses`` None: every status but TERMINATED
    (``include_terminated``: every status)."""

    statuses: tuple[ClusterStatus, ...] | None = None
    provider: str | None = None
    owner: str | None = None
    include_terminated: bool = False
    after: str | None = None
    limit: int = DEFAULT_CLUSTER_PAGE

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_CLUSTER_PAGE:
            raise ValueError(f"limit: {self.limit} is not between 1 and {MAX_CLUSTER_PAGE}")
        if self.statuses is not None:
            object.__setattr__(self, "statuses", tuple(ClusterStatus(s) for s in self.statuses))

    def status_filter(self) -> Iterable[ClusterStatus] | None:
        if self.statuses:
            return self.statuses
        return None if self.include_terminated else _LIVE


def _rows(db: "Database", settings: "Settings", user: "User", query: ClusterQuery,
          names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The page's rows in exactly ``ClusterInfo``'s shape (JSON columns decoded, UI link set)."""
    if user.disabled:
        return []
    rows = db.clusters.page(
        names=names, statuses=query.status_filter(), provider=query.provider, owner=query.owner,
        owned_or_shared_with=None if user.is_admin else user.name, after=query.after, limit=query.limit,
    )
    link = settings.workflow_url("")  # every link is this prefix and the quoted workflow id
    decoded: dict[str, Any] = {}  # clusters launched alike share their resources text
    spent = costs.spent_by_launch(db, [row["name"] for row in rows])  # one more read for the page
    for row in rows:
        row["hourly_rate"] = costs.rate(row["status"], row["provider"], row["hourly_price"], row["num_nodes"])
        row["cost_so_far"] = spent.get((row["name"], row["launch_id"] or ""), 0.0)
        text = row["resources"] or "{}"
        if text not in decoded:
            decoded[text] = json.loads(text)
        row["resources"] = decoded[text]
        row["workflow_url"] = link and link + _quoted(row["workflow_id"])
    return [{field: row[field] for field in _FIELDS} for row in rows]  # in the model's order


def _quoted(workflow_id: str) -> str:
    """``quote(workflow_id, safe="")``, without its cost for the ids Styx makes (``cluster/<name>``)."""
    if _PLAIN_ID.fullmatch(workflow_id):
        return workflow_id.replace("/", "%2F")
    return quote(workflow_id, safe="")


def list_clusters(db: "Database", settings: "Settings", user: "User",
                  query: ClusterQuery = ClusterQuery()) -> list[ClusterInfo]:
    """The page of clusters ``user`` may see that ``query`` asks for, by name; the next page
    starts ``after`` the last one's name (a page shorter than ``query.limit`` is the last)."""
    return _INFOS.validate_python(_rows(db, settings, user, query))


def list_clusters_json(db: "Database", settings: "Settings", user: "User",
                       query: ClusterQuery = ClusterQuery()) -> bytes:
    """``list_clusters`` as the API's JSON, written straight from the rows: validating a
    thousand models only to serialise them again would double the route's time. The rows
    have ``ClusterInfo``'s shape exactly (``tests/test_listing.py`` holds the two equal)."""
    return pydantic_core.to_json(_rows(db, settings, user, query))


def cluster_info(db: "Database", settings: "Settings", name: str) -> ClusterInfo | None:
    """Cluster ``name`` as the listing shows it, whoever may see it; None if it has no row."""
    rows = _rows(db, settings, _ANYONE, ClusterQuery(include_terminated=True, limit=1), names=[name])
    return _INFOS.validate_python(rows)[0] if rows else None


def cluster_infos(db: "Database", settings: "Settings", names: Iterable[str]) -> dict[str, ClusterInfo]:
    """The named clusters (at most ``MAX_CLUSTER_PAGE``) as the listing shows them, by name,
    whoever may see them (the caller chose the names from those its user may see); a name
    without a row is absent."""
    wanted = sorted(set(names))
    if len(wanted) > MAX_CLUSTER_PAGE:
        raise ValueError(f"names: {len(wanted)} clusters, more than {MAX_CLUSTER_PAGE} at once")
    if not wanted:
        return {}
    rows = _rows(db, settings, _ANYONE, ClusterQuery(include_terminated=True, limit=MAX_CLUSTER_PAGE), names=wanted)
    return {info.name: info for info in _INFOS.validate_python(rows)}
