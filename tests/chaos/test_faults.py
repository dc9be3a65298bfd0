"""Faults: with three clusters of local nodes and about thirty jobs in flight, kill -9 in turn
the worker, the API, the git server (mid-push), a node (a VM lost) and the Temporal dev
server, at random points, while the user also stops and starts one cluster; then check that
nothing was lost, run twice or left behind.

`make test` runs one round of each fault (``STYX_CHAOS_ROUNDS`` unset); `make chaos` runs
ten. The seed is printed first; ``STYX_CHAOS_SEED=<seed>`` replays the same faults, in the
same order, at the same delays and on the same nodes (the jobs' own timing still varies).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from styx.contracts.rest import JobInfo
from styx.sdk.transport import NotFound
from tests.chaos.faults import FAULTS, Faults, Injection, user_stop_start
from tests.chaos.upstack import UpStack
from tests.chaos.verify import (
    Problems,
    check_cluster,
    check_job,
    check_push,
    node_orphans,
    table,
    temporal_view,
)
from tests.chaos.workload import REPO, Pusher, Submitter, Workload
from tests.fixtures.stack import wait_for

ROUNDS = int(os.environ.get("STYX_CHAOS_ROUNDS") or 1)
SEED = int(os.environ.get("STYX_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))

#: cluster -> nodes. alpha and gamma have nodes killed; beta is stopped and started by the
#: user each round; gamma runs the pushed jobs and is taken down at the end.
CLUSTERS = {"alpha": 2, "beta": 1, "gamma": 1}
NODE_CPUS = 3
IN_FLIGHT = 30
#: Each job prints LINES lines, PAUSE seconds apart.
LINES, PAUSE = 16, 0.25

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} chaos: {message}", flush=True)


@pytest.mark.timeout(300 + 240 * ROUNDS)
def test_kill_9_of_each_part_at_random_points_loses_duplicates_and_leaks_nothing(tmp_path):
    say(f"seed {SEED}, {ROUNDS} round(s) — replay with STYX_CHAOS_SEED={SEED} STYX_CHAOS_ROUNDS={ROUNDS}")
    rng = random.Random(SEED)
    stack = UpStack(tmp_path / "styx-home")
    say(f"STYX_HOME {stack.home}")
    submitter: Submitter | None = None
    orphans: Counter = Counter()
    known: list[str] = []
    try:
        stack.start()
        client = stack.client()
        workload = Workload(stack, tmp_path / "workload", LINES, PAUSE)
        for name, nodes in CLUSTERS.items():
            workload.launch(client, name, nodes, NODE_CPUS)
        client.create_repo("chaos")
        pusher = Pusher(workload, "gamma")
        faults = Faults(stack, pusher, rng, say, node_clusters=["alpha", "gamma"])
        submitter = Submitter(workload, list(CLUSTERS), IN_FLIGHT, random.Random(SEED + 1))
        submitter.start()
        wait_for(lambda: all(client.cluster(c).status == "UP" for c in CLUSTERS), 120, "the clusters to be UP",
                 interval=0.5)
        wait_for(lambda: workload.in_flight(workload.rows(client, list(CLUSTERS))) >= IN_FLIGHT, 60,
                 f"{IN_FLIGHT} jobs in flight", interval=0.5)
        started = time.monotonic()

        user_actions: list[Injection] = []
        for round_no in range(1, ROUNDS + 1):
            order = rng.sample(FAULTS, len(FAULTS))
            stop_at = rng.randrange(len(order) + 1)
            say(f"round {round_no}: {' '.join(order[:stop_at] + ['stop+start'] + order[stop_at:])}")
            for i, fault in enumerate(order + [None]):
                if i == stop_at:
                    user_actions.append(user_stop_start(stack, "beta", rng, say))
                if fault is not None:
                    faults.inject(fault)
        submitter.stop()
        say(f"faults done in {time.monotonic() - started:.0f}s; "
            f"{len(workload.submissions)} submissions; waiting for every job to end")
        for error in submitter.errors:
            say(f"submission broken off (it may or may not have queued a job): {error}")

        # Every job the user was told about (or may have been) ends.
        def settled() -> dict[str, list[JobInfo]] | None:
            rows = workload.rows(client, list(CLUSTERS))
            workload.note_ended(rows)
            waiting = [k for k, s in workload.submissions.items()
                       if s.kind != "push" and s.outcome in ("accepted", "ambiguous", "pending")
                       and (s.outcome == "accepted" and k not in rows or any(not j.finished for j in rows.get(k, [])))]
            return rows if not waiting else None

        try:
            wait_for(settled, 180 + 60 * ROUNDS, "every job to end", interval=1.0)
        except AssertionError:
            pass  # the checks below say which did not end
        for sub in faults.pushes:  # its run is recorded as it starts, then waits for its job
            try:
                wait_for(lambda: _has_run(client, sub.sha or ""), 30, f"the run of {sub.key}", interval=0.5)
                client.wait_commit(REPO, sub.sha or "", timeout=120)
            except (AssertionError, TimeoutError):
                sub.ended_at = sub.ended_at or sub.pushed_at  # counts against the faults of its push
        rows = workload.rows(client, list(CLUSTERS))

        # Jobs: once, whole, agreed on by the DB and Temporal.
        all_rows = [j for jobs in rows.values() for j in jobs]
        temporal_jobs, temporal_clusters = temporal_view(stack.settings.temporal_address, all_rows, list(CLUSTERS))
        effects = Counter(workload.effects.read_text().split())
        problems: dict[str, Problems] = {}
        for key, sub in workload.submissions.items():
            problems[key] = check_job(sub, rows.get(key, []), workload, client, temporal_jobs, temporal_clusters,
                                      effects)
            if sub.kind == "push":
                pushed = check_push(sub, client, rows.get(key, []))
                problems[key].lost += pushed.lost
        strays = sorted(set(effects) - set(workload.submissions))
        if strays:
            problems["(strays)"] = Problems(duplicated=[f"side effects of no submission: {strays}"])

        # No node process but the servers once every job has ended (transient SSH sessions
        # of the last polls may take a moment to go).
        killed_nodes = {inj.detail.split()[2] for inj in faults.injections if inj.fault == "node"}
        for cluster in CLUSTERS:
            nodes = sorted(p.name for p in (stack.home / "nodes" / cluster).glob("node-*"))
            try:
                wait_for(lambda: not node_orphans(stack.home, cluster, nodes), 15, f"{cluster}'s nodes to be quiet")
            except AssertionError:
                left = node_orphans(stack.home, cluster, nodes)
                say(f"orphans on {cluster}: {left}")
                touched = "stop+start" if cluster == "beta" else "node" if any(
                    k.startswith(f"{cluster}/") for k in killed_nodes) else "(none)"
                orphans[touched] += len(left)

        # The clusters are as the user left them: gamma taken down at the end.
        down = client.down("gamma")
        cluster_problems = []
        if down.status != "TERMINATED":
            cluster_problems.append(f"gamma: `styx down` answered {down.status}")
        leftover = node_orphans(stack.home, "gamma", ["node-0"])
        orphans["(down)"] += len(leftover)
        expected = {"alpha": "UP", "beta": "UP", "gamma": "TERMINATED"}
        _, temporal_clusters = temporal_view(stack.settings.temporal_address, [], list(CLUSTERS))
        for name, want in expected.items():
            cluster_problems += check_cluster(client, stack.home, name, want, CLUSTERS[name], temporal_clusters[name])

        injections = faults.injections + user_actions
        cluster_problems += [p for inj in injections for p in inj.problems]
        summary = table([*FAULTS, "stop+start"], injections, workload.submissions, problems, orphans,
                        time.monotonic())
        outcomes = Counter(s.outcome for s in workload.submissions.values())
        statuses = Counter(j.status for j in all_rows)
        say(f"submissions {dict(outcomes)}; jobs {dict(statuses)}\n{summary}")
        details = [m for p in problems.values() for m in p.lost + p.duplicated] + cluster_problems
        assert not details and not sum(orphans.values()), (
            f"seed {SEED}: {len(details)} problem(s), {sum(orphans.values())} orphan(s):\n"
            + "\n".join(details[:40]) + f"\n{summary}")
        assert statuses["SUCCEEDED"] >= len(all_rows) // 2, f"seed {SEED}: too few jobs succeeded: {statuses}"
        known = [m for p in problems.values() for m in p.known]
        for message in known:
            say(f"known bug: {message}")
    finally:
        if submitter is not None and submitter.is_alive():
            submitter.stop()
        left = stack.stop()
        if left:
            say(f"left behind after stopping everything: {left}")
    assert not left, f"seed {SEED}: processes outlived the stack and its nodes: {left}"
    if known:  # the one assertion left failing on purpose: see verify.CANCEL_RACE and LOST_PUSH
        pytest.xfail(f"seed {SEED}: known bug(s) seen, all else held: " + "; ".join(known))


def _has_run(client, sha: str) -> bool:
    try:
        client.commit_status(REPO, sha)
        return True
    except NotFound:
        return False
