"""Owners, sharing and the token lifecycle, against the whole stack (Temporal, a worker, the
API, the git server): a user's cluster is invisible to other users, a share lets one use
it but not run it, and a revoked or expired token or a disabled user stops working at once
over the API, git over HTTP and git over SSH."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import sqlalchemy as sa

from styx.db import ApiToken, Cluster, User, utcnow
from styx.services.access import ClusterAccess, cluster_access
from tests.fixtures.git import GitStyxStack, GitUser, make_git_user
from tests.fixtures.people import People
from tests.fixtures.stack import wait_for

pytestmark = pytest.mark.slow

NOT_FOUND = "cluster 'alpha' not found"
SLEEP = {"resources": {"cpus": 0.5}, "run": "sleep 120"}


@pytest.fixture(scope="module")
def world(temporal_env, tmp_path_factory) -> Iterator[People]:
    """alice owns the cluster `alpha` and the private repository alice/ml (bob and carol may
    read it); bob, carol and dave own nothing. At most 3 live tokens per user and 2 shares per cluster, to test the limits."""
    address = temporal_env.client.service_client.config.target_host
    stack = GitStyxStack(tmp_path_factory.mktemp("styx-owners"), address)
    stack.env.update({"STYX_MAX_TOKENS_PER_USER": "3", "STYX_MAX_CLUSTER_SHARES": "2"})
    try:
        stack.start()
        w = People(stack, tmp_path_factory.mktemp("people"))
        for name in ("alice", "bob", "carol", "dave"):
            w.add(name)
        with w.client("alice") as alice:
            up = alice.launch({"resources": {"cpus": 2}, "run": "true"}, cluster="alpha")
            assert alice.wait("alpha", up.job_id, timeout=120).status == "SUCCEEDED"
            alice.create_repo("ml", private=True)
            for reader in ("bob", "carol"):
                alice.set_collaborator("alice/ml", reader, "read")
        _push(w.users["alice"], w, "alice/ml", {"README.md": "# ml\n"}, w.root)
        yield w
    finally:
        stack.stop()


def _push(user: GitUser, world: People, repo: str, files: dict[str, str], tmp: Path) -> str:
    work = tmp / f"work-{user.name}"
    user.git("clone", "-q", user.ssh_url(world.git, repo), str(work))
    for name, text in files.items():
        (work / name).write_text(text)
    user.git("add", "-A", cwd=work)
    user.git("commit", "-qm", "run it", cwd=work)
    user.git("push", "-q", "origin", "HEAD:main", cwd=work)
    return user.git("rev-parse", "HEAD", cwd=work).stdout.strip()


# ------------------------------------------------------------------------------ the access rule


def test_the_access_rule_gives_owners_and_admins_own_shared_users_use_and_others_none():
    alpha = Cluster(name="alpha", owner="alice")
    legacy = Cluster(name="old")  # from before owners: the admins'
    root = User(name="root", is_admin=True)
    alice, bob, carol = User(name="alice"), User(name="bob"), User(name="carol")
    assert cluster_access(alice, alpha, ["bob"]) == ClusterAccess.OWN
    assert cluster_access(bob, alpha, ["bob"]) == ClusterAccess.USE
    assert cluster_access(carol, alpha, ["bob"]) == ClusterAccess.NONE
    assert cluster_access(root, alpha) == ClusterAccess.OWN
    assert cluster_access(root, legacy) == ClusterAccess.OWN
    assert cluster_access(alice, legacy) == ClusterAccess.NONE
    assert cluster_access(User(name="alice", disabled=True), alpha) == ClusterAccess.NONE
    assert cluster_access(alice, None) == ClusterAccess.NONE


# ------------------------------------------------------------------------------ clusters


def test_another_users_cluster_is_a_404_on_every_route_exactly_like_a_missing_one(world: People):
    carol = world.users["carol"].token
    job_id = max(j.job_id for j in world.admin.queue("alpha"))
    routes = [
        ("GET", "", None), ("GET", "?refresh=true", None), ("GET", "/jobs", None), ("GET", f"/jobs/{job_id}", None),
        ("GET", f"/jobs/{job_id}/logs", None), ("POST", "/jobs", {"task": {"run": "echo hijack"}}),
        ("POST", "/jobs/cancel", {"job_ids": [job_id]}), ("POST", "/jobs/cancel", {}),
        ("POST", "/stop", None), ("POST", "/start", None), ("POST", "/down", None),
        ("POST", "/autostop", {"idle_minutes": 1}), ("POST", "/shares", {"user": "carol"}),
        ("DELETE", "/shares/bob", None),
    ]
    before = [(j.job_id, j.status) for j in world.admin.queue("alpha")]
    for method, path, body in routes:
        answer = world.http(method, f"/api/v1/clusters/alpha{path}", carol, json=body)
        missing = world.http(method, f"/api/v1/clusters/nosuch{path}", carol, json=body)
        assert (answer.status_code, answer.json()) == (404, {"detail": NOT_FOUND}), (method, path, answer.text)
        assert missing.status_code == 404 and missing.json()["detail"].replace("nosuch", "alpha") == NOT_FOUND
    info = world.admin.cluster("alpha")
    assert info.status == "UP" and info.autostop_minutes is None and info.shared_with == []
    assert [(j.job_id, j.status) for j in world.admin.queue("alpha")] == before
    # Launching onto it says only that the name is taken: not whose, not its state.
    launch = world.http("POST", "/api/v1/clusters", carol, json={"cluster": "alpha", "task": {"run": "true"}})
    assert launch.status_code == 409, launch.text
    assert launch.json()["detail"] == "cluster: the name 'alpha' is not available; choose another name"
    assert [(j.job_id, j.status) for j in world.admin.queue("alpha")] == before


def test_listing_shows_only_the_clusters_a_user_may_see_and_an_admin_sees_all(world: People):
    with world.client("carol") as carol, world.client("alice") as alice:
        assert "alpha" not in [c.name for c in carol.status(all=True)]
        assert "alpha" not in [c.name for c in carol.status(refresh=True)]  # nor probed for her
        [mine] = [c for c in alice.status() if c.name == "alpha"]
        assert mine.owner == "alice"
    assert world.admin.cluster("alpha").owner == "alice"
    assert "alpha" in [c.name for c in world.admin.status()]
    shown = world.cli(None, "status", token=world.users["carol"].token)
    assert "alpha" not in shown.stdout


def test_a_cluster_from_before_owners_is_the_admins_alone(world: People):
    world.db.clusters.upsert("legacy", provider="local", status="TERMINATED", num_nodes=1)
    try:
        assert world.db.clusters.get("legacy").owner is None
        legacy = world.http("GET", "/api/v1/clusters/legacy", world.users["alice"].token)
        assert (legacy.status_code, legacy.json()["detail"]) == (404, "cluster 'legacy' not found")
        assert world.admin.cluster("legacy").owner is None
    finally:
        world.db.clusters.delete("legacy")


def test_an_admin_sees_and_acts_on_every_cluster(world: People):
    admin = world.admin
    with world.client("alice") as alice:
        sleeper = alice.exec("alpha", SLEEP)
        wait_for(lambda: alice.job("alpha", sleeper.job_id).status == "RUNNING", 60, "alice's job to run")
        assert admin.cancel("alpha", [sleeper.job_id]).cancelled == [sleeper.job_id]
        assert alice.wait("alpha", sleeper.job_id, timeout=60).status == "CANCELLED"
        assert admin.autostop("alpha", 30).autostop_minutes == 30
        assert alice.cluster("alpha").autostop_minutes == 30
        assert admin.autostop("alpha", None).autostop_minutes is None
        ran = admin.exec("alpha", {"resources": {"cpus": 0.5}, "run": "echo admin-was-here"})
        assert admin.wait("alpha", ran.job_id, timeout=60).status == "SUCCEEDED"
        assert "admin-was-here" in alice.logs("alpha", ran.job_id)
        # alice's second cluster, taken down by the admin
        up = alice.launch({"resources": {"cpus": 0.5}, "run": "true"}, cluster="beta")
        assert alice.wait("beta", up.job_id, timeout=120).status == "SUCCEEDED"
        assert admin.down("beta").status == "TERMINATED"
        assert alice.cluster("beta").status == "TERMINATED"


def test_sharing_lets_a_user_exec_and_read_his_jobs_but_not_stop_the_cluster(world: People):
    bob_token = world.users["bob"].token
    with world.client("alice") as alice, world.client("bob") as bob:
        assert alice.share("alpha", "bob").shared_with == ["bob"]
        assert "alpha" in [c.name for c in bob.status()]
        mine = bob.exec("alpha", {"resources": {"cpus": 0.5}, "run": "echo bob-on-alpha"})
        done = bob.wait("alpha", mine.job_id, timeout=60)
        assert (done.status, done.user) == ("SUCCEEDED", "bob")
        assert "bob-on-alpha" in bob.logs("alpha", mine.job_id)
        assert mine.job_id in [j.job_id for j in bob.queue("alpha")]

        for path, body in [("/stop", None), ("/start", None), ("/down", None),
                           ("/autostop", {"idle_minutes": 1}), ("/shares", {"user": "carol"}),
                           ("/shares/bob", None)]:
            method = "DELETE" if path == "/shares/bob" else "POST"
            refused = world.http(method, f"/api/v1/clusters/alpha{path}", bob_token, json=body)
            assert refused.status_code == 403, (path, refused.text)
            assert "needs the owner of cluster 'alpha' (alice) or an admin" in refused.json()["detail"]
        assert alice.cluster("alpha").status == "UP"

        # bob cancels his own job, not alice's; alice (the owner) cancels his.
        hers = alice.exec("alpha", SLEEP)
        his = bob.exec("alpha", SLEEP)
        wait_for(lambda: {alice.job("alpha", j).status for j in (hers.job_id, his.job_id)} == {"RUNNING"},
                 60, "both jobs to run")
        refused = world.http("POST", "/api/v1/clusters/alpha/jobs/cancel", bob_token, json={"job_ids": [hers.job_id]})
        assert refused.status_code == 403 and f"job {hers.job_id} on cluster 'alpha' is alice's" in refused.text
        assert bob.cancel("alpha").cancelled == [his.job_id]  # his latest, not the cluster's latest
        assert alice.job("alpha", hers.job_id).status == "RUNNING"
        again = bob.exec("alpha", SLEEP)
        assert alice.cancel("alpha", [again.job_id, hers.job_id]).cancelled == [again.job_id, hers.job_id]

        assert alice.unshare("alpha", "bob").shared_with == []
        gone = world.http("GET", "/api/v1/clusters/alpha", bob_token)
        assert (gone.status_code, gone.json()["detail"]) == (404, NOT_FOUND)


def test_all_in_the_cli_means_yours_on_a_shared_cluster(world: People):
    bob_token = world.users["bob"].token
    with world.client("alice") as alice, world.client("bob") as bob:
        alice.share("alpha", "bob")
        try:
            hers, his = alice.exec("alpha", SLEEP), bob.exec("alpha", SLEEP)
            stop = world.cli(None, "stop", "--all", "-y", token=bob_token)
            assert (stop.returncode, stop.stdout.strip()) == (0, "no cluster of yours to stop"), stop.stderr
            cancel = world.cli(None, "cancel", "alpha", "--all", token=bob_token)
            assert cancel.returncode == 0, cancel.stderr
            assert cancel.stdout.strip() == f"cancelled job(s) {his.job_id} on alpha"
            assert alice.job("alpha", hers.job_id).status in ("PENDING", "SETTING_UP", "RUNNING")
            assert alice.cluster("alpha").status == "UP"
            alice.cancel("alpha", [hers.job_id])
        finally:
            alice.unshare("alpha", "bob")


def test_sharing_is_bounded_and_refuses_unknown_users_with_clear_errors(world: People):
    with world.client("alice") as alice:
        try:
            alice.share("alpha", "bob")
            assert alice.share("alpha", "carol").shared_with == ["bob", "carol"]
            assert alice.share("alpha", "carol").shared_with == ["bob", "carol"]  # twice is harmless
            full = world.http("POST", "/api/v1/clusters/alpha/shares", world.users["alice"].token,
                              json={"user": "dave"})
            assert full.status_code == 409 and "STYX_MAX_CLUSTER_SHARES=2" in full.json()["detail"]
            nobody = world.http("POST", "/api/v1/clusters/alpha/shares", world.users["alice"].token,
                                json={"user": "nobody"})
            assert (nobody.status_code, nobody.json()["detail"]) == (404, "user: no user 'nobody'")
            not_shared = world.http("DELETE", "/api/v1/clusters/alpha/shares/dave", world.users["alice"].token)
            assert not_shared.status_code == 404 and "not shared with 'dave'" in not_shared.text
        finally:
            for name in ("bob", "carol"):
                alice.unshare("alpha", name)
    assert world.admin.cluster("alpha").shared_with == []


# ------------------------------------------------------------------------------ push runs


def test_a_styx_yaml_naming_someone_elses_cluster_fails_its_run_with_the_reason(world: People, tmp_path: Path):
    dave = world.users["dave"]
    with world.client("dave") as client:
        client.create_repo("proj")
        sha = _push(dave, world, "dave/proj", {".styx.yaml": "cluster: alpha\nrun: echo hijacked\n"}, tmp_path)
        run = client.wait_commit("dave/proj", sha, timeout=120)
    assert run.status == "FAILED", run
    [job] = run.jobs
    assert job.status == "FAILED" and job.job_id == 0
    # the same words as for a cluster that does not exist: nothing says alpha is there
    assert job.message == ("cluster 'alpha' does not exist (or was taken down); launch it first "
                           "(`styx launch -c alpha ...`) or use `managed: true`")
    assert "hijacked" not in "".join(world.admin.logs("alpha", j.job_id) for j in world.admin.queue("alpha"))


# ------------------------------------------------------------------------------ tokens and users


def test_token_cli_creates_lists_and_revokes_and_cluster_share_prints_who(world: People):
    token = world.users["dave"].token
    made = world.cli(None, "token", "create", "--expires", "30d", "--description", "laptop", token=token)
    assert made.returncode == 0, made.stderr
    new_token = made.stdout.strip().splitlines()[-1]
    token_id = re.search(r"created token (\w+) for dave, expires \d{4}-\d\d-\d\d", made.stdout)
    assert token_id and new_token.startswith(f"styx_{token_id[1]}_"), made.stdout
    listed = world.cli(None, "token", "list", token=new_token)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if token_id[1] in line)
    assert "laptop" in row and "in 29d" in row and "ago" in row  # just used, to list
    revoked = world.cli(None, "token", "revoke", token_id[1], token=token)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, f"revoked token {token_id[1]}")
    assert token_id[1] not in world.cli(None, "token", "list", token=token).stdout
    again = world.cli(None, "token", "revoke", token_id[1], token=token)
    assert again.returncode == 1 and f"user 'dave' has no API token '{token_id[1]}'" in again.stderr
    bad = world.cli(None, "token", "create", "--expires", "soon", token=token)
    assert bad.returncode == 1 and "expires: 'soon' is not a duration" in bad.stderr
    assert "Traceback" not in bad.stderr

    alice = world.users["alice"].token
    shared = world.cli(None, "cluster", "share", "alpha", "dave", token=alice)
    assert (shared.returncode, shared.stdout.strip()) == (0, "cluster alpha is shared with: dave"), shared.stderr
    unshared = world.cli(None, "cluster", "unshare", "alpha", "dave", token=alice)
    assert (unshared.returncode, unshared.stdout.strip()) == (0, "cluster alpha is shared with nobody")
    refused = world.cli(None, "cluster", "share", "alpha", "dave", token=token)
    assert refused.returncode == 1 and NOT_FOUND in refused.stderr


def test_a_revoked_token_is_refused_over_the_api_and_git_http_at_once(world: People):
    with world.client("bob") as bob:
        made = bob.create_token(description="to revoke")
    spare = make_git_user(world.root, "bob", made.token, with_key=False)
    url = spare.http_url(world.git, "alice/ml")
    assert world.http("GET", "/api/v1/users/me", made.token).json()["name"] == "bob"
    assert "refs/heads/main" in spare.git("ls-remote", url).stdout
    with world.client("bob") as bob:
        bob.revoke_token(made.id)
        assert made.id not in [t.id for t in bob.tokens()]
    refused = world.http("GET", "/api/v1/users/me", made.token)
    assert refused.status_code == 401 and "invalid API token" in refused.json()["detail"]
    assert spare.git("ls-remote", url, check=False).returncode != 0
    raw = httpx.get(f"{world.git.http}/alice/ml.git/info/refs?service=git-upload-pack", auth=("bob", made.token))
    assert raw.status_code == 401 and "invalid API token" in raw.text
    # bob's other token still works
    assert world.http("GET", "/api/v1/users/me", world.users["bob"].token).status_code == 200


def test_an_expired_token_is_refused_over_the_api_and_git_http(world: People):
    with world.client("bob") as bob:
        made = bob.create_token(description="short", expires="1h")
        assert made.expires_at is not None and not made.expired
        assert world.http("GET", "/api/v1/users/me", made.token).status_code == 200
        # the clock, moved past the expiry: the row is what every check reads
        table = ApiToken.__table__
        with world.db.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.token_id == made.id)
                         .values(expires_at=utcnow() - timedelta(seconds=1)))
        refused = world.http("GET", "/api/v1/users/me", made.token)
        assert refused.status_code == 401 and f"API token {made.id} expired at" in refused.json()["detail"]
        raw = httpx.get(f"{world.git.http}/alice/ml.git/info/refs?service=git-upload-pack", auth=("bob", made.token))
        assert raw.status_code == 401 and "expired" in raw.text
        [listed] = [t for t in bob.tokens() if t.id == made.id]
        assert listed.expired
        bob.revoke_token(made.id)


def test_token_creation_is_bounded_and_checks_its_expiry(world: People):
    carol_token = world.users["carol"].token
    with world.client("carol") as carol:
        made = [carol.create_token(description=f"t{i}") for i in range(2)]  # with her first: 3
        try:
            full = world.http("POST", "/api/v1/users/carol/tokens", carol_token, json={})
            assert full.status_code == 409 and "STYX_MAX_TOKENS_PER_USER=3" in full.json()["detail"]
            too_long = world.http("POST", "/api/v1/users/carol/tokens", carol_token,
                                  json={"expires_in_seconds": 400 * 86400})
            assert too_long.status_code == 422 and "expires_in_seconds" in too_long.text
            other = world.http("GET", "/api/v1/users/alice/tokens", carol_token)
            assert other.status_code == 403
        finally:
            for t in made:
                carol.revoke_token(t.id)
        assert len(carol.tokens()) == 1


def test_a_disabled_user_is_refused_over_the_api_git_http_and_git_ssh(world: People):
    carol = world.users["carol"]
    http_url = carol.http_url(world.git, "alice/ml")
    ssh_url = carol.ssh_url(world.git, "alice/ml")
    assert carol.git("ls-remote", ssh_url).returncode == 0
    disabled = world.cli(None, "user", "disable", "carol")
    assert disabled.returncode == 0 and "disabled user carol" in disabled.stdout
    try:
        refused = world.http("GET", "/api/v1/users/me", carol.token)
        assert refused.status_code == 401 and "user 'carol' is disabled" in refused.json()["detail"]
        raw = httpx.get(f"{world.git.http}/alice/ml.git/info/refs?service=git-upload-pack",
                        auth=("carol", carol.token or ""))
        assert raw.status_code == 401 and "user 'carol' is disabled" in raw.text
        assert carol.git("ls-remote", http_url, check=False).returncode != 0
        over_ssh = carol.git("ls-remote", ssh_url, check=False)
        assert over_ssh.returncode != 0 and "Permission denied" in over_ssh.stderr, over_ssh.stderr
        assert next(u for u in world.admin.users() if u.name == "carol").disabled
        myself = world.cli(None, "user", "disable", "admin")
        assert myself.returncode == 1 and "you cannot disable yourself" in myself.stderr
        with world.client("alice") as alice:
            not_admin = world.http("POST", "/api/v1/users/bob/disable", world.users["alice"].token)
            assert not_admin.status_code == 403
            assert alice.me().name == "alice"
    finally:
        assert world.cli(None, "user", "enable", "carol").returncode == 0
    assert world.http("GET", "/api/v1/users/me", carol.token).status_code == 200
    assert carol.git("ls-remote", ssh_url).returncode == 0
    assert carol.git("ls-remote", http_url).returncode == 0
