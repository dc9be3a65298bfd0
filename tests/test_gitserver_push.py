"""`git push` starts runs: the whole stack (Temporal, a worker with PushWorkflow, the API,
the git server) with users, keys and repositories made through the `styx` command line."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import pytest_asyncio

from styx.activities.git import GitActivities
from styx.contracts.pushes import PushInput, PushJobPlan, SubmitPushJobInput
from styx.gitserver.config import GitServerConfig
from styx.gitserver.names import RepoName
from styx.gitserver.storage import RepoStore
from styx.sdk.client import Client
from tests.fixtures.git import GitServerProcess, GitStyxStack, GitUser, make_git_user
from tests.fixtures.temporal import own_dev_server


@pytest_asyncio.fixture(scope="module")
async def temporal_env():
    """This module's own dev server: it starts managed jobs (see ``own_dev_server``)."""
    async for env in own_dev_server():
        yield env


pytestmark = pytest.mark.slow

GOOD = """\
jobs:
  test:
    on: {push: {branches: [main, "feature/*"]}}
    cluster: dev
    resources: {cpus: 0.5}
    run: |
      test -f README.md
      echo "ran-from-push $(cat data.txt) as $STYX_CLUSTER_NAME"
  release:
    on: {push: {tags: ["v*"]}}
    cluster: dev
    run: echo never on a branch
"""

BROKEN = """\
jobs:
  test:
    cluster: dev
    resources:
      cpus: four
    run: echo nope
"""

MANAGED = """\
managed: true
resources: {cpus: 1}
setup: echo managed-setup-ran
run: echo managed-run-ok
"""


@pytest.fixture(scope="module")
def people(git_stack: GitStyxStack, tmp_path_factory) -> dict[str, GitUser]:
    """alice, created by the admin with `styx user create`, her key added with `styx key add`,
    alice/ml created by her (`styx repo create --private`), and bob (made through the SDK)
    a writer on it (`styx repo collab add`). Plus the admin's cluster `dev` the pushed jobs run
    on, shared with both (jobs from a push run as the pusher, who must be allowed to use it)."""
    root = tmp_path_factory.mktemp("people")
    made = git_stack.cli("user", "create", "alice", check=True)
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("styx_"), made.stdout
    alice = make_git_user(root, "alice", token)
    assert alice.key is not None
    git_stack.cli("key", "add", str(alice.key.with_suffix(".pub")), "--user", "alice", check=True)
    with Client(git_stack.settings.api_url, git_stack.token) as admin:
        bob = make_git_user(root, "bob", admin.create_user("bob").token)
        assert bob.key is not None
        admin.add_key(bob.key.with_suffix(".pub"), user="bob")
        assert {"alice", "bob"} <= {u.name for u in admin.users()}
    as_alice = {"STYX_TOKEN": token}
    created = _cli(git_stack, as_alice, "repo", "create", "alice/ml", "--private")
    assert "git clone http://127.0.0.1:" in created.stdout
    _cli(git_stack, as_alice, "repo", "collab", "add", "alice/ml", "bob", "--write")
    with _client(git_stack, bob) as client:
        assert {r.full_name: r.permission for r in client.repos()}["alice/ml"] == "write"
    client = git_stack.client()
    up = client.launch({"resources": {"cpus": 2}, "run": "true"}, cluster="dev")
    assert client.wait("dev", up.job_id, timeout=120).status == "SUCCEEDED"
    client.share("dev", "alice")
    assert client.share("dev", "bob").shared_with == ["alice", "bob"]
    return {"alice": alice, "bob": bob}


def _cli(stack: GitStyxStack, env: dict[str, str], *args: str):
    return stack.cli(*args, check=True, env=env)


def _client(stack: GitStyxStack, user: GitUser) -> Client:
    return Client(stack.settings.api_url, user.token)


def _checkout(stack: GitStyxStack, user: GitUser, dest: Path, transport: str = "ssh") -> Path:
    assert stack.git is not None
    user.git("clone", "-q", user.url(stack.git, transport, "alice/ml"), str(dest))
    return dest


