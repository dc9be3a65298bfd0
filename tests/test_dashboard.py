"""The web dashboard in a real Chromium (Debian's ``chromium``, driven by Playwright), against
the whole stack: Temporal, a worker, the API and the git server as processes, local nodes.

What a user does: signs in (a wrong token is refused), watches a running job's log reach its
last line live, cancels a job and a managed job, sets autostop and stops a cluster from the
pages, sees only their own clusters and managed jobs (an admin sees everyone's), reads a
repository's pushes and runs, and opens ``/docs`` and ``/redoc`` with nothing fetched beyond
loopback. Screenshots of each page
go to ``artifacts/dashboard/`` (gitignored).

One browser for the module; each test opens its own context (its own cookies). Every
context routes its requests through a guard that refuses any host not on loopback, and a
proxy on a dead loopback port catches whatever the guard would miss.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from typing import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from styx.config import is_loopback
from styx.sdk.client import AsyncClient, Client
from tests.fixtures.git import GitStyxStack, make_git_user
from tests.fixtures.stack import wait_for_async
from tests.fixtures.temporal import own_dev_server


@pytest_asyncio.fixture(scope="module")
async def temporal_env():
    """This module's own dev server: it starts managed jobs (see ``own_dev_server``)."""
    async for env in own_dev_server():
        yield env


playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright (pip: playwright) is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

CHROMIUM = os.environ.get("STYX_CHROMIUM") or shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium; "
                                                ".ci/run installs it where it can)"),
]

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "dashboard"
#: How long a page may take to show what a test waits for (the machine is shared and slow).
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def dash(temporal_env, tmp_path_factory) -> Iterator[GitStyxStack]:
    address = temporal_env.client.service_client.config.target_host
    stack = GitStyxStack(tmp_path_factory.mktemp("styx-dashboard"), address)
    stack.env["STYX_LOCAL_ALLOW_NONADMIN"] = "1"  # alice's local cluster, when not running as root
    try:
        yield stack.start()
    finally:
        stack.stop()


class Guard:
    """Refuses every request whose host is not on loopback, and remembers them."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.seen: list[str] = []

    async def __call__(self, route) -> None:
        url = route.request.url
        self.seen.append(url)
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:", "about:")) or host == "localhost" or is_loopback(host):
            await route.continue_()
        else:
            self.refused.append(url)
            await route.abort("blockedbyclient")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            # Anything the guard misses goes to a dead loopback port, never off the machine.
            proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"},
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                  "--disable-background-networking", "--disable-component-update", "--no-pings",
                  "--disable-domain-reliability"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_context(browser, dash: GitStyxStack, guard: Guard | None = None):
    context = await browser.new_context(base_url=dash.settings.api_url, viewport={"width": 1400, "height": 900})
    await context.route("**/*", guard or Guard())
    context.set_default_timeout(WAIT_MS)
    return context


def console_errors(page) -> list[str]:
    """The page's console errors from now on (a refused script or style under the CSP is one)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


async def sign_in(browser, dash: GitStyxStack, token: str):
    context = await open_context(browser, dash)
    page = await context.new_page()
    page.errors = console_errors(page)
    await page.goto("/signin")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await expect(page.locator("#who")).to_be_visible()
    return context, page


async def shot(page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def accept_dialogs(page, said: list[str]) -> None:
    """Every confirm dialog is read (into ``said``) and accepted, as a user clicking OK."""
    async def accept(dialog) -> None:
        said.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)


@pytest.fixture(scope="module")
async def cluster(dash: GitStyxStack) -> str:
    """The admin's 2-node cluster ``dash``, up, with one finished job."""
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        first = await client.launch({"name": "hello", "num_nodes": 2, "resources": {"cpus": 0.5},
                                     "run": "echo hello from $STYX_NODE_RANK"}, cluster="dash")
        done = await client.wait("dash", first.job_id, timeout=180)
        assert done.status == "SUCCEEDED", done
    return "dash"


