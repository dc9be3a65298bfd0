"""``ServiceStore`` (``db.services``): services, their versions and replicas (written by the
service workflow's activities), and what the load balancers read and report.

- ``create`` / ``get`` / ``list`` / ``forget``: a service's rows. ``create`` takes the first
  free port of a range for its load balancers (unique in the table).
- ``add_version`` / ``get_version``: each version's task (secrets sealed apart); the uploads
  a version names are pinned while the service lives (``db.uploads``).
- ``record``: the workflow's view, written whole (the service row and its replica rows).
- ``routes``: every live service's port, policy and READY endpoints — what a load balancer
  reads every second.
- ``add_requests`` / ``request_rate``: per-second request counts from each load balancer,
  and the rate over a window (the autoscaler's input); ``add_lb_logs`` / ``lb_logs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from styx.db.base import Store
from styx.db.engine import utcnow
from styx.db.models import AlreadyExists, Service, ServiceLbLog, ServiceReplica, ServiceRequestCount, ServiceVersion
from styx.db.uploads import PIN_SERVICE, pin, unpin

#: Lines of load balancer log kept per service.
LB_LOG_LINES = 500
#: Request counts older than this are pruned (longer than any autoscaler window).
REQUEST_COUNTS_KEPT_SECONDS = 3600


class PortsExhausted(ValueError):
    """Every port of the load balancers' range is taken by a service."""


@dataclass(frozen=True)
class Route:
    """What a load balancer needs of one service."""

    service: str
    port: int
    policy: str
    endpoints: tuple[str, ...]