def _commit(user: GitUser, work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).write_text(text)
    user.git("add", "-A", cwd=work)
    user.git("commit", "-qm", message, cwd=work)
    return user.git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_a_push_with_styx_yaml_runs_its_job_as_the_pusher(git_stack: GitStyxStack, people, tmp_path: Path):
    alice, bob = people["alice"], people["bob"]
    work = tmp_path / "w"
    alice.git("init", "-q", "-b", "main", str(work))
    assert git_stack.git is not None
    alice.git("remote", "add", "origin", alice.ssh_url(git_stack.git, "alice/ml"), cwd=work)
    sha = _commit(alice, work, {"README.md": "# ml\n", "data.txt": "42", ".styx.yaml": GOOD}, "first")
    pushed = alice.git("push", "origin", "main", cwd=work)
    out = pushed.stderr
    match = re.search(r"remote: styx: job (\d+) queued on cluster dev — (\S+) \(test\)", out)
    assert match, out
    assert "release" not in out  # a tag-only job does not run for a branch
    assert f"styx repo runs alice/ml  (push/alice/ml/{sha})" in out

    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=120)
        assert run.status == "SUCCEEDED", run
        assert run.pusher == "alice" and run.ref == "refs/heads/main"
        [job] = run.jobs
        assert (job.cluster, job.job_id, job.status) == ("dev", int(match[1]), "SUCCEEDED")
        assert client.commit_status("alice/ml", sha[:8]).sha == sha
        assert client.commit_status("alice/ml", "main").sha == sha
    admin = git_stack.client()
    assert admin.job("dev", job.job_id).user == "alice"
    assert "ran-from-push 42 as dev" in admin.logs("dev", job.job_id)

    # bob (a writer) pushes a branch over HTTP: the job is his, not the owner's.
    bwork = _checkout(git_stack, bob, tmp_path / "b", "http")
    bob.git("checkout", "-q", "-b", "feature/x", cwd=bwork)
    bsha = _commit(bob, bwork, {"data.txt": "43"}, "bob's change")
    bob.git("push", "origin", "feature/x", cwd=bwork)
    with _client(git_stack, bob) as client:
        brun = client.wait_commit("alice/ml", bsha, timeout=120)
    assert brun.status == "SUCCEEDED" and brun.pusher == "bob"
    assert admin.job("dev", brun.jobs[0].job_id).user == "bob"

    runs = _cli(git_stack, {"STYX_TOKEN": alice.token or ""}, "repo", "runs", "alice/ml").stdout
    assert sha[:10] in runs and bsha[:10] in runs and "SUCCEEDED" in runs

    # The same commit pushed again (a new branch at it) does not run twice.
    again = alice.git("push", "origin", f"{sha}:refs/heads/again", cwd=work)
    assert "already ran" in again.stderr
    with _client(git_stack, alice) as client:
        assert [r.sha for r in client.runs("alice/ml")].count(sha) == 1
    assert len([j for j in admin.queue("dev") if j.user in ("alice", "bob")]) == 2


def test_a_broken_styx_yaml_is_accepted_and_recorded_as_failed_naming_the_field(
        git_stack: GitStyxStack, people, tmp_path: Path):
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w", "http")
    sha = _commit(alice, work, {".styx.yaml": BROKEN}, "break it")
    pushed = alice.git("push", "origin", "main", cwd=work)  # accepted
    assert "jobs.test.resources.cpus (line 5)" in pushed.stderr, pushed.stderr
    assert git_stack.git is not None
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=60)
    assert run.status == "FAILED" and run.jobs == []
    assert run.message is not None and "jobs.test.resources.cpus" in run.message
    status = _cli(git_stack, {"STYX_TOKEN": alice.token or ""}, "repo", "runs", "alice/ml").stdout
    assert "FAILED" in status
    as_alice = {"STYX_TOKEN": alice.token or ""}
    refused = git_stack.cli("branch", "delete", "alice/ml", "main", env=as_alice)
    assert refused.returncode == 1 and "is the default branch of alice/ml" in refused.stderr
    failed = git_stack.cli("repo", "status", "alice/ml", sha[:10], env=as_alice)
    assert failed.returncode == 1 and "FAILED" in failed.stdout


