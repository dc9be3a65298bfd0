"""The payload guard: what Styx hands Temporal is size-checked first, and a refusal names the
field, its size and the limit; and the database side of a cluster's deep queue (job specs,
PENDING jobs fetched in order, a whole queue ended in one write). On SQLite and PostgreSQL;
no Temporal (a refused submission never reaches it)."""

from __future__ import annotations

import pytest

from styx.contracts.clusters import ClusterSpec, SubmitJobInput
from styx.contracts.jobs import JobSpec, JobStatus
from styx.contracts.payloads import (
    MAX_PAYLOAD_BYTES,
    MAX_SUBMISSION_BYTES,
    PayloadTooLarge,
    check_payload,
    largest_field,
)
from styx.db import Database
from styx.services import clusters as service


def test_a_payload_under_the_limit_passes_and_its_size_is_told() -> None:
    assert check_payload({"run": "echo hi"}, "task", limit=100) == len('{"run":"echo hi"}')


def test_a_payload_over_the_limit_names_its_largest_field_its_size_and_the_limit() -> None:
    task = {"name": "t", "run": "x" * 5000, "envs": {"SMALL": "1", "BIG": "y" * 3000}}
    with pytest.raises(PayloadTooLarge) as refused:
        check_payload(task, "task", limit=4096, hint="keep it in the workdir")
    err = refused.value
    assert (err.field, err.limit) == ("task.run", 4096) and err.size > 8000
    assert str(err) == f"task.run: {err.size:,} bytes is more than the 4,096 bytes allowed; keep it in the workdir"
    assert "\n" not in str(err)


def test_the_largest_field_is_found_inside_dataclasses_and_nested_dicts() -> None:
    spec = JobSpec(task={"run": "r"}, env={"A": "1", "DATA": "z" * 100}, sealed_secrets=None)
    assert largest_field(spec) == "env.DATA"
    assert largest_field(spec, "spec") == "spec.env.DATA"
    assert largest_field("flat", "name") == "name"


class _NoTemporal:
    """A client that fails the test if anything reaches it."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the submission reached Temporal ({name})")


async def test_a_body_over_the_limit_is_refused_before_it_is_stored_or_sent(database: Database) -> None:
    submit = SubmitJobInput(task={"run": "echo\n#" + "x" * MAX_PAYLOAD_BYTES}, cpus=1.0)
    with pytest.raises(PayloadTooLarge) as refused:
        await service.submit_job(_NoTemporal(), "q", "c", submit, specs=database.jobspecs)  # type: ignore[arg-type]
    assert refused.value.field == "task.run" and refused.value.limit == MAX_PAYLOAD_BYTES
    assert "workdir" in str(refused.value)
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM job_specs").scalar() == 0


async def test_a_submission_whose_shape_is_too_large_is_refused_naming_the_field(database: Database) -> None:
    submit = SubmitJobInput(task={"run": "true"}, name="n" * (MAX_SUBMISSION_BYTES + 1))
    with pytest.raises(PayloadTooLarge) as refused:
        await service.submit_job(_NoTemporal(), "q", "c", submit, specs=database.jobspecs)  # type: ignore[arg-type]
    assert refused.value.field == "submission.name" and refused.value.limit == MAX_SUBMISSION_BYTES


async def test_an_inline_submission_is_checked_too() -> None:
    submit = SubmitJobInput(task={"run": "true"}, env={"BLOB": "b" * (MAX_PAYLOAD_BYTES + 1)})
    with pytest.raises(PayloadTooLarge) as refused:
        await service.submit_job(_NoTemporal(), "q", "c", submit)  # type: ignore[arg-type]
    assert refused.value.field == "env.BLOB"


async def test_a_launch_spec_too_large_is_refused(database: Database) -> None:
    launch = ClusterSpec("c", "local", resources={"labels": "l" * (MAX_SUBMISSION_BYTES + 1)})
    with pytest.raises(PayloadTooLarge) as refused:
        await service.submit_job(_NoTemporal(), "q", "c", SubmitJobInput(task={"run": "true"}),  # type: ignore[arg-type]
                                 launch=launch, specs=database.jobspecs)
    assert refused.value.field == "task.resources.labels"


# -- the queue in the database ----------------------------------------------------------------


def _queue(db: Database, n: int) -> None:
    db.clusters.upsert("c", provider="local", status="UP", num_nodes=1)
    for job_id in range(1, n + 1):
        db.jobspecs.put(f"s{job_id}", "c", JobSpec({"run": f"echo {job_id}"}))
        db.clusters.upsert_job("c", job_id, status="PENDING", name=f"j{job_id}", cpus=1.0,
                               accelerators={"T4": 0.5}, num_nodes=1, spec_id=f"s{job_id}")


def test_pending_jobs_come_back_oldest_first_within_the_range_and_the_limit(database: Database) -> None:
    _queue(database, 10)
    database.clusters.upsert_job("c", 4, status="CANCELLED")
    got = database.jobspecs.pending("c", 3, 9, limit=4)
    assert [j.job_id for j in got] == [3, 5, 6, 7]
    assert (got[0].name, got[0].cpus, got[0].accelerators, got[0].spec_id) == ("j3", 1.0, {"T4": 0.5}, "s3")
    assert [j.job_id for j in database.jobspecs.pending("c", 8, 9, limit=4)] == [8]
    assert database.jobspecs.get("s3") == JobSpec({"run": "echo 3"})


def test_a_whole_queue_is_ended_in_one_write_and_finished_jobs_are_left_alone(database: Database) -> None:
    _queue(database, 10)
    database.clusters.upsert_job("c", 2, status="SUCCEEDED")
    assert database.jobspecs.end_pending("c", JobStatus.CANCELLED, "cluster taken down", [1, 2, 3], 6) == 7
    statuses = {j.job_id: j.status for j in database.clusters.list_jobs("c")}
    assert statuses == {1: "CANCELLED", 2: "SUCCEEDED", 3: "CANCELLED", 4: "PENDING", 5: "PENDING",
                        6: "CANCELLED", 7: "CANCELLED", 8: "CANCELLED", 9: "CANCELLED", 10: "CANCELLED"}
    assert database.clusters.get_job("c", 8).message == "cluster taken down"


def test_cancelling_a_waiting_job_in_the_database_only_cancels_it_while_pending(database: Database) -> None:
    _queue(database, 5)
    assert database.jobspecs.cancel_pending("c", 3, 2) == 3
    assert database.jobspecs.cancel_pending("c", 3, 2) is None  # already cancelled
    assert database.jobspecs.cancel_pending("c", None, 2) == 5  # the newest waiting
    assert database.clusters.get_job("c", 3).status == "CANCELLED"


def test_a_spec_is_forgotten_only_while_no_job_runs_it(database: Database) -> None:
    _queue(database, 2)
    database.jobspecs.put("orphan", "c", JobSpec({"run": "x"}))
    assert database.jobspecs.forget("s1") is False
    assert database.jobspecs.forget("orphan") is True
    assert database.jobspecs.delete_cluster("c") == 2
    assert database.jobspecs.get("s1") is None
