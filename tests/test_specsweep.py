"""Orphan job specs: a body stored for a submission that never reached its cluster (the
submitter died between storing and submitting) is swept once it is older than the grace, a
bounded batch at a time; a body a job names never is. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from styx.config import Settings
from styx.contracts.jobs import JobSpec
from styx.db import Database, utcnow
from styx.db.models import JobSpecRow
from styx.services import specsweep
from tests.fixtures.stack import wait_for_async


def _store(db: Database, spec_id: str, age_seconds: float, job_id: int | None = None) -> None:
    """A body stored ``age_seconds`` ago, and with ``job_id`` the job that runs it."""
    db.jobspecs.put(spec_id, "c", JobSpec({"run": f"echo {spec_id}"}))
    with db.engine.begin() as conn:
        conn.execute(sa.update(JobSpecRow.__table__).where(JobSpecRow.__table__.c.spec_id == spec_id)
                     .values(created_at=utcnow() - timedelta(seconds=age_seconds)))
    if job_id is not None:
        db.clusters.upsert_job("c", job_id, status="SUCCEEDED", name=f"j{job_id}", spec_id=spec_id)


def _kept(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(conn.execute(sa.select(JobSpecRow.__table__.c.spec_id)).scalars())


def test_only_old_bodies_no_job_names_are_swept(database: Database) -> None:
    database.clusters.upsert("c", provider="local", status="UP", num_nodes=1)
    _store(database, "ran-long-ago", 10 * 86_400, job_id=1)  # a job names it: kept, however old
    _store(database, "died-before-submitting", 2 * 86_400)  # the orphan
    _store(database, "being-submitted", 5)  # young: its submission may still be answered

    assert specsweep.sweep_once(database, grace_seconds=86_400) == 1
    assert _kept(database) == {"ran-long-ago", "being-submitted"}
    assert database.jobspecs.get("ran-long-ago") == JobSpec({"run": "echo ran-long-ago"})
    assert specsweep.sweep_once(database, grace_seconds=86_400) == 0


def test_a_sweep_deletes_at_most_its_batch(database: Database) -> None:
    for n in range(5):
        _store(database, f"orphan-{n}", 3600)
    assert [specsweep.sweep_once(database, 60, batch=2) for _ in range(4)] == [2, 2, 1, 0]
    assert _kept(database) == set()


async def test_the_api_sweeper_removes_an_orphan_and_keeps_going_after_a_failure(database: Database) -> None:
    _store(database, "orphan", 120)
    _store(database, "young", 0)

    class Flaky:
        """The database, failing the first pass (as when it is briefly away)."""

        def __init__(self) -> None:
            self.calls = 0
            self.jobspecs = self

        def sweep_orphans(self, stored_before, limit: int) -> int:
            self.calls += 1
            if self.calls == 1:
                raise sa.exc.OperationalError("select", {}, Exception("database is away"))
            return database.jobspecs.sweep_orphans(stored_before, limit)

    flaky = Flaky()
    task = asyncio.create_task(specsweep.sweep_forever(flaky, interval_seconds=0.05, grace_seconds=60))  # type: ignore[arg-type]
    try:
        await wait_for_async(lambda: "orphan" not in _kept(database), 10, "the orphan to be swept")
    finally:
        task.cancel()
    assert flaky.calls >= 2 and _kept(database) == {"young"}


@pytest.mark.parametrize(("var", "value"), [("STYX_SPEC_SWEEP_SECONDS", "0"), ("STYX_SPEC_ORPHAN_SECONDS", "soon")])
def test_a_bad_sweep_setting_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        Settings.from_env(temporal=False)


def test_every_api_replica_sweeps_from_its_start(tmp_path, db_url: str) -> None:
    """The API starts the sweep with its lifespan (STYX_SPEC_* from its settings) and stops
    it with it."""
    from fastapi.testclient import TestClient

    from styx.api.app import create_app
    from styx.db import migrate
    from tests.fixtures.stack import settings_for, wait_for

    migrate(db_url)
    db = Database(db_url)
    _store(db, "orphan", 120)
    settings = settings_for({"STYX_HOME": str(tmp_path / "home"), "STYX_DB_URL": db_url,
                             "STYX_TEMPORAL_ADDRESS": "127.0.0.1:1", "STYX_SPEC_SWEEP_SECONDS": "1",
                             "STYX_SPEC_ORPHAN_SECONDS": "60"})
    assert (settings.spec_sweep_seconds, settings.spec_orphan_seconds) == (1, 60)
    with TestClient(create_app(settings)):
        wait_for(lambda: "orphan" not in _kept(db), 15, "the API's sweep to remove the orphan")
        _store(db, "orphan-2", 120)
        wait_for(lambda: "orphan-2" not in _kept(db), 15, "the next pass to remove the next one")
