"""The git server with the real `git` client over HTTP and SSH: access, paths, packs, races.

One git server process serves the whole module (no Temporal needed: no pushed commit here
has a `.styx.yaml`). Every check goes through the wire, as a user's git would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shlex
import socket
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import httpx
import pytest
from dulwich.protocol import pkt_line

from styx.db import RepoLevel
from styx.gitserver.names import InvalidName, InvalidRef, RepoName, check_ref
from tests.fixtures.git import GitUser, GitWorld, make_git_user, make_world

# fastapi's TestClient (for the REST tests) warns about its own httpx dependency.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def world(git_world: GitWorld) -> GitWorld:
    """alice owns alice/pub (public) and alice/priv (private); rita reads, walt writes and
    adam administers both; mallory has an account and no access."""
    w = git_world
    w.add_user("alice")
    for name in ("rita", "walt", "adam", "mallory"):
        w.add_user(name)
    for full, private in (("alice/pub", False), ("alice/priv", True)):
        w.create_repo(full, private=private)
        repo = w.db.repos.get("alice", full.split("/")[1])
        assert repo is not None and repo.id is not None
        w.db.repos.set_collaborator(repo.id, "rita", RepoLevel.READ)
        w.db.repos.set_collaborator(repo.id, "walt", RepoLevel.WRITE)
        w.db.repos.set_collaborator(repo.id, "adam", RepoLevel.ADMIN)
    w.users["anonymous"] = w.anonymous()
    return w


def refs_on_disk(world: GitWorld, full: str) -> dict[str, str]:
    return world.store.refs(RepoName.parse(full))


def object_files(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in (path / "objects").rglob("*") if p.is_file()}


def tree_snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def local_clone(world: GitWorld, full: str, dest: Path) -> Path:
    """A working clone made straight from disk (setup, not under test)."""
    user = world.users["alice"]
    user.git("clone", "-q", str(world.repo_path(full)), str(dest))
    return dest


def commit_file(user: GitUser, work: Path, name: str, content: str | bytes, message: str | None = None) -> str:
    path = work / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    user.git("add", name, cwd=work)
    user.git("commit", "-qm", message or f"add {name}", cwd=work)
    return user.git("rev-parse", "HEAD", cwd=work).stdout.strip()


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("raw", ["alice/ml", "/alice/ml.git", "alice/ml.git/", "a_b/c-d.e", "Alice/ML_2"])
def test_repository_paths_users_write_are_accepted(raw: str) -> None:
    name = RepoName.parse(raw)
    assert "/" not in name.name and not name.name.endswith(".git")


def test_a_repository_resolving_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "git"
    (tmp_path / "git-x").mkdir()
    root.mkdir()
    (root / "alice").symlink_to(tmp_path / "git-x")  # a prefix match would let this through
    with pytest.raises(InvalidName):
        RepoName("alice", "ml").path_under(root)


@pytest.mark.parametrize("ref", ["refs/heads/--upload-pack=evil", "refs/heads/a/-x", "refs/heads/a..b",
                                 "refs/heads/x.lock", "refs/heads/a b", "refs/notes/x", "HEAD", "refs/heads/",
                                 "refs/heads/a~1", "refs/heads/@{x}", "refs/tags/v1\x00"])
def test_dangerous_or_invalid_refs_are_refused(ref: str) -> None:
    with pytest.raises(InvalidRef):
        check_ref(ref)


# ------------------------------------------------------------------------------ access matrix

ROLES = ("anonymous", "rita", "walt", "adam")  # anonymous, reader, writer, admin
EXPECTED = {  # (role, private) -> (may clone, may push)
    ("anonymous", False): (True, False), ("anonymous", True): (False, False),
    ("rita", False): (True, False), ("rita", True): (True, False),
    ("walt", False): (True, True), ("walt", True): (True, True),
    ("adam", False): (True, True), ("adam", True): (True, True),
}


@pytest.fixture(scope="module")
def push_source(world: GitWorld, tmp_path_factory) -> dict[str, Path]:
    """A clone of each repository with one new commit, to push from."""
    out = {}
    for full in ("alice/pub", "alice/priv"):
        work = local_clone(world, full, tmp_path_factory.mktemp("src") / "w")
        commit_file(world.users["alice"], work, "cell.txt", full)
        out[full] = work
    return out


@pytest.mark.parametrize("transport", ["http", "ssh"])
@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("role", ROLES)
def test_access_matrix_clone(world: GitWorld, tmp_path: Path, transport: str, private: bool, role: str) -> None:
    full = "alice/priv" if private else "alice/pub"
    user = world.users[role]
    assert world.server is not None
    result = user.git("clone", "-q", user.url(world.server, transport, full), str(tmp_path / "c"), check=False)
    may_clone, _ = EXPECTED[(role, private)]
    if may_clone:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "c" / "README.md").read_text() == f"# {full}\n"
    else:
        assert result.returncode != 0
        assert not (tmp_path / "c" / "README.md").exists()
        if transport == "ssh":
            assert "not found" in result.stderr, result.stderr


@pytest.mark.parametrize("transport", ["http", "ssh"])
@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
@pytest.mark.parametrize("role", ROLES)
def test_access_matrix_push(world: GitWorld, push_source: dict[str, Path], transport: str, private: bool,
                            role: str) -> None:
    full = "alice/priv" if private else "alice/pub"
    user = world.users[role]
    branch = f"cell-{role}-{transport}"
    assert world.server is not None
    result = user.git("push", user.url(world.server, transport, full), f"HEAD:refs/heads/{branch}",
                      cwd=push_source[full], check=False)
    _, may_push = EXPECTED[(role, private)]
    pushed = refs_on_disk(world, full).get(f"refs/heads/{branch}")
    if may_push:
        assert result.returncode == 0, result.stderr
        assert pushed is not None
    else:
        assert result.returncode != 0
        assert pushed is None
        if transport == "ssh" and role == "rita":
            assert "read access to alice/" in result.stderr and "pushing needs write" in result.stderr


def test_a_token_of_another_user_or_a_wrong_token_is_refused(world: GitWorld, tmp_path: Path) -> None:
    assert world.server is not None
    rita, walt = world.users["rita"], world.users["walt"]
    url = f"http://rita:{walt.token}@127.0.0.1:{world.server.http_port}/alice/priv.git"
    assert rita.git("ls-remote", url, check=False).returncode != 0
    url = f"http://rita:{rita.token}x@127.0.0.1:{world.server.http_port}/alice/priv.git"
    assert rita.git("ls-remote", url, check=False).returncode != 0
    mallory = world.users["mallory"]
    result = mallory.git("ls-remote", mallory.http_url(world.server, "alice/priv"), check=False)
    assert result.returncode != 0 and "repository alice/priv not found" in result.stderr  # as if it did not exist


# ------------------------------------------------------------------------------ bad paths

BAD_PATHS = [
    "../../etc/passwd", "alice/../alice/pub", "alice/..", "alice/.", "/etc/ssh/sshd_config", "//alice/pub",
    "alice/-rf",
    "-alice/pub", "alice/.hidden", "alice/pub.git.git", "alice/pub.lock", "alice/pub;id", "alice/$(id)",
    "alice/pub name", "alice//pub", "alice/pub/extra", "alice", "alice/" + "a" * 150, "alice/pub\\x",
    "~/alice/pub", "./alice/pub", "alice/p\u00fcb", "alice/pub\x00",
]


def _raw_http(port: int, target: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b"".join(iter(lambda: s.recv(65536), b""))
    return int(data.split(b" ", 2)[1]), data


def _quoted(path: str) -> bytes:
    return "".join(c if c.isascii() and c.isprintable() and c not in " %" else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in path).encode()


async def test_bad_repository_paths_are_refused_on_both_transports_and_touch_nothing(world: GitWorld) -> None:
    assert len(BAD_PATHS) >= 20 and world.server is not None
    home = world.settings.home
    before = tree_snapshot(home / "git") | tree_snapshot(home / "git-runs")
    top_before = set(os.listdir(home))
    alice = world.users["alice"]
    for path in BAD_PATHS:
        for target in (b"/" + path.encode(errors="surrogateescape"), b"/" + _quoted(path)):
            status, body = _raw_http(world.server.http_port, target + b".git/info/refs?service=git-upload-pack")
            assert status in (400, 404), (path, status, body[:300])
            assert b"# service=" not in body
    assert alice.key is not None
    async with asyncssh.connect("127.0.0.1", world.server.ssh_port, username="git", known_hosts=None,
                                client_keys=[str(alice.key)], agent_path=None, config=None) as conn:
        for path in BAD_PATHS:
            for verb in ("git-upload-pack", "git-receive-pack"):
                result = await conn.run(f"{verb} {shlex.quote(path)}", check=False)
                assert result.exit_status != 0, path
                assert "invalid repository path" in str(result.stderr), (path, result.stderr)
        # Commands outside the allow-list, and shell tricks around an allowed one.
        for command in ("ls /", "git-upload-pack 'alice/pub.git'; touch /tmp/styx-pwned",
                        "git-upload-pack 'alice/pub.git' --upload-pack=touch", "sh -c id",
                        "git-upload-pack", "git upload-pack $(id)"):
            result = await conn.run(command, check=False)
            assert result.exit_status != 0, command
    assert not Path("/tmp/styx-pwned").exists()
    assert tree_snapshot(home / "git") | tree_snapshot(home / "git-runs") == before
    assert set(os.listdir(home)) == top_before


def test_client_environment_other_than_git_protocol_never_reaches_git(world: GitWorld) -> None:
    assert world.server is not None
    alice = world.users["alice"]
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(world.server.ssh_port), "-i", str(alice.key), "-o", "IdentitiesOnly=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
         "-o", "SetEnv=LD_PRELOAD=/nonexistent/evil.so GIT_CONFIG_PARAMETERS='core.sshCommand=touch /tmp/x'",
         "git@127.0.0.1", "git-upload-pack 'alice/pub.git'"],
        input=b"0000", capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert b"refs/heads/main" in result.stdout
    assert b"ld.so" not in result.stderr and b"LD_PRELOAD" not in result.stderr


# ------------------------------------------------------------------------------ the protocol


@pytest.mark.parametrize("transport", ["http", "ssh"])
def test_clone_fetch_shallow_push_branch_tag_delete_and_non_fast_forward(world: GitWorld, tmp_path: Path,
                                                                         transport: str) -> None:
    assert world.server is not None
    full = f"alice/proto-{transport}"
    world.create_repo(full)
    walt = world.users["walt"]
    repo = world.db.repos.get("alice", f"proto-{transport}")
    assert repo is not None and repo.id is not None
    world.db.repos.set_collaborator(repo.id, "walt", RepoLevel.WRITE)
    url = walt.url(world.server, transport, full)

    a = tmp_path / "a"
    trace = walt.git("clone", url, str(a), env={"GIT_TRACE_PACKET": "1"})
    assert "version 2" in trace.stderr  # protocol v2 negotiated when the client asks (git's default)
    first = commit_file(walt, a, "one.txt", "1")
    walt.git("push", "-q", "origin", "main", cwd=a)  # fast-forward
    walt.git("push", "-q", "origin", "main:feature", cwd=a)  # new branch
    walt.git("tag", "-a", "v1", "-m", "v1", cwd=a)
    walt.git("push", "-q", "origin", "v1", cwd=a)  # annotated tag
    refs = refs_on_disk(world, full)
    assert refs["refs/heads/main"] == first and refs["refs/heads/feature"] == first and "refs/tags/v1" in refs

    shallow = walt.git("clone", "--depth", "1", url, str(tmp_path / "s"))
    assert shallow.returncode == 0
    assert walt.git("rev-list", "--count", "HEAD", cwd=tmp_path / "s").stdout.strip() == "1"

    b = tmp_path / "b"
    walt.git("clone", "-q", url, str(b))
    second = commit_file(walt, b, "two.txt", "2")
    walt.git("push", "-q", "origin", "main", cwd=b)
    walt.git("fetch", "-q", "origin", cwd=a)  # fetch of the new commit
    assert walt.git("rev-parse", "origin/main", cwd=a).stdout.strip() == second

    commit_file(walt, a, "diverge.txt", "x")  # a is now behind and diverged
    rejected = walt.git("push", "origin", "main", cwd=a, check=False)
    assert rejected.returncode != 0 and ("non-fast-forward" in rejected.stderr or "fetch first" in rejected.stderr)
    assert refs_on_disk(world, full)["refs/heads/main"] == second

    walt.git("push", "-q", "origin", "--delete", "feature", cwd=a)  # delete a branch
    assert "refs/heads/feature" not in refs_on_disk(world, full)
    refused = walt.git("push", "origin", "--delete", "main", cwd=a, check=False)  # not the default one
    assert refused.returncode != 0 and "refusing to delete main, the default branch" in refused.stderr
    dash = walt.git("push", "origin", "HEAD:refs/heads/--upload-pack=touch", cwd=a, check=False)
    assert dash.returncode != 0 and "may start with '-'" in dash.stderr
    assert set(refs_on_disk(world, full)) == {"refs/heads/main", "refs/tags/v1"}
    fsck = subprocess.run(["git", "--git-dir", str(world.repo_path(full)), "fsck", "--full", "--strict"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


def test_a_repository_whose_default_branch_is_missing_adopts_the_first_pushed(world: GitWorld, tmp_path: Path) -> None:
    assert world.server is not None
    world.create_repo("alice/fresh", seed=False)
    alice = world.users["alice"]
    work = tmp_path / "w"
    alice.git("init", "-q", "-b", "trunk", str(work))
    commit_file(alice, work, "a.txt", "a")
    result = alice.git("push", alice.http_url(world.server, "alice/fresh"), "trunk", cwd=work)
    assert "default branch of alice/fresh set to trunk" in result.stderr
    repo = world.db.repos.get("alice", "fresh")
    assert repo is not None and repo.default_branch == "trunk"
    clone = alice.git("clone", alice.http_url(world.server, "alice/fresh"), str(tmp_path / "c"))
    assert (tmp_path / "c" / "a.txt").exists(), clone.stderr


# ------------------------------------------------------------------------------ concurrency


def test_twenty_concurrent_pushes_each_land_or_are_rejected_and_the_repo_stays_sound(world: GitWorld,
                                                                                      tmp_path: Path) -> None:
    """15 clones race for main, 5 push new branches; half over HTTP, half over SSH."""
    assert world.server is not None
    full = "alice/race"
    world.create_repo(full)
    walt = world.users["walt"]
    repo = world.db.repos.get("alice", "race")
    assert repo is not None and repo.id is not None
    world.db.repos.set_collaborator(repo.id, "walt", RepoLevel.WRITE)
    jobs = []
    for i in range(20):
        work = local_clone(world, full, tmp_path / f"c{i}")
        sha = commit_file(walt, work, f"f{i}.txt", f"clone {i}\n" * 100)
        target = "main" if i < 15 else f"side-{i}"
        transport = "http" if i % 2 else "ssh"
        jobs.append((i, work, sha, target, walt.url(world.server, transport, full)))

    def push(job: tuple) -> tuple:
        i, work, sha, target, url = job
        result = walt.git("push", url, f"HEAD:refs/heads/{target}", cwd=work, check=False, timeout=120)
        return i, sha, target, result

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(push, jobs))
    refs = refs_on_disk(world, full)
    main_winners = []
    for i, sha, target, result in results:
        if result.returncode == 0:
            if target == "main":
                main_winners.append(sha)
            else:
                assert refs[f"refs/heads/{target}"] == sha
            continue
        assert target == "main", result.stderr  # a new branch has no one to race with
        err = result.stderr
        assert "rejected" in err or "failed to push" in err, err
        assert any(reason in err for reason in ("non-fast-forward", "fetch first", "moved since you fetched",
                                                "failed to update ref", "cannot lock ref")), err
    assert len(main_winners) == 1  # all 15 started from the same commit: exactly one wins
    assert refs["refs/heads/main"] == main_winners[0]
    fsck = subprocess.run(["git", "--git-dir", str(world.repo_path(full)), "fsck", "--full", "--strict"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr


# ------------------------------------------------------------------------------ bad packs


def _receive_pack(world: GitWorld, full: str, user: GitUser, old: str, new: str, pack: bytes) -> bytes:
    assert world.server is not None
    body = pkt_line(f"{old} {new} refs/heads/main\0report-status side-band-64k agent=styx-test\n".encode())
    body += pkt_line(None) + pack
    auth = base64.b64encode(f"{user.name}:{user.token}".encode()).decode()
    resp = httpx.post(f"{world.server.http}/{full}.git/git-receive-pack", content=body, timeout=60,
                      headers={"Content-Type": "application/x-git-receive-pack-request",
                               "Authorization": f"Basic {auth}"})
    assert resp.status_code == 200
    return resp.content


def test_truncated_or_corrupted_packs_are_rejected_and_leave_the_repo_unchanged(world: GitWorld,
                                                                                 tmp_path: Path) -> None:
    full = "alice/packs"
    world.create_repo(full)
    alice = world.users["alice"]
    path = world.repo_path(full)
    work = local_clone(world, full, tmp_path / "w")
    old = alice.git("rev-parse", "HEAD", cwd=work).stdout.strip()
    new = commit_file(alice, work, "blob.bin", os.urandom(200_000))
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs", "-q"], cwd=work,
                          input=f"{new}\n^{old}\n".encode(), capture_output=True, check=True).stdout
    refs_before, objects_before = refs_on_disk(world, full), object_files(path)

    truncated = pack[: len(pack) // 2]
    flipped = bytearray(pack)
    flipped[len(pack) // 2] ^= 0xFF
    bad_checksum = pack[:-1] + bytes([pack[-1] ^ 1])
    for bad in (truncated, bytes(flipped), bad_checksum, pack[:12]):
        answer = _receive_pack(world, full, alice, old, new, bad)
        assert b"unpack ok" not in answer, answer[:500]
        assert refs_on_disk(world, full) == refs_before
        assert object_files(path) == objects_before  # the quarantine was thrown away
    # A good pack through the same path is accepted (so the refusals above were about the pack).
    assert b"unpack ok" in _receive_pack(world, full, alice, old, new, pack)
    assert refs_on_disk(world, full)["refs/heads/main"] == new


def test_a_push_over_the_size_limit_is_rejected_and_changes_nothing(world: GitWorld, tmp_path: Path) -> None:
    assert world.server is not None
    full = "alice/big"
    world.create_repo(full)
    alice = world.users["alice"]
    work = local_clone(world, full, tmp_path / "w")
    before = refs_on_disk(world, full)
    objects_before = object_files(world.repo_path(full))
    commit_file(alice, work, "huge.bin", os.urandom(6 << 20))  # the fixture's limit is 5 MB
    for transport in ("http", "ssh"):
        result = alice.git("push", alice.url(world.server, transport, full), "main", cwd=work, check=False)
        assert result.returncode != 0
        assert "maximum allowed size" in result.stderr or "unpack" in result.stderr, result.stderr
        assert refs_on_disk(world, full) == before
        assert object_files(world.repo_path(full)) == objects_before


def test_a_gzip_bomb_request_body_is_cut_off(world: GitWorld) -> None:
    assert world.server is not None
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = bomb.compress(b"\0" * (96 << 20)) + bomb.flush()  # 96 MB of zeros in ~100 KB
    resp = httpx.post(f"{world.server.http}/alice/pub.git/git-upload-pack", content=body, timeout=60,
                      headers={"Content-Type": "application/x-git-upload-pack-request", "Content-Encoding": "gzip"})
    assert b"refs/heads" not in resp.content
    assert httpx.get(f"{world.server.http}/healthz").status_code == 200  # still serving


# ------------------------------------------------------------------------------ SSH identity


def test_offering_someone_elses_public_key_first_does_not_make_you_them(world: GitWorld, tmp_path: Path) -> None:
    """soft-serve GHSA-pchf-49fh-w34r: the admin's public key is offered (the server says it
    would accept it), then the attacker signs in with their own key."""
    assert world.server is not None
    alice = world.users["alice"]
    assert alice.key is not None
    probe = tmp_path / "alice_public_only"
    probe.write_text(alice.key.with_suffix(".pub").read_text())  # no private key: a probe only
    probe.chmod(0o600)
    attacker = make_git_user(tmp_path, "attacker")

    def ssh(*keys: Path, command: str) -> subprocess.CompletedProcess:
        args = ["ssh", "-v", "-F", "/dev/null", "-p", str(world.server.ssh_port), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        for key in keys:
            args += ["-i", str(key)]
        return subprocess.run([*args, "git@127.0.0.1", command], input=b"0000", capture_output=True, timeout=30)

    assert attacker.key is not None
    for command in ("git-upload-pack 'alice/priv.git'", "git-receive-pack 'alice/priv.git'"):
        attack = ssh(probe, attacker.key, command=command)
        log = attack.stderr.decode(errors="replace")
        assert f"Server accepts key: {probe}" in log  # the probe for alice's key was answered yes
        assert "Authenticated to 127.0.0.1" in log  # ...and the attacker's own key got in
        assert attack.returncode != 0 and b"refs/heads/main" not in attack.stdout
        assert "not found" in log
    # Control: alice's real key reads the repository.
    real = ssh(alice.key, command="git-upload-pack 'alice/priv.git'")
    assert real.returncode == 0 and b"refs/heads/main" in real.stdout


def test_without_anonymous_ssh_an_unknown_key_cannot_even_sign_in(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.add_user("alice")
    w.create_repo("alice/pub")
    server = w.start_server(STYX_GIT_SSH_ANONYMOUS="0")
    try:
        stranger = w.anonymous()
        result = stranger.git("ls-remote", stranger.ssh_url(server, "alice/pub"), check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr
        alice = w.users["alice"]
        assert "refs/heads/main" in alice.git("ls-remote", alice.ssh_url(server, "alice/pub")).stdout
    finally:
        server.stop()


# ------------------------------------------------------------------------------ REST API


@pytest.fixture(scope="module")
def api(world: GitWorld):
    from fastapi.testclient import TestClient

    from styx.api.app import create_app

    with TestClient(create_app(world.settings)) as client:
        yield client


def _as(user: GitUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


def test_branch_api_creates_lists_and_deletes_with_clear_errors(world: GitWorld, api) -> None:
    alice, rita, mallory = world.users["alice"], world.users["rita"], world.users["mallory"]
    base = "/api/v1/repos/alice/priv/branches"
    listed = api.get(base, headers=_as(alice))
    assert listed.status_code == 200
    main = next(b for b in listed.json() if b["name"] == "main")
    assert main["default"] and not any(b["default"] for b in listed.json() if b["name"] != "main")
    created = api.post(base, json={"name": "feature/x", "from": "main"}, headers=_as(alice))
    assert created.status_code == 201, created.text
    assert created.json()["sha"] == main["sha"]
    assert refs_on_disk(world, "alice/priv")["refs/heads/feature/x"] == created.json()["sha"]
    assert api.post(base, json={"name": "feature/x"}, headers=_as(alice)).status_code == 409
    bad = api.post(base, json={"name": "--upload-pack=touch"}, headers=_as(alice))
    assert bad.status_code == 422 and "invalid branch name" in bad.json()["detail"]
    unknown = api.post(base, json={"name": "y", "from": "nope"}, headers=_as(alice))
    assert unknown.status_code == 422 and "no branch, tag or commit 'nope'" in unknown.json()["detail"]
    assert api.post(base, json={"name": "z"}, headers=_as(rita)).status_code == 403  # reader
    assert api.get(base, headers=_as(mallory)).status_code == 404  # cannot see it at all

    default = api.delete(f"{base}/main", headers=_as(alice))
    assert default.status_code == 409 and "default branch" in default.json()["detail"]
    missing = api.delete(f"{base}/nope", headers=_as(alice))
    assert missing.status_code == 404 and "no branch 'nope'" in missing.json()["detail"]
    assert api.delete(f"{base}/feature/x", headers=_as(alice)).status_code == 204
    assert "refs/heads/feature/x" not in refs_on_disk(world, "alice/priv")
    assert "refs/heads/main" in refs_on_disk(world, "alice/priv")


def test_repo_api_create_collaborate_list_delete(world: GitWorld, api, tmp_path: Path) -> None:
    alice, rita, mallory = world.users["alice"], world.users["rita"], world.users["mallory"]
    made = api.post("/api/v1/repos", json={"name": "alice/api-made", "private": True}, headers=_as(alice))
    assert made.status_code == 201, made.text
    assert made.json()["clone_http"].endswith("/alice/api-made.git")
    assert world.store.exists(RepoName("alice", "api-made"))
    assert api.post("/api/v1/repos", json={"name": "alice/api-made"}, headers=_as(alice)).status_code == 409
    assert api.post("/api/v1/repos", json={"name": "rita/x"}, headers=_as(alice)).status_code == 403
    assert api.post("/api/v1/repos", json={"name": "alice/../x"}, headers=_as(alice)).status_code == 422
    assert api.post("/api/v1/repos", json={"name": "a.git"}, headers=_as(alice)).status_code == 422
    assert "alice/api-made" not in [r["full_name"] for r in api.get("/api/v1/repos", headers=_as(rita)).json()]
    put = api.put("/api/v1/repos/alice/api-made/collaborators/rita", json={"level": "read"}, headers=_as(alice))
    assert put.status_code == 200
    listed = {r["full_name"]: r["permission"] for r in api.get("/api/v1/repos", headers=_as(rita)).json()}
    assert listed["alice/api-made"] == "read"
    assert api.delete("/api/v1/repos/alice/api-made", headers=_as(rita)).status_code == 403
    assert api.get("/api/v1/repos/alice/api-made", headers=_as(mallory)).status_code == 404
    assert api.get("/api/v1/repos/alice/api-made/commits/main/status", headers=_as(alice)).status_code == 404
    assert api.delete("/api/v1/repos/alice/api-made", headers=_as(alice)).status_code == 204
    assert not world.store.exists(RepoName("alice", "api-made"))
    assert api.get("/api/v1/repos/alice/api-made", headers=_as(alice)).status_code == 404


def test_users_and_keys_api(world: GitWorld, api) -> None:
    admin = world.add_user("root", admin=True)
    alice = world.users["alice"]
    created = api.post("/api/v1/users", json={"name": "newbie"}, headers=_as(admin))
    assert created.status_code == 201 and created.json()["token"].startswith("styx_")
    assert api.post("/api/v1/users", json={"name": "newbie"}, headers=_as(admin)).status_code == 409
    assert api.post("/api/v1/users", json={"name": "-x"}, headers=_as(admin)).status_code == 422
    assert api.post("/api/v1/users", json={"name": "y"}, headers=_as(alice)).status_code == 403
    me = api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {created.json()['token']}"})
    assert me.json()["name"] == "newbie"
    key = make_git_user(world.root / "clients", "newbie")
    assert key.key is not None
    pub = key.key.with_suffix(".pub").read_text()
    added = api.post("/api/v1/users/newbie/keys", json={"public_key": pub}, headers=_as(admin))
    assert added.status_code == 201 and added.json()["fingerprint"].startswith("SHA256:")
    assert api.post("/api/v1/users/newbie/keys", json={"public_key": pub}, headers=_as(admin)).status_code == 409
    private = api.post("/api/v1/users/alice/keys", json={"public_key": key.key.read_text()}, headers=_as(alice))
    assert private.status_code == 422 and "not a private key" in private.json()["detail"]
    assert api.post("/api/v1/users/newbie/keys", json={"public_key": pub}, headers=_as(alice)).status_code == 403


# ------------------------------------------------------------------------------ dulwich fallback


def test_without_the_git_binary_dulwich_serves_clone_and_push_on_both_transports(tmp_path: Path) -> None:
    w = make_world(tmp_path, {"STYX_GIT_BACKEND": "dulwich"})
    w.add_user("alice")
    w.create_repo("alice/dw")
    server = w.start_server(STYX_TEMPORAL_ADDRESS="127.0.0.1:1", STYX_GIT_PUSH_REPORT_SECONDS="1")
    try:
        alice = w.users["alice"]
        for transport in ("http", "ssh"):
            work = tmp_path / f"c-{transport}"
            url = alice.url(server, transport, "alice/dw")
            alice.git("clone", "-q", url, str(work))
            sha = commit_file(alice, work, f"{transport}.txt", transport)
            alice.git("push", "-q", "origin", "main", cwd=work)
            assert w.store.ref_sha(RepoName("alice", "dw"), "refs/heads/main") == sha
            dash = alice.git("push", "origin", "HEAD:refs/heads/-x", cwd=work, check=False)
            assert dash.returncode != 0 and "may start with '-'" in dash.stderr
    finally:
        server.stop()


# ------------------------------------------------------------------------------ hook scripts


@pytest.mark.parametrize("use_bash", [True, False], ids=["bash", "python"])
async def test_hook_scripts_forward_to_the_server_and_need_the_push_token(tmp_path: Path, use_bash: bool) -> None:
    from styx.gitserver.hooks import HookServer, PushSession, install_hooks

    seen = []

    async def pre(session, updates):  # type: ignore[no-untyped-def]
        seen.append(updates)
        return ["no, because\nof two lines"] if updates[0][2].endswith("bad") else []

    async def post(session, updates, emit):  # type: ignore[no-untyped-def]
        await emit(f"styx: queued for {session.user}")

    hooks = install_hooks(tmp_path / "hooks", use_bash=use_bash)
    server = HookServer(pre, post)
    await server.start()
    try:
        env = {"PATH": os.environ["PATH"], **server.open_session(PushSession(RepoName("a", "b"), 1, "alice", "http"))}
        zero, sha = "0" * 40, "1" * 40

        async def run(hook: str, ref: str, env: dict[str, str]) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                str(hooks / hook), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
            out, _ = await proc.communicate(f"{zero} {sha} {ref}\n".encode())
            return proc.returncode or 0, out.decode()

        assert await run("pre-receive", "refs/heads/ok", env) == (0, "")
        assert await run("pre-receive", "refs/heads/bad", env) == (1, "styx: no, because\nof two lines\n")
        assert await run("post-receive", "refs/heads/ok", env) == (0, "styx: queued for alice\n")
        assert seen[0] == [(zero, sha, "refs/heads/ok")]
        forged = {**env, "STYX_HOOK_TOKEN": "guessed"}
        code, out = await run("pre-receive", "refs/heads/ok", forged)
        assert code == 1 and "hook refused" in out
        code, out = await run("pre-receive", "refs/heads/ok", {"PATH": os.environ["PATH"]})
        assert code == 1 and "only through the Styx git server" in out
    finally:
        await server.close()


# ------------------------------------------------------------------------------ .styx.yaml


def test_styx_yaml_triggers_match_branches_tags_and_paths() -> None:
    from styx.gitserver.triggers import load_config, select_jobs, skips_ci

    specs = load_config("""\
