"""A test seam, for crash tests only: code calls ``crash_here_if_asked(point)`` at the points
where a crash must lose nothing — the AWS provider's ``provision`` at
``before_run_instances``, ``after_run_instances`` and ``after_running``, the git server at
``git_post_receive`` (the refs moved, the push's runs not started yet), the managed-job
activities at ``managed_*`` points. If
``STYX_TEST_CRASH_POINT`` names that point and ``STYX_TEST_CRASH_POINT_FILE`` names a file
that does not exist yet, the file is created and the process kills itself with SIGKILL —
a worker dying mid-launch, say. The file makes the crash fire once, so the retried run goes
through. Without both variables this does nothing.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["crash_here_if_asked"]

log = logging.getLogger("styx.crash_seam")

def crash_here_if_asked(point: str) -> None:
    if os.environ.get("STYX_TEST_CRASH_POINT") != point:
        return
    marker = os.environ.get("STYX_TEST_CRASH_POINT_FILE")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    os.close(fd)
    log.warning("STYX_TEST_CRASH_POINT=%s: killing this process", point)
    os.kill(os.getpid(), signal.SIGKILL)