def test_skip_ci_and_unmatched_filters_record_a_skipped_run(git_stack: GitStyxStack, people, tmp_path: Path):
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w")
    skipped = _commit(alice, work, {".styx.yaml": GOOD, "data.txt": "1"}, "docs only [skip ci]")
    out = alice.git("push", "origin", "main", cwd=work).stderr
    assert "nothing to run" in out and "[skip ci]" in out
    unmatched = _commit(alice, work, {"data.txt": "2"}, "on another branch")
    out = alice.git("push", "origin", "HEAD:refs/heads/other", cwd=work).stderr
    assert "no job in .styx.yaml matches a push to refs/heads/other" in out
    with _client(git_stack, alice) as client:
        assert client.wait_commit("alice/ml", skipped, timeout=60).status == "SKIPPED"
        assert client.wait_commit("alice/ml", unmatched, timeout=60).status == "SKIPPED"
    # What the user wrote is printed as written, not read as rich markup.
    runs = git_stack.cli("repo", "runs", "alice/ml", env={"STYX_TOKEN": alice.token or "", "COLUMNS": "300"},
                         check=True).stdout
    assert "skipped: [skip ci] in the commit message" in runs, runs


def test_a_managed_push_runs_as_a_managed_job_of_the_pusher(git_stack: GitStyxStack, people, tmp_path: Path):
    """``managed: true`` submits a managed job (``managed/<id>``) owned by the pusher; the push
    run follows it to its end; its cluster is down after."""
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w")
    sha = _commit(alice, work, {".styx.yaml": MANAGED}, "managed run")
    out = alice.git("push", "origin", "main", cwd=work).stderr
    match = re.search(r"remote: styx: managed job (\d+) started — (\S+) \(default\)", out)
    assert match, out
    managed_id = int(match[1])
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=180)
        assert run.status == "SUCCEEDED", run
        [job] = run.jobs
        assert job.managed and job.managed_id == managed_id and job.status == "SUCCEEDED", job
        assert job.workflow_id == f"managed/{managed_id}"
        managed = client.jobs.get(managed_id)  # the pusher's own: she sees it
        assert managed.owner == "alice" and managed.status == "SUCCEEDED", managed
        log = client.jobs.logs(managed_id)
        assert "managed-run-ok" in log and "managed-setup-ran" in log  # launched: its setup runs
    [attempt] = managed.attempts
    admin = git_stack.client()
    assert admin.cluster(attempt.cluster).status == "TERMINATED"
    assert admin.cluster(attempt.cluster).owner == "alice"  # the pusher's cluster, counted as hers
    status = git_stack.cli("repo", "status", "alice/ml", sha, env={"STYX_TOKEN": alice.token or "", "COLUMNS": "300"})
    assert status.returncode == 0 and f"default: managed job {managed_id} SUCCEEDED" in status.stdout, status.stdout

    # The git server killed after it submitted: the retried submission (the same key) finds
    # the first managed job and starts no second one.
    acts = GitActivities(git_stack.settings)
    repo = acts.db.repos.get("alice", "ml")
    assert repo is not None and repo.id is not None
    push = PushInput("alice", "ml", repo.id, sha, "refs/heads/main", "0" * 40, "alice")
    again = asyncio.run(acts.push_submit(SubmitPushJobInput(push, 0, PushJobPlan("default", {}, None, True), "",
                                                            f"push/alice/ml/{sha}/0")))
    assert again.managed_id == managed_id
    assert [j.id for j in acts.db.managed.list("alice", name="default")] == [managed_id]


