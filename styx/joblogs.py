"""Where a job's logs are kept on the Styx side, and how they are read back.

The ``run_phase`` activity copies each node's log into
``STYX_HOME/jobs/<cluster>/<job id>/<phase>-rank<r>.log``; the local file's size is the
copy's offset, so a retried activity continues exactly where the last one stopped and
no byte appears twice. The API reads these files (it never talks SSH).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

PHASES = ("setup", "run")
CHUNK = 4 << 20


def cluster_dir(home: Path, cluster: str) -> Path:
    return home / "jobs" / cluster


def job_dir(home: Path, cluster: str, job_id: int) -> Path:
    return cluster_dir(home, cluster) / str(job_id)


def phase_log(home: Path, cluster: str, job_id: int, phase: str, rank: int) -> Path:
    return job_dir(home, cluster, job_id) / f"{phase}-rank{rank}.log"


def rank_logs(home: Path, cluster: str, job_id: int) -> dict[int, list[Path]]:
    """rank -> its log files in phase order (setup, then run), for the files that exist."""
    found: dict[int, list[Path]] = {}
    directory = job_dir(home, cluster, job_id)
    if not directory.is_dir():
        return found
    for phase in PHASES:
        for path in sorted(directory.glob(f"{phase}-rank*.log")):
            rank = int(path.stem.rsplit("rank", 1)[1])
            found.setdefault(rank, []).append(path)
    return dict(sorted(found.items()))


class LogReader:
    """Reads a job's logs incrementally: every call to :meth:`read_new` returns only new
    complete lines, prefixed with ``(rank=N)`` when the job ran on several nodes."""

    def __init__(self, home: Path, cluster: str, job_id: int, num_nodes: int) -> None:
        self.home, self.cluster, self.job_id = home, cluster, job_id
        self.prefix = num_nodes > 1
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def read_new(self, final: bool = False) -> Iterator[bytes]:
        """New complete lines since the last call. With ``final`` (the job has ended), a last
        line without a newline is returned too. Call until it yields nothing to drain."""
        for rank, paths in rank_logs(self.home, self.cluster, self.job_id).items():
            prefix = f"(rank={rank}) ".encode() if self.prefix else b""
            for path in paths:
                offset = self._offsets.get(path, 0)
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(CHUNK)
                self._offsets[path] = offset + len(data)
                lines = (self._partial.pop(path, b"") + data).split(b"\n")
                tail = lines.pop()
                if tail and final and len(data) < CHUNK:
                    lines.append(tail)
                elif tail:
                    self._partial[path] = tail
                if lines:
                    yield b"".join(prefix + line + b"\n" for line in lines)
