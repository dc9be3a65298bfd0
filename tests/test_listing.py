"""The cluster listing at scale, as a user relies on it without a stopwatch: the same few SQL
statements whatever the number of clusters, only what the caller may see, bounded pages the
SDK walks through, and a `styx status` that loads neither Temporal nor the task model.

The API runs as a real process on SQLite (a plain listing needs no Temporal); timings are
``bench/scale.py``'s business, not the tests'.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import sqlalchemy as sa

from styx.config import Settings
from styx.contracts.rest import DEFAULT_CLUSTER_PAGE, MAX_CLUSTER_PAGE, ClusterInfo
from styx.db import Database, User, dispose_engine
from styx.services.listing import ClusterQuery, cluster_info, list_clusters, list_clusters_json
from tests.fixtures.seed import seed_clusters
from tests.fixtures.stack import StyxStack, wait_for

ADMIN = User(name="root", is_admin=True)


def _statements(db: Database, call) -> tuple[object, list[str]]:
    """What ``call()`` returns, and the SQL statements it ran."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        return call(), seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)


def _settings() -> Settings:
    return Settings.from_env(temporal=False)


def test_listing_runs_the_same_few_statements_for_5_clusters_and_for_60(database: Database) -> None:
    seed_clusters(database, 5, jobs=20, prefix="a")
    _, few = _statements(database, lambda: list_clusters(database, _settings(), ADMIN))
    seed_clusters(database, 55, jobs=220, prefix="b")
    listed, many = _statements(database, lambda: list_clusters(database, _settings(), ADMIN))
    assert len(listed) == 60  # type: ignore[arg-type]
    # clusters, nodes, shares, job counts in one snapshot, then the page's costs (node uptimes),
    # and BEGIN/COMMIT
    assert len(many) == len(few) <= 9, many
    # A user's page costs the same: visibility is a WHERE clause, not a check per cluster.
    mine, as_user = _statements(database, lambda: list_clusters(database, _settings(), User(name="u3")))
    assert len(as_user) == len(few) and len(mine) == 2 + 12  # type: ignore[arg-type]  # u3 owns 7, 7 are shared with u3


def test_each_cluster_comes_with_its_nodes_shares_and_unfinished_jobs(database: Database) -> None:
    seed_clusters(database, 3, jobs=30, nodes_per_cluster=2, users=3)
    first = list_clusters(database, _settings(), ADMIN)[0]
    assert first.name == "c0000" and first.owner == "u0" and first.shared_with == ["u1"]
    assert [(n.rank, n.ip, n.status) for n in first.nodes] == [(0, "127.0.0.1", "UP"), (1, "127.0.0.2", "UP")]
    # c0000's jobs 1..10: one RUNNING, two PENDING, the rest ended (tests/fixtures/seed.py).
    assert first.active_jobs == {"RUNNING": 1, "PENDING": 2}
    assert first.workflow_url and first.workflow_url.endswith("/workflows/cluster%2Fc0000")
    assert cluster_info(database, _settings(), "c0000") == first
    assert cluster_info(database, _settings(), "nope") is None


def test_a_user_sees_their_own_and_shared_clusters_and_an_admin_sees_all(database: Database) -> None:
    seed_clusters(database, 9, users=3)  # c000i is u(i%3)'s, shared with u((i+1)%3)
    names = lambda who: [c.name for c in list_clusters(database, _settings(), who)]  # noqa: E731
    assert names(User(name="u0")) == ["c0000", "c0002", "c0003", "c0005", "c0006", "c0008"]
    assert names(User(name="stranger")) == []
    assert names(User(name="u0", disabled=True)) == []
    assert len(names(ADMIN)) == 9


def test_filters_and_pages(database: Database) -> None:
    seed_clusters(database, 12, users=2, terminated_every=4)  # c0003, c0007, c0011 TERMINATED
    listed = lambda **q: [c.name for c in list_clusters(database, _settings(), ADMIN, ClusterQuery(**q))]  # noqa: E731
    assert "c0003" not in listed() and len(listed()) == 9
    assert len(listed(include_terminated=True)) == 12
    assert listed(statuses=("TERMINATED",)) == ["c0003", "c0007", "c0011"]
    assert listed(owner="u1", include_terminated=True) == ["c0001", "c0003", "c0005", "c0007", "c0009", "c0011"]
    assert listed(provider="aws") == []
    assert listed(limit=4) == ["c0000", "c0001", "c0002", "c0004"]
    assert listed(limit=4, after="c0004") == ["c0005", "c0006", "c0008", "c0009"]
    with pytest.raises(ValueError, match="limit"):
        ClusterQuery(limit=MAX_CLUSTER_PAGE + 1)
    with pytest.raises(ValueError):
        ClusterQuery(statuses=("RUNNING",))


def test_the_json_the_api_writes_is_the_models_it_documents(database: Database) -> None:
    seed_clusters(database, 7, jobs=40, users=2)
    models = list_clusters(database, _settings(), ADMIN)
    body = list_clusters_json(database, _settings(), ADMIN)
    assert [ClusterInfo.model_validate(c) for c in json.loads(body)] == models
    assert body == b"[" + b",".join(m.model_dump_json().encode() for m in models) + b"]"


