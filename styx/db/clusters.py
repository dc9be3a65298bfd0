"""Clusters, their nodes and their jobs: ``ClusterStore`` (``db.clusters``).

- Clusters: ``upsert`` (exactly the fields given), ``get``, ``get_many``, ``delete`` (with
  nodes and jobs), ``list`` (optionally by status).
- Nodes: ``upsert_nodes`` / ``replace_nodes`` (keyed by cluster and rank), ``delete_nodes``,
  ``list_nodes``.
- Shares (who else may use a cluster, see ``styx.services.access``): ``add_share`` (bounded),
  ``remove_share``, ``shares`` (one cluster's), ``shares_of`` (several clusters' at once),
  ``shared_with`` (the clusters shared with a user). Deleting a cluster forgets its shares.
- Jobs: ``upsert_job`` and ``set_job_status``, where the status only moves forward
  (PENDING, SETTING_UP, RUNNING, then the first terminal status wins) and RUNNING and the
  end stamp ``started_at`` and ``ended_at`` once; ``get_job``, ``list_jobs``.
- Usage (for per-user limits, ``styx.services.quotas``): ``usage`` (an owner's live
  clusters and their nodes, one query).
- Counts for metrics: ``job_counts`` (jobs by status, one grouped query) and
  ``pending_by_cluster`` (queue depth of every cluster not TERMINATED).
- ``numbered_page``: a page of cluster names by number, with the count and the filters'
  choices (the dashboard's listing; two statements).
- ``job_activity``: for each given cluster, its jobs, how many have not ended and when one
  last moved (one grouped query; the dashboard's job counts and autostop estimate).
- The listing: ``page`` (a page of clusters, filtered, with their nodes, shares and
  unfinished jobs counted, in four statements whatever the page's size; the REST listing and
  the dashboard read it through ``styx.services.listing``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from styx.contracts.clusters import CLUSTER_GONE, ClusterStatus
from styx.contracts.jobs import JOB_TERMINAL, JobStatus
from styx.db.base import Store
from styx.db.engine import UTCDateTime, utcnow
from styx.db.models import (
    Cluster,
    ClusterNotFound,
    ClusterShare,
    Job,
    JobNotFound,
    LimitReached,
    Node,
    NodeBase,
    UserNotFound,
)

@dataclass(frozen=True)
class NumberedPage:
    """A page of a listing by number (``ClusterStore.numbered_page``)."""

    #: The page's clusters: name and when its row last changed.
    names: list[tuple[str, datetime | None]]
    total: int
    page: int
    pages: int
    #: The providers and owners of every cluster the page could show, whatever the other filters.
    providers: list[str]
    owners: list[str]


@dataclass(frozen=True)
class JobActivity:
    """A cluster's jobs at a glance: how many, how many not ended, when one last was
    submitted or ended (None: never)."""

    jobs: int
    active: int
    last_moved: datetime | None


def _aware(value: Any) -> datetime | None:
    """A timestamp from an aggregate (SQLite returns text, PostgreSQL a datetime), in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


#: How far along each job status is; a terminal status is the end.
_JOB_STATUS_RANK = {JobStatus.PENDING: 0, JobStatus.SETTING_UP: 1, JobStatus.RUNNING: 2}


def _status_rank(column: Any) -> sa.ColumnElement[int]:
    return sa.case({s.value: rank for s, rank in _JOB_STATUS_RANK.items()}, value=column, else_=3)


def _stamp_transition(values: dict[str, Any]) -> list[str]:
    """Add the timestamp a status change implies (when not given); returns the fields added."""
    status: JobStatus = values["status"]
    field = ("started_at" if status is JobStatus.RUNNING
             else "ended_at" if status.is_terminal else None)
    if field is None or field in values:
        return []
    values[field] = utcnow()
    return [field]


def _statuses(enum_cls: type[enum.Enum], status: Any) -> list[Any]:
    if isinstance(status, (str, enum.Enum)):
        status = [status]
    return [enum_cls(s) for s in status]