# ---------------------------------------------------------------------------------- sign in


async def test_a_wrong_token_is_refused_and_the_pages_stay_closed(browser, dash: GitStyxStack):
    context = await open_context(browser, dash)
    page = await context.new_page()
    answer = await page.goto("/")
    assert urlsplit(page.url).path == "/signin", page.url  # sent to sign in first
    assert answer is not None and answer.ok
    await shot(page, "signin")
    await page.fill("#token", "styx_000000000000_not-a-real-secret")
    async with page.expect_response(lambda r: r.url.endswith("/signin") and r.request.method == "POST") as sent:
        await page.click("button[type=submit]")
    assert (await sent.value).status == 401
    await expect(page.locator("#signin-problem")).to_contain_text("not a valid Styx API token")
    assert not [c for c in await context.cookies() if c["name"] == "styx_session"]
    await page.goto("/repos")
    assert urlsplit(page.url).path == "/signin"
    await shot(page, "signin-refused")
    await context.close()


async def test_sign_in_sets_an_httponly_samesite_cookie_and_shows_the_clusters(browser, dash, cluster):
    context, page = await sign_in(browser, dash, dash.token)
    await expect(page.locator("h1")).to_have_text("Clusters")
    await expect(page.locator("#who")).to_contain_text("admin")
    row = page.locator('#cluster-table tr[data-row="dash"]')
    await expect(row.locator(".status")).to_have_text("UP")
    await expect(row).to_contain_text("2 × 0.5 CPU")
    link = await row.locator("a.temporal").get_attribute("href")
    assert link and link.endswith("/workflows/cluster%2Fdash"), link
    [cookie] = [c for c in await context.cookies() if c["name"] == "styx_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert dash.token not in cookie["value"]  # sealed, not the token itself
    assert await page.evaluate("document.cookie") == ""  # no script can read it
    await shot(page, "clusters")
    await context.close()


# ---------------------------------------------------------------------------------- jobs and logs


async def test_the_log_of_a_running_job_follows_it_to_its_last_line(browser, dash, cluster):
    gate = dash.shared_dir / "dashboard-gate"
    gate.unlink(missing_ok=True)
    run = ("for i in 1 2 3; do echo \"rank $STYX_NODE_RANK line $i\"; done; echo waiting-for-the-gate; "
           f"while [ ! -f {gate} ]; do sleep 0.1; done; echo \"final line of rank $STYX_NODE_RANK\"")
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        job = await client.exec("dash", {"name": "follow-me", "num_nodes": 2, "resources": {"cpus": 0.5}, "run": run})
        await wait_for_async(lambda: _running(client, job.job_id), 120, "the job to run")
        context, page = await sign_in(browser, dash, dash.token)
        await page.goto(f"/clusters/dash/jobs/{job.job_id}")
        log = page.locator("#log")
        await expect(log).to_contain_text("waiting-for-the-gate")
        await expect(page.locator("#job-status")).to_have_text("RUNNING")
        await expect(page.locator("#follow-state")).to_have_text("following")
        assert "final line" not in await log.inner_text()
        gate.write_text("go")  # only now can the job write its last lines
        await expect(log).to_contain_text("final line of rank 0")
        await expect(log).to_contain_text("final line of rank 1")
        await expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
        # Each node's lines are marked with its rank.
        assert await log.locator('.line[data-rank="1"] .rank').first.inner_text() == "1"
        rank1 = await log.locator('.line[data-rank="1"]').all_inner_texts()
        assert any("rank 1 line 3" in line for line in rank1), rank1
        assert not any("rank 0" in line for line in rank1), rank1
        await shot(page, "job-live")
        assert not page.errors, page.errors
        # A finished job's page shows its whole log at once, without following it.
        await page.reload()
        await expect(page.locator("#follow-state")).to_have_text("whole log")
        whole = await log.inner_text()
        for rank in (0, 1):
            assert whole.count(f"final line of rank {rank}") == 1, whole
            assert whole.count(f"rank {rank} line 1") == 1, whole
        await shot(page, "job-finished")
        await context.close()


async def test_a_long_finished_log_shows_its_end_and_earlier_lines_on_demand(browser, dash, cluster):
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        job = await client.exec("dash", {"name": "chatty", "resources": {"cpus": 0.5},
                                         "run": "seq -f 'line %05g of a long log' 1 4000"})  # 100 KB
        assert (await client.wait("dash", job.job_id, timeout=180)).status == "SUCCEEDED"
    context, page = await sign_in(browser, dash, dash.token)
    await page.goto(f"/clusters/dash/jobs/{job.job_id}")
    log = page.locator("#log")
    await expect(log).to_contain_text("line 04000 of a long log")
    await expect(page.locator("#follow-state")).to_have_text("its end")
    assert "line 00001 of" not in await log.inner_text()
    await page.locator("#log-earlier").click()
    await expect(log).to_contain_text("line 00001 of a long log")
    await expect(page.locator("#log-earlier")).to_have_count(0)  # the log's start: nothing before it
    await expect(page.locator("#log-note")).to_contain_text("The whole log (100000 bytes)")
    shown = [text.strip() for text in await log.locator(".line").all_inner_texts()]
    assert shown == [f"line {i:05d} of a long log" for i in range(1, 4001)]  # each line once, in order
    await shot(page, "job-long-log")
    assert not page.errors, page.errors
    await context.close()


async def _running(client: AsyncClient, job_id: int) -> bool:
    return (await client.job("dash", job_id)).status == "RUNNING"


async def _api_answers(dash: GitStyxStack) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{dash.settings.api_url}/signin")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_followed_log_survives_the_api_killed_and_shows_each_line_once(browser, dash, cluster):
    gate = dash.shared_dir / "dashboard-gate-kill"
    gate.unlink(missing_ok=True)
    run = (f"for i in 1 2 3 4 5; do echo before-$i; done; while [ ! -f {gate} ]; do sleep 0.1; done; "
           "for i in 1 2 3 4 5; do echo after-$i; done")
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        job = await client.exec("dash", {"name": "outlive", "resources": {"cpus": 0.5}, "run": run})
        await wait_for_async(lambda: _running(client, job.job_id), 120, "the job to run")
    context, page = await sign_in(browser, dash, dash.token)
    await page.goto(f"/clusters/dash/jobs/{job.job_id}")
    log = page.locator("#log")
    await expect(log).to_contain_text("before-5")
    assert dash.api is not None
    os.kill(dash.api.pid, signal.SIGKILL)  # the API process serving the stream, mid-stream
    dash.api.wait()
    await expect(page.locator("#follow-state")).to_have_text("reconnecting…")
    gate.write_text("go")  # the job goes on writing while no API answers
    dash.api = dash._spawn("api")  # on the same port and home: the browser's cookie still works
    await wait_for_async(lambda: _api_answers(dash), 60, "the API to answer again")
    await expect(log).to_contain_text("after-5")
    await expect(page.locator("#job-status")).to_have_text("SUCCEEDED")
    text = await log.inner_text()
    for i in range(1, 6):  # the stream resumed where the browser was: nothing twice, nothing lost
        assert text.count(f"before-{i}\n") == 1 and text.count(f"after-{i}\n") == 1, text
    await context.close()


async def test_a_job_is_cancelled_from_the_cluster_page(browser, dash, cluster):
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        job = await client.exec("dash", {"name": "sleeper", "resources": {"cpus": 0.5}, "run": "sleep 600"})
        await wait_for_async(lambda: _running(client, job.job_id), 120, "the sleeper to run")
        context, page = await sign_in(browser, dash, dash.token)
        said: list[str] = []
        accept_dialogs(page, said)
        await page.goto("/clusters/dash")
        row = page.locator(f'#job-table tr[data-row="{job.job_id}"]')
        await expect(row.locator(".status")).to_have_text("RUNNING")
        await shot(page, "cluster")
        await row.get_by_role("button", name="Cancel").click()
        await expect(page.locator("#flash")).to_contain_text(f"job {job.job_id} cancelled")
        await expect(row.locator(".status")).to_have_text("CANCELLED")
        assert said and f"Cancel job {job.job_id} on dash?" in said[0], said
        assert (await client.job("dash", job.job_id)).status == "CANCELLED"
        await context.close()


# ---------------------------------------------------------------------------------- managed jobs


async def _managed_status(client: AsyncClient, managed_id: int, *wanted: str) -> bool:
    return (await client.jobs.get(managed_id)).status in wanted


async def test_managed_jobs_show_to_their_owner_and_are_cancelled_from_the_page(browser, dash):
    admin = Client(dash.settings.api_url, dash.token)
    carol_token = (await asyncio.to_thread(admin.create_user, "carol")).token
    admin.close()
    async with AsyncClient(dash.settings.api_url, dash.token) as root, \
            AsyncClient(dash.settings.api_url, carol_token) as carol:
        theirs = await root.jobs.launch({"resources": {"cpus": 0.5}, "run": "echo done"}, name="admins-job")
        mine = await carol.jobs.launch({"resources": {"cpus": 0.5}, "run": "echo started; sleep 600"},
                                       name="carols-sleeper")
        await wait_for_async(lambda: _managed_status(carol, mine.managed_id, "RUNNING"), 180, "carol's job to run")
        await wait_for_async(lambda: _managed_status(root, theirs.managed_id, "SUCCEEDED"), 180, "the admin's job")

        # Carol sees her managed job, not the admin's; the admin sees both.
        admin_context, admin_page = await sign_in(browser, dash, dash.token)
        await admin_page.goto("/managed")
        for job in (theirs, mine):
            await expect(admin_page.locator(f'#managed-table tr[data-row="{job.managed_id}"]')).to_be_visible()
        await admin_context.close()
        context, page = await sign_in(browser, dash, carol_token)
        said: list[str] = []
        accept_dialogs(page, said)
        await page.get_by_role("link", name="Managed jobs").click()
        row = page.locator(f'#managed-table tr[data-row="{mine.managed_id}"]')
        await expect(row.locator(".status")).to_have_text("RUNNING")
        await expect(page.locator(f'#managed-table tr[data-row="{theirs.managed_id}"]')).to_have_count(0)
        link = await row.locator("a.temporal").get_attribute("href")
        assert link and link.endswith(f"/workflows/managed%2F{mine.managed_id}"), link
        await shot(page, "managed")

        # Its page: the attempt, linked to its job, whose page follows the log.
        await row.get_by_role("link", name=str(mine.managed_id), exact=True).click()
        attempt = page.locator('#attempt-table tr[data-row="0.1"]')
        await expect(attempt.locator(".status")).to_have_text("RUNNING")
        await shot(page, "managed-job")
        await attempt.get_by_role("link", name="#").click()
        await expect(page.locator("#log")).to_contain_text("started")
        await page.go_back()

        # Cancelling someone else's is refused as the API refuses it, and changes nothing.
        csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
        answer = await page.request.post(f"/managed/{theirs.managed_id}/cancel", form={"csrf_token": csrf or ""},
                                         headers={"HX-Request": "true"})
        assert answer.status == 404 and f"managed job {theirs.managed_id} not found" in await answer.text()

        await page.goto("/managed")
        await row.get_by_role("button", name="Cancel").click()
        await expect(page.locator("#flash")).to_contain_text(f"managed job {mine.managed_id}: cancelling")
        await expect(row.locator(".status")).to_have_text("CANCELLED", timeout=120_000)
        await expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
        assert said and f"Cancel managed job {mine.managed_id} (carols-sleeper)?" in said[0], said
        assert (await carol.jobs.get(mine.managed_id)).status == "CANCELLED"
        assert (await root.jobs.get(theirs.managed_id)).status == "SUCCEEDED"
        await shot(page, "managed-cancelled")
        assert not page.errors, page.errors
        await context.close()


# ---------------------------------------------------------------------------------- cluster actions


async def test_an_action_without_the_pages_csrf_token_changes_nothing(browser, dash, cluster):
    context, page = await sign_in(browser, dash, dash.token)
    # The session cookie goes along (same site), but not the page's CSRF token.
    answer = await page.request.post("/clusters/dash/down", headers={"HX-Request": "true"})
    assert answer.status == 403 and "CSRF" in await answer.text()
    answer = await page.request.post("/clusters/dash/down", form={"csrf_token": "0" * 64})
    assert answer.status == 403
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        assert (await client.cluster("dash")).status == "UP"
    await context.close()


async def test_autostop_is_set_and_the_cluster_stopped_from_the_pages(browser, dash, cluster):
    context, page = await sign_in(browser, dash, dash.token)
    said: list[str] = []
    accept_dialogs(page, said)
    await page.goto("/clusters/dash")
    await page.fill("input[name=idle_minutes]", "45")
    await page.get_by_role("button", name="Set autostop").click()
    await expect(page.locator("#flash")).to_contain_text("stop after 45 idle minutes")
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        assert (await client.cluster("dash")).autostop_minutes == 45
        await expect(page.locator("#cluster-summary")).to_contain_text("stop after 45m idle")
        await page.goto("/")
        row = page.locator('#cluster-table tr[data-row="dash"]')
        await row.get_by_role("button", name="Stop").click()
        await expect(row.locator(".status")).to_have_text("STOPPED", timeout=120_000)
        assert any("Stop cluster dash?" in s for s in said), said
        assert (await client.cluster("dash")).status == "STOPPED"
        await expect(row.get_by_role("button", name="Start")).to_be_visible()
        await shot(page, "clusters-stopped")
        assert not page.errors, page.errors
        # The filters live in the URL: a link to them shows the same rows.
        await page.goto("/?status=STOPPED&provider=local")
        await expect(page.locator('#cluster-table tr[data-row="dash"]')).to_be_visible()
        await page.goto("/?status=UP")
        await expect(page.locator('#cluster-table tr[data-row="dash"]')).to_have_count(0)
    await context.close()


# ---------------------------------------------------------------------------------- users


async def test_a_user_sees_only_their_clusters_and_the_admin_sees_all(browser, dash, cluster):
    admin = Client(dash.settings.api_url, dash.token)
    alice_token = (await asyncio.to_thread(admin.create_user, "alice")).token
    bob_token = (await asyncio.to_thread(admin.create_user, "bob")).token
    async with AsyncClient(dash.settings.api_url, alice_token) as alice:
        job = await alice.launch({"name": "mine", "resources": {"cpus": 0.5}, "run": "echo alice was here"},
                                 cluster="alice-c")
        assert (await alice.wait("alice-c", job.job_id, timeout=180)).status == "SUCCEEDED"

    bob_context, bob = await sign_in(browser, dash, bob_token)
    await expect(bob.locator("#cluster-table")).to_contain_text("No clusters")
    await expect(bob.locator('#cluster-table tr[data-row="alice-c"]')).to_have_count(0)
    await expect(bob.locator('#cluster-table tr[data-row="dash"]')).to_have_count(0)
    await shot(bob, "clusters-as-bob")
    answer = await bob.goto("/clusters/alice-c")
    assert answer is not None and answer.status == 404
    await expect(bob.locator("p.error")).to_have_text("cluster 'alice-c' not found")
    answer = await bob.goto(f"/clusters/alice-c/jobs/{job.job_id}/log.txt")
    assert answer is not None and answer.status == 404
    await bob_context.close()

    alice_context, alice_page = await sign_in(browser, dash, alice_token)
    row = alice_page.locator('#cluster-table tr[data-row="alice-c"]')
    await expect(row).to_contain_text("alice")
    await expect(alice_page.locator('#cluster-table tr[data-row="dash"]')).to_have_count(0)
    await alice_context.close()

    admin_context, admin_page = await sign_in(browser, dash, dash.token)
    await admin_page.goto("/?owner=alice")
    await expect(admin_page.locator('#cluster-table tr[data-row="alice-c"]')).to_be_visible()
    await expect(admin_page.locator('#cluster-table tr[data-row="dash"]')).to_have_count(0)
    await shot(admin_page, "clusters-owner-filter")
    await admin_context.close()
    admin.close()


# ---------------------------------------------------------------------------------- repos


async def test_a_repository_shows_its_branches_pushes_and_runs(browser, dash, cluster, tmp_path: Path):
    admin = Client(dash.settings.api_url, dash.token)
    await asyncio.to_thread(admin.create_repo, "admin/ml")
    async with AsyncClient(dash.settings.api_url, dash.token) as client:
        await client.start("dash")  # the run's job needs the cluster up (the stop test stopped it)
    pusher = make_git_user(tmp_path, "admin", dash.token, with_key=False)
    work = tmp_path / "work"
    pusher.git("init", "-q", "-b", "main", str(work))
    (work / ".styx.yaml").write_text("jobs:\n  test:\n    cluster: dash\n    resources: {cpus: 0.5}\n"
                                     "    run: echo ran-from-push\n")
    pusher.git("add", "-A", cwd=work)
    pusher.git("commit", "-qm", "first", cwd=work)
    sha = pusher.git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert dash.git is not None
    pusher.git("push", "-q", pusher.http_url(dash.git, "admin/ml"), "main", cwd=work)
    run = await asyncio.to_thread(admin.wait_commit, "admin/ml", sha, 180)
    assert run.status == "SUCCEEDED", run

    context, page = await sign_in(browser, dash, dash.token)
    await page.get_by_role("link", name="Repos").click()
    await page.get_by_role("link", name="admin/ml").click()
    await expect(page.locator('#branch-table tr[data-row="main"]')).to_contain_text(sha[:10])
    await expect(page.locator('#branch-table tr[data-row="main"] .status')).to_have_text("SUCCEEDED")
    section = page.locator(f'section.run[data-sha="{sha}"]')
    await expect(section).to_contain_text("SUCCEEDED")
    await expect(section).to_contain_text("pushed by admin")
    push_link = await section.locator(".run-head a.temporal").get_attribute("href")
    assert push_link and "push%2Fadmin%2Fml%2F" in push_link, push_link
    await section.get_by_role("link", name="dash #").click()
    await expect(page.locator("#log")).to_contain_text("ran-from-push")
    await page.go_back()
    await shot(page, "repo")
    await page.goto("/repos")
    await shot(page, "repos")
    await context.close()
    admin.close()


# ---------------------------------------------------------------------------------- API docs


async def test_docs_and_redoc_render_with_nothing_from_beyond_loopback(browser, dash):
    guard = Guard()
    context = await open_context(browser, dash, guard)
    page = await context.new_page()
    errors = console_errors(page)
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Styx")
    await expect(page.locator(".opblock-summary-path", has_text="/api/v1/clusters").first).to_be_visible()
    await shot(page, "docs")
    await page.goto("/redoc")
    await expect(page.get_by_role("heading", name="Styx (")).to_be_visible()
    await expect(page.get_by_role("heading", name="Launch a cluster and run a task")).to_have_count(1)
    await shot(page, "redoc")
    assert guard.seen, "the guard saw no request"
    assert not guard.refused, f"requests beyond loopback: {guard.refused}"
    assert all(urlsplit(u).hostname in ("127.0.0.1", "localhost") for u in guard.seen if u.startswith("http"))
    # What the pages' policy refused (ReDoc's logo from its CDN) never became a request.
    refused = [e for e in errors if "Content Security Policy" in e]
    assert all("img-src" in e for e in refused), refused
    await context.close()

