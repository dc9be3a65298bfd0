"""The dashboard's pages in-process (the FastAPI app with its database, no Temporal needed):
sign-in and its cookie, CSRF refusals, filters and paging kept in the URL, who sees which
cluster, a log's marks and bounds, the live log's resumable stream, offline API docs. The
whole thing in a real browser against the real stack is ``tests/test_dashboard.py``."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from styx import auth
from styx.api.app import create_app
from styx.api.dashboard.data import MAX_SHOWN_LINE, LogLine, read_log_window
from styx.api.dashboard.jobs import parse_cursor
from styx.api.dashboard.session import COOKIE, MAX_FORM_BYTES, SESSION_SECONDS, Keys
from styx.api.deps import AppState
from styx.db import Database, utcnow
from tests.fixtures.stack import settings_for

BASE = "http://127.0.0.1:7780"


class Site:
    def __init__(self, home: Path, db_url: str | None = None) -> None:
        env = {"STYX_HOME": str(home), "STYX_TEMPORAL_ADDRESS": "127.0.0.1:1",
               "STYX_TEMPORAL_UI_URL": "http://127.0.0.1:7734"}
        if db_url:
            env["STYX_DB_URL"] = db_url
        self.settings = settings_for(env)
        self.settings.ensure_home()
        self.app = create_app(self.settings)
        self.http = TestClient(self.app, base_url=BASE)
        self.http.__enter__()  # runs the lifespan: migrations
        self.db = Database(self.settings.db_url)
        self.tokens: dict[str, str] = {}

    def user(self, name: str, admin: bool = False) -> str:
        self.db.users.ensure(name, is_admin=admin)
        made = auth.new_token()
        self.db.users.add_token(name, made.token_id, made.salt, made.digest)
        self.tokens[name] = made.token
        return made.token

    def browser(self, name: str) -> TestClient:
        """A client signed in as ``name`` (its own cookie jar)."""
        client = TestClient(self.app, base_url=BASE)
        answer = client.post("/signin", data={"token": self.tokens[name]}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        return client

    def csrf(self, client: TestClient) -> str:
        page = client.get("/").text
        return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "home")
    s.user("root", admin=True)
    s.user("alice")
    s.user("bob")
    try:
        yield s
    finally:
        s.http.__exit__(None, None, None)


def rows(html: str, table: str = "cluster-table") -> list[str]:
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-row="([^"]+)"', body)


# ------------------------------------------------------------------------------- sign-in


def test_pages_send_a_stranger_to_sign_in_and_a_wrong_token_is_refused(site: Site):
    answer = site.http.get("/clusters/x?limit=5", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=%2Fclusters%2Fx%3Flimit%3D5"
    refused = site.http.post("/signin", data={"token": "styx_abc_def"}, follow_redirects=False)
    assert refused.status_code == 401 and "token: not a valid Styx API token" in refused.text
    assert COOKIE not in refused.headers.get("set-cookie", "")
    empty = site.http.post("/signin", data={"token": ""})
    assert empty.status_code == 422 and "token:" in empty.text


def test_the_session_cookie_is_sealed_httponly_samesite_and_goes_back_only_to_this_site(site: Site):
    answer = site.http.post("/signin", data={"token": site.tokens["alice"], "next": "//evil.example/x"},
                            follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"  # never off the site
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert f"Max-Age={SESSION_SECONDS}" in cookie
    assert site.tokens["alice"] not in cookie
    follow = site.http.post("/signin", data={"token": site.tokens["alice"], "next": "/repos"},
                            follow_redirects=False)
    assert follow.headers["location"] == "/repos"


def test_a_revoked_token_or_an_expired_session_signs_the_browser_out(site: Site):
    alice = site.browser("alice")
    assert alice.get("/", follow_redirects=False).status_code == 200
    token_id = auth.split_token(site.tokens["alice"])[0]  # type: ignore[index]
    assert site.db.users.revoke_token("alice", token_id)
    gone = alice.get("/", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/signin?why=token"
    assert "your token no longer works" in alice.get(gone.headers["location"]).text

    bob = TestClient(site.app, base_url=BASE)
    keys = Keys(site.settings)
    stale = keys.box.encrypt_at_time(site.tokens["bob"].encode(), int(time.time()) - SESSION_SECONDS - 5).decode()
    bob.cookies.set(COOKIE, stale)
    expired = bob.get("/", follow_redirects=False)
    assert expired.status_code == 303 and expired.headers["location"] == "/signin?why=expired"
    # The page says only what Styx wrote, whatever a link asks it to say.
    assert "pay here" not in site.http.get("/signin?why=pay+here").text
    bob.cookies.set(COOKIE, "garbage")
    assert bob.get("/", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_csrf_token_and_forgets_the_cookie(site: Site):
    alice = site.browser("alice")
    refused = alice.post("/signout", follow_redirects=False)
    assert refused.status_code == 403
    assert alice.get("/", follow_redirects=False).status_code == 200
    out = alice.post("/signout", data={"csrf_token": site.csrf(alice)}, follow_redirects=False)
    assert out.status_code == 303 and 'styx_session=""' in out.headers["set-cookie"]


# ------------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize("headers, form", [
    ({}, {}),                                             # no token at all
    ({"X-CSRF-Token": "0" * 64}, {}),                     # a made-up one
    ({"Origin": "http://evil.example"}, "token"),         # another site's page posting
    ({"Sec-Fetch-Site": "cross-site"}, "token"),          # the browser says so
])
def test_an_action_from_anywhere_but_our_pages_is_refused_and_changes_nothing(site: Site, headers, form):
    site.db.clusters.upsert("dev", provider="local", status="UP", owner="alice")
    alice = site.browser("alice")
    data = {"csrf_token": site.csrf(alice)} if form == "token" else form
    answer = alice.post("/clusters/dev/down", data=data, headers={"HX-Request": "true", **headers})
    assert answer.status_code == 403, answer.text
    assert "refused" in answer.text
    assert site.db.clusters.get("dev").status == "UP"  # type: ignore[union-attr]


def test_sign_in_from_another_sites_page_is_refused(site: Site):
    answer = site.http.post("/signin", data={"token": site.tokens["alice"]}, headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403 and COOKIE not in answer.headers.get("set-cookie", "")


def test_an_oversized_form_is_refused(site: Site):
    alice = site.browser("alice")
    answer = alice.post("/clusters/dev/autostop", content=b"a=" + b"x" * (MAX_FORM_BYTES + 10),
                        headers={"content-type": "application/x-www-form-urlencoded", "HX-Request": "true"})
    assert answer.status_code == 413 and "form:" in answer.text


def test_an_autostop_that_is_not_a_number_names_the_field(site: Site):
    site.db.clusters.upsert("dev", provider="local", status="UP", owner="alice")
    alice = site.browser("alice")
    answer = alice.post("/clusters/dev/autostop", data={"csrf_token": site.csrf(alice), "idle_minutes": "soon"},
                        headers={"HX-Request": "true"})
    assert answer.status_code == 422 and "idle_minutes:" in answer.text


# ------------------------------------------------------------------------------- listing


def _clusters(site: Site, n: int, **fields) -> None:
    for i in range(n):
        site.db.clusters.upsert(f"c{i:03d}", provider="local" if i % 2 else "aws", status="UP" if i % 3 else "STOPPED",
                                owner="alice" if i % 4 else "bob", **fields)


def test_filters_and_paging_live_in_the_url(site: Site):
    _clusters(site, 250)
    root = site.browser("root")
    first = root.get("/").text
    assert len(rows(first)) == 100 and "page 1 of 3" in first and 'href="/?page=2"' in first
    third = root.get("/?page=3").text
    assert rows(third) == [f"c{i:03d}" for i in range(200, 250)]
    chosen = root.get("/?status=STOPPED&provider=aws&owner=bob").text
    expected = [f"c{i:03d}" for i in range(250) if i % 3 == 0 and i % 2 == 0 and i % 4 == 0]
    assert rows(chosen) == expected
    assert "clear filters" in chosen
    bad = root.get("/?status=SLEEPING&page=x")
    assert bad.status_code == 422
    assert "status: &#39;SLEEPING&#39; is not one of INIT, UP, STOPPED, FAILED" in bad.text
    assert "page: &#39;x&#39; is not a page number" in bad.text
    assert len(rows(bad.text)) == 100  # the rest of the page still shows


def test_the_history_shows_downed_clusters_newest_first(site: Site):
    site.db.clusters.upsert("old", status="TERMINATED", owner="alice")
    site.db.clusters.upsert("new", status="TERMINATED", owner="alice")
    site.db.clusters.upsert("live", status="UP", owner="alice")
    alice = site.browser("alice")
    assert rows(alice.get("/").text) == ["live"]
    assert rows(alice.get("/?history=1").text) == ["new", "old"]


def test_a_user_sees_their_clusters_and_those_shared_with_them_an_admin_all(site: Site):
    site.db.clusters.upsert("a1", status="UP", owner="alice")
    site.db.clusters.upsert("b1", status="UP", owner="bob")
    site.db.clusters.upsert("b2", status="UP", owner="bob")
    site.db.clusters.add_share("b2", "alice", limit=10)
    alice, root = site.browser("alice"), site.browser("root")
    page = alice.get("/").text
    assert rows(page) == ["a1", "b2"]
    assert "<option>bob</option>" in page and "<option>alice</option>" in page
    # Only the owner's rows carry the owner's buttons.
    assert 'hx-post="/clusters/a1/stop"' in page and 'hx-post="/clusters/b2/stop"' not in page
    assert rows(root.get("/").text) == ["a1", "b1", "b2"]
    assert rows(alice.get("/?owner=bob").text) == ["b2"]
    hidden = alice.get("/clusters/b1")
    assert hidden.status_code == 404 and "cluster &#39;b1&#39; not found" in hidden.text
    assert alice.get("/clusters/b2").status_code == 200
    assert alice.get("/clusters/b1/jobs/1").status_code == 404
    assert alice.get("/clusters/b1/jobs/1/events").status_code == 404


def test_the_cluster_table_shows_nodes_jobs_and_when_autostop_fires(site: Site):
    site.db.clusters.upsert("dev", provider="local", status="UP", owner="alice", num_nodes=2, autostop_minutes=30,
                            resources=json.dumps({"cpus": "4+", "accelerators": {"A100": 1}}),
                            launched_at=utcnow() - timedelta(hours=1))
    site.db.clusters.replace_nodes("dev", [{"rank": 0, "host": "127.0.0.5", "status": "UP"},
                                           {"rank": 1, "host": "127.0.0.6", "status": "DOWN"}])
    site.db.clusters.upsert_job("dev", 1, status="SUCCEEDED", ended_at=utcnow() - timedelta(minutes=10))
    site.db.clusters.upsert_job("dev", 2, status="FAILED")
    page = site.browser("alice").get("/").text
    row = page.split('data-row="dev"', 1)[1].split("</tr>", 1)[0]
    assert "2 × 4+ CPU, A100:1" in row and "(1 DOWN)" in row
    assert ">2<" in row  # jobs
    assert "stop after 30m idle" in row and "fires in ≈" in row
    assert "cluster%2Fdev" in row  # the Temporal link
    assert row.count(">$0.00<") == 2  # local nodes cost nothing: $/hour and $ so far
    # An AWS cluster of two nodes at $0.0960 each, up: $0.19/hour.
    site.db.clusters.upsert("gpu", provider="aws", status="UP", owner="alice", num_nodes=2, hourly_price=0.096,
                            launched_at=utcnow())
    page = site.browser("alice").get("/").text
    row = page.split('data-row="gpu"', 1)[1].split("</tr>", 1)[0]
    assert ">$0.19<" in row, row


def test_a_clusters_page_shows_the_newest_jobs_first_and_a_limit(site: Site):
    site.db.clusters.upsert("dev", status="UP", owner="alice")
    for i in range(1, 131):
        site.db.clusters.upsert_job("dev", i, status="SUCCEEDED", submitted_at=utcnow() + timedelta(seconds=i))
    alice = site.browser("alice")
    page = alice.get("/clusters/dev").text
    shown = rows(page, "job-table")
    assert shown[:2] == ["130", "129"] and len(shown) == 100 and "Show 200" in page
    assert len(rows(alice.get("/clusters/dev?limit=100000").text, "job-table")) == 130


# ------------------------------------------------------------------------------- logs


def _two_node_log(site: Site) -> None:
    site.db.clusters.upsert("dev", status="UP", owner="alice")
    site.db.clusters.upsert_job("dev", 1, status="SUCCEEDED", num_nodes=2, user="alice")
    site.db.joblogs.append("dev", 1, "run", 0, 0, b"zero one\nzero <b>two</b>\n")
    site.db.joblogs.append("dev", 1, "run", 1, 0, b"one one\nno newline at the end")


def test_a_finished_jobs_page_shows_its_whole_log_each_node_marked(site: Site):
    _two_node_log(site)
    page = site.browser("alice").get("/clusters/dev/jobs/1").text
    lines = re.findall(r'<span class="line r\d" data-rank="(\d)"><span class="rank">\d</span>([^\n]*)\n', page)
    assert lines == [("0", "zero one"), ("0", "zero &lt;b&gt;two&lt;/b&gt;"), ("1", "one one"),
                     ("1", "no newline at the end")]
    assert "data-follow" not in page


def test_a_long_log_shows_its_end_and_earlier_lines_load_before_it_each_line_once(site: Site):
    site.db.clusters.upsert("dev", status="UP", owner="alice")
    site.db.clusters.upsert_job("dev", 1, status="SUCCEEDED", num_nodes=2)
    lines = {rank: [f"rank {rank} line {k:05d} " + "x" * (k % 37) for k in range(3000)] for rank in (0, 1)}
    for rank in (0, 1):
        data, offset = "".join(line + "\n" for line in lines[rank]).encode(), 0
        while offset < len(data):  # rows of 100 KB: windows start and end inside rows and lines
            offset = site.db.joblogs.append("dev", 1, "run", rank, offset, data[offset:offset + 100_000])
    state = AppState(site.settings, site.db)
    whole = [(r, t) for r in (0, 1) for t in lines[r]]
    window = read_log_window(state, "dev", 1, max_bytes=10_000)
    assert not window.whole and window.end == window.size
    assert window.lines == [LogLine(1, t) for t in lines[1][-len(window.lines):]]
    got = list(window.lines)
    while window.start > 0:  # earlier, and earlier again: the whole log, nothing twice
        window = read_log_window(state, "dev", 1, window.start, max_bytes=7_777)
        got[:0] = window.lines
    assert got == [LogLine(r, t) for r, t in whole]
    assert read_log_window(state, "dev", 1, max_bytes=1 << 30).whole

    # In the browser: the end, then earlier lines as often as asked, until the log's start.
    def shown(html: str) -> list[tuple[int, str]]:
        return [(int(r), t) for r, t in re.findall(r'data-rank="(\d)"><span class="rank">\d</span>([^\n]*)\n', html)]

    alice = site.browser("alice")
    page = alice.get("/clusters/dev/jobs/1").text
    log = page.split('<pre id="log"', 1)[1].split("</pre>", 1)[0]
    assert shown(log)[-1] == (1, lines[1][-1]) and (0, lines[0][0]) not in shown(log) and "its end" in page
    got, fragment = shown(log), log
    while (more := re.search(r'hx-get="/clusters/dev/jobs/1/log\?before=(\d+)"', fragment)):
        earlier = alice.get(f"/clusters/dev/jobs/1/log?before={more.group(1)}")
        assert earlier.status_code == 200
        fragment = earlier.text
        got[:0] = shown(fragment)
    assert got == whole
    assert alice.get("/clusters/dev/jobs/1/log?before=-1").status_code == 422
    site.db.clusters.upsert("secret", status="UP", owner="bob")
    site.db.clusters.upsert_job("secret", 1, status="SUCCEEDED")
    assert alice.get("/clusters/secret/jobs/1/log?before=10").status_code == 404


def test_a_line_longer_than_the_page_shows_is_cut_there(site: Site):
    site.db.clusters.upsert("dev", status="UP", owner="alice")
    site.db.clusters.upsert_job("dev", 1, status="SUCCEEDED")
    site.db.joblogs.append("dev", 1, "run", 0, 0, b"short\n" + b"y" * (MAX_SHOWN_LINE + 5000) + b"\nlast\n")
    window = read_log_window(AppState(site.settings, site.db), "dev", 1, end=10, max_bytes=10)
    assert [line.text[:12] for line in window.lines] == ["short", "y" * 12]
    assert window.lines[1].text.endswith("the raw log has it whole)")


def test_a_running_jobs_page_follows_its_log_and_offers_cancel_to_whom_may(site: Site):
    site.db.clusters.upsert("dev", status="UP", owner="alice")
    site.db.clusters.add_share("dev", "bob", limit=10)
    site.db.clusters.upsert_job("dev", 1, status="RUNNING", user="alice")
    site.db.joblogs.append("dev", 1, "run", 0, 0, b"one\ntwo\nthree, half wri")
    alice = site.browser("alice")
    page = alice.get("/clusters/dev/jobs/1")
    assert page.status_code == 200 and 'hx-post="/clusters/dev/jobs/1/cancel"' in page.text
    # Its complete lines are on the page; following it starts where they end (byte 8).
    assert ">one\n</span>" in page.text and ">two\n</span>" in page.text and "half wri" not in page.text
    follow = re.search(r'data-follow="([^"]+)"', page.text).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert follow == "/clusters/dev/jobs/1/events?after=run.0%3A8", follow
    site.db.joblogs.append("dev", 1, "run", 0, 23, b"tten\nfour\n")
    site.db.clusters.upsert_job("dev", 1, status="SUCCEEDED")
    sent = [e[2]["text"] for e in _events(alice.get(follow).text) if e[1] == "log"]
    assert sent == ["three, half written\nfour\n"]
    shared = site.browser("bob").get("/clusters/dev/jobs/1")  # a user of the cluster, not the job's
    assert shared.status_code == 200 and "/cancel" not in shared.text


def _events(text: str) -> list[tuple[str | None, str, dict]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return out


def test_the_log_stream_sends_each_line_once_even_to_a_browser_that_reconnects(site: Site):
    _two_node_log(site)
    alice = site.browser("alice")
    events = _events(alice.get("/clusters/dev/jobs/1/events").text)
    assert [e[1] for e in events] == ["status", "log", "log", "end"]
    logs = [e for e in events if e[1] == "log"]
    assert logs[0][2] == {"rank": 0, "text": "zero one\nzero <b>two</b>\n", "continues": False}
    assert logs[1][2]["text"] == "one one\nno newline at the end\n"
    assert events[-1][2]["status"] == "SUCCEEDED"
    # Reconnecting after the first event: only what it had not seen, starting mid-stream.
    again = _events(alice.get("/clusters/dev/jobs/1/events", headers={"Last-Event-ID": "run.0:9"}).text)
    sent = [e[2] for e in again if e[1] == "log"]
    assert [(s["rank"], s["text"], s["continues"]) for s in sent] == [
        (0, "zero <b>two</b>\n", False), (1, "one one\nno newline at the end\n", False)]
    assert parse_cursor("run.0:12,setup.1:x,junk,run.1:7") == {"run.0": 12, "run.1": 7}
    assert parse_cursor("a:1," * 100_000) == {"a": 1}  # bounded


def test_the_raw_log_is_the_apis_answer(site: Site):
    _two_node_log(site)
    raw = site.browser("alice").get("/clusters/dev/jobs/1/log.txt")
    assert raw.text == "(rank=0) zero one\n(rank=0) zero <b>two</b>\n(rank=1) one one\n(rank=1) no newline at the end\n"
    assert raw.headers["content-type"].startswith("text/plain")


# ------------------------------------------------------------------------------- docs and headers


def test_docs_and_redoc_load_only_this_servers_assets(site: Site):
    for path in ("/docs", "/redoc"):
        page = site.http.get(path)
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)=["\']([^"\']+)', page.text)
        assert urls and all(u.startswith("/static/docs/") or u == "/openapi.json" for u in urls), urls
        assert "fonts.googleapis" not in page.text and "cdn.jsdelivr" not in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for url in urls:
            if url.startswith("/static/"):
                assert site.http.get(url).status_code == 200, url
    assert "/docs" not in json.dumps(site.http.get("/openapi.json").json()["paths"])


def test_every_page_forbids_inline_scripts_and_framing(site: Site):
    site.db.clusters.upsert("dev", status="UP", owner="alice")
    alice = site.browser("alice")
    for path in ("/", "/clusters/dev", "/repos", "/signin"):
        answer = alice.get(path)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy, path
        assert "<script>" not in answer.text and " on" + "change=" not in answer.text, path


def test_a_browser_keeps_the_dashboards_files_until_they_change(site: Site):
    page = site.browser("alice").get("/").text
    linked = re.findall(r'(?:src|href)="(/static/[^"]+\?v=[0-9a-f]+)"', page)
    assert len(linked) == 3, linked  # the stylesheet, htmx, styx.js
    for url in linked:
        answer = site.http.get(url)
        assert answer.status_code == 200 and "immutable" in answer.headers["cache-control"], url
    assert site.http.get("/static/styx.css").headers["cache-control"] == "no-cache"  # unversioned: revalidate
    assert site.http.get("/static/styx.css?v=0").headers["cache-control"] == "no-cache"  # another version


# ------------------------------------------------------------------------------- the store's listing reads


def test_job_activity_and_get_many_read_several_clusters_at_once(database: Database):
    clusters = database.clusters
    database.users.ensure("alice")
    clusters.upsert("a", status="UP", owner="alice", provider="aws")
    clusters.upsert("b", status="TERMINATED")
    clusters.replace_nodes("a", [{"rank": 1, "host": "h1"}, {"rank": 0, "host": "h0"}])
    ended = utcnow() - timedelta(minutes=5)
    clusters.upsert_job("a", 1, status="SUCCEEDED", ended_at=ended, submitted_at=ended - timedelta(minutes=1))
    clusters.upsert_job("a", 2, status="RUNNING", submitted_at=ended - timedelta(minutes=2))
    assert set(clusters.get_many(["a", "b", "zz"])) == {"a", "b"}
    activity = clusters.job_activity(["a", "b"])
    assert set(activity) == {"a"}
    assert (activity["a"].jobs, activity["a"].active) == (2, 1)
    assert activity["a"].last_moved is not None and abs((activity["a"].last_moved - ended).total_seconds()) < 1
    assert clusters.job_activity([]) == {}


def test_a_numbered_page_counts_filters_and_holds_only_what_the_user_may_see(database: Database):
    clusters = database.clusters
    for user in ("alice", "bob"):
        database.users.ensure(user)
    for i in range(5):
        clusters.upsert(f"a{i}", status="UP", owner="alice", provider="aws" if i % 2 else "local")
    clusters.upsert("b0", status="UP", owner="bob")
    clusters.upsert("b1", status="STOPPED", owner="bob")
    clusters.add_share("b1", "alice", limit=10)
    clusters.upsert("gone", status="TERMINATED", owner="alice")
    page = clusters.numbered_page(gone=False, owned_or_shared_with="alice", per_page=2, page=9)
    assert (page.total, page.pages, page.page) == (6, 3, 3)  # past the last page: the last
    assert [name for name, _ in page.names] == ["a4", "b1"]
    assert page.providers == ["aws", "local"] and page.owners == ["alice", "bob"]
    assert clusters.numbered_page(gone=False, owned_or_shared_with="alice", provider="aws").total == 2
    assert clusters.numbered_page(gone=False, status="STOPPED").total == 1
    assert [name for name, _ in clusters.numbered_page(gone=True).names] == ["gone"]


def test_a_range_of_a_log_is_read_from_the_rows_that_hold_it(database: Database):
    database.clusters.upsert("dev", status="UP")
    database.clusters.upsert_job("dev", 1, status="SUCCEEDED")
    data = bytes(range(48, 78))
    for offset in (0, 10, 20):  # three rows of ten bytes
        database.joblogs.append("dev", 1, "run", 0, offset, data[offset:offset + 10])
    read = database.joblogs.read_range
    assert read("dev", 1, "run", 0, 5, 25) == data[5:25]
    assert read("dev", 1, "run", 0, 0, 1000) == data and read("dev", 1, "run", 0, 29, 40) == data[29:]
    assert read("dev", 1, "run", 0, 30, 40) == b"" and read("dev", 1, "run", 0, 7, 7) == b""
    assert read("dev", 1, "run", 1, 0, 10) == b""  # no such stream


def test_live_logs_are_bounded_per_process_and_a_finished_stream_gives_its_slot_back(site: Site):
    _two_node_log(site)
    alice = site.browser("alice")
    assert [e[1] for e in _events(alice.get("/clusters/dev/jobs/1/events").text)][-1] == "end"
    slots = site.app.state.styx_log_followers
    assert slots.count == 0  # the finished stream gave its slot back
    slots.limit = slots.count = 3  # three logs followed elsewhere
    busy = _events(alice.get("/clusters/dev/jobs/1/events").text)
    assert [e[1] for e in busy] == ["busy"] and "MAX_LOG_FOLLOWERS" in busy[0][2]["detail"]
    slots.count = 2
    assert [e[1] for e in _events(alice.get("/clusters/dev/jobs/1/events").text)][-1] == "end"
    assert slots.count == 2


def test_the_bar_highlights_the_page_you_are_on():
    from styx.api.dashboard.render import NAV

    clusters, repos = NAV[0], next(n for n in NAV if n.href == "/repos")
    assert clusters.active("/") and clusters.active("/clusters/dev/jobs/1") and not clusters.active("/repos/a/b")
    assert repos.active("/repos/a/b") and not repos.active("/") and not repos.active("/reposx")


def test_the_managed_jobs_page_shows_a_users_own_jobs_and_an_admin_everyones(site: Site):
    train, _ = site.db.managed.create("train", "alice", [("train", "sealed")])
    site.db.managed.create("etl", "bob", [("extract", "sealed"), ("load", "sealed")])
    site.db.managed.record(train.id, {"status": "SUCCEEDED", "ended": True})  # type: ignore[arg-type]
    page = site.browser("alice").get("/managed").text
    assert rows(page, "managed-table") == [str(train.id)] and ">train<" in page and ">etl<" not in page
    assert "managed%2F" in page  # each links to its workflow in Temporal's web UI
    assert "/cancel" not in page  # a finished job has nothing to cancel
    everyone = site.browser("root").get("/managed").text  # the admin
    assert ">train<" in everyone and ">etl<" in everyone and ">1 of 2<" in everyone
    etl = rows(everyone, "managed-table")[0]
    assert f'hx-post="/managed/{etl}/cancel"' in everyone and f"Cancel managed job {etl} (etl)?" in everyone


def test_the_managed_jobs_page_shows_the_newest_fifty_and_more_on_request(site: Site):
    for i in range(60):
        site.db.managed.create(f"job-{i}", "alice", [("t", "sealed")])
    alice = site.browser("alice")
    page = alice.get("/managed").text
    shown = rows(page, "managed-table")
    assert len(shown) == 50 and shown[0] > shown[-1] and 'href="/managed?limit=100"' in page
    assert len(rows(alice.get("/managed?limit=100").text, "managed-table")) == 60
    assert len(rows(alice.get("/managed?limit=nonsense").text, "managed-table")) == 50


def test_a_managed_jobs_page_shows_its_tasks_and_attempts_with_their_jobs_exit_codes(site: Site):
    job, _ = site.db.managed.create("train", "alice", [("train", "sealed")])
    assert job.id is not None
    site.db.clusters.upsert("train-1", status="UP", owner="alice")
    site.db.clusters.upsert_job("train-1", 1, status="FAILED", num_nodes=2, exit_codes="[0, 3]")
    site.db.managed.record(job.id, {"status": "RECOVERING", "recoveries": 1}, task_index=0, attempt=0,
                           attempt_fields={"cluster": "train-1", "job_id": 1, "status": "PREEMPTED",
                                           "reason": "node 1 lost", "ended": True})
    site.db.managed.record(job.id, task_index=0, attempt=1, attempt_fields={"cluster": "train-2", "status": "STARTING"})
    page = site.browser("alice").get(f"/managed/{job.id}")
    assert page.status_code == 200
    assert rows(page.text, "attempt-table") == ["0.0", "0.1"]
    first = page.text.split('data-row="0.0"', 1)[1].split("</tr>", 1)[0]
    assert 'href="/clusters/train-1/jobs/1"' in first and ">0 3<" in first and "node 1 lost" in first
    assert "RECOVERING" in page.text and f'hx-post="/managed/{job.id}/cancel"' in page.text
    assert "managed%2F" in page.text
    hidden = site.browser("bob").get(f"/managed/{job.id}")
    assert hidden.status_code == 404 and f"managed job {job.id} not found" in hidden.text
    # Cancel is an action like the others: without the page's CSRF token, nothing happens.
    refused = site.browser("alice").post(f"/managed/{job.id}/cancel", headers={"HX-Request": "true"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert site.db.managed.get(job.id).status == "RECOVERING"  # type: ignore[union-attr]
