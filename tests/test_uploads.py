"""A task's files travel as uploads, never as paths of the server: the CLI and the SDK pack the
workdir and file mounts on the client, the API stores them in the database for their sender,
and the worker copies them to the nodes. A task naming a path of the worker is refused.

The stack here runs with small limits (1 MiB uploads, 256 KiB other requests, 4 MiB unpacked,
2 MiB of uploads per user) so that each limit is cheap to reach."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sqlite3
import tarfile
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from styx.activities.ssh import SshActivities
from styx.activities.uploads import UploadCache, UploadUnusable
from styx.contracts.jobs import JobSpec
from styx.contracts.uploads import UploadRef
from styx.db import Database, UploadQuotaFull
from styx.sdk.client import Client
from tests.fixtures.stack import StyxStack, wait_for

pytestmark = pytest.mark.slow

LIMITS = {
    "STYX_MAX_UPLOAD_BYTES": str(1 << 20),
    "STYX_MAX_REQUEST_BYTES": str(256 << 10),
    "STYX_MAX_UNPACKED_BYTES": str(4 << 20),
    "STYX_UPLOAD_QUOTA_BYTES": str(2 << 20),
}


def targz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding ``files`` (names as given, even hostile ones)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def stack(temporal_env, tmp_path_factory) -> Iterator[StyxStack]:
    address = temporal_env.client.service_client.config.target_host
    s = StyxStack(tmp_path_factory.mktemp("styx-home"), address, extra_env=LIMITS)
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def cluster(stack: StyxStack, tmp_path_factory) -> str:
    """The cluster `up`, launched through the SDK with a local workdir (sent as an upload)."""
    workdir = tmp_path_factory.mktemp("sdk-workdir")
    (workdir / "hello.txt").write_text("hello-from-sdk-workdir\n")
    client = stack.client()
    job = client.launch({"workdir": str(workdir), "run": "cat hello.txt"}, cluster="up")
    assert client.wait("up", job.job_id, timeout=120).status == "SUCCEEDED"
    assert client.logs("up", job.job_id).strip() == "hello-from-sdk-workdir"
    return "up"


def uploads_stored(stack: StyxStack) -> int:
    return Database(stack.settings.db_url).uploads.count()


def api(stack: StyxStack, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or stack.token}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{stack.settings.api_url}{path}", headers=headers, timeout=60, **kwargs)


def put(stack: StyxStack, data: bytes, name: str | None = None, token: str | None = None) -> httpx.Response:
    return api(stack, "PUT", f"/api/v1/uploads/{name or sha(data)}", token, content=data)


# ------------------------------------------------------------------------------ worker paths


@pytest.mark.parametrize("where", ["workdir", "file_mounts"])
@pytest.mark.parametrize("path", ["/etc/passwd", "{home}/ssh/id_ed25519", "{home}/credentials",
                                  "{home}/secret.key", "~/.ssh"])
def test_a_path_of_the_worker_in_a_task_is_refused_naming_the_field_and_nothing_runs(
        stack: StyxStack, cluster: str, where: str, path: str):
    path = path.format(home=stack.home)
    task = {"workdir": path, "run": "true"} if where == "workdir" else {"file_mounts": {"/x": path}, "run": "true"}
    field = "task.workdir" if where == "workdir" else "task.file_mounts./x"
    jobs_before = len(stack.client().queue(cluster))

    launched = api(stack, "POST", "/api/v1/clusters", json={"cluster": "never", "task": task})
    assert launched.status_code == 422, launched.text
    assert launched.json()["detail"].startswith(f"{field}: "), launched.text
    assert "upload" in launched.json()["detail"]
    queued = api(stack, "POST", f"/api/v1/clusters/{cluster}/jobs", json={"task": task})
    assert queued.status_code == 422, queued.text
    assert queued.json()["detail"].startswith(f"{field}: ")

    assert "never" not in [c.name for c in stack.client().status(all=True)]
    assert len(stack.client().queue(cluster)) == jobs_before


def test_a_malformed_or_unknown_upload_is_refused_naming_the_field(stack: StyxStack, cluster: str):
    for source, says in [("upload:NOTHEX", "sha256"), (f"upload:{'0' * 64}", "not one you sent"),
                         (f"upload:{'0' * 64}/../x", "without '.' or '..'")]:
        refused = api(stack, "POST", f"/api/v1/clusters/{cluster}/jobs",
                      json={"task": {"file_mounts": {"~/d": source}, "run": "true"}})
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert detail.startswith("task.file_mounts.~/d: ") and says in detail, detail


def test_the_worker_itself_copies_no_path_a_client_named(tmp_path: Path):
    """Behind the API: even a task that reached the worker another way gets nothing but uploads
    (a pushed commit's tree is one too), never a path of the worker's host."""
    runs = tmp_path / "git-runs"
    (runs / "abc").mkdir(parents=True)
    activities = SshActivities(tmp_path, pool=None, db=None)  # type: ignore[arg-type]
    import asyncio

    for source in ["/etc/passwd", str(tmp_path / "ssh" / "id_ed25519"), f"{runs}/abc/../../x", "relative",
                   str(runs / "abc")]:
        with pytest.raises(ApplicationError) as err:
            asyncio.run(activities._source("file_mounts./x", source))
        assert err.value.non_retryable and err.value.message.startswith("file_mounts./x: "), err.value


# ------------------------------------------------------------------------------ the CLI


TASK = """\
workdir: .
file_mounts:
  ~/dataset: ../dataset
  ~/cfg/settings.txt: ./settings.txt
run: |
  set -e
  cat code.txt
  test ! -e secret.env && echo no-gitignored-file
  test ! -e build && echo no-gitignored-dir
  cat ~/dataset/rows.csv
  test ! -e ~/dataset/huge.bin && echo no-skyignored-file
  cat ~/cfg/settings.txt
"""


def test_launch_from_a_project_sends_its_files_once_honouring_gitignore_and_skyignore(
        stack: StyxStack, cluster: str, tmp_path: Path):
    project, dataset = tmp_path / "project", tmp_path / "dataset"
    (project / "build").mkdir(parents=True)
    dataset.mkdir()
    (project / "task.yaml").write_text(TASK)
    (project / "code.txt").write_text("code-from-workdir\n")
    (project / "settings.txt").write_text("settings-from-mount\n")
    (project / "secret.env").write_text("TOKEN=never-sent\n")
    (project / "build" / "out.o").write_text("object\n")
    (project / ".gitignore").write_text("secret.env\nbuild/\n")
    (dataset / "rows.csv").write_text("rows-from-dataset\n")
    (dataset / "huge.bin").write_bytes(b"\0" * 1000)
    (dataset / ".skyignore").write_text("huge.bin\n")
    (dataset / ".gitignore").write_text("rows.csv\n")  # not read: .skyignore wins, as in SkyPilot

    before = uploads_stored(stack)
    first = stack.cli("launch", "-y", "-c", cluster, "task.yaml", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    for line in ("code-from-workdir", "no-gitignored-file", "no-gitignored-dir", "rows-from-dataset",
                 "no-skyignored-file", "settings-from-mount", "SUCCEEDED"):
        assert line in first.stdout, first.stdout + first.stderr
    assert "workdir: . (" in first.stdout and " sent" in first.stdout
    assert uploads_stored(stack) == before + 3

    # The same content again: nothing is sent, the server has it.
    again = stack.cli("launch", "-y", "-c", cluster, "task.yaml", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already there") == 3 and "SUCCEEDED" in again.stdout, again.stdout
    assert uploads_stored(stack) == before + 3
    # What the job got was an upload, named in the task the worker saw, never a path.
    job = stack.client().queue(cluster)[-1]
    assert job.status == "SUCCEEDED"


def test_an_upload_over_the_limit_is_a_one_line_cli_error_and_nothing_is_sent(
        stack: StyxStack, cluster: str, tmp_path: Path):
    big = tmp_path / "big"
    big.mkdir()
    (big / "noise.bin").write_bytes(os.urandom(3 << 19))  # 1.5 MiB that does not compress
    before, jobs = uploads_stored(stack), len(stack.client().queue(cluster))
    r = stack.cli("exec", cluster, "--workdir", str(big), "echo never")
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: workdir: {big} packs to more than 1.0 MB (STYX_MAX_UPLOAD_BYTES=1048576)")
    assert r.stderr.count("\n") == 1, r.stderr
    assert uploads_stored(stack) == before and len(stack.client().queue(cluster)) == jobs

    r = stack.cli("exec", cluster, "--workdir", str(tmp_path / "missing"), "echo never")
    assert r.returncode == 1 and r.stderr == f"error: workdir: {tmp_path / 'missing'} is not a directory\n"

    (big / "noise.bin").write_bytes(b"\0" * (5 << 20))  # compresses well, unpacks past the limit
    r = stack.cli("exec", cluster, "--workdir", str(big), "echo never")
    assert r.returncode == 1 and "STYX_MAX_UNPACKED_BYTES" in r.stderr, r.stderr


# ------------------------------------------------------------------------------ the API


def test_the_upload_route_takes_bodies_up_to_the_upload_limit_and_no_more(stack: StyxStack):
    data = targz({"noise.bin": os.urandom(600 << 10)})  # over the 256 KiB request limit
    stored = put(stack, data)
    assert stored.status_code == 201, stored.text
    assert stored.json()["sha256"] == sha(data) and stored.json()["stored"] is True
    again = put(stack, data)
    assert again.status_code == 200 and again.json()["stored"] is False
    assert api(stack, "HEAD", f"/api/v1/uploads/{sha(data)}").status_code == 200

    too_big = targz({"noise.bin": os.urandom(3 << 19)})
    refused = put(stack, too_big)
    assert refused.status_code == 413 and "STYX_MAX_UPLOAD_BYTES" in refused.json()["detail"], refused.text

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(too_big), 64 << 10):
            yield too_big[start:start + 64 << 10]

    refused = put(stack, chunked(), name=sha(too_big))  # type: ignore[arg-type]
    assert refused.status_code == 413, refused.text
    assert api(stack, "HEAD", f"/api/v1/uploads/{sha(too_big)}").status_code == 404
    # Every other route keeps the request limit.
    other = api(stack, "POST", "/api/v1/clusters", json={"cluster": "x", "task": {"run": "x" * (300 << 10)}})
    assert other.status_code == 413 and "STYX_MAX_REQUEST_BYTES" in other.json()["detail"]


@pytest.mark.parametrize("case", ["wrong_sha", "not_targz", "escaping_member", "bomb"])
def test_a_bad_upload_is_422_and_nothing_is_stored(stack: StyxStack, case: str):
    data = {"wrong_sha": targz({"a": b"a"}), "not_targz": b"just some text",
            "escaping_member": targz({"../escape": b"x"}),
            "bomb": targz({"zeros": b"\0" * (5 << 20)})}[case]
    name = sha(b"something else") if case == "wrong_sha" else sha(data)
    says = {"wrong_sha": "nothing was stored", "not_targz": "not a .tar.gz",
            "escaping_member": "cannot be unpacked safely",
            "bomb": "STYX_MAX_UNPACKED_BYTES"}[case]
    before = uploads_stored(stack)
    refused = put(stack, data, name=name)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("body: ") and says in refused.json()["detail"], refused.text
    assert uploads_stored(stack) == before
    assert api(stack, "HEAD", f"/api/v1/uploads/{name}").status_code == 404


def test_a_user_cannot_name_another_users_upload_until_they_send_the_bytes(stack: StyxStack):
    admin = stack.client()
    bob = Client(stack.settings.api_url, admin.create_user("bob-uploads").token)
    data = targz({"greeting.txt": b"hello-from-an-upload\n"})
    assert put(stack, data).status_code == 201  # the admin's
    task = {"workdir": f"upload:{sha(data)}", "run": "cat greeting.txt"}

    assert bob._http.head(f"/api/v1/uploads/{sha(data)}").status_code == 404
    refused = bob._http.post("/api/v1/clusters", json={"cluster": "bobs", "task": task})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("task.workdir: upload ") and "not one you sent" in refused.text
    assert "bobs" not in [c.name for c in admin.status(all=True)]
    assert [u.sha256 for u in bob.uploads()] == []

    # Sending the same bytes proves he has them: nothing new is stored, and he may use it.
    sent = bob._http.put(f"/api/v1/uploads/{sha(data)}", content=data)
    assert sent.status_code == 200 and sent.json()["stored"] is False
    job = bob.launch(task, cluster="bobs")
    assert bob.wait("bobs", job.job_id, timeout=120).status == "SUCCEEDED"
    assert bob.logs("bobs", job.job_id).strip() == "hello-from-an-upload"
    bob.down("bobs")

    bob.delete_upload(sha(data))
    assert bob._http.head(f"/api/v1/uploads/{sha(data)}").status_code == 404
    assert admin._http.head(f"/api/v1/uploads/{sha(data)}").status_code == 200  # still the admin's


def test_a_users_uploads_beyond_the_quota_evict_the_least_recently_used(stack: StyxStack):
    carol = Client(stack.settings.api_url, stack.client().create_user("carol-uploads").token)
    archives = [targz({"n": os.urandom(800 << 10)}) for _ in range(3)]  # 2.4 MB > the 2 MiB quota
    for data in archives:
        assert carol._http.put(f"/api/v1/uploads/{sha(data)}", content=data).status_code == 201
    assert [u.sha256 for u in carol.uploads()] == [sha(archives[2]), sha(archives[1])]
    assert carol._http.head(f"/api/v1/uploads/{sha(archives[0])}").status_code == 404
    assert Database(stack.settings.db_url).uploads.get(sha(archives[0])) is None  # nobody else had it


def test_a_queued_jobs_upload_survives_uploads_that_would_otherwise_evict_it(stack: StyxStack):
    """The quota evicts the least recently used upload, but never one a job still waiting to
    run names; when only such uploads could make room, the upload is refused (409) naming the
    quota and the jobs that pin them, and nothing is stored or evicted."""
    admin = stack.client()
    erin = Client(stack.settings.api_url, admin.create_user("erin-uploads").token)
    up = erin.launch({"resources": {"cpus": 1}, "run": "true"}, cluster="erin-pin")
    assert erin.wait("erin-pin", up.job_id, timeout=120).status == "SUCCEEDED"
    gate = stack.shared_dir / "gate-erin-pin"
    blocker = erin.exec("erin-pin", {"resources": {"cpus": 1},
                                     "run": f"while [ ! -e {gate} ]; do sleep 0.05; done"}).job_id
    # 700 KiB that do not compress: three of them are over the 2 MiB quota, two are not.
    p1, o1, o2, p2, o3 = (targz({"note.txt": f"upload-{i}\n".encode() + os.urandom(700 << 10)}) for i in range(5))

    def send(data: bytes) -> httpx.Response:
        return erin._http.put(f"/api/v1/uploads/{sha(data)}", content=data)

    def queue(data: bytes) -> int:
        return erin.exec("erin-pin", {"resources": {"cpus": 1}, "workdir": f"upload:{sha(data)}",
                                      "run": "head -1 note.txt"}).job_id

    assert send(p1).status_code == 201
    first = queue(p1)
    wait_for(lambda: [erin.job("erin-pin", j).status for j in (blocker, first)] == ["RUNNING", "PENDING"],
             60, "the blocker running and the job behind it waiting")
    assert send(o1).status_code == 201 and send(o2).status_code == 201
    # p1 was the least recently used: without its pin it would have gone; o1 went instead.
    assert [u.sha256 for u in erin.uploads()] == [sha(o2), sha(p1)]

    assert send(p2).status_code == 201  # evicts o2, the only upload not pinned
    second = queue(p2)
    refused = send(o3)
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert "upload quota of 2097152 bytes (STYX_UPLOAD_QUOTA_BYTES)" in detail, detail
    assert f"job {first} on cluster erin-pin (PENDING)" in detail and f"job {second} on cluster erin-pin" in detail
    assert "nothing was stored" in detail
    assert {u.sha256 for u in erin.uploads()} == {sha(p1), sha(p2)}
    assert erin._http.head(f"/api/v1/uploads/{sha(o3)}").status_code == 404

    gate.touch()
    for job_id, text in ((first, "upload-0"), (second, "upload-3")):
        assert erin.wait("erin-pin", job_id, timeout=120).status == "SUCCEEDED"
        assert erin.logs("erin-pin", job_id).strip() == text  # its workdir was still there
    assert send(o3).status_code == 201  # the jobs ended: their uploads pin nothing now
    erin.down("erin-pin")


def test_pins_hold_while_their_work_lives_and_a_full_quota_names_what_pins_it(database: Database):
    """At the store: a job spec (before and after its cluster takes the job), a service and a
    managed job each pin the uploads their tasks name, until they end."""
    database.users.ensure("fay")
    a, b = targz({"a": os.urandom(600)}), targz({"b": os.urandom(600)})
    quota = len(a) + len(b) - 1  # one at a time

    def store(data: bytes) -> list[str]:
        return database.uploads.store(sha(data), len(data), iter([data]), "fay", quota=quota)[1]

    def full(what: str) -> None:
        with pytest.raises(UploadQuotaFull) as err:
            store(b)
        assert f"upload quota of {quota} bytes (STYX_UPLOAD_QUOTA_BYTES)" in str(err.value)
        assert what in str(err.value), str(err.value)
        assert database.uploads.get(sha(b)) is None and database.uploads.get(sha(a)) is not None

    store(a)
    database.jobspecs.put("spec-1", "c1", JobSpec(task={"workdir": f"upload:{sha(a)}", "run": "true"}))
    full("a job being submitted")  # the cluster has not taken it yet
    database.clusters.upsert("c1", provider="local", status="UP", num_nodes=1)
    database.clusters.upsert_job("c1", 7, status="PENDING", spec_id="spec-1")
    full("job 7 on cluster c1 (PENDING)")
    database.clusters.set_job_status("c1", 7, "SUCCEEDED")
    assert database.uploads.pins(sha(a)) == []

    database.services.create("api", owner="fay", ports=range(30000, 30010), task={"workdir": f"upload:{sha(a)}"},
                             sealed_secrets=None, spec={}, lb_policy="round_robin", workflow_id="service/api")
    full("service api")
    database.services.set_status("api", "SHUTTING_DOWN")
    assert database.uploads.pins(sha(a)) == []

    job, _ = database.managed.create("train", "fay", [("train", "sealed")],
                                     uploads=[sha(a)])
    full(f"managed job {job.id}")
    database.managed.record(job.id, {"status": "SUCCEEDED", "ended": True})
    assert store(b) == [sha(a)]  # nothing pins it any more: evicted as before
    assert database.uploads.get(sha(a)) is None


def test_a_write_the_busy_database_refuses_is_a_503_to_send_again_not_a_500(stack: StyxStack):
    """SQLite's write lock held past the busy timeout (thousands of workflows writing, as in
    the 2,000-job benchmark): the API answers 503 with Retry-After, having changed nothing."""
    data = targz({"busy.txt": b"sent while the database was busy\n"})
    holder = sqlite3.connect(stack.settings.db_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        refused = put(stack, data)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1" and "database is busy" in refused.json()["detail"]
    assert Database(stack.settings.db_url).uploads.get(sha(data)) is None
    assert put(stack, data).status_code == 201


# ------------------------------------------------------------------------------ store and cache


def test_the_store_keeps_bytes_once_in_4_mb_rows_and_the_cache_unpacks_them(database: Database, tmp_path: Path):
    database.users.ensure("ann")
    database.users.ensure("ben")
    data = targz({"big.bin": os.urandom(5 << 20), "dir/small.txt": b"small"})
    chunks = [data[i:i + (4 << 20)] for i in range(0, len(data), 4 << 20)]
    assert database.uploads.store(sha(data), len(data), iter(chunks), "ann") == (True, [])
    assert database.uploads.store(sha(data), len(data), iter(()), "ben") == (False, [])
    assert database.uploads.count() == 1 and database.uploads.get(sha(data)).chunks == 2
    assert b"".join(database.uploads.read(sha(data))) == data

    cache = UploadCache(tmp_path / "cache", database, max_unpacked_bytes=8 << 20)
    tree = cache.path(UploadRef(sha(data)))
    assert (tree / "dir" / "small.txt").read_bytes() == b"small"
    assert cache.path(UploadRef(sha(data), "dir/small.txt")) == (tree / "dir" / "small.txt").resolve()
    with pytest.raises(UploadUnusable, match="holds no file or directory"):
        cache.path(UploadRef(sha(data), "missing"))
    with pytest.raises(UploadUnusable, match="not stored"):
        cache.path(UploadRef("f" * 64))
    small = UploadCache(tmp_path / "small", database, max_unpacked_bytes=1 << 20)
    with pytest.raises(UploadUnusable, match="STYX_MAX_UNPACKED_BYTES"):
        small.path(UploadRef(sha(data)))
    assert not [p for p in (tmp_path / "small").iterdir() if not p.name.startswith(".lock")]

    assert database.uploads.forget(sha(data), "ann") and database.uploads.count() == 1
    assert database.uploads.forget(sha(data), "ben") and database.uploads.count() == 0


# ------------------------------------------------------------------------------ packing


def test_packing_is_deterministic_and_follows_gitignore_rules_like_git(tmp_path: Path):
    from styx.sdk.uploads import pack

    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    (src / "pkg" / "build").mkdir(parents=True)
    (src / "main.py").write_text("print(1)\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "a.log").write_text("ignored\n")
    (src / "keep.log").write_text("kept: negated\n")
    (src / "logs" / "x.txt").write_text("ignored with its directory\n")
    (src / "pkg" / "build" / "o").write_text("ignored by the nested .gitignore\n")
    (src / "pkg" / "mod.py").write_text("kept\n")
    (src / ".gitignore").write_text("*.log\n!keep.log\nlogs/\n")
    (src / "pkg" / ".gitignore").write_text("build\n")
    (src / "inside").symlink_to("main.py")
    (src / "outside").symlink_to("/etc/passwd")

    def packed():
        p = pack(src, "workdir", max_bytes=1 << 20, max_unpacked=1 << 20)
        with tarfile.open(p.path) as tar:
            members = {m.name: m for m in tar.getmembers()}
        p.path.unlink()
        return p, members

    first, members = packed()
    assert sorted(members) == [".gitignore", "inside", "keep.log", "main.py", "pkg", "pkg/.gitignore", "pkg/mod.py",
                               "run.sh"]
    assert members["inside"].issym() and members["inside"].linkname == "main.py"
    assert members["run.sh"].mode == 0o755 and {m.mtime for m in members.values()} == {0}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}
    assert first.skipped_links == ["outside"] and first.files == 6

    os.utime(src / "main.py", (1, 1))  # a new mtime changes nothing
    assert packed()[0].sha256 == first.sha256
    (src / "main.py").write_text("print(2)\n")  # new content does
    assert packed()[0].sha256 != first.sha256