MANAGED_FAILING = """\
jobs:
  flaky:
    managed: true
    resources: {cpus: 0.5, job_recovery: {max_restarts_on_errors: 1}}
    run: echo attempt $STYX_MANAGED_ATTEMPT; exit 3
  typo:
    managed: true
    resources: {cpus: 0.5, job_recovery: {strategy: SOMEWHERE}}
    run: echo never
"""


def test_a_managed_push_fails_with_its_managed_jobs_reason_and_a_bad_one_names_the_field(
        git_stack: GitStyxStack, people, tmp_path: Path):
    """A managed job restarted as its ``job_recovery`` allows, then FAILED: the push run is
    FAILED with that reason. A managed task the managed-jobs service refuses starts nothing:
    its job is FAILED naming the field."""
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w", "http")
    _orphan(alice, work, "managed-fails")
    sha = _commit(alice, work, {".styx.yaml": MANAGED_FAILING}, "managed jobs that fail")
    out = alice.git("push", "origin", "managed-fails", cwd=work).stderr
    assert re.search(r"remote: styx: managed job \d+ started — \S+ \(flaky\)", out), out
    assert "remote: styx: job typo not queued: jobs.typo.resources.job_recovery.strategy: " in out, out
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=240)
        assert run.status == "FAILED", run
        flaky, typo = run.jobs
        assert typo.status == "FAILED" and not typo.managed_id
        assert "jobs.typo.resources.job_recovery.strategy" in (typo.message or "") and "SOMEWHERE" in typo.message
        assert flaky.status == "FAILED" and flaky.managed_id, flaky
        managed = client.jobs.get(flaky.managed_id)
        assert managed.owner == "alice" and managed.status == "FAILED"
        assert [a.status for a in managed.attempts] == ["FAILED", "FAILED"]  # restarted once, as asked
        assert run.message is not None and f"flaky: FAILED ({managed.message})" in run.message, run.message
        assert "typo: FAILED (jobs.typo.resources.job_recovery.strategy" in run.message
        assert "attempt 1" in client.jobs.logs(flaky.managed_id) and "attempt 2" in client.jobs.logs(flaky.managed_id)
        # Nothing else was started for the push: one managed job, hers.
        assert [j.managed_id for j in client.jobs.queue() if j.name in ("flaky", "typo")].count(flaky.managed_id) == 1
        assert not [j for j in client.jobs.queue() if j.name == "typo"]


@pytest.mark.parametrize("case", ["deep_nesting", "alias_bomb", "not_utf8", "absolute_symlink"])
def test_a_hostile_commit_fails_its_run_with_the_reason_and_never_stays_pending(
        git_stack: GitStyxStack, people, tmp_path: Path, case: str):
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w", "http")
    if case == "deep_nesting":
        files = {".styx.yaml": "cluster: dev\nrun: echo\nenvs: " + "[" * 1000 + "]" * 1000 + "\n"}
        reason = "nests deeper than"
    elif case == "alias_bomb":
        bomb = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
        bomb += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
        files = {".styx.yaml": "\n".join(bomb) + "\n"}
        reason = "expands to more than"
    elif case == "not_utf8":
        (work / ".styx.yaml").write_bytes("cluster: dev\nrun: echo caf\u00e9\n".encode("latin-1"))
        files = {}
        reason = "not UTF-8"
    else:
        (work / "escape").symlink_to("/etc/passwd")
        files = {".styx.yaml": "cluster: dev\nrun: cat escape\n"}
        reason = "cannot be used as a workdir"
    sha = _commit(alice, work, files, f"hostile: {case}")
    alice.git("push", "origin", "main", cwd=work)  # the push itself is accepted
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=60)
    assert run.status == "FAILED", run
    assert run.message is not None and reason in run.message, run.message
    assert run.jobs == []