class ServiceStore(Store):
    # ------------------------------------------------------------------ services

    def create(self, name: str, *, owner: str | None, ports: range, task: Mapping[str, Any],
               sealed_secrets: str | None, spec: Mapping[str, Any], lb_policy: str, workflow_id: str,
               replace: bool = False) -> Service:
        """The service's row and its version 1, on the first port of ``ports`` no service
        holds. ``AlreadyExists`` if a service of that name exists (unless ``replace``: a row
        whose workflow is gone, taken over); ``PortsExhausted`` when the range is full."""
        for _ in range(3):  # two services created at once may pick the same port: the loser retries
            try:
                with self._write() as conn:
                    if self._fetch(Service, name, conn=conn) is not None:
                        if not replace:
                            raise AlreadyExists(f"service {name!r} exists")
                        self._forget(conn, name)
                    used = set(conn.execute(sa.select(Service.__table__.c.lb_port)).scalars())
                    port = next((p for p in ports if p not in used), None)
                    if port is None:
                        raise PortsExhausted(f"all {len(ports)} load balancer ports ({ports.start}-{ports.stop - 1}, "
                                             "STYX_SERVE_PORTS) are taken by services: take one down first")
                    now = utcnow()
                    conn.execute(sa.insert(Service.__table__).values(
                        name=name, owner=owner, status="STARTING", version=1, target_version=1, target_replicas=0,
                        lb_port=port, lb_policy=lb_policy, spec=json.dumps(spec), message=None, qps=0.0,
                        workflow_id=workflow_id, created_at=now, updated_at=now))
                    conn.execute(sa.insert(ServiceVersion.__table__).values(
                        service_name=name, version=1, task=json.dumps(task), sealed_secrets=sealed_secrets,
                        spec=json.dumps(spec), mode="rolling", created_at=now))
                    pin(conn, PIN_SERVICE, name, task)  # its replicas, now and later, sync them
                row = self.get(name)
                assert row is not None
                return row
            except IntegrityError as err:
                if "lb_port" not in str(err).lower() and "services" not in str(err).lower():
                    raise
                if self.get(name) is not None and not replace:
                    raise AlreadyExists(f"service {name!r} exists") from None
        raise PortsExhausted("could not take a load balancer port: too many services created at once; try again")

    def get(self, name: str) -> Service | None:
        return self._fetch(Service, name)

    def list(self) -> list[Service]:
        with self._session() as session:
            return list(session.exec(select(Service).order_by(Service.name)))

    def forget(self, name: str) -> None:
        """Every row of the service (it was taken down)."""
        with self._write() as conn:
            self._forget(conn, name)

    @staticmethod
    def _forget(conn: Any, name: str) -> None:
        for model in (ServiceReplica, ServiceVersion, ServiceRequestCount, ServiceLbLog):
            table = model.__table__  # type: ignore[attr-defined]
            conn.execute(sa.delete(table).where(table.c.service_name == name))
        conn.execute(sa.delete(Service.__table__).where(Service.__table__.c.name == name))
        unpin(conn, PIN_SERVICE, [name])

    def set_status(self, name: str, status: str, message: str | None = None) -> None:
        with self._write() as conn:
            conn.execute(sa.update(Service.__table__).where(Service.__table__.c.name == name)
                         .values(status=status, message=message, updated_at=utcnow()))

    # ------------------------------------------------------------------ versions

    def add_version(self, name: str, *, task: Mapping[str, Any], sealed_secrets: str | None,
                    spec: Mapping[str, Any], mode: str) -> int:
        """The next version of ``name``'s task; returns its number."""
        with self._write() as conn:
            table = ServiceVersion.__table__
            latest = conn.execute(sa.select(sa.func.max(table.c.version))
                                  .where(table.c.service_name == name)).scalar_one_or_none() or 0
            version = latest + 1
            conn.execute(sa.insert(table).values(service_name=name, version=version, task=json.dumps(task),
                                                 sealed_secrets=sealed_secrets, spec=json.dumps(spec), mode=mode,
                                                 created_at=utcnow()))
            pin(conn, PIN_SERVICE, name, task)
            conn.execute(sa.update(Service.__table__).where(Service.__table__.c.name == name)
                         .values(spec=json.dumps(spec), updated_at=utcnow()))
            return version

    def get_version(self, name: str, version: int) -> ServiceVersion | None:
        return self._fetch(ServiceVersion, name, version)

    def latest_version(self, name: str) -> int:
        with self.engine.connect() as conn:
            table = ServiceVersion.__table__
            return conn.execute(sa.select(sa.func.max(table.c.version))
                                .where(table.c.service_name == name)).scalar_one_or_none() or 0

    # ------------------------------------------------------------------ the workflow's record

    def record(self, name: str, *, status: str, version: int, target_version: int, target_replicas: int,
               message: str | None, qps: float, replicas: Iterable[Mapping[str, Any]],
               keep_versions: Iterable[int], kept: int) -> bool:
        """Write the service row and replace its replica rows; versions that no replica runs,
        beyond the latest ``kept``, are removed. False if the service has no row (it was
        forgotten: nothing is written)."""
        now = utcnow()
        with self._write() as conn:
            table = Service.__table__
            done = conn.execute(sa.update(table).where(table.c.name == name).values(
                status=status, version=version, target_version=target_version, target_replicas=target_replicas,
                message=message, qps=qps, updated_at=now)).rowcount
            if not done:
                return False
            rtable = ServiceReplica.__table__
            conn.execute(sa.delete(rtable).where(rtable.c.service_name == name))
            rows = [{"service_name": name, "replica_id": r["replica_id"], "cluster": r["cluster"],
                     "version": r["version"], "status": r["status"], "endpoint": r.get("endpoint") or "",
                     "job_id": r.get("job_id"), "message": r.get("message") or None,
                     "launched_at": r.get("launched_at"), "updated_at": now} for r in replicas]
            if rows:
                conn.execute(sa.insert(rtable), rows)
            vtable = ServiceVersion.__table__
            versions = sorted(conn.execute(sa.select(vtable.c.version).where(vtable.c.service_name == name))
                              .scalars(), reverse=True)
            keep = set(versions[:kept]) | set(keep_versions)
            drop = [v for v in versions if v not in keep]
            if drop:
                conn.execute(sa.delete(vtable).where(vtable.c.service_name == name, vtable.c.version.in_(drop)))
        return True

    def replicas(self, name: str) -> list[ServiceReplica]:
        with self._session() as session:
            return list(session.exec(select(ServiceReplica).where(ServiceReplica.service_name == name)
                                     .order_by(ServiceReplica.replica_id)))

    # ------------------------------------------------------------------ load balancers

    def routes(self) -> list[Route]:
        """Every service with its port, policy and READY endpoints (two queries)."""
        with self.engine.connect() as conn:
            services = conn.execute(sa.select(Service.__table__.c.name, Service.__table__.c.lb_port,
                                              Service.__table__.c.lb_policy, Service.__table__.c.status)).all()
            rtable = ServiceReplica.__table__
            ready: dict[str, list[str]] = {}
            for service, endpoint in conn.execute(
                    sa.select(rtable.c.service_name, rtable.c.endpoint)
                    .where(rtable.c.status == "READY", rtable.c.endpoint != "")
                    .order_by(rtable.c.service_name, rtable.c.replica_id)):
                ready.setdefault(service, []).append(endpoint)
        return [Route(name, port, policy, tuple(ready.get(name, ())))
                for name, port, policy, status in services if status != "SHUTTING_DOWN" or ready.get(name)]

    def add_requests(self, lb_id: str, counts: Mapping[str, Mapping[int, int]], *, now: float) -> None:
        """Add a load balancer's per-second counts (``{service: {second: n}}``), and prune
        counts older than ``REQUEST_COUNTS_KEPT_SECONDS``."""
        table = ServiceRequestCount.__table__
        with self._write() as conn:
            for service, seconds in counts.items():
                for second, n in seconds.items():
                    self._upsert(conn, ServiceRequestCount, {"service_name": service, "lb_id": lb_id,
                                                             "second": int(second)},
                                 {"count": n}, {}, )
            conn.execute(sa.delete(table).where(table.c.second < int(now) - REQUEST_COUNTS_KEPT_SECONDS))

    def request_rate(self, name: str, window: float, *, now: float) -> float:
        """Requests per second over the last ``window`` seconds (every load balancer's, whole
        seconds before ``now``)."""
        table = ServiceRequestCount.__table__
        start, end = int(now - window), int(now)
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(table.c.count), 0)).where(
                table.c.service_name == name, table.c.second >= start, table.c.second < end)).scalar_one()
        return float(total) / max(window, 1.0)

    def add_lb_logs(self, lines: Iterable[tuple[str, str, datetime, str]]) -> None:
        """``(service, lb_id, at, line)`` rows; each service keeps its latest ``LB_LOG_LINES``."""
        rows = [{"service_name": s, "lb_id": lb, "at": at, "line": line[:2000]} for s, lb, at, line in lines]
        if not rows:
            return
        table = ServiceLbLog.__table__
        with self._write() as conn:
            conn.execute(sa.insert(table), rows)
            for service in {r["service_name"] for r in rows}:
                cutoff = conn.execute(sa.select(table.c.id).where(table.c.service_name == service)
                                      .order_by(table.c.id.desc()).offset(LB_LOG_LINES).limit(1)).scalar()
                if cutoff is not None:
                    conn.execute(sa.delete(table).where(table.c.service_name == service, table.c.id <= cutoff))

    def lb_logs(self, name: str, limit: int = LB_LOG_LINES) -> list[ServiceLbLog]:
        with self._session() as session:
            rows = list(session.exec(select(ServiceLbLog).where(ServiceLbLog.service_name == name)
                                     .order_by(ServiceLbLog.id.desc()).limit(limit)))  # type: ignore[union-attr]
        return rows[::-1]
