"""Faults: with three clusters of local nodes and about thirty jobs in flight, kill -9 in turn
the worker, the API, the git server (mid-push), a node (a VM lost) and the Temporal dev
server, at random points, while the user also stops and starts one cluster; then check that
nothing was lost, run twice or left behind.

`make chaos` runs the full suite (``long``) for ``STYX_CHAOS_ROUNDS`` rounds (ten there; one
when unset). `make test` runs its short form (``QUICK``): one round, each fault once, eight
short jobs in flight, the same checks, in about a minute. The seed is printed first;
``STYX_CHAOS_SEED=<seed>`` replays the same faults, in the same order, at the same delays and
on the same nodes (the jobs' own timing still varies).

Whatever happens, ``UpStack.stop`` ends the stack, takes its clusters down (node servers,
jobs, job users) and removes its nodes' directory: everything is found by this run's own
paths, never by a process name (other tests on the machine run nodes of their own).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from styx.contracts.rest import JobInfo
from styx.sdk.client import Client
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
#: What the user leaves each cluster as.
FINAL = {"alpha": "UP", "beta": "UP", "gamma": "TERMINATED"}
NODE_CPUS = 3


@dataclass(frozen=True)
class Scenario:
    """How hard a run pushes: rounds of faults, jobs kept in flight, and each job's length
    (``lines`` lines, ``pause`` seconds apart); ``max_delay`` bounds each fault's random point."""

    rounds: int
    in_flight: int
    lines: int
    pause: float
    max_delay: float


#: `make chaos`: STYX_CHAOS_ROUNDS rounds with thirty jobs in flight.
FULL = Scenario(rounds=ROUNDS, in_flight=30, lines=16, pause=0.25, max_delay=3.0)
#: `make test`: one round, each fault once, with a few short jobs in flight.
QUICK = Scenario(rounds=1, in_flight=8, lines=6, pause=0.2, max_delay=1.0)


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} chaos: {message}", flush=True)


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(300 + 240 * ROUNDS)
def test_kill_9_of_each_part_at_random_points_loses_duplicates_and_leaks_nothing(tmp_path):
    run_faults(tmp_path, FULL, SEED)


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_one_kill_9_of_each_part_loses_duplicates_and_leaks_nothing(tmp_path):
    """The same checks as the full suite, one round: each fault once, a few jobs in flight."""
    run_faults(tmp_path, QUICK, SEED)


def run_faults(tmp_path: Path, scenario: Scenario, seed: int) -> None:
    rounds = scenario.rounds
    say(f"seed {seed}, {rounds} round(s) — replay with STYX_CHAOS_SEED={seed} STYX_CHAOS_ROUNDS={rounds}")
    rng = random.Random(seed)
    stack = UpStack(tmp_path / "styx-home")
    stack.cluster_names = list(CLUSTERS)
    say(f"STYX_HOME {stack.home}, nodes under {stack.nodes_root}")
    submitter: Submitter | None = None
    known: list[str] = []
    started = time.monotonic()
    left: list[str] = []
    try:
        stack.start()
        with stack.client() as client:
            workload = Workload(stack, tmp_path / "workload", scenario.lines, scenario.pause)
            for name, nodes in CLUSTERS.items():
                workload.launch(client, name, nodes, NODE_CPUS)
            client.create_repo("chaos")
            faults = Faults(stack, Pusher(workload, "gamma"), rng, say, node_clusters=["alpha", "gamma"],
                            max_delay=scenario.max_delay)
            submitter = Submitter(workload, list(CLUSTERS), scenario.in_flight, random.Random(seed + 1))
            submitter.start()
            wait_for(lambda: all(client.cluster(c).status == "UP" for c in CLUSTERS), 120,
                     "the clusters to be UP", interval=0.5)
            wait_for(lambda: workload.in_flight(workload.rows(client, list(CLUSTERS))) >= scenario.in_flight, 60,
                     f"{scenario.in_flight} jobs in flight", interval=0.5)

            user_actions = inject_rounds(stack, faults, rng, rounds)
            submitter.stop()
            for error in submitter.errors:
                say(f"submission broken off (it may or may not have queued a job): {error}")
            rows = settle(client, workload, faults, rounds)

            problems = check_jobs(stack, client, workload, rows)
            orphans = check_nodes_quiet(stack, faults)
            cluster_problems = take_gamma_down_and_check_clusters(stack, client, orphans)

            injections = faults.injections + user_actions
            cluster_problems += [p for inj in injections for p in inj.problems]
            summary = table([*FAULTS, "stop+start"], injections, workload.submissions, problems, orphans,
                            time.monotonic())
            statuses = Counter(j.status for jobs in rows.values() for j in jobs)
            say(f"submissions {dict(Counter(s.outcome for s in workload.submissions.values()))}; "
                f"jobs {dict(statuses)}; {time.monotonic() - started:.0f}s\n{summary}")
            details = [m for p in problems.values() for m in p.lost + p.duplicated] + cluster_problems
            assert not details and not sum(orphans.values()), (
                f"seed {seed}: {len(details)} problem(s), {sum(orphans.values())} orphan(s):\n"
                + "\n".join(details[:40]) + f"\n{summary}")
            assert statuses["SUCCEEDED"] >= sum(statuses.values()) // 2, f"seed {seed}: few jobs succeeded: {statuses}"
            known = [m for p in problems.values() for m in p.known]
            for message in known:
                say(f"known bug: {message}")
    finally:
        try:
            if submitter is not None and submitter.is_alive():
                submitter.stop()
        finally:
            left = stack.stop()
            if left:
                say(f"left behind after stopping everything: {left}")
            say(f"stack stopped and cleaned up after {time.monotonic() - started:.0f}s")
    assert not left, f"seed {seed}: processes outlived the stack and its nodes: {left}"
    if known:  # the one assertion left failing on purpose: see verify.CANCEL_RACE
        pytest.xfail(f"seed {seed}: known bug(s) seen, all else held: " + "; ".join(known))


