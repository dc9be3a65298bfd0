"""The git server's tables on SQLite and PostgreSQL: uniqueness, cascades, idempotent runs."""

from __future__ import annotations

import pytest

from styx.contracts.pushes import PushRunStatus
from styx.db import AlreadyExists, Database, RepoLevel, UserNotFound
from styx.gitserver.access import AccessLevel, resolve_access
from styx.gitserver.names import RepoName


def test_repos_are_unique_per_owner_and_need_an_owner(database: Database) -> None:
    database.users.ensure("alice")
    database.users.ensure("bob")
    repo = database.repos.create("alice", "ml", private=True)
    assert repo.id is not None and repo.private and repo.default_branch == "main"
    with pytest.raises(AlreadyExists):
        database.repos.create("alice", "ml")
    assert database.repos.create("bob", "ml").id != repo.id  # same name, another owner
    with pytest.raises(UserNotFound):
        database.repos.create("nobody", "ml")
    assert [r.owner for r in database.repos.list()] == ["alice", "bob"]
    assert [r.name for r in database.repos.list("bob")] == ["ml"]


def test_collaborators_decide_access_and_go_with_the_repo(database: Database) -> None:
    for name in ("alice", "rita", "walt"):
        database.users.ensure(name)
    admin = database.users.ensure("root", is_admin=True)
    repo = database.repos.create("alice", "ml", private=True)
    assert repo.id is not None
    database.repos.set_collaborator(repo.id, "rita", RepoLevel.READ)
    database.repos.set_collaborator(repo.id, "walt", "read")
    database.repos.set_collaborator(repo.id, "walt", RepoLevel.WRITE)  # an upsert, not a second row
    assert [(c.user_name, c.level) for c in database.repos.list_collaborators(repo.id)] == [
        ("rita", RepoLevel.READ), ("walt", RepoLevel.WRITE)]
    name = RepoName("alice", "ml")
    levels = {who: resolve_access(database, database.users.get(who) if who else None, name)[1]
              for who in ("alice", "rita", "walt", "root", None)}
    assert levels == {"alice": AccessLevel.ADMIN, "rita": AccessLevel.READ, "walt": AccessLevel.WRITE,
                      "root": AccessLevel.ADMIN, None: AccessLevel.NONE}
    assert admin.is_admin
    with pytest.raises(UserNotFound):
        database.repos.set_collaborator(repo.id, "ghost", RepoLevel.READ)
    assert database.repos.collaborator_levels("walt") == {repo.id: RepoLevel.WRITE}
    assert database.repos.delete(repo.id)
    assert database.repos.list_collaborators(repo.id) == []
    assert resolve_access(database, database.users.get("alice"), name) == (None, AccessLevel.NONE)


def test_an_ssh_key_belongs_to_one_user_only(database: Database) -> None:
    database.users.ensure("alice")
    database.users.ensure("mallory")
    key = database.users.add_ssh_key("alice", "SHA256:abc", "ssh-ed25519 AAAA", "laptop")
    with pytest.raises(AlreadyExists):
        database.users.add_ssh_key("mallory", "SHA256:abc", "ssh-ed25519 AAAA")
    user = database.users.by_ssh_key("SHA256:abc")
    assert user is not None and user.name == "alice"
    assert database.users.by_ssh_key("SHA256:other") is None
    assert key.id is not None
    assert not database.users.delete_ssh_key("mallory", key.id)  # not hers
    assert database.users.delete_ssh_key("alice", key.id)
    assert database.users.by_ssh_key("SHA256:abc") is None


def test_a_push_run_is_one_row_per_commit_and_a_finished_run_never_changes(database: Database) -> None:
    database.users.ensure("alice")
    repo = database.repos.create("alice", "ml")
    assert repo.id is not None
    sha = "a" * 40
    run = database.repos.upsert_push_run(repo.id, sha, ref="refs/heads/main", pusher="alice", workflow_id="w",
                                   status=PushRunStatus.PENDING)
    database.repos.upsert_push_run(repo.id, sha, status="RUNNING", jobs=[{"name": "t", "job_id": 1}])
    done = database.repos.upsert_push_run(repo.id, sha, status="SUCCEEDED")
    late = database.repos.upsert_push_run(repo.id, sha, status="RUNNING", message="a retried write")
    assert late.status is PushRunStatus.SUCCEEDED and late.message is None
    assert (done.id, done.pusher, done.ref) == (run.id, "alice", "refs/heads/main")
    assert '"job_id": 1' in done.jobs
    assert [r.sha for r in database.repos.list_push_runs(repo.id)] == [sha]
    assert [r.sha for r in database.repos.find_push_runs(repo.id, "aaaaaaa")] == [sha]
    assert database.repos.get_push_run(repo.id, "b" * 40) is None
