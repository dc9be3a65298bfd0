"""The state database: migrations, idempotent writes, reads — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from styx.contracts.clusters import ClusterStatus
from styx.contracts.jobs import JobStatus
from styx.contracts.rest import ClusterInfo, JobInfo, NodeInfo
from styx.db import (
    ClusterNotFound,
    Database,
    JobNotFound,
    NodeBase,
    current_revision,
    get_engine,
    head_revision,
    migrate,
    normalize_url,
)

PREVIOUS_HEAD = "0001_clusters_nodes"
HEAD = head_revision()  # the newest migration; each test below runs every one of them


def table_names(url: str) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


# --------------------------------------------------------------------------- migrations


def test_empty_database_migrates_to_head(db_url: str) -> None:
    assert current_revision(db_url) is None
    migrate(db_url)
    assert {"alembic_version", "clusters", "nodes", "jobs", "users", "api_tokens"} <= table_names(db_url)
    with get_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]


def test_database_at_previous_head_upgrades_with_its_rows_intact(db_url: str) -> None:
    migrate(db_url, PREVIOUS_HEAD)
    assert current_revision(db_url) == PREVIOUS_HEAD
    assert "jobs" not in table_names(db_url)
    # Rows as a release at 0001 wrote them, in plain SQL: the models may have moved on.
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with get_engine(db_url).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO clusters (name, provider, status, num_nodes, resources, region, zone,"
                " autostop_minutes, autostop_down, workflow_id, status_message, created_at,"
                " updated_at, launched_at) VALUES ('old', 'aws', 'UP', 2, '{\"cpus\": 4}',"
                " 'us-east-1', 'us-east-1a', 30, :false, 'cluster/old', NULL, :t, :t, :t)"
            ),
            {"t": created.replace(tzinfo=None) if db_url.startswith("sqlite") else created,
             "false": False},
        )
        for rank in (0, 1):
            conn.execute(
                sa.text(
                    "INSERT INTO nodes (cluster_name, rank, host, port, \"user\", instance_id,"
                    " internal_ip, status, info, updated_at) VALUES ('old', :rank, :host, 22,"
                    " 'ubuntu', :iid, :ip, 'UP', '{}', :t)"
                ),
                {"rank": rank, "host": f"10.0.0.{rank + 1}", "iid": f"i-{rank}",
                 "ip": f"172.31.0.{rank + 1}",
                 "t": created.replace(tzinfo=None) if db_url.startswith("sqlite") else created},
            )

    migrate(db_url)

    assert current_revision(db_url) == HEAD
    db = Database(db_url)
    cluster = db.clusters.get("old")
    assert cluster is not None
    assert (cluster.provider, cluster.status, cluster.num_nodes, cluster.region) == (
        "aws", ClusterStatus.UP, 2, "us-east-1")
    assert cluster.autostop_minutes == 30 and cluster.autostop_down is False
    assert ClusterInfo.model_validate(cluster).resources == {"cpus": 4}
    assert cluster.created_at == created
    assert [(n.rank, n.host, n.instance_id) for n in db.clusters.list_nodes("old")] == [
        (0, "10.0.0.1", "i-0"), (1, "10.0.0.2", "i-1")]
    # and the new table works against the old rows
    db.clusters.upsert_job("old", 1, name="after-upgrade")
    assert [j.name for j in db.clusters.list_jobs("old")] == ["after-upgrade"]


def test_migrating_twice_is_a_noop(db_url: str) -> None:
    migrate(db_url)
    db = Database(db_url)
    db.clusters.upsert("keep", provider="local")
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        migrate(db_url)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)

    assert current_revision(db_url) == HEAD
    assert db.clusters.get("keep") is not None
    ddl = [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "INSERT", "UPDATE"))]
    assert ddl == []


def test_migrations_describe_exactly_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_concurrent_migrations_from_threads_all_succeed(db_url: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            migrate(db_url)
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert current_revision(db_url) == HEAD


def test_worker_and_api_migrating_at_the_same_moment_both_succeed(db_url: str, tmp_path: Path) -> None:
    """Two processes, released together once both have imported Styx, as at `styx up`."""
    go = tmp_path / "go"
    script = (
        "import sys, time, pathlib\n"
        "from styx.db import migrate\n"
        "pathlib.Path(sys.argv[2]).touch()\n"
        "while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.005)\n"
        "migrate(sys.argv[1])\n"
    )
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, db_url, str(r), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline, "the migrating processes never started"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [code for code, _ in results] == [0, 0], results
    assert current_revision(db_url) == HEAD


def test_migrate_creates_the_directory_of_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'styx.db'}"
    migrate(url)
    assert (tmp_path / "a" / "b" / "styx.db").is_file()


# --------------------------------------------------------------------------- engine


def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    migrate(sqlite_url)
    with get_engine(sqlite_url).connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 5000
        assert pragma("foreign_keys") == 1


def test_engines_are_cached_per_url(db_url: str) -> None:
    assert get_engine(db_url) is get_engine(db_url)


def test_postgresql_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_ping_answers(database: Database) -> None:
    database.ping()


def test_ping_raises_when_the_database_is_gone(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no-such-dir" / "styx.db"
    with pytest.raises(sa.exc.OperationalError):
        Database(f"sqlite:///{missing_dir}").ping()


# --------------------------------------------------------------------------- clusters and nodes


def test_upserting_a_cluster_twice_keeps_one_row_with_the_new_fields(database: Database) -> None:
    first = database.clusters.upsert("dev", provider="aws", num_nodes=2,
                                    resources={"cpus": 4}, region="us-east-1")
    assert first.status is ClusterStatus.INIT
    assert first.workflow_id == "cluster/dev"
    launched = datetime.now(timezone.utc)
    second = database.clusters.upsert("dev", status="UP", launched_at=launched, zone="us-east-1b")

    assert len(database.clusters.list()) == 1
    assert second.status is ClusterStatus.UP
    assert second.launched_at == launched
    # fields not given are kept
    assert (second.provider, second.num_nodes, second.region, second.zone) == (
        "aws", 2, "us-east-1", "us-east-1b")
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at


def test_retried_cluster_upsert_is_harmless(database: Database) -> None:
    for _ in range(3):
        database.clusters.upsert("dev", provider="local", status=ClusterStatus.FAILED,
                                status_message="no capacity in us-east-1a")
    (cluster,) = database.clusters.list()
    assert cluster.status is ClusterStatus.FAILED
    assert cluster.status_message == "no capacity in us-east-1a"


def test_unknown_fields_and_statuses_are_refused(database: Database) -> None:
    with pytest.raises(TypeError, match="colour"):
        database.clusters.upsert("dev", colour="blue")
    with pytest.raises(ValueError):
        database.clusters.upsert("dev", status="EXPLODED")
    assert database.clusters.list() == []


def test_upserting_nodes_twice_keeps_one_row_per_rank(database: Database) -> None:
    database.clusters.upsert("dev", num_nodes=2)
    database.clusters.upsert_nodes("dev", [
        {"rank": 0, "host": "127.0.0.1", "port": 2200, "user": "me", "internal_ip": "127.0.0.1"},
        NodeBase(rank=1, host="127.0.0.1", port=2201, user="me", internal_ip="127.0.0.1",
                 info='{"home": "/tmp/n1"}'),
    ])
    nodes = database.clusters.upsert_nodes("dev", [
        {"rank": 0, "host": "127.0.0.1", "port": 2300, "info": {"home": "/tmp/n0"}},
        {"rank": 1, "host": "127.0.0.1", "port": 2301, "status": "STOPPED"},
    ])

    assert nodes == database.clusters.list_nodes("dev")
    assert [(n.rank, n.port, n.user, n.status) for n in nodes] == [
        (0, 2300, "me", "UP"), (1, 2301, "me", "STOPPED")]
    assert [json.loads(n.info) for n in nodes] == [{"home": "/tmp/n0"}, {"home": "/tmp/n1"}]
    assert NodeInfo.model_validate(nodes[0]) == NodeInfo(rank=0, host="127.0.0.1", port=2300,
                                                         ip="127.0.0.1")


def test_deleting_nodes_forgets_them_and_can_be_repeated(database: Database) -> None:
    database.clusters.upsert("dev")
    database.clusters.upsert_nodes("dev", [{"rank": r, "host": "h"} for r in range(3)])
    assert database.clusters.delete_nodes("dev") == 3
    assert database.clusters.delete_nodes("dev") == 0
    assert database.clusters.list_nodes("dev") == []
    assert database.clusters.get("dev") is not None


def test_nodes_and_jobs_need_their_cluster(database: Database) -> None:
    with pytest.raises(ClusterNotFound):
        database.clusters.upsert_nodes("ghost", [{"rank": 0, "host": "h"}])
    with pytest.raises(ClusterNotFound):
        database.clusters.upsert_job("ghost", 1)


def test_deleting_a_cluster_takes_its_nodes_and_jobs(database: Database) -> None:
    database.clusters.upsert("dev")
    database.clusters.upsert_nodes("dev", [{"rank": 0, "host": "h"}])
    database.clusters.upsert_job("dev", 1)
    assert database.clusters.delete("dev") is True
    assert database.clusters.delete("dev") is False
    assert database.clusters.list_nodes("dev") == [] and database.clusters.list_jobs("dev") == []


def test_list_and_get_clusters(database: Database) -> None:
    database.clusters.upsert("b", status="UP")
    database.clusters.upsert("a", status="STOPPED")
    database.clusters.upsert("c", status="UP")
    assert [c.name for c in database.clusters.list()] == ["a", "b", "c"]
    assert [c.name for c in database.clusters.list(status="UP")] == ["b", "c"]
    assert [c.name for c in database.clusters.list(status=[ClusterStatus.STOPPED, "UP"])] == ["a", "b", "c"]
    assert database.clusters.get("b").status is ClusterStatus.UP  # type: ignore[union-attr]
    assert database.clusters.get("zzz") is None


# --------------------------------------------------------------------------- jobs


def test_upserting_a_job_twice_keeps_one_row_with_the_new_fields(database: Database) -> None:
    database.clusters.upsert("dev")
    first = database.clusters.upsert_job("dev", 1, name="train", cpus=2, accelerators={"A100": 1},
                                run_summary="python train.py", user="ada")
    second = database.clusters.upsert_job("dev", 1, status="SETTING_UP", message="syncing workdir")

    assert len(database.clusters.list_jobs("dev")) == 1
    assert first.status is JobStatus.PENDING
    assert first.workflow_id == "cluster/dev/job/1"
    assert (second.name, second.cpus, second.user, second.status, second.message) == (
        "train", 2.0, "ada", JobStatus.SETTING_UP, "syncing workdir")
    assert second.submitted_at == first.submitted_at
    assert JobInfo.model_validate(second).accelerators == {"A100": 1}


def test_a_late_running_does_not_overwrite_a_finished_job(database: Database) -> None:
    database.clusters.upsert("dev")
    database.clusters.upsert_job("dev", 7, name="train")
    running = database.clusters.set_job_status("dev", 7, JobStatus.RUNNING)
    assert running.status is JobStatus.RUNNING and running.started_at is not None

    done = database.clusters.set_job_status("dev", 7, "SUCCEEDED", exit_codes=[0, 0])
    assert done.ended_at is not None

    # a retried attempt from a worker that lost its lease lands after the end
    late = database.clusters.set_job_status("dev", 7, "RUNNING", message="re-attached")
    assert late.status is JobStatus.SUCCEEDED
    assert late.message is None
    also_late = database.clusters.upsert_job("dev", 7, status="RUNNING", started_at=datetime.now(timezone.utc))
    assert also_late.status is JobStatus.SUCCEEDED
    assert also_late.started_at == running.started_at
    # the first terminal status wins
    assert database.clusters.set_job_status("dev", 7, "CANCELLED").status is JobStatus.SUCCEEDED
    stored = JobInfo.model_validate(database.clusters.get_job("dev", 7))
    assert stored.exit_codes == [0, 0] and stored.ended_at == done.ended_at


def test_setting_a_status_twice_keeps_the_first_timestamps(database: Database) -> None:
    database.clusters.upsert("dev")
    database.clusters.upsert_job("dev", 1)
    first = database.clusters.set_job_status("dev", 1, "RUNNING")
    again = database.clusters.set_job_status("dev", 1, "RUNNING")
    assert again.started_at == first.started_at


def test_a_job_recorded_through_upserts_gets_its_start_and_end_stamped(database: Database) -> None:
    """The way the state activity records a job: one upsert per status change, retried."""
    database.clusters.upsert("dev")
    pending = database.clusters.upsert_job("dev", 3, name="eval", status="PENDING")
    assert pending.started_at is None and pending.ended_at is None
    started = database.clusters.upsert_job("dev", 3, status="RUNNING")
    assert started.started_at is not None
    assert database.clusters.upsert_job("dev", 3, status="RUNNING").started_at == started.started_at
    ended = database.clusters.upsert_job("dev", 3, status="FAILED", exit_codes=[0, 1])
    assert ended.ended_at is not None and ended.started_at == started.started_at
    assert database.clusters.upsert_job("dev", 3, status="FAILED", exit_codes=[0, 1]).ended_at == ended.ended_at
    assert ended.ended_at >= ended.started_at  # type: ignore[operator]


def test_setting_the_status_of_an_unknown_job_raises(database: Database) -> None:
    database.clusters.upsert("dev")
    with pytest.raises(JobNotFound):
        database.clusters.set_job_status("dev", 404, "RUNNING")


def test_list_and_get_jobs(database: Database) -> None:
    database.clusters.upsert("a")
    database.clusters.upsert("b")
    t0 = datetime(2025, 6, 1, tzinfo=timezone.utc)
    for job_id in (1, 2, 3):
        database.clusters.upsert_job("a", job_id, submitted_at=t0 + timedelta(minutes=job_id))
    database.clusters.upsert_job("b", 1, submitted_at=t0)
    database.clusters.set_job_status("a", 2, "FAILED")

    assert [j.job_id for j in database.clusters.list_jobs("a")] == [3, 2, 1]  # newest first
    assert [j.job_id for j in database.clusters.list_jobs("a", limit=2)] == [3, 2]
    assert [j.job_id for j in database.clusters.list_jobs("a", status="FAILED")] == [2]
    assert [(j.cluster_name, j.job_id) for j in database.clusters.list_jobs()] == [
        ("a", 3), ("a", 2), ("a", 1), ("b", 1)]
    assert database.clusters.get_job("a", 2).status is JobStatus.FAILED  # type: ignore[union-attr]
    assert database.clusters.get_job("a", 99) is None
    assert database.clusters.get_job("c", 1) is None


# --------------------------------------------------------------------------- time


def test_timestamps_come_back_timezone_aware_utc(database: Database) -> None:
    paris = timezone(timedelta(hours=2))
    launched = datetime(2025, 6, 1, 14, 0, tzinfo=paris)
    cluster = database.clusters.upsert("dev", launched_at=launched)
    database.clusters.upsert_nodes("dev", [{"rank": 0, "host": "h"}])
    database.clusters.upsert_job("dev", 1)
    job = database.clusters.set_job_status("dev", 1, "CANCELLED")

    with database.session() as session:
        reread = session.get(type(cluster), "dev")
    stamps = [cluster.created_at, cluster.updated_at, reread.launched_at,  # type: ignore[union-attr]
              database.clusters.list_nodes("dev")[0].updated_at,
              job.submitted_at, job.ended_at]
    for stamp in stamps:
        assert stamp is not None and stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
    assert reread.launched_at == launched  # type: ignore[union-attr]
    assert reread.launched_at.hour == 12  # type: ignore[union-attr]


def test_naive_timestamps_are_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="naive"):
        database.clusters.upsert("dev", launched_at=datetime(2025, 6, 1, 12, 0))
    assert database.clusters.get("dev") is None


def test_database_at_0002_keeps_its_jobs_through_the_users_migration(db_url: str) -> None:
    migrate(db_url, "0002_jobs")
    # Rows as a release at 0002 wrote them, in plain SQL: the models have moved on since.
    now = datetime.now(timezone.utc)
    t = now.replace(tzinfo=None) if db_url.startswith("sqlite") else now
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO clusters (name, provider, status, num_nodes, resources, autostop_down, workflow_id,"
            " created_at, updated_at) VALUES ('keep', 'local', 'UP', 1, '{}', :false, 'cluster/keep', :t, :t)"),
            {"t": t, "false": False})
        conn.execute(sa.text(
            "INSERT INTO jobs (cluster_name, job_id, name, status, exit_codes, cpus, accelerators, num_nodes,"
            " workflow_id, submitted_at) VALUES ('keep', 1, 'train', 'SUCCEEDED', '[0]', 0, '{}', 1,"
            " 'cluster/keep/job/1', :t)"), {"t": t})
    migrate(db_url)
    db = Database(db_url)
    assert current_revision(db_url) == HEAD
    job = db.clusters.get_job("keep", 1)
    assert (job.name, job.status, JobInfo.model_validate(job).exit_codes) == ("train", JobStatus.SUCCEEDED, [0])


def test_tokens_authenticate_only_their_user(database: Database) -> None:
    from styx import auth

    database.users.ensure("alice")
    made = auth.new_token()
    database.users.add_token("alice", made.token_id, made.salt, made.digest)
    assert database.users.authenticate_token(made.token).name == "alice"
    assert made.token not in {made.salt, made.digest}
    token_id, secret = auth.split_token(made.token)
    for wrong in (made.token[:-1] + ("x" if made.token[-1] != "x" else "y"), "styx_nosuch_abc", "garbage", ""):
        assert database.users.authenticate_token(wrong) is None


def test_job_status_only_moves_forward_and_late_fields_still_land(database: Database) -> None:
    database.clusters.upsert("race", provider="local", status="UP", num_nodes=1)
    # The job ran and finished before the row its submission writes arrived.
    database.clusters.upsert_job("race", 1, status="RUNNING")
    database.clusters.upsert_job("race", 1, status="SUCCEEDED", exit_codes=[0])
    job = database.clusters.upsert_job("race", 1, status="PENDING", name="late", run_summary="true")
    assert (job.status, job.name, job.run_summary) == (JobStatus.SUCCEEDED, "late", "true")
    assert job.started_at is not None and job.ended_at is not None
    database.clusters.upsert_job("race", 2, status="RUNNING")
    assert database.clusters.upsert_job("race", 2, status="PENDING", name="n").status == JobStatus.RUNNING
    assert database.clusters.upsert_job("race", 2, status="SETTING_UP").status == JobStatus.RUNNING
