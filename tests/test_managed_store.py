"""The managed jobs' read model (``db.managed``) and the listing every front door shares
(``styx.services.managed.list_jobs``), on SQLite and PostgreSQL: a retried submission is
one job, a finished job never moves again, a cancel in progress is not undone, slots are
bounded (``STYX_MANAGED_MAX_ACTIVE``), and a user lists only their own jobs."""

from __future__ import annotations

import pytest

from styx.db import Database, User
from styx.services import managed as service
from styx.services import policy


@pytest.fixture
def db(database: Database) -> Database:
    """A migrated database on each backend (``tests.fixtures.db``)."""
    return database


def test_a_retried_submission_is_the_same_job_and_tasks_keep_their_order(db: Database):
    first, created = db.managed.create("p", "alice", [("a", "s1"), ("b", "s2")], idempotency_key="k")
    again, created_again = db.managed.create("p", "alice", [("a", "s1"), ("b", "s2")], idempotency_key="k")
    assert created and not created_again and again.id == first.id
    assert first.workflow_id == f"managed/{first.id}"
    other, _ = db.managed.create("p", "bob", [("a", "s1")], idempotency_key="k")  # keys are per user
    assert other.id != first.id
    assert [t.name for t in db.managed.tasks([first.id])[first.id]] == ["a", "b"]
    assert db.managed.task_body(first.id, 1) == "s2"


def test_a_finished_job_never_moves_and_a_cancel_in_progress_is_not_undone(db: Database):
    job, _ = db.managed.create("j", "alice", [("a", "s")])
    db.managed.record(job.id, {"status": "CANCELLING"})
    db.managed.record(job.id, {"status": "RUNNING"})
    assert db.managed.get(job.id).status == "CANCELLING"
    db.managed.record(job.id, {"status": "CANCELLED", "ended": True}, task_index=0,
                      task={"status": "CANCELLED", "ended": True})
    db.managed.record(job.id, {"status": "RUNNING"}, task_index=0, task={"status": "RUNNING"})
    assert db.managed.get(job.id).status == "CANCELLED" and db.managed.get(job.id).ended_at is not None
    assert db.managed.tasks([job.id])[job.id][0].status == "CANCELLED"


def test_slots_are_bounded_and_freed_when_the_cluster_is_down(db: Database):
    a, _ = db.managed.create("a", "alice", [("a", "s")])
    b, _ = db.managed.create("b", "alice", [("b", "s")])
    assert db.managed.claim(a.id, 0, f"mj-{a.id}-0-1", 1, "STARTING") is None
    assert db.managed.claim(a.id, 0, f"mj-{a.id}-0-1", 1, "STARTING") is None  # a retry: still its own
    assert db.managed.claim(b.id, 0, f"mj-{b.id}-0-1", 1, "STARTING") == 1  # full: b waits
    db.managed.record(a.id, {"cluster": None})  # a's cluster is down
    assert db.managed.claim(b.id, 0, f"mj-{b.id}-0-1", 1, "STARTING") is None
    assert db.managed.get(b.id).cluster == f"mj-{b.id}-0-1" and db.managed.get(b.id).status == "STARTING"


def test_a_freed_slot_wakes_the_oldest_waiting_as_many_as_slots_are_free_and_the_owners_oldest(db: Database):
    holder, _ = db.managed.create("h", "alice", [("h", "s")])
    waiting = [db.managed.create(f"w{i}", "bob", [("w", "s")])[0].id for i in range(4)]
    carols, _ = db.managed.create("c", "carol", [("c", "s")])
    assert db.managed.claim(holder.id, 0, f"mj-{holder.id}-0-1", 3, "STARTING") is None
    # Three slots, one held: the two oldest waiting, and carol's oldest (her limits may have held it).
    assert db.managed.waiting(3, "carol", exclude=holder.id) == [waiting[0], waiting[1], carols.id]
    db.managed.record(waiting[0], {"status": "STARTING"})  # woken, and took a slot
    assert db.managed.waiting(1, None) == [waiting[1]]  # none free: still the oldest, one at least
    assert holder.id not in db.managed.waiting(10, "alice", exclude=holder.id)


def test_a_user_lists_only_their_own_jobs_and_an_admin_everyones(db: Database):
    for owner in ("alice", "bob", "alice"):
        db.managed.create(f"{owner}-job", owner, [("t", "s")])
    alice, bob, admin = User(name="alice"), User(name="bob"), User(name="root", is_admin=True)
    assert [j.owner for j in service.list_jobs(db, alice)] == ["alice", "alice"]
    assert [j.name for j in service.list_jobs(db, bob)] == ["bob-job"]
    assert len(service.list_jobs(db, admin, all_users=True)) == 3
    assert service.list_jobs(db, admin) == []  # an admin's own, unless all_users
    with pytest.raises(policy.NotAllowed):
        service.list_jobs(db, alice, all_users=True)
    mine = service.list_jobs(db, alice)[0]
    with pytest.raises(service.ManagedJobNotFound):
        service.get_job(db, bob, mine.managed_id)
    with pytest.raises(service.ManagedJobNotFound):
        service.cancel_targets(db, bob, [mine.managed_id])
    assert service.get_job(db, admin, mine.managed_id).owner == "alice"