# --------------------------------------------------------------------------- through the API and the CLI


@pytest.fixture(scope="module")
def api_only() -> Iterator[StyxStack]:
    """The API alone on SQLite, with 1,001 clusters (one more than a page) and 3,000 jobs;
    Temporal's address answers nothing: a listing must not need it."""
    home = Path(tempfile.mkdtemp(prefix="styx-listing-"))
    stack = StyxStack(home / "home", "127.0.0.1:9")
    db = Database(stack.settings.db_url)
    seed_clusters(db, MAX_CLUSTER_PAGE + 1, jobs=3000, users=4)
    stack.api = stack._spawn("api")

    def answers() -> bool:
        assert stack.api is not None and stack.api.poll() is None, (stack.home / "logs" / "api.log").read_text()[-3000:]
        try:
            return httpx.get(f"{stack.settings.api_url}/healthz", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 60, "the API to answer")
        yield stack
    finally:
        stack.stop()
        dispose_engine(stack.settings.db_url)
        shutil.rmtree(home, ignore_errors=True)


def test_the_sdk_reads_every_page_and_the_api_bounds_each(api_only: StyxStack) -> None:
    client = api_only.client()
    everything = client.status()
    assert len(everything) == MAX_CLUSTER_PAGE + 1 and everything[-1].name == f"c{MAX_CLUSTER_PAGE:04d}"
    assert [c.name for c in client.status(owner="u1")][:3] == ["c0001", "c0005", "c0009"]
    headers = {"Authorization": f"Bearer {api_only.token}"}
    url = f"{api_only.settings.api_url}/api/v1/clusters"
    default = httpx.get(url, headers=headers, timeout=30).json()
    assert [c["name"] for c in default] == [f"c{i:04d}" for i in range(DEFAULT_CLUSTER_PAGE)]
    page = httpx.get(url, params={"limit": 2, "after": "c0100"}, headers=headers, timeout=30)
    assert [c["name"] for c in page.json()] == ["c0101", "c0102"]
    too_big = httpx.get(url, params={"limit": MAX_CLUSTER_PAGE + 1}, headers=headers, timeout=30)
    assert too_big.status_code == 422 and "limit" in too_big.json()["detail"], too_big.text
    bad_status = httpx.get(url, params={"status": "RUNNING"}, headers=headers, timeout=30)
    assert bad_status.status_code == 422 and "status" in bad_status.json()["detail"], bad_status.text


#: Run a `styx` command in a fresh interpreter and say, on the last line of stderr, which of
#: these heavy modules it loaded.
_PROBE = """
import runpy, sys
sys.argv = ["styx", *sys.argv[1:]]
try:
    runpy.run_module("styx", run_name="__main__")
except SystemExit as exit:
    code = exit.code
else:
    code = 0
heavy = ("temporalio", "styx.task", "styx.sdk.repos", "rich.table", "yaml", "sqlalchemy")
print("LOADED " + " ".join(m for m in heavy if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _probe(stack: StyxStack, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], env={**stack.env, "COLUMNS": "200", **(env or {})},
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    loaded = result.stderr.strip().splitlines()[-1]
    assert loaded.startswith("LOADED"), result.stderr
    return result, set(loaded.split()[1:])


def test_styx_status_lists_a_thousand_clusters_without_loading_temporal(api_only: StyxStack) -> None:
    # TEMPORAL_ADDRESS set, as on a server's shell: the CLI still has no use for it.
    result, loaded = _probe(api_only, "status", env={"TEMPORAL_ADDRESS": "127.0.0.1:9"})
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("c")]
    assert len(rows) == MAX_CLUSTER_PAGE + 1, result.stdout[-2000:]
    assert rows[1].split()[:4] == ["c0001", "u1", "local", "2"], rows[1]
    assert "1 running, 2 waiting" in rows[1] and rows[1].rstrip().endswith("open"), rows[1]
    assert loaded.isdisjoint({"temporalio", "styx.task", "rich.table", "sqlalchemy"}), loaded


def test_queue_and_help_load_no_temporal_either(api_only: StyxStack) -> None:
    result, loaded = _probe(api_only, "queue", "c0002")
    assert result.returncode == 0 and "python train.py" in result.stdout, result.stdout + result.stderr
    assert "temporalio" not in loaded and "styx.task" not in loaded, loaded
    result, loaded = _probe(api_only, "--help")
    assert result.returncode == 0 and "status" in result.stdout
    assert "temporalio" not in loaded, loaded


def test_styx_status_filters_and_refuses_an_unknown_status_in_one_line(api_only: StyxStack) -> None:
    r = api_only.cli("status", "--owner", "u1", "--status", "up", env={"COLUMNS": "200"}, check=True)
    rows = [line.split()[:2] for line in r.stdout.splitlines() if line.startswith("c")]
    assert rows and all(owner == "u1" for _, owner in rows) and len(rows) == 250, r.stdout[-1000:]
    r = api_only.cli("status", "--status", "RUNNING")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "status" in r.stderr, r.stderr