def _orphan(user: GitUser, work: Path, branch: str) -> None:
    """Start ``branch`` with no history in ``work``: what earlier tests committed is not in it."""
    user.git("checkout", "-q", "--orphan", branch, cwd=work)
    user.git("rm", "-rfq", "--ignore-unmatch", ".", cwd=work)


MOUNTS = """\
cluster: dev
workdir: src
file_mounts:
  ~/from-commit.txt: data.txt
  ~/from-commit-dir: conf
run: |
  cat here.txt ~/from-commit.txt ~/from-commit-dir/app.cfg
"""


def test_a_pushed_job_gets_files_of_its_commit_as_workdir_and_mounts(git_stack: GitStyxStack, people,
                                                                      tmp_path: Path):
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w", "http")
    _orphan(alice, work, "mounts")
    (work / "src").mkdir()
    (work / "conf").mkdir()
    sha = _commit(alice, work, {".styx.yaml": MOUNTS, "data.txt": "mounted-file", "src/here.txt": "in-workdir ",
                                "conf/app.cfg": " mounted-dir"}, "mounts")
    alice.git("push", "origin", "mounts", cwd=work)
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=120)
    assert run.status == "SUCCEEDED", run
    assert git_stack.client().logs("dev", run.jobs[0].job_id).split() == ["in-workdir", "mounted-file", "mounted-dir"]


@pytest.mark.parametrize("key, value, field", [
    ("file_mounts", "{/x: /etc/passwd}", "file_mounts./x"),
    ("file_mounts", "{~/k: {home}/ssh/id_ed25519}", "file_mounts.~/k"),
    ("file_mounts", "{~/c: ../../credentials}", "file_mounts.~/c"),
    ("workdir", "{home}", "workdir"),
])
def test_a_push_naming_a_path_outside_its_commit_fails_its_run_naming_the_field(
        git_stack: GitStyxStack, people, tmp_path: Path, key: str, value: str, field: str):
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w", "http")
    value = value.replace("{home}", str(git_stack.settings.home))
    sha = _commit(alice, work, {".styx.yaml": f"cluster: dev\n{key}: {value}\nrun: cat ~/k ~/c /x\n"},
                  f"hostile {key}")
    pushed = alice.git("push", "origin", "main", cwd=work)  # accepted; the run fails
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=60)
    assert run.status == "FAILED" and run.jobs == [], run
    assert run.message is not None and f"{field} (line 2)" in run.message, run.message
    assert f"{field} (line 2)" in pushed.stderr, pushed.stderr


def test_a_pushed_mount_of_a_path_missing_from_the_commit_fails_the_job_naming_the_field(
        git_stack: GitStyxStack, people, tmp_path: Path):
    alice = people["alice"]
    work = _checkout(git_stack, alice, tmp_path / "w", "http")
    _orphan(alice, work, "missing-mount")
    sha = _commit(alice, work, {".styx.yaml": "cluster: dev\nfile_mounts: {~/x: missing.txt}\nrun: cat ~/x\n"},
                  "mount a missing file")
    alice.git("push", "origin", "missing-mount", cwd=work)
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=60)
    assert run.status == "FAILED", run
    [job] = run.jobs
    assert job.job_id == 0 and job.status == "FAILED"  # never queued
    assert "file_mounts.~/x: 'missing.txt' is not a file or directory of the commit" in (job.message or ""), job
    status = git_stack.cli("repo", "status", "alice/ml", sha[:10], env={"STYX_TOKEN": alice.token or ""})
    assert status.returncode == 1 and "job 0" not in status.stdout, status.stdout
    assert f"{job.name}: not queued (FAILED): " in status.stdout and "'missing.txt' is not a file" in status.stdout