class ClusterStore(Store):
    """Rows come back as detached ``Cluster``, ``Node`` and ``Job`` objects;
    ``ClusterInfo.model_validate(row)`` (``styx.contracts.rest``) is what the API returns."""

    # --- clusters

    def upsert(self, name: str, **fields: Any) -> Cluster:
        """Create the cluster or update exactly the fields given; returns the row.

        Fields not given keep their stored value (or the column default on insert);
        ``updated_at`` is refreshed on every call, ``created_at`` only set on insert.
        """
        now = utcnow()
        values = self._clean(Cluster, fields, primary_key={"name"})
        values.setdefault("updated_at", now)
        defaults = {"created_at": now, "workflow_id": f"cluster/{name}"}
        with self._write() as conn:
            self._upsert(conn, Cluster, {"name": name}, values, defaults)
            return self._fetch(Cluster, name, conn=conn)

    def get(self, name: str) -> Cluster | None:
        return self._fetch(Cluster, name)

    def get_many(self, names: Iterable[str]) -> dict[str, Cluster]:
        """The named clusters' rows (missing ones are absent), in one query."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        with self._session() as session:
            query = select(Cluster).where(Cluster.name.in_(wanted))  # type: ignore[attr-defined]
            return {c.name: c for c in session.exec(query).all()}

    def delete(self, name: str) -> bool:
        """Remove the cluster with its nodes and jobs; False if it was not there."""
        table: sa.Table = Cluster.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.name == name)).rowcount > 0

    def _foreign_key_failure(self, exc: IntegrityError, cluster: str) -> Exception:
        if self.get(cluster) is None:
            return ClusterNotFound(cluster)
        return exc

    # --- nodes

    def upsert_nodes(self, cluster: str, nodes: Iterable[NodeBase | Mapping[str, Any]]) -> list[Node]:
        """Create or update each node, keyed by (cluster, rank); returns all the cluster's nodes.

        Nodes already stored but absent from ``nodes`` are left alone; ``replace_nodes``
        replaces the whole set.
        """
        return self._write_nodes(cluster, nodes, replace=False)

    def replace_nodes(self, cluster: str, nodes: Iterable[NodeBase | Mapping[str, Any]]) -> list[Node]:
        """Make ``nodes`` the cluster's whole node set, in one transaction."""
        return self._write_nodes(cluster, nodes, replace=True)

    def _write_nodes(self, cluster: str, nodes: Iterable[NodeBase | Mapping[str, Any]],
                     replace: bool) -> list[Node]:
        table: sa.Table = Node.__table__  # type: ignore[attr-defined]
        now = utcnow()
        try:
            with self._write() as conn:
                if replace:
                    conn.execute(sa.delete(table).where(table.c.cluster_name == cluster))
                for node in nodes:
                    data = node.model_dump(exclude_unset=False) if isinstance(node, NodeBase) else dict(node)
                    data.pop("cluster_name", None)
                    if "rank" not in data:
                        raise TypeError("every node needs a rank")
                    rank = int(data.pop("rank"))
                    values = self._clean(Node, data, primary_key={"cluster_name", "rank"})
                    values.setdefault("updated_at", now)
                    self._upsert(conn, Node, {"cluster_name": cluster, "rank": rank}, values, {})
                return self._list_nodes(conn, cluster)
        except IntegrityError as exc:
            raise self._foreign_key_failure(exc, cluster) from exc

    def delete_nodes(self, cluster: str) -> int:
        """Forget the cluster's nodes (after a stop or teardown); returns how many went."""
        table: sa.Table = Node.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.cluster_name == cluster)).rowcount

    def list_nodes(self, cluster: str) -> list[Node]:
        with self.engine.connect() as conn:
            return self._list_nodes(conn, cluster)

    def _list_nodes(self, conn: Connection, cluster: str) -> list[Node]:
        with Session(conn, expire_on_commit=False) as session:
            query = select(Node).where(Node.cluster_name == cluster).order_by(Node.rank)  # type: ignore[arg-type]
            return list(session.exec(query).all())

    # --- shares

    def add_share(self, cluster: str, user: str, *, limit: int) -> bool:
        """Let ``user`` use ``cluster``; False if it was shared with them already.

        Raises ``ClusterNotFound``, ``UserNotFound``, or ``LimitReached`` when the cluster is
        shared with ``limit`` users already.
        """
        table: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        try:
            with self._write() as conn:
                if conn.execute(sa.select(table.c.user_name).where(
                        table.c.cluster_name == cluster, table.c.user_name == user)).first() is not None:
                    return False
                count = conn.execute(sa.select(sa.func.count()).select_from(table)
                                     .where(table.c.cluster_name == cluster)).scalar_one()
                if count >= limit:
                    raise LimitReached(f"cluster {cluster!r} is shared with {count} users already, the most "
                                       f"allowed (STYX_MAX_CLUSTER_SHARES={limit}); unshare one first")
                conn.execute(sa.insert(table).values(cluster_name=cluster, user_name=user, created_at=utcnow()))
                return True
        except IntegrityError:
            if self.get(cluster) is None:
                raise ClusterNotFound(cluster) from None
            raise UserNotFound(user) from None

    def remove_share(self, cluster: str, user: str) -> bool:
        table: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        with self._write() as conn:
            return conn.execute(sa.delete(table).where(table.c.cluster_name == cluster,
                                                       table.c.user_name == user)).rowcount > 0

    def shares(self, cluster: str) -> list[str]:
        """The users ``cluster`` is shared with, by name."""
        return self.shares_of([cluster]).get(cluster, [])

    def shares_of(self, clusters: Iterable[str]) -> dict[str, list[str]]:
        """``{cluster: [user, ...]}`` for the given clusters (those shared with nobody are absent)."""
        names = sorted(set(clusters))
        if not names:
            return {}
        table: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.cluster_name, table.c.user_name)
                                .where(table.c.cluster_name.in_(names))
                                .order_by(table.c.cluster_name, table.c.user_name))
            for cluster, user in rows:
                out.setdefault(cluster, []).append(user)
        return out

    def shared_with(self, user: str) -> set[str]:
        """The names of the clusters shared with ``user``."""
        table: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(table.c.cluster_name).where(table.c.user_name == user)).scalars())

    # --- jobs

    def upsert_job(self, cluster: str, job_id: int, **fields: Any) -> Job:
        """Create the job or update exactly the fields given; returns the row as stored.

        The status only moves forward (PENDING, SETTING_UP, RUNNING, then a terminal one),
        so writes that race (a job can start before its PENDING row is written) or a retried
        "RUNNING" that lands after "SUCCEEDED" never move it back; their other fields still
        land. The first terminal status wins: a second terminal write is ignored whole. A
        status of RUNNING stamps ``started_at``, a terminal one ``ended_at``, unless given;
        the first stamp stays.
        """
        values = self._clean(Job, fields, primary_key={"cluster_name", "job_id"})
        defaults = {"submitted_at": utcnow(), "workflow_id": f"cluster/{cluster}/job/{job_id}"}
        where = None
        status = values.get("status")
        if status is not None:
            if JobStatus(status).is_terminal:
                where = Job.__table__.c.status.notin_(sorted(JOB_TERMINAL))  # type: ignore[attr-defined]
            _stamp_transition(values)
        stamped = [name for name in ("started_at", "ended_at") if name in values]  # set once
        try:
            with self._write() as conn:
                self._upsert(conn, Job, {"cluster_name": cluster, "job_id": job_id}, values,
                             defaults, where, keep_first=stamped, forward_only="status",
                             rank=_status_rank)
                return self._fetch(Job, cluster, job_id, conn=conn)
        except IntegrityError as exc:
            raise self._foreign_key_failure(exc, cluster) from exc

    def upsert_jobs(self, rows: list[tuple[str, int, dict[str, Any]]]) -> None:
        """``upsert_job`` of every ``(cluster, job_id, fields)`` in one transaction."""
        if not rows:
            return
        try:
            with self._write() as conn:
                for cluster, job_id, fields in rows:
                    values = self._clean(Job, fields, primary_key={"cluster_name", "job_id"})
                    defaults = {"submitted_at": utcnow(), "workflow_id": f"cluster/{cluster}/job/{job_id}"}
                    where = None
                    if values.get("status") is not None:
                        if JobStatus(values["status"]).is_terminal:
                            where = Job.__table__.c.status.notin_(sorted(JOB_TERMINAL))  # type: ignore[attr-defined]
                        _stamp_transition(values)
                    stamped = [name for name in ("started_at", "ended_at") if name in values]
                    self._upsert(conn, Job, {"cluster_name": cluster, "job_id": job_id}, values, defaults, where,
                                 keep_first=stamped, forward_only="status", rank=_status_rank)
        except IntegrityError as exc:
            raise self._foreign_key_failure(exc, rows[0][0]) from exc

    def set_job_status(self, cluster: str, job_id: int, status: JobStatus | str,
                       **extra: Any) -> Job:
        """Move a job to ``status`` (with ``extra`` fields), unless it already finished.

        A terminal job (SUCCEEDED, FAILED, FAILED_SETUP, CANCELLED) is never changed: the
        first terminal status wins, and the returned row says what is stored. Moving to
        RUNNING stamps ``started_at``, and to a terminal status ``ended_at``, unless given
        or already set. Raises ``JobNotFound`` if the job was never upserted.
        """
        values = self._clean(Job, {**extra, "status": JobStatus(status)},
                             primary_key={"cluster_name", "job_id"})
        table: sa.Table = Job.__table__  # type: ignore[attr-defined]
        for name in _stamp_transition(values):
            values[name] = sa.func.coalesce(table.c[name],
                                            sa.bindparam(f"{name}_now", values[name], type_=UTCDateTime))
        with self._write() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.cluster_name == cluster, table.c.job_id == job_id,
                       table.c.status.notin_(sorted(JOB_TERMINAL)))
                .values(values)
            )
            job = self._fetch(Job, cluster, job_id, conn=conn)
        if job is None:
            raise JobNotFound(cluster, job_id)
        return job

    def get_job(self, cluster: str, job_id: int) -> Job | None:
        return self._fetch(Job, cluster, job_id)

    def list_jobs(self, cluster: str | None = None, *,
                  status: JobStatus | str | Iterable[JobStatus | str] | None = None,
                  limit: int | None = None) -> list[Job]:
        """Jobs of one cluster (or of all), newest first, optionally filtered by status."""
        query = select(Job)
        if cluster is not None:
            query = query.where(Job.cluster_name == cluster)
        if status is not None:
            query = query.where(Job.status.in_(_statuses(JobStatus, status)))  # type: ignore[attr-defined]
        query = query.order_by(Job.submitted_at.desc(), Job.cluster_name, Job.job_id.desc())  # type: ignore[attr-defined]
        if limit is not None:
            query = query.limit(limit)
        with self._session() as session:
            return list(session.exec(query).all())

    # --- usage

    def usage(self, owner: str) -> tuple[int, int]:
        """``(clusters, nodes)``: how many live clusters (status not in ``CLUSTER_GONE``)
        ``owner`` holds, and their nodes summed (as launched: ``num_nodes``)."""
        table: sa.Table = Cluster.__table__  # type: ignore[attr-defined]
        query = (sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(table.c.num_nodes), 0))
                 .where(table.c.owner == owner, table.c.status.notin_(sorted(CLUSTER_GONE))))
        with self.engine.connect() as conn:
            clusters, nodes = conn.execute(query).one()
        return int(clusters), int(nodes)

    # --- counts (the API's /metrics, at every scrape: one grouped query each)

    def job_counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (statuses with none are left out)."""
        query = sa.select(Job.status, sa.func.count()).group_by(Job.status)
        with self.engine.connect() as conn:
            return {JobStatus(status): count for status, count in conn.execute(query)}

    def pending_by_cluster(self) -> dict[str, int]:
        """PENDING jobs of every cluster that is not TERMINATED (0 for an empty queue)."""
        # Count the PENDING jobs once (the status index), then join: a join per cluster would
        # walk every PENDING job again for each cluster.
        pending = (sa.select(Job.cluster_name, sa.func.count().label("n"))
                   .where(Job.status == JobStatus.PENDING).group_by(Job.cluster_name).subquery())
        query = (sa.select(Cluster.name, sa.func.coalesce(pending.c.n, 0))
                 .select_from(Cluster).outerjoin(pending, pending.c.cluster_name == Cluster.name)
                 .where(Cluster.status != ClusterStatus.TERMINATED))
        with self.engine.connect() as conn:
            return {name: count for name, count in conn.execute(query)}

    def job_activity(self, clusters: Iterable[str]) -> dict[str, "JobActivity"]:
        """``{cluster: JobActivity}`` for the given clusters that have jobs (one grouped query)."""
        names = sorted(set(clusters))
        if not names:
            return {}
        table: sa.Table = Job.__table__  # type: ignore[attr-defined]
        active = sa.func.sum(sa.case((table.c.status.notin_(sorted(JOB_TERMINAL)), 1), else_=0))
        query = (sa.select(table.c.cluster_name, sa.func.count(), active, sa.func.max(table.c.submitted_at),
                           sa.func.max(table.c.ended_at))
                 .where(table.c.cluster_name.in_(names)).group_by(table.c.cluster_name))
        out: dict[str, JobActivity] = {}
        with self.engine.connect() as conn:
            for name, total, running, submitted, ended in conn.execute(query):
                moved = max((t for t in (submitted, ended) if t is not None), default=None)
                out[name] = JobActivity(int(total), int(running or 0), _aware(moved))
        return out
    # --- the listing (``styx.services.listing``)

    def page(self, *, names: Iterable[str] | None = None,
             statuses: Iterable[ClusterStatus | str] | None = None, provider: str | None = None,
             owner: str | None = None, owned_or_shared_with: str | None = None, after: str | None = None,
             limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` clusters by name (after ``after``), each a dict of its columns plus
        ``nodes`` (dicts, by rank), ``shared_with`` (user names) and ``active_jobs`` (its unfinished
        jobs by status: ``{"RUNNING": 1, "PENDING": 4}``), ready for ``ClusterInfo``.

        Filters: ``names`` (any of), ``statuses`` (any of), ``provider``, ``owner``, and
        ``owned_or_shared_with`` (a user: only the clusters they own or that are shared with
        them). Four statements whatever the page's size (clusters, then nodes, shares and job
        counts of those clusters), in one snapshot, so a page agrees with itself.
        """
        clusters: sa.Table = Cluster.__table__  # type: ignore[attr-defined]
        shares: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        columns = [c for c in clusters.c if c.name != "updated_at"]
        keys = [c.name for c in columns]
        page = sa.select(*columns)
        if names is not None:
            page = page.where(clusters.c.name.in_(sorted(set(names))))
        if statuses is not None:
            page = page.where(clusters.c.status.in_(sorted(_statuses(ClusterStatus, statuses))))
        if provider is not None:
            page = page.where(clusters.c.provider == provider)
        if owner is not None:
            page = page.where(clusters.c.owner == owner)
        if owned_or_shared_with is not None:
            shared = sa.select(shares.c.cluster_name).where(shares.c.user_name == owned_or_shared_with)
            page = page.where(sa.or_(clusters.c.owner == owned_or_shared_with, clusters.c.name.in_(shared)))
        if after is not None:
            page = page.where(clusters.c.name > after)
        page = page.order_by(clusters.c.name).limit(limit)
        # The other tables are read for the same page through it as a subquery (an index range
        # each), not through a list of a thousand names bound one by one.
        in_page = page.with_only_columns(clusters.c.name).scalar_subquery()
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":  # one snapshot for the four (SQLite's read transaction is one)
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return self._page(conn, page, keys, in_page)

    @staticmethod
    def _page(conn: Connection, page: sa.Select[Any], keys: list[str],
              in_page: sa.ScalarSelect[Any]) -> list[dict[str, Any]]:
        """``page``'s rows, then their nodes, shares and unfinished jobs (``in_page``: its names)."""
        shares: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        nodes: sa.Table = Node.__table__  # type: ignore[attr-defined]
        jobs: sa.Table = Job.__table__  # type: ignore[attr-defined]
        rows: list[dict[str, Any]] = []
        by_name: dict[str, dict[str, Any]] = {}
        for values in conn.execute(page):
            row = dict(zip(keys, values))
            row.update(nodes=[], shared_with=[], active_jobs={})
            rows.append(row)
            by_name[row["name"]] = row
        if not rows:
            return []
        for cluster, rank, host, port, ip, status in conn.execute(
                sa.select(nodes.c.cluster_name, nodes.c.rank, nodes.c.host, nodes.c.port, nodes.c.internal_ip,
                          nodes.c.status)
                .where(nodes.c.cluster_name.in_(in_page)).order_by(nodes.c.cluster_name, nodes.c.rank)):
            by_name[cluster]["nodes"].append({"rank": rank, "host": host, "port": port, "ip": ip, "status": status})
        for cluster, user in conn.execute(sa.select(shares.c.cluster_name, shares.c.user_name)
                                          .where(shares.c.cluster_name.in_(in_page))
                                          .order_by(shares.c.cluster_name, shares.c.user_name)):
            by_name[cluster]["shared_with"].append(user)
        unfinished = sorted(set(JobStatus) - JOB_TERMINAL)
        for cluster, status, count in conn.execute(
                sa.select(jobs.c.cluster_name, jobs.c.status, sa.func.count())
                .where(jobs.c.cluster_name.in_(in_page), jobs.c.status.in_(unfinished))
                .group_by(jobs.c.cluster_name, jobs.c.status)):
            by_name[cluster]["active_jobs"][str(status)] = count
        return rows

    def numbered_page(self, *, gone: bool, status: str | None = None, provider: str | None = None,
                      owner: str | None = None, owned_or_shared_with: str | None = None,
                      newest_first: bool = False, page: int = 1, per_page: int = 100) -> "NumberedPage":
        """A numbered page of cluster names (the dashboard's listing): the taken-down ones
        (``gone``) or the others, filtered as ``page`` filters (``owned_or_shared_with``: only
        a user's own and those shared with them), by name or the last changed first; with how
        many match, the pages, and the providers and owners of every cluster the visibility
        filter leaves (the filters' choices). Two statements, whatever the count.
        ``page`` past the last is the last."""
        clusters: sa.Table = Cluster.__table__  # type: ignore[attr-defined]
        shares: sa.Table = ClusterShare.__table__  # type: ignore[attr-defined]
        seen = [clusters.c.status == ClusterStatus.TERMINATED if gone
                else clusters.c.status != ClusterStatus.TERMINATED]
        if owned_or_shared_with is not None:
            shared = sa.select(shares.c.cluster_name).where(shares.c.user_name == owned_or_shared_with)
            seen.append(sa.or_(clusters.c.owner == owned_or_shared_with, clusters.c.name.in_(shared)))
        chosen = list(seen)
        for column, value in ((clusters.c.status, status), (clusters.c.provider, provider),
                              (clusters.c.owner, owner)):
            if value is not None:
                chosen.append(column == value)
        with self.engine.connect() as conn:
            counts = list(conn.execute(sa.select(clusters.c.status, clusters.c.provider, clusters.c.owner,
                                                 sa.func.count()).where(*seen)
                                       .group_by(clusters.c.status, clusters.c.provider, clusters.c.owner)))
            total = sum(n for s, p, o, n in counts if (status is None or s == status)
                        and (provider is None or p == provider) and (owner is None or o == owner))
            pages = max(1, -(-total // per_page))
            page = max(1, min(page, pages))
            order = ((clusters.c.updated_at.desc(), clusters.c.name) if newest_first else (clusters.c.name,))
            rows = conn.execute(sa.select(clusters.c.name, clusters.c.updated_at).where(*chosen).order_by(*order)
                                .limit(per_page).offset((page - 1) * per_page))
            named = [(name, _aware(updated)) for name, updated in rows]
        return NumberedPage(named, total, page, pages, providers=sorted({p for _, p, _, _ in counts}),
                            owners=sorted({o for _, _, o, _ in counts if o}))

    # --- (last: a method named ``list`` would shadow the builtin in annotations below it)

    def list(self, *, status: ClusterStatus | str | Iterable[ClusterStatus | str] | None = None,
             ) -> list[Cluster]:
        """All clusters by name, optionally only those in the given status(es)."""
        query = select(Cluster).order_by(Cluster.name)
        if status is not None:
            query = query.where(Cluster.status.in_(_statuses(ClusterStatus, status)))  # type: ignore[attr-defined]
        with self._session() as session:
            return list(session.exec(query).all())
