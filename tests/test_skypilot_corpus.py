"""SkyPilot task files run unchanged: each ``# styx-corpus: cli`` file of tests/skypilot_corpus/
is launched with ``styx launch`` on local nodes (a real Temporal, worker, API and node servers),
from the corpus directory as a SkyPilot user would run it from their project, and ends as its
header says.

Headers (first lines of the file):

- ``# expect-status: SUCCEEDED | FAILED | CANCELLED | refused`` (refused: the launch is a
  one-line CLI error and no cluster is made);
- ``# expect-output: TEXT`` (repeatable): in the job's output, on every node;
- ``# expect-warning: TEXT`` / ``# expect-error: TEXT``: on the CLI's stderr;
- ``# launch-args: ARGS``: added to the command line;
- ``# cancel-after-output: TEXT``: launched detached, cancelled once TEXT is in its log.

The git workdir file names ``__REPO_URL__``, filled in with a repository this test serves.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.stack import StyxStack, wait_for
from tests.fixtures.temporal import free_port

pytestmark = pytest.mark.slow
CORPUS = Path(__file__).parent / "skypilot_corpus"
FILES = sorted(p for p in CORPUS.glob("*.yaml") if p.read_text().startswith("# styx-corpus: cli\n"))


def _headers(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"# ([a-z-]+): (.*)", line)
        if not m:
            break
        found.setdefault(m.group(1), []).append(m.group(2))
    return found


@pytest.fixture(scope="module")
def git_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A repository with VERSION 'v1' at tag v1 and 'v2' on main, served by ``git daemon`` on
    loopback (as a remote the nodes clone from; a file:// URL would be another user's
    repository to the job's user, which git refuses)."""
    root = tmp_path_factory.mktemp("git-served")
    work, bare = root / "work", root / "served" / "repo.git"
    work.mkdir()

    def git(*args: str, cwd: Path = work) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                       check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (work / "VERSION").write_text("v1\n")
    git("add", "VERSION")
    git("commit", "-q", "-m", "v1")
    git("tag", "v1")
    (work / "VERSION").write_text("v2\n")
    git("commit", "-q", "-am", "v2")
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1",
                               f"--port={port}", f"--base-path={root / 'served'}", str(root / "served")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"git://127.0.0.1:{port}/repo.git"
        wait_for(lambda: subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0, 30,
                 "git daemon to serve")
        yield url
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)


def test_the_corpus_has_a_file_for_each_compatibility_point() -> None:
    names = {p.stem for p in FILES}
    assert {"env_check_bashrc", "sky_workdir", "unbuffered_cancel", "service_section", "pipeline_one_task",
            "fractional_gpu", "accelerator_set_any_of", "file_mounts_list", "git_workdir",
            "file_mounts_env_vars", "absolute_mount", "instance_type_local"} <= names
    assert sum("num_nodes: 2" in p.read_text() for p in FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_skypilot_file_launches_on_local_nodes_as_its_header_says(stack: StyxStack, path: Path, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    headers = _headers(path)
    status = headers["expect-status"][0]
    text = path.read_text()
    task_file = path
    if "__REPO_URL__" in text:
        task_file = CORPUS / f".{path.stem}-{tmp_path.name}.yaml"
        task_file.write_text(text.replace("__REPO_URL__", request.getfixturevalue("git_url")))
    cluster = "sky-" + re.sub(r"[^a-z0-9]", "-", path.stem)[:40]
    args = ["launch", "-y", "-c", cluster, task_file.name, *shlex.split(" ".join(headers.get("launch-args", [])))]
    cancel_after = headers.get("cancel-after-output", [None])[0]
    try:
        r = stack.cli(*args, *(["-d"] if cancel_after else []), cwd=CORPUS, timeout=240)
        for warning in headers.get("expect-warning", []):
            assert f"warning: {warning}" in r.stderr, r.stderr
        if status == "refused":
            assert r.returncode == 1, r.stdout + r.stderr
            error = r.stderr.strip()
            assert error.startswith("error:") and len(error.splitlines()) <= 3, error  # one message, no traceback
            for expected in headers["expect-error"]:
                assert expected in r.stderr, r.stderr
            assert cluster not in stack.cli("status", check=True).stdout
            return
        client = stack.client()
        if cancel_after:
            assert r.returncode == 0, r.stdout + r.stderr
            job_id = int(re.search(r"job (\d+) queued", r.stdout).group(1))
            wait_for(lambda: cancel_after in client.logs(cluster, job_id), 120, f"{cancel_after!r} in the log")
            stack.cli("cancel", cluster, str(job_id), check=True)
            assert client.wait(cluster, job_id, timeout=60).status == status
            output = client.logs(cluster, job_id)
        else:
            expected_exit = {"SUCCEEDED": 0, "CANCELLED": 103}.get(status, 100)
            assert r.returncode == expected_exit, r.stdout + r.stderr
            assert f": {status}" in r.stdout, r.stdout
            output = r.stdout
        nodes = 2 if re.search(r"^num_nodes: 2$", text, re.M) else 1
        for expected in headers.get("expect-output", []):
            assert output.count(expected) >= nodes, output
    finally:
        if task_file != path:
            task_file.unlink(missing_ok=True)
        if status != "refused":
            stack.cli("down", "-y", cluster, timeout=120)
