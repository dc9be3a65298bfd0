"""The git server's tables on SQLite and PostgreSQL: uniqueness, cascades, idempotent runs."""

from __future__ import annotations

import pytest

from styx.db import AlreadyExists, Database, PushRunStatus, RepoLevel, UserNotFound
from styx.gitserver.access import AccessLevel, resolve_access
from styx.gitserver.names import RepoName


def test_repos_are_unique_per_owner_and_need_an_owner(database: Database) -> None:
    database.ensure_user("alice")
    database.ensure_user("bob")
    repo = database.create_repo("alice", "ml", private=True)
    assert repo.id is not None and repo.private and repo.default_branch == "main"
    with pytest.raises(AlreadyExists):
        database.create_repo("alice", "ml")
    assert database.create_repo("bob", "ml").id != repo.id  # same name, another owner
    with pytest.raises(UserNotFound):
        database.create_repo("nobody", "ml")
    assert [r.owner for r in database.list_repos()] == ["alice", "bob"]
    assert [r.name for r in database.list_repos("bob")] == ["ml"]


def test_collaborators_decide_access_and_go_with_the_repo(database: Database) -> None:
    for name in ("alice", "rita", "walt"):
        database.ensure_user(name)
    admin = database.ensure_user("root", is_admin=True)
    repo = database.create_repo("alice", "ml", private=True)
    assert repo.id is not None
    database.set_collaborator(repo.id, "rita", RepoLevel.READ)
    database.set_collaborator(repo.id, "walt", "read")
    database.set_collaborator(repo.id, "walt", RepoLevel.WRITE)  # an upsert, not a second row
    assert [(c.user_name, c.level) for c in database.list_collaborators(repo.id)] == [
        ("rita", RepoLevel.READ), ("walt", RepoLevel.WRITE)]
    name = RepoName("alice", "ml")
    levels = {who: resolve_access(database, database.get_user(who) if who else None, name)[1]
              for who in ("alice", "rita", "walt", "root", None)}
    assert levels == {"alice": AccessLevel.ADMIN, "rita": AccessLevel.READ, "walt": AccessLevel.WRITE,
                      "root": AccessLevel.ADMIN, None: AccessLevel.NONE}
    assert admin.is_admin
    with pytest.raises(UserNotFound):
        database.set_collaborator(repo.id, "ghost", RepoLevel.READ)
    assert database.collaborator_levels("walt") == {repo.id: RepoLevel.WRITE}
    assert database.delete_repo(repo.id)
    assert database.list_collaborators(repo.id) == []
    assert resolve_access(database, database.get_user("alice"), name) == (None, AccessLevel.NONE)


def test_an_ssh_key_belongs_to_one_user_only(database: Database) -> None:
    database.ensure_user("alice")
    database.ensure_user("mallory")
    key = database.add_ssh_key("alice", "SHA256:abc", "ssh-ed25519 AAAA", "laptop")
    with pytest.raises(AlreadyExists):
        database.add_ssh_key("mallory", "SHA256:abc", "ssh-ed25519 AAAA")
    user = database.user_for_key("SHA256:abc")
    assert user is not None and user.name == "alice"
    assert database.user_for_key("SHA256:other") is None
    assert key.id is not None
    assert not database.delete_ssh_key("mallory", key.id)  # not hers
    assert database.delete_ssh_key("alice", key.id)
    assert database.user_for_key("SHA256:abc") is None


def test_a_push_run_is_one_row_per_commit_and_a_finished_run_never_changes(database: Database) -> None:
    database.ensure_user("alice")
    repo = database.create_repo("alice", "ml")
    assert repo.id is not None
    sha = "a" * 40
    run = database.upsert_push_run(repo.id, sha, ref="refs/heads/main", pusher="alice", workflow_id="w",
                                   status=PushRunStatus.PENDING)
    database.upsert_push_run(repo.id, sha, status="RUNNING", jobs=[{"name": "t", "job_id": 1}])
    done = database.upsert_push_run(repo.id, sha, status="SUCCEEDED")
    late = database.upsert_push_run(repo.id, sha, status="RUNNING", message="a retried write")
    assert late.status is PushRunStatus.SUCCEEDED and late.message is None
    assert (done.id, done.pusher, done.ref) == (run.id, "alice", "refs/heads/main")
    assert '"job_id": 1' in done.jobs
    assert [r.sha for r in database.list_push_runs(repo.id)] == [sha]
    assert [r.sha for r in database.find_push_runs(repo.id, "aaaaaaa")] == [sha]
    assert database.get_push_run(repo.id, "b" * 40) is None