def inject_rounds(stack: UpStack, faults: Faults, rng: random.Random, rounds: int) -> list[Injection]:
    """Each round: every fault once, in a random order, and the user's stop and start of beta
    somewhere among them."""
    started = time.monotonic()
    user_actions = []
    for round_no in range(1, rounds + 1):
        order = rng.sample(FAULTS, len(FAULTS))
        stop_at = rng.randrange(len(order) + 1)
        say(f"round {round_no}: {' '.join(order[:stop_at] + ['stop+start'] + order[stop_at:])}")
        for i, fault in enumerate([*order, None]):
            if i == stop_at:
                user_actions.append(user_stop_start(stack, "beta", rng, say))
            if fault is not None:
                faults.inject(fault)
    say(f"faults done in {time.monotonic() - started:.0f}s")
    return user_actions


def settle(client: Client, workload: Workload, faults: Faults, rounds: int) -> dict[str, list[JobInfo]]:
    """Wait (bounded) for every job the user was told about, or may have been, to end, and for
    every push's run; returns the job rows by key."""
    clusters = list(CLUSTERS)
    say(f"{len(workload.submissions)} submissions; waiting for every job to end")

    def settled() -> bool:
        rows = workload.rows(client, clusters)
        workload.note_ended(rows)
        return not [k for k, s in workload.submissions.items()
                    if s.kind != "push" and s.outcome in ("accepted", "ambiguous", "pending")
                    and ((s.outcome == "accepted" and k not in rows) or any(not j.finished for j in rows.get(k, [])))]

    try:
        wait_for(settled, 180 + 60 * rounds, "every job to end", interval=1.0)
    except AssertionError:
        pass  # the checks say which did not end
    for sub in faults.pushes:  # a run is recorded as it starts, then waits for its job
        try:
            wait_for(lambda: _has_run(client, sub.sha or ""), 30, f"the run of {sub.key}", interval=0.5)
            client.wait_commit(REPO, sub.sha or "", timeout=120)
        except (AssertionError, TimeoutError):
            sub.ended_at = sub.ended_at or sub.pushed_at  # counts against the faults of its push
    return workload.rows(client, clusters)


def _has_run(client: Client, sha: str) -> bool:
    try:
        client.commit_status(REPO, sha)
        return True
    except NotFound:
        return False


def check_jobs(stack: UpStack, client: Client, workload: Workload,
               rows: dict[str, list[JobInfo]]) -> dict[str, Problems]:
    """Each submission: once, whole, agreed on by the DB and Temporal."""
    all_rows = [j for jobs in rows.values() for j in jobs]
    jobs_seen, clusters_seen = temporal_view(stack.settings.temporal_address, all_rows, list(CLUSTERS))
    effects = Counter(workload.effects.read_text().split())
    problems: dict[str, Problems] = {}
    db = stack.db()
    for key, sub in workload.submissions.items():
        found = check_job(sub, rows.get(key, []), workload, client, db, jobs_seen, clusters_seen, effects)
        if sub.kind == "push":
            pushed = check_push(sub, client, rows.get(key, []))
            found.lost += pushed.lost
            found.known += pushed.known
        problems[key] = found
    strays = sorted(set(effects) - set(workload.submissions))
    if strays:
        problems["(strays)"] = Problems(duplicated=[f"side effects of no submission: {strays}"])
    return problems


def check_nodes_quiet(stack: UpStack, faults: Faults) -> Counter:
    """Once every job has ended, nothing runs on a node but its server (the last polls' SSH
    sessions may take a moment to go). Returns orphans by the fault that touched their node."""
    orphans: Counter = Counter()
    killed = {inj.detail.split()[2] for inj in faults.injections if inj.fault == "node"}
    for cluster in CLUSTERS:
        nodes = sorted(p.name for p in (stack.nodes_root / cluster).glob("node-*"))
        try:
            wait_for(lambda: not node_orphans(stack.nodes_root, cluster, nodes), 15, f"{cluster}'s nodes to be quiet")
        except AssertionError:
            left = node_orphans(stack.nodes_root, cluster, nodes)
            say(f"orphans on {cluster}: {left}")
            hit = [n for n in nodes if f"{cluster}/{n}" in killed]
            orphans["stop+start" if cluster == "beta" else "node" if hit else "(none)"] += len(left)
    return orphans


def take_gamma_down_and_check_clusters(stack: UpStack, client: Client, orphans: Counter) -> list[str]:
    """The user takes gamma down; then each cluster is as the user left it, in the DB, in its
    workflow and in the process table."""
    problems = []
    down = client.down("gamma")
    if down.status != "TERMINATED":
        problems.append(f"gamma: `styx down` answered {down.status}")
    orphans["(down)"] += len(node_orphans(stack.nodes_root, "gamma", ["node-0"]))
    _, seen = temporal_view(stack.settings.temporal_address, [], list(CLUSTERS))
    for name, want in FINAL.items():
        problems += check_cluster(client, stack.nodes_root, name, want, CLUSTERS[name], seen[name])
    return problems
