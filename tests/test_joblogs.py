"""Job logs in the database (``db.joblogs``, ``styx.joblogs.LogReader``), on SQLite and
PostgreSQL: what two hosts racing to copy one log store, and what ``styx logs`` prints."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from styx.db import Database, LogMoved
from styx.db.joblogs import MAX_CHUNK_BYTES
from styx.joblogs import MAX_LINE_BYTES, LogReader


def read_all(db: Database, cluster: str, job_id: int, num_nodes: int, final: bool = True) -> bytes:
    reader = LogReader(db, cluster, job_id, num_nodes)
    out = []
    while True:
        got = list(reader.read_new(final=final))
        if not got:
            return b"".join(out)
        out += got


def test_a_writer_behind_the_stored_size_is_told_and_writes_nothing(database: Database):
    logs = database.joblogs
    assert logs.append("c", 1, "run", 0, 0, b"one\n") == 4
    with pytest.raises(LogMoved) as moved:
        logs.append("c", 1, "run", 0, 0, b"one\ntwo\n")
    assert moved.value.size == 4
    assert logs.append("c", 1, "run", 0, 4, b"two\n") == 8
    assert logs.size("c", 1, "run", 0) == 8
    assert b"".join(d for _, d in logs.read("c", 1, "run", 0, 0)) == b"one\ntwo\n"


def test_two_copies_of_one_log_racing_store_every_byte_once(database: Database):
    """A retried activity on another host while the first attempt still copies: chunks of
    different sizes, the same source; the stored log is the source, once."""
    source = b"".join(b"line-%05d\n" % i for i in range(20_000))

    def copy(step: int) -> None:
        offset = database.joblogs.size("race", 1, "run", 0)
        while offset < len(source):
            try:
                offset = database.joblogs.append("race", 1, "run", 0, offset, source[offset:offset + step])
            except LogMoved as moved:
                offset = moved.size

    threads = [threading.Thread(target=copy, args=(step,)) for step in (7_001, 65_536, 1_000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_all(database, "race", 1, 1) == source


def test_a_chunk_over_the_row_limit_is_refused(database: Database):
    with pytest.raises(ValueError, match=str(MAX_CHUNK_BYTES)):
        database.joblogs.append("c", 1, "run", 0, 0, b"x" * (MAX_CHUNK_BYTES + 1))
    assert database.joblogs.streams("c", 1) == []


def test_logs_read_rank_by_rank_setup_first_with_rank_prefixes(database: Database):
    logs = database.joblogs
    logs.append("m", 3, "run", 1, 0, b"r1-run\n")
    logs.append("m", 3, "run", 0, 0, b"r0-run\nno newline")
    logs.append("m", 3, "setup", 0, 0, b"r0-setup\n")
    assert read_all(database, "m", 3, 2) == (b"(rank=0) r0-setup\n(rank=0) r0-run\n(rank=0) no newline\n"
                                             b"(rank=1) r1-run\n")
    # One node: no prefix; a last line without newline waits until the job has ended.
    logs.append("one", 1, "run", 0, 0, b"a\npartial")
    assert read_all(database, "one", 1, 1, final=False) == b"a\n"
    assert read_all(database, "one", 1, 1) == b"a\npartial\n"


def test_a_follower_gets_each_line_once_as_it_grows(database: Database):
    reader = LogReader(database, "f", 1, 1)
    offset = database.joblogs.append("f", 1, "run", 0, 0, b"first\nsec")
    assert b"".join(reader.read_new()) == b"first\n"
    database.joblogs.append("f", 1, "run", 0, offset, b"ond\n")
    assert b"".join(reader.read_new()) == b"second\n"
    assert b"".join(reader.read_new(final=True)) == b""


def test_a_line_longer_than_the_bound_is_passed_on_in_pieces(database: Database):
    big = b"y" * (MAX_LINE_BYTES + 10)
    offset = 0
    for start in range(0, len(big), MAX_CHUNK_BYTES):
        offset = database.joblogs.append("long", 1, "run", 1, offset, big[start:start + MAX_CHUNK_BYTES])
    database.joblogs.append("long", 1, "run", 1, offset, b"\nnext\n")
    assert read_all(database, "long", 1, 2) == b"(rank=1) " + big + b"\n(rank=1) next\n"


def test_a_fresh_cluster_of_an_old_name_starts_with_no_logs(database: Database):
    database.joblogs.append("old", 1, "run", 0, 0, b"from the old cluster\n")
    database.joblogs.append("other", 1, "run", 0, 0, b"kept\n")
    assert database.joblogs.delete_cluster("old") == 1
    assert read_all(database, "old", 1, 1) == b""
    assert read_all(database, "other", 1, 1) == b"kept\n"


def test_a_worker_whose_ssh_key_file_is_missing_stops_with_one_line(tmp_path):
    env = {**os.environ, "STYX_HOME": str(tmp_path / "home"), "STYX_SSH_KEY": str(tmp_path / "nope"),
           "STYX_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    env.pop("STYX_DB_URL", None)
    done = subprocess.run([sys.executable, "-m", "styx", "worker"], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert f"STYX_SSH_KEY: no key file at {tmp_path / 'nope'}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
