"""Every node's intervals up, for the cost report: ``UptimeStore`` (``db.uptime``).

A cluster's nodes open an interval each when it comes UP (launch or start) and close it when
it stops, is taken down or fails; the rows outlive the cluster's own row, so a cluster that
is gone stays billed. Both writes are idempotent (a retried activity changes nothing):

- ``open(cluster, launch_id, ranks, at, **info)``: an interval for each rank that has none
  open in this launch;
- ``close(cluster, at)``: end every open interval of the cluster (any launch) at ``at``;
- ``intervals(since, owner=None, limit=...)``: the rows that overlap ``[since, now]``, newest
  clusters first, at most ``limit`` clusters' worth.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from styx.db.base import Store
from styx.db.engine import aware_utc
from styx.db.models import NodeUptime

#: How many (cluster, launch) groups one report reads at most.
MAX_REPORT_CLUSTERS = 1000


class UptimeStore(Store):
    def open(self, cluster: str, launch_id: str, ranks: Iterable[int], at: datetime, **info: Any) -> int:
        """Open an interval at ``at`` for each of ``ranks`` without an open one; returns how
        many were opened. ``info``: owner, provider, instance_type, region, zone, use_spot,
        hourly_price."""
        table: sa.Table = NodeUptime.__table__  # type: ignore[attr-defined]
        at = aware_utc(at)
        with self._write() as conn:
            open_ranks = set(conn.execute(
                sa.select(table.c.rank).where(table.c.cluster_name == cluster, table.c.launch_id == launch_id,
                                              table.c.ended_at.is_(None))).scalars())
            new = [r for r in dict.fromkeys(ranks) if r not in open_ranks]
            for rank in new:
                conn.execute(sa.insert(table).values(
                    cluster_name=cluster, launch_id=launch_id, rank=rank, started_at=at, ended_at=None,
                    owner=info.get("owner"), provider=info.get("provider") or "local",
                    instance_type=info.get("instance_type"), region=info.get("region"), zone=info.get("zone"),
                    use_spot=bool(info.get("use_spot")), hourly_price=float(info.get("hourly_price") or 0.0)))
            return len(new)

    def close(self, cluster: str, at: datetime) -> int:
        """End every open interval of ``cluster`` at ``at`` (never before it started)."""
        table: sa.Table = NodeUptime.__table__  # type: ignore[attr-defined]
        at = aware_utc(at)
        with self._write() as conn:
            return conn.execute(
                sa.update(table).where(table.c.cluster_name == cluster, table.c.ended_at.is_(None))
                .values(ended_at=sa.case((table.c.started_at > at, table.c.started_at), else_=at))).rowcount

    def intervals(self, since: datetime | None, owner: str | None = None,
                  limit: int = MAX_REPORT_CLUSTERS, cluster: str | Collection[str] | None = None) -> list[NodeUptime]:
        """Rows still open or ended after ``since`` (all when None), of ``owner``'s clusters
        (everyone's when None; only ``cluster``'s if given: a name or several), for the
        ``limit`` most recently started (cluster, launch)s."""
        cond = [sa.true()]
        if since is not None:
            since = aware_utc(since)
            cond.append(sa.or_(NodeUptime.ended_at.is_(None), NodeUptime.ended_at >= since))  # type: ignore[union-attr]
        if owner is not None:
            cond.append(NodeUptime.owner == owner)
        if isinstance(cluster, str):
            cond.append(NodeUptime.cluster_name == cluster)
        elif cluster is not None:
            cond.append(NodeUptime.cluster_name.in_(sorted(set(cluster))))  # type: ignore[attr-defined]
        with self._session() as session:
            groups = session.exec(
                select(NodeUptime.cluster_name, NodeUptime.launch_id, sa.func.max(NodeUptime.started_at))
                .where(*cond).group_by(NodeUptime.cluster_name, NodeUptime.launch_id)
                .order_by(sa.func.max(NodeUptime.started_at).desc()).limit(limit)).all()
            if not groups:
                return []
            keys = [(c, l) for c, l, _ in groups]
            rows = session.exec(select(NodeUptime).where(
                *cond, sa.tuple_(NodeUptime.cluster_name, NodeUptime.launch_id).in_(keys))).all()
            return list(rows)