jobs:
  test:
    on: {push: {branches: [main, "release/*"], paths: ["src/**"]}}
    cluster: dev
    run: pytest
  any:
    managed: true
    run: echo any branch
  tag:
    on: {push: {tags: "v*"}}
    cluster: dev
    run: make dist
""")
    names = lambda ref, paths: [s.name for s in select_jobs(specs, ref, lambda: paths)]  # noqa: E731
    assert names("refs/heads/main", ["src/a/b.py"]) == ["test", "any"]
    assert names("refs/heads/main", ["docs/x.md"]) == ["any"]
    assert names("refs/heads/release/1.0", ["src/x"]) == ["test", "any"]
    assert names("refs/heads/feature", ["src/x"]) == ["any"]
    assert names("refs/tags/v1.2", []) == ["tag"]
    assert names("refs/tags/nightly", []) == []
    single = load_config("cluster: dev\nrun: echo one\n")
    assert [(s.name, s.cluster) for s in single] == [("default", "dev")]
    assert skips_ci("fix typo [skip ci]") and skips_ci("[CI SKIP] x") and not skips_ci("skip the ci")


@pytest.mark.parametrize("text, field", [
    ("jobs:\n  t:\n    cluster: dev\n    resources: {cpus: four}\n    run: x\n", "jobs.t.resources.cpus"),
    ("jobs:\n  t:\n    run: x\n", "jobs.t.cluster"),
    ("jobs:\n  t:\n    cluster: dev\n    managed: true\n    run: x\n", "jobs.t.cluster"),
    ("jobs:\n  t:\n    cluster: Dev_1\n    run: x\n", "jobs.t.cluster"),
    ("jobs:\n  t:\n    cluster: dev\n    on: {push: {branch: [main]}}\n    run: x\n", "jobs.t.on.push.branch"),
    ("jobs:\n  t:\n    cluster: dev\n    workdir: ../../etc\n    run: x\n", "jobs.t.workdir"),
    ("jobs:\n  t:\n    cluster: dev\n    workdir: /etc\n    run: x\n", "jobs.t.workdir"),
    ("jobs:\n  t:\n    cluster: dev\n    file_mounts: {/x: /etc/passwd}\n    run: x\n", "jobs.t.file_mounts./x"),
    ("jobs:\n  t:\n    cluster: dev\n    file_mounts: {~/k: ../../ssh/id_ed25519}\n    run: x\n",
     "jobs.t.file_mounts.~/k"),
    ("jobs:\n  t:\n    cluster: dev\n    file_mounts: {~/k: ~/.styx/credentials}\n    run: x\n",
     "jobs.t.file_mounts.~/k"),
    ("cluster: dev\nfile_mounts: {/d: s3://bucket}\nrun: x\n", "file_mounts./d"),
    ("jobs:\n  t:\n    cluster: dev\n    envs: {TOKEN: null}\n    run: x\n", "jobs.t.envs.TOKEN"),
    ("jobs:\n  t:\n    cluster: dev\n    runn: x\n", "jobs.t.runn"),
    ("cluster: dev\nrun: [unclosed\n", None),
    ("jobs: []\n", "jobs"),
])
def test_a_bad_styx_yaml_names_the_field(text: str, field: str | None) -> None:
    from styx.gitserver.triggers import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(text)
    assert err.value.field == field, str(err.value)
    if field:
        assert str(err.value).startswith(field)


def test_a_pushed_job_keeps_relative_paths_of_its_commit() -> None:
    from styx.gitserver.triggers import load_config

    [spec] = load_config("cluster: dev\nworkdir: sub\nfile_mounts: {~/d: data.txt, /opt/cfg: conf/}\nrun: x\n")
    assert spec.task.workdir == "sub"
    assert {k: m.source for k, m in spec.task.file_mounts.items()} == {"~/d": "data.txt", "/opt/cfg": "conf/"}