def test_a_push_that_would_run_a_non_admins_job_on_unisolated_local_nodes_fails_naming_the_setting(
        git_stack: GitStyxStack, people, tmp_path: Path):
    # A deployment whose local nodes run jobs as Styx's own user (as when Styx is not root):
    # the worker, and the git server (it queues a push's jobs), both so configured.
    alice = people["alice"]
    saved = dict(git_stack.env)
    git_stack.kill_worker()
    git_stack.env["STYX_LOCAL_ISOLATION"] = "0"
    git_stack.start_worker()
    _restart_git_server(git_stack)
    try:
        work = _checkout(git_stack, alice, tmp_path / "w", "http")
        _orphan(alice, work, "feature/not-isolated")  # whatever earlier tests left on main
        sha = _commit(alice, work, {"README.md": "# ml\n", ".styx.yaml": GOOD, "data.txt": "44"},
                      "while local jobs share Styx's user")
        alice.git("push", "origin", "feature/not-isolated", cwd=work)
        with _client(git_stack, alice) as client:
            run = client.wait_commit("alice/ml", sha, timeout=120)
        assert run.status == "FAILED" and len(run.jobs) == 1, run
        [job] = run.jobs
        assert not job.job_id and job.message is not None
        assert "STYX_LOCAL_ALLOW_NONADMIN=1" in job.message
    finally:
        git_stack.kill_worker()
        git_stack.env.clear()
        git_stack.env.update(saved)
        git_stack.start_worker()
        _restart_git_server(git_stack)


def _restart_git_server(stack: GitStyxStack) -> None:
    assert stack.git is not None
    stack.git.stop()
    stack.git = GitServerProcess(stack.env, stack.home / "logs" / "gitserver.log")


def test_a_git_server_killed_after_the_ref_update_still_runs_the_pushed_commit_once(
        git_stack: GitStyxStack, people, tmp_path: Path):
    """kill -9 of the git server between the ref update and post-receive: the pusher's git says
    the push failed, yet the branch moved; the restarted server's sweeper starts the run."""
    alice = people["alice"]
    assert git_stack.git is not None
    git_stack.git.stop()
    crashed = tmp_path / "crashed"
    log = git_stack.home / "logs" / "gitserver.log"
    seam = {"STYX_TEST_CRASH_POINT": "git_post_receive", "STYX_TEST_CRASH_POINT_FILE": str(crashed),
            "STYX_GIT_PUSH_SWEEP_SECONDS": "1"}
    git_stack.git = GitServerProcess(git_stack.env, log, seam)
    work = _checkout(git_stack, alice, tmp_path / "w")
    _orphan(alice, work, "feature/crash")  # whatever earlier tests left on main
    sha = _commit(alice, work, {"README.md": "# ml\n", ".styx.yaml": GOOD, "data.txt": "after-a-crash"},
                  "pushed as the server dies")
    pushed = alice.git("push", "origin", "feature/crash", cwd=work, check=False)
    assert crashed.exists(), pushed.stderr  # the server died in post-receive …
    git_stack.git.proc.wait(10)
    assert git_stack.git.proc.returncode == -9
    assert pushed.returncode != 0 and "queued" not in pushed.stderr
    store = RepoStore(GitServerConfig.from_settings(git_stack.settings).repo_root, git=None)
    assert store.ref_sha(RepoName.parse("alice/ml"), "refs/heads/feature/crash") == sha  # … after the branch moved

    git_stack.git = GitServerProcess(git_stack.env, log, seam)  # the marker keeps it from dying again
    with _client(git_stack, alice) as client:
        run = client.wait_commit("alice/ml", sha, timeout=120)
        assert run.status == "SUCCEEDED", (run.message, run.jobs)
        assert run.pusher == "alice" and run.ref == "refs/heads/feature/crash"
        [job] = run.jobs
    assert "ran-from-push after-a-crash as dev" in git_stack.client().logs("dev", job.job_id)
    alice.git("remote", "set-url", "origin", alice.ssh_url(git_stack.git, "alice/ml"), cwd=work)
    again = alice.git("push", "origin", f"{sha}:refs/heads/after-crash", cwd=work)
    assert "already ran" in again.stderr  # and it runs once
    with _client(git_stack, alice) as client:
        assert [r.sha for r in client.runs("alice/ml")].count(sha) == 1
